"""GPU check: every strategy on a randomly initialised ~1B Llama, one after another on one
GPU, with steps/s and peak memory (NVML per-process, and torch's allocator) per strategy.

    python -m benchmark.tools.gpu_check                            # ~1B model, bf16, one GPU
    python -m benchmark.tools.gpu_check --size tiny --max-steps 2  # the same path on a CPU

Speed and memory do not depend on trained weights, so a random model measures them without
a download. Each strategy is one `benchmark.trial.loop.run_trial` on IteraTeR slices; between
strategies the GPU memory the last one cached is given back, so each NVML figure is that
strategy's own (plus the CUDA context every process holds).

It needs the corpora and `datasets`: on a machine that has neither (the lent H200), run
`benchmark.tools.gpu_proof`, which measures the same and more on random token ids.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

SIZES = {"1b": "llama-1b-random", "tiny": "tiny-llama"}


def build_parser() -> argparse.ArgumentParser:
    from strategies import STRATEGIES

    parser = argparse.ArgumentParser(prog="python -m benchmark.tools.gpu_check",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="1b",
                        help="1b: the ~1B random Llama on a GPU; tiny: tiny-llama, runs on a CPU")
    parser.add_argument("--strategies", default=",".join(STRATEGIES.names()),
                        help="comma-separated (default: every registered strategy)")
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--eval-rows", type=int, default=48, help="dev and test rows evaluated")
    parser.add_argument("--data-dir", default=None, help="corpora (default: $BENCHMARK_DATA_DIR)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    return parser


def check_config(strategy: str, size: str, args, data_dir: str):
    from ..trial.config import TrainConfig

    return TrainConfig(task="iterater", strategy=strategy, model=SIZES[size], data_dir=data_dir,
                       max_steps=args.max_steps, batch_size=args.batch_size,
                       max_length=args.max_length, eval_every=args.max_steps,  # one evaluation
                       train_limit=args.max_steps * args.batch_size,
                       eval_limit=args.eval_rows, test_limit=args.eval_rows,
                       precision="bf16" if size == "1b" else "auto",
                       device="cuda" if size == "1b" else "auto")


def measure(strategy: str, size: str, args, data_dir: str) -> dict[str, Any]:
    """One strategy's row: the trial's figures, or its error (the others still run)."""
    from ..trial.loop import run_trial
    from ..trial.memory import release_accelerator_memory

    config = check_config(strategy, size, args, data_dir)
    try:
        result = run_trial(config)
    except Exception as error:  # an out-of-memory strategy is a finding, not the end
        return {"strategy": strategy, "error": " ".join(f"{type(error).__name__}: {error}".split())[:300]}
    finally:
        release_accelerator_memory()  # the next strategy starts from an empty cache
    train_s = result["train_time_s"]
    return {"strategy": strategy, "steps": config.max_steps,
            "steps_per_s": round(config.max_steps / train_s, 2) if train_s else None,
            "samples_per_s": result["train_samples_per_s"],
            "peak_memory_mb": result["peak_memory_mb"],
            "torch_peak_allocated_mb": result.get("torch_peak_allocated_mb"),
            "memory_source": result["memory_source"],
            "memory_shared_device": result.get("memory_shared_device"),
            "trainable_share": result["trainable_share"], "total_params": result["total_params"],
            "wall_time_s": result["wall_time_s"], "precision": result["config"]["precision"],
            "device": result["config"]["device"],
            "gpu": f"{result.get('gpu_count', 0)} x {result.get('gpu_name', '-')}"}


def format_table(rows: list[dict[str, Any]]) -> str:
    def cell(value, digits=1):
        if value is None:
            return "-"
        return f"{value:,.{digits}f}" if isinstance(value, float) else str(value)

    # Peak memory is NVML's per-process figure on a GPU, peak RSS on a CPU: see the source.
    lines = ["| strategy | steps/s | peak memory MB | torch peak MB | memory source | trainable | wall s |",
             "|---|---:|---:|---:|---|---:|---:|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['strategy']} | FAILED: {row['error']} | | | | | |")
            continue
        lines.append(f"| {row['strategy']} | {cell(row['steps_per_s'], 2)} | {cell(row['peak_memory_mb'])} "
                     f"| {cell(row['torch_peak_allocated_mb'])} | {row['memory_source']} "
                     f"| {row['trainable_share']:.2%} | {cell(row['wall_time_s'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from strategies import STRATEGIES

    args = build_parser().parse_args(argv)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = sorted(set(strategies) - set(STRATEGIES.names()))
    if unknown or not strategies:
        print(f"error: unknown strategy {unknown[0] if unknown else '(none)'}; "
              f"choose from {', '.join(STRATEGIES.names())}", file=sys.stderr)
        return 2
    if args.max_steps < 1 or args.batch_size < 1:
        print("error: --max-steps and --batch-size must be at least 1", file=sys.stderr)
        return 2

    import torch

    if args.size != "tiny" and not torch.cuda.is_available():
        print("error: no GPU: torch sees no CUDA device, and the 1B check needs one "
              "(--size tiny runs the same path on a CPU)", file=sys.stderr)
        return 2
    import tasks

    data_dir = str(tasks.resolve_data_dir(args.data_dir))
    where = (f"{torch.cuda.device_count()} x {torch.cuda.get_device_name()}"
             if torch.cuda.is_available() and args.size != "tiny" else "CPU")
    print(f"gpu_check: {SIZES[args.size]} on {where}; {args.max_steps} steps of batch "
          f"{args.batch_size}, max_length {args.max_length}, IteraTeR", flush=True)
    started = time.time()
    rows = []
    for strategy in strategies:
        row = measure(strategy, args.size, args, data_dir)
        rows.append(row)
        done = (f"{row['steps_per_s']} steps/s, peak {row['peak_memory_mb']} MB ({row['memory_source']})"
                if "error" not in row else f"FAILED: {row['error']}")
        print(f"  {strategy}: {done}", flush=True)
    total = round(time.time() - started, 1)
    print()
    print(format_table(rows))
    print(f"\n{len(rows)} strategies in {total} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": SIZES[args.size], "device": where,
                                        "max_steps": args.max_steps, "batch_size": args.batch_size,
                                        "max_length": args.max_length, "total_s": total,
                                        "rows": rows}, indent=1))
        print(f"written to {args.out}")
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
