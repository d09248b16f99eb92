"""Suite overhead: a suite's wall time against the time its trials spent training.

Everything that is not a training step counts as overhead: Ray start-up and scheduling,
MLflow logging, model loading and evaluation inside the trials, and slots left idle at the
end. With P trials at a time, the ideal wall time is (sum of training times) / P.
Reads the latest run of the suite from MLflow (its wall time is recorded as experiment
tags by `benchmark run`), or runs the suite first with --run.

    python -m benchmark.tools.perf.suite_overhead --suite revisions
    python -m benchmark.tools.perf.suite_overhead --suite revisions+my-method   # after run --only
"""

from __future__ import annotations

import time

from ...sweep.tracking import DEFAULT_TRACKING_URI, connect, runs_of
from .common import base_parser, run_main, table

GOAL = 0.10  # the goal for `revisions`: under 10% over the training time
INSIDE_GOAL = 0.15  # evaluation, loading and snapshots inside the trials: at most 15% of training


def _total(runs, metric: str) -> float:
    return sum(r.data.metrics.get(metric, 0.0) for r in runs)


def _entry_name(run) -> str:
    """The suite entry of an MLflow run (as reporting.runs.RunRecord.strategy reads it)."""
    return run.data.params.get("entry") or run.data.params["strategy"]


def measure(suite_name: str, tracking_uri: str, wall_time_s: float | None = None,
            parallel: int | None = None) -> dict:
    """The latest run's figures; with wall_time_s (a run interrupted and resumed, timed in
    pieces), every finished trial of the suite counts and that wall time stands for them."""
    from ...core.errors import UserError

    client = connect(tracking_uri)
    experiment = client.get_experiment_by_name(suite_name)
    tags = experiment.tags if experiment else {}
    if experiment is None or (wall_time_s is None and "last_run.wall_time_s" not in tags):
        raise UserError(f"no recorded run of suite {suite_name!r} in {tracking_uri}: run it with "
                        f"`python -m benchmark run --suite {suite_name}` (or pass --run)")
    finished = runs_of(client, experiment.experiment_id, {"FINISHED"})
    if wall_time_s is not None:  # timed in pieces: every finished trial counts
        wall, runs, resumed = wall_time_s, finished, 0
    else:
        wall = float(tags["last_run.wall_time_s"])
        ended = time.mktime(time.strptime(tags["last_run.ended"], "%Y-%m-%d %H:%M:%S"))
        window_start_ms = (ended - wall - 60) * 1000  # runs this suite run started (1 min slack)
        runs = [r for r in finished if r.info.start_time >= window_start_ms]
        resumed = int(tags.get("last_run.trials_resumed", 0))
    parallel = parallel or int(tags.get("last_run.parallel_trials", 1))
    train = _total(runs, "train_time_s")
    trial_wall = _total(runs, "wall_time_s")
    ideal = train / parallel if train else float("nan")
    return {"suite": suite_name, "wall_s": wall, "parallel": parallel, "trials": len(runs),
            "trials_resumed": resumed,
            "train_s": train, "trial_wall_s": trial_wall, "ideal_s": ideal,
            "overhead": wall / ideal - 1 if train else float("nan"),
            "inside_trials_s": (trial_wall - train) / parallel,
            "inside_share": (trial_wall - train) / train if train else float("nan"),
            "outside_trials_s": wall - trial_wall / parallel,
            **inside_split(runs, parallel), **stage_costs(runs, parallel)}


def inside_split(runs, parallel: int) -> dict:
    """What the time inside the trials that is not training went to, overall and per
    strategy; only when every trial records it (runs older than these timings do not)."""
    timed = [r for r in runs if "eval_time_s" in r.data.metrics]
    if not timed or len(timed) < len(runs):
        return {}
    by_strategy: dict[str, list] = {}
    for r in timed:
        by_strategy.setdefault(_entry_name(r), []).append(r)
    return {"eval_s": _total(timed, "eval_time_s") / parallel,
            "setup_s": _total(timed, "setup_time_s") / parallel,
            "by_strategy": {name: {"trials": len(rs), "train_s": _total(rs, "train_time_s"),
                                   "eval_s": _total(rs, "eval_time_s"),
                                   "setup_s": _total(rs, "setup_time_s"),
                                   "inside_s": _total(rs, "wall_time_s") - _total(rs, "train_time_s")}
                            for name, rs in sorted(by_strategy.items())}}


def stage_costs(runs, parallel: int) -> dict:
    """For a staged suite: each stage's trial time, and what a plain grid (every candidate
    on every seed at the full budget) would have cost, from the final trials' own times."""
    stages: dict[str, list] = {}
    for r in runs:
        stages.setdefault(r.data.params.get("stage", ""), []).append(r)
    if set(stages) != {"select", "final"}:
        return {}
    def entry(r):
        return r.data.params["task"], _entry_name(r)

    candidates: dict[tuple[str, str], set] = {}
    for r in stages["select"]:
        candidates.setdefault(entry(r), set()).add(r.data.tags.get("config_key"))
    seeds: dict[tuple[str, str], set] = {}
    final_walls: dict[tuple[str, str], list] = {}
    for r in stages["select"] + stages["final"]:
        seeds.setdefault(entry(r), set()).add(r.data.params.get("seed"))
    for r in stages["final"]:
        final_walls.setdefault(entry(r), []).append(r.data.metrics.get("wall_time_s", 0.0))
    # Every candidate on every seed, each costing what the entry's full-budget trials cost.
    grid = sum(sum(walls) / len(walls) * len(candidates.get(e, {1})) * len(seeds[e])
               for e, walls in final_walls.items())
    wall = {stage: _total(rs, "wall_time_s") / parallel
            for stage, rs in stages.items()}
    return {"select_s": wall["select"], "final_s": wall["final"], "grid_s": grid / parallel,
            "select_trials": len(stages["select"]), "final_trials": len(stages["final"])}


def report(m: dict) -> str:
    rows = [["suite wall time", f"{m['wall_s']:.0f} s"],
            ["trials in this run / resumed (not counted)", f"{m['trials']} / {m['trials_resumed']}"],
            ["trials at a time (P)", m["parallel"]],
            ["sum of training times / P (ideal wall time)", f"{m['ideal_s']:.0f} s"],
            ["inside trials, not training (load, tokenise, evaluate) / P", f"{m['inside_trials_s']:.0f} s"],
            *([["  of which evaluation (dev, best-weights snapshots, test) / P", f"{m['eval_s']:.0f} s"],
               ["  of which set-up (model, tokens, strategy, optimizer) / P", f"{m['setup_s']:.0f} s"]]
              if "eval_s" in m else []),
            ["outside trials (Ray, scheduling, MLflow, idle slots)", f"{m['outside_trials_s']:.0f} s"],
            ["inside trials, not training, as a share of training time",
             f"{100 * m['inside_share']:.1f}% (goal <= {100 * INSIDE_GOAL:.0f}%)"],
            ["overhead over training time", f"{100 * m['overhead']:.1f}% (goal < {100 * GOAL:.0f}%)"]]
    if "grid_s" in m:
        rows += [["stage select: trial time / P", f"{m['select_s']:.0f} s ({m['select_trials']} trials)"],
                 ["stage final: trial time / P", f"{m['final_s']:.0f} s ({m['final_trials']} trials)"],
                 ["a plain grid (every candidate, every seed, full budget) / P, from the final "
                  "trials' times", f"{m['grid_s']:.0f} s ({m['grid_s'] / (m['select_s'] + m['final_s']):.2f}x "
                  "the two stages)"]]
    text = table(["", m["suite"]], rows)
    if "by_strategy" in m:
        per = [[name, b["trials"], f"{b['train_s']:.0f}", f"{b['eval_s']:.0f}", f"{b['setup_s']:.0f}",
                f"{100 * b['inside_s'] / b['train_s']:.1f}%" if b["train_s"] else "–"]
               for name, b in m["by_strategy"].items()]
        text += "\n\n" + table(["strategy", "trials", "training (s)", "evaluation (s)", "set-up (s)",
                                 "not training / training"], per)
    return text


def build_parser():
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--suite", default="revisions")
    parser.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI)
    parser.add_argument("--run", action="store_true", help="run (or resume) the suite first")
    parser.add_argument("--results-dir", default="results", help="where --run writes the leaderboard")
    parser.add_argument("--wall-time-s", type=float, default=None,
                        help="for a run interrupted and resumed: its wall time, summed over the "
                             "pieces; every finished trial in the store's experiment of the "
                             "suite then counts (use a store that holds only this run)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ...sweep.suite import load_suite

    pieces = args.wall_time_s is not None  # the suite's own concurrency, not the last piece's
    if not (args.run or pieces) and "+" in args.suite:
        # `run --only`'s experiment (`revisions+my-method`): no suite file, the store has it all.
        print(report(measure(args.suite, args.tracking_uri)))
        return 0
    suite = load_suite(args.suite)
    if args.run:
        from ...cli import main as cli

        command = ["run", "--suite", args.suite, "--tracking-uri", args.tracking_uri,
                   "--results-dir", args.results_dir]
        if args.data_dir:
            command += ["--data-dir", args.data_dir]
        if cli(command) != 0:
            return 1
    print(report(measure(suite.name, args.tracking_uri, args.wall_time_s,
                         suite.resources.get("max_concurrent_trials") if pieces else None)))
    return 0


if __name__ == "__main__":
    run_main(main)
