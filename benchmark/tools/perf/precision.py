"""Precision: fp32 against bf16 autocast, side by side, at the same seed and steps.

Each variant is one `benchmark train` in its own process (same model, task, strategy,
budget and seed), so the figures are the trial's own: training samples per second, and
dev and test macro F1 at the best dev step. On a CPU with native bf16 (AMX or
AVX512-BF16) `precision: auto` picks bf16; this is the evidence for that default.

    python -m benchmark.tools.perf.precision --strategies full-ft --lr 5e-5 --steps 350 --eval-every 70
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from ...trial.config import cpu_computes_bf16, resolve_device
from ...trial.models import DEFAULT_MODEL
from .common import base_parser, machine, run_main, table

PRECISIONS = ("fp32", "bf16")


def build_parser():
    parser = base_parser(__doc__.splitlines()[0])
    parser.set_defaults(batch_size=16)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--strategies", nargs="+", default=["full-ft", "ir-tuning"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--input-format", default="diff")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=None,
                        help="one rate for every strategy listed (default: each strategy's own)")
    parser.add_argument("--head-lr", type=float, default=1e-3,
                        help="the head's rate, as the revisions suites (0: the body's)")
    parser.add_argument("--eval-every", type=int, default=None, help="default: steps / 4")
    return parser


def train(args, strategy: str, precision: str, folder: Path) -> dict:
    out = folder / f"{strategy}-{precision}.json"
    command = [sys.executable, "-m", "benchmark", "train", "--model", args.model,
               "--task", args.task, "--strategy", strategy, "--precision", precision,
               "--max-steps", str(args.steps),
               "--eval-every", str(args.eval_every or max(1, args.steps // 4)),
               "--batch-size", str(args.batch_size), "--input-format", args.input_format,
               "--seed", str(args.seed), "--device", args.device, "--out", str(out)]
    if args.data_dir:
        command += ["--data-dir", str(args.data_dir)]
    if args.lr is not None:
        command += ["--lr", str(args.lr)]
    if args.head_lr:
        command += ["--head-lr", str(args.head_lr)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{strategy} {precision}: {done.stderr.strip().splitlines()[-1:]}")
    result = json.loads(out.read_text())
    return {"strategy": strategy, "precision": precision,
            "samples_per_s": result["train_samples_per_s"], "train_s": result["train_time_s"],
            "dev": result["dev"]["macro_f1"], "test": result["test"]["macro_f1"],
            "best_step": result["best_step"]}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for strategy in args.strategies:
            for precision in PRECISIONS:
                rows.append(train(args, strategy, precision, Path(folder)))
    native = cpu_computes_bf16() if device == "cpu" else None
    print(f"Precision: {args.model} on {args.task}, {args.input_format} input, batch "
          f"{args.batch_size}, {args.steps} steps, seed {args.seed}, lr {args.lr or 'the strategy default'}, "
          f"head lr {args.head_lr or 'as lr'}; {machine()}; "
          f"native bf16 on this CPU: {native}")
    fp32 = {r["strategy"]: r for r in rows if r["precision"] == "fp32"}
    print(table(["strategy", "precision", "train samples/s", "vs fp32", "train time (s)",
                 "best dev step", "dev macro F1", "test macro F1"],
                [[r["strategy"], r["precision"], f"{r['samples_per_s']:.1f}",
                  f"{r['samples_per_s'] / fp32[r['strategy']]['samples_per_s']:.2f}x",
                  f"{r['train_s']:.0f}", r["best_step"], f"{r['dev']:.3f}", f"{r['test']:.3f}"]
                 for r in rows]))
    return 0


if __name__ == "__main__":
    run_main(main)
