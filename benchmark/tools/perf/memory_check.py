"""The memory estimate checked: fake tensors against real ones, tensors against RSS, and
what LoRA's dropout costs.

For each model and strategy, the same training step (same horizon of strategy decisions,
same measured step, same batch) is counted by torch's MemTracker twice: on fake tensors
(`python -m benchmark memory`) and on real CPU tensors, with the process's RSS sampled
around the real step. Then LoRA with lora_dropout 0 against 0.05.

    python -m benchmark.tools.perf.memory_check                       # minilm and smollm2-135m
    python -m benchmark.tools.perf.memory_check --models minilm --strategies lora,full-ft

Exit status 1 when a fake count is more than --tolerance (2%) away from the real one.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys

from ...trial.memory_estimate import MIB, estimate_memory


def cpu_line() -> str:
    model, flags = platform.processor() or "unknown CPU", []
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name") and model in ("", "unknown CPU", platform.processor()):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in present]
                    break
    except OSError:
        pass
    return f"{model} ({', '.join(flags) or 'no AVX2'})"


def check_rows(model: str, strategies: list[str], batch_size: int, max_length: int,
               precision: str, steps: int) -> list[dict]:
    rows = []
    for name in strategies:
        common = dict(batch_size=batch_size, max_length=max_length, precision=precision, steps=steps)
        try:
            fake = estimate_memory(model, name, {}, **common)
            real = estimate_memory(model, name, {}, real=True, **common)
        except Exception as error:  # noqa: BLE001 - reported as a failed row
            print(f"  {model} {name}: FAILED: {type(error).__name__}: {error}", flush=True)
            rows.append({"model": model, "strategy": name, "error": f"{type(error).__name__}: {error}",
                         "gap": float("inf")})
            continue
        gap = fake["peak_bytes"] / real["peak_bytes"] - 1
        rows.append({"model": model, "strategy": name, "fake": fake, "real": real, "gap": gap})
        print(f"  {model} {name}: fake {fake['peak_bytes'] / MIB:.1f} MiB, real "
              f"{real['peak_bytes'] / MIB:.1f} MiB ({gap:+.2%}), RSS peak {real['rss_peak_mib']:.0f} MiB",
              flush=True)
    return rows


def check_table(rows: list[dict]) -> str:
    head = ["model", "strategy", "step", "fake peak MiB", "real peak MiB", "fake vs real",
            "parameters", "gradients", "optimizer state", "activations", "temporaries",
            "RSS before tensors", "RSS peak", "RSS peak - before - tensor peak"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['strategy']} | FAILED: {r['error'][:120]} |")
            continue
        fake, real = r["fake"], r["real"]
        c = fake["categories"]
        rest = real["rss_peak_mib"] - real["rss_before_tensors_mib"] - real["peak_bytes"] / MIB
        lines.append("| " + " | ".join([
            r["model"], r["strategy"], str(fake["measured_step"]), f"{fake['peak_bytes'] / MIB:.1f}",
            f"{real['peak_bytes'] / MIB:.1f}", f"{r['gap']:+.2%}",
            *(f"{c[k] / MIB:.1f}" for k in ("parameters", "gradients", "optimizer_state",
                                             "activations", "temporaries")),
            f"{real['rss_before_tensors_mib']:.0f}", f"{real['rss_peak_mib']:.0f}", f"{rest:+.0f}"]) + " |")
    return "\n".join(lines)


def dropout_rows(model: str, batch_size: int, max_length: int, precision: str) -> list[dict]:
    rows = []
    for dropout in (0.0, 0.05):
        for name in ("lora", "full-ft") if dropout == 0.0 else ("lora",):
            options = {"lora_dropout": dropout} if name == "lora" else {}
            r = estimate_memory(model, name, options, batch_size=batch_size, max_length=max_length,
                                precision=precision, steps=2)
            rows.append({"model": model, "strategy": name, "lora_dropout": dropout if name == "lora" else None,
                         "peak_mib": r["peak_bytes"] / MIB,
                         "activations_mib": r["categories"]["activations"] / MIB,
                         "peak_phase": r["peak_phase"]})
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmark.tools.perf.memory_check",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,smollm2-135m")
    parser.add_argument("--strategies", default=None, help="default: every registered strategy")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--steps", type=int, default=20, help="horizon of the layer-wise strategies")
    parser.add_argument("--tolerance", type=float, default=0.02)
    parser.add_argument("--json", default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    from strategies import STRATEGIES

    args = build_parser().parse_args(argv)
    strategies = args.strategies.split(",") if args.strategies else STRATEGIES.names()
    models = [m for m in args.models.split(",") if m]
    print(f"Memory check on {cpu_line()}: batch {args.batch_size} x {args.max_length}, "
          f"{args.precision}, horizon {args.steps}", flush=True)
    rows = [row for model in models for row in check_rows(model, strategies, args.batch_size,
                                                          args.max_length, args.precision, args.steps)]
    dropout = [row for model in models for row in dropout_rows(model, args.batch_size, args.max_length,
                                                               args.precision)]
    print()
    print(check_table(rows))
    print()
    print("| model | strategy | lora_dropout | peak MiB | activations MiB | peak in |")
    print("|---|---|---:|---:|---:|---|")
    for r in dropout:
        print(f"| {r['model']} | {r['strategy']} | {'-' if r['lora_dropout'] is None else r['lora_dropout']} | "
              f"{r['peak_mib']:.1f} | {r['activations_mib']:.1f} | {r['peak_phase']} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"check": rows, "dropout": dropout, "cpu": cpu_line()}, handle, indent=1, default=str)
    worst = max(rows, key=lambda r: abs(r["gap"]))
    print(f"\nlargest fake-vs-real gap: {worst['model']} {worst['strategy']} {worst['gap']:+.2%} "
          f"(tolerance {args.tolerance:.0%})")
    return 1 if abs(worst["gap"]) > args.tolerance else 0


if __name__ == "__main__":
    sys.exit(main())
