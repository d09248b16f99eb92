"""How a suite's cost grows: wall time against the number of trials and against trials at
a time, so a user can predict a sweep's cost on a bigger machine or cluster.

Each point is one real `python -m benchmark run` of a generated suite (a grid of learning
rates, one seed, `lora` on MiniLM with a small budget) in its own temporary results folder
and SQLite store; the machine's cores are split evenly between the trials at a time. The
fit is wall time = start-up + rounds x time per round, where a round is ceil(trials / at a
time) trials side by side.

    python -m benchmark.tools.perf.cost_growth                     # 2, 4, 8 trials; 1 and 2 at a time
    python -m benchmark.tools.perf.cost_growth --trials 2 --at-a-time 1 --steps 4 --model tiny-llama
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import base_parser, machine, run_main, table


def build_parser():
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--trials", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--at-a-time", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--train-limit", type=int, default=512)
    parser.add_argument("--eval-limit", type=int, default=128)
    return parser


def suite_yaml(name: str, args, trials: int, at_a_time: int) -> str:
    import yaml

    cores = os.cpu_count() or 1
    lrs = [round(1e-4 * (i + 1), 6) for i in range(trials)]  # distinct trials, same cost
    spec = {"name": name, "model": args.model, "tasks": [args.task], "seeds": [0],
            "budget": {"max_steps": args.steps, "eval_every": args.steps,
                       "batch_size": args.batch_size, "train_limit": args.train_limit,
                       "eval_limit": args.eval_limit, "test_limit": args.eval_limit},
            "strategies": {"lora": {"search": {"lr": lrs}}},
            "resources": {"cpus_per_trial": max(1, cores // at_a_time),
                          "max_concurrent_trials": at_a_time}}
    return yaml.safe_dump(spec)


def timed_run(args, trials: int, at_a_time: int) -> float:
    """Wall seconds of one `benchmark run` of the generated suite, start-up included."""
    with tempfile.TemporaryDirectory() as folder:
        name = f"growth-{trials}x{at_a_time}"
        suite = Path(folder) / f"{name}.yaml"
        suite.write_text(suite_yaml(name, args, trials, at_a_time))
        command = [sys.executable, "-m", "benchmark", "run", "--suite", str(suite),
                   "--tracking-uri", f"sqlite:///{folder}/mlflow.db", "--results-dir",
                   f"{folder}/results", "--storage-path", f"{folder}/ray"]
        if args.data_dir:
            command += ["--data-dir", args.data_dir]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - started
    if done.returncode:
        lines = [l for l in done.stderr.strip().splitlines() if l.strip()]
        raise RuntimeError(f"{name} failed: {lines[-1] if lines else done.returncode}")
    return seconds


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """(start-up s, s per round) by least squares over (rounds, wall s)."""
    if len({r for r, _ in points}) < 2:
        return float("nan"), float("nan")
    slope, intercept = statistics.linear_regression([r for r, _ in points], [w for _, w in points])
    return intercept, slope


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(f"# Suite cost growth ({machine()})")
    print(f"lora on {args.model}, {args.task}: {args.steps} steps of batch {args.batch_size}, "
          f"{args.train_limit} train rows, dev and test {args.eval_limit} rows; one run per point\n",
          flush=True)
    rows, fits = [], []
    for at_a_time in args.at_a_time:
        points = []
        for trials in args.trials:
            seconds = timed_run(args, trials, at_a_time)
            rounds = math.ceil(trials / at_a_time)
            points.append((rounds, seconds))
            rows.append([trials, at_a_time, rounds, f"{seconds:.0f}", f"{seconds / trials:.1f}"])
            print(f"{trials} trials, {at_a_time} at a time: {seconds:.0f} s", flush=True)
        startup, per_round = fit(points)
        fits.append([at_a_time, f"{startup:.0f}", f"{per_round:.1f}",
                     f"{per_round / at_a_time:.1f}"])
    print()
    print(table(["trials", "at a time", "rounds", "wall s", "wall s per trial"], rows))
    print()
    print(table(["at a time", "start-up s (fit)", "s per round (fit)", "s per trial (fit)"], fits))
    print("\nwall time ~ start-up + ceil(trials / at a time) x s per round")
    return 0


if __name__ == "__main__":
    run_main(main)
