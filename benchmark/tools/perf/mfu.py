"""Utilisation: how much of the device's own matrix-multiply peak a training step uses.

For each strategy of a suite (its model, options and budget settings, seed 0, the first
learning rate of its search): the FLOPs of one optimizer step, forward and backward,
counted by `torch.utils.flop_counter` on the first variant and charged to every variant (eager
attention writes the same products out as bmm); the median step time; model FLOPs
utilisation (MFU) = FLOPs / step time / peak, where the peak is this device's measured
GEMM rate at the step's compute dtype (fp32, or bf16 under bf16 autocast: the best of a
2048^3 matmul and the model's own up-projection shape). Each kernel variant
(benchmark/trial/kernels.py) is timed alone against the legacy code path (variants alternate within
each of `--repeats` rounds, so drift on the machine hits them alike), and the profile's top
operators are printed for the first and last variant.

    python -m benchmark.tools.perf.mfu --suite revisions-deep --strategies lora ir-tuning full-ft
    python -m benchmark.tools.perf.mfu --suite revisions --threads 1 --steps 6

On a GPU the same command measures the GPU's own GEMM peak and MFU against it.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

from .common import machine, run_main, table

# Each kernel change alone against the legacy path, then all of the `train` defaults.
VARIANTS = {
    "legacy": {},
    "fast masks": {"dropout_masks": "fast"},
    "eager attention": {"attention": "eager"},
    "frozen in compute dtype": {"frozen_weights": "compute"},
    # peft's input cast can only go with the fast masks (kernels.py), so this one is
    # measured against "fast masks", not against legacy.
    "fast masks, LoRA input as it comes": {"dropout_masks": "fast", "lora_input_cast": "none"},
    "defaults (auto)": {"attention": "auto", "dropout_masks": "fast", "frozen_weights": "compute",
                        "lora_input_cast": "none"},
}


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="revisions-deep",
                        help="the suite whose model, strategies and settings are measured")
    parser.add_argument("--strategies", nargs="*", default=None,
                        help="suite entries to measure (default: every entry)")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS),
                        metavar="VARIANT", help=f"kernel variants ({', '.join(VARIANTS)})")
    parser.add_argument("--length", type=int, default=72, help="tokens per example")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of every variant, alternating (each a fresh model)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (the suites train one-thread trials)")
    parser.add_argument("--precision", default=None,
                        help="override the suite's precision (fp32, bf16; default: the suite's, "
                             "else auto)")
    parser.add_argument("--profile-top", type=int, default=8,
                        help="profiler rows for the first and last variant (0: no profile)")
    parser.add_argument("--device", default="auto")
    return parser


def gemm_peak(dtype, device: str, hidden: int, intermediate: int, tokens: int) -> float:
    """This device's matmul rate (GFLOP/s) at `dtype`: the best of a 2048^3 product and
    the model's up-projection (tokens x hidden -> intermediate)."""
    import torch

    def rate(m, k, n, repeats):
        a = torch.randn(m, k, dtype=dtype, device=device)
        b = torch.randn(k, n, dtype=dtype, device=device)
        for _ in range(2):
            a @ b
        _sync(device)
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        _sync(device)
        return 2 * m * k * n * repeats / (time.perf_counter() - started) / 1e9

    square = 2048 if device == "cpu" else 8192
    return max(rate(square, square, square, 3 if device == "cpu" else 20),
               rate(tokens, hidden, intermediate, 20))


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def synthetic_batches(count: int, batch_size: int, length: int, vocab: int, num_labels: int):
    import torch

    generator = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(100, min(vocab, 20000), (batch_size, length), generator=generator),
             "attention_mask": torch.ones(batch_size, length, dtype=torch.long),
             "labels": torch.randint(0, num_labels, (batch_size,), generator=generator)}
            for _ in range(count)]


def measure(config, batches, num_labels: int, steps: int, warmup: int, profile_top: int):
    """(FLOPs of one step, median step seconds, profile rows or None, the trial's kernels)."""
    from torch.utils.flop_counter import FlopCounterMode

    from ...trial.build import build_trial, endless

    trial = build_trial(config, num_labels=num_labels, with_data=False)
    trial.attach_probe_batches(endless(batches))
    trial.model.train()
    with FlopCounterMode(display=False) as counter:
        trial.train_step([batches[0]], 0)
    flops = counter.get_total_flops()
    seconds = []
    for step in range(1, 1 + warmup + steps):
        started = time.perf_counter()
        trial.train_step([batches[step % len(batches)]], step).item()
        _sync(trial.device)
        seconds.append(time.perf_counter() - started)
    rows = None
    if profile_top:
        from torch.profiler import profile

        with profile() as prof:
            for step in range(2):
                trial.train_step([batches[step % len(batches)]], 100 + step).item()
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        top = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        rows = [[e.key[:60], f"{e.self_cpu_time_total / 2e3:.0f}", f"{e.self_cpu_time_total / total:.0%}",
                 e.count // 2] for e in top[:profile_top]]
    return flops, statistics.median(seconds[warmup:]), rows, trial.kernels


def suite_configs(suite_name: str, entries, precision: str | None, device: str):
    """{entry: TrainConfig} for seed 0 of each entry, the first point of its search."""
    from ...sweep.suite import expand_trials, entry_name, load_suite, train_config

    suite = load_suite(suite_name)
    configs = {}
    for trial in expand_trials(suite):
        name = entry_name(trial)
        if trial["seed"] != 0 or name in configs or (entries and name not in entries):
            continue
        config = train_config(trial)
        configs[name] = dataclasses.replace(config, device=device,
                                            precision=precision or config.precision,
                                            max_steps=1000, warmup_steps=1)
    missing = set(entries or []) - set(configs)
    if missing:
        from ...core.errors import UserError

        raise UserError(f"suite {suite_name} has no entries {', '.join(sorted(missing))}; it has "
                        f"{', '.join(sorted(configs))}")
    return suite, configs


def main(argv: list[str] | None = None) -> int:
    import torch

    from ...trial.config import resolve_device, resolve_precision
    from ...trial.models import load_model
    from ...trial.result import cpu_description

    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    suite, configs = suite_configs(args.suite, args.strategies, args.precision, device)
    first = next(iter(configs.values()))
    precision, autocast_dtype, _ = resolve_precision(first.precision, device)
    compute_dtype = autocast_dtype or torch.float32
    num_labels = 5
    model, _ = load_model(first.model, num_labels)
    hidden, intermediate = model.config.hidden_size, model.config.intermediate_size
    vocab = model.config.vocab_size
    del model
    batch_size = first.batch_size
    peak = gemm_peak(compute_dtype, device, hidden, intermediate, batch_size * args.length)
    cpu_model, cpu_flags = cpu_description()
    print(f"# Utilisation: suite {suite.name} ({first.model}), batch {batch_size} x {args.length} "
          f"tokens, {precision}; {cpu_model} [{' '.join(cpu_flags)}]; {machine()}")
    print(f"GEMM peak at {str(compute_dtype).removeprefix('torch.')}: {peak:.0f} GFLOP/s\n", flush=True)

    batches = synthetic_batches(8, batch_size, args.length, vocab, num_labels)
    headers = ["entry", "variant", "attention", "GFLOP/step", "s/step (median of repeats)",
               "repeats' range", "GFLOP/s", "MFU", "vs legacy"]
    rows, profiles = [], []
    for name, config in configs.items():
        flops, seconds, attention = None, {v: [] for v in args.variants}, {}
        # Variants alternate within each repeat, so drift on the machine hits them alike.
        for repeat in range(args.repeats):
            for index, variant in enumerate(args.variants):
                variant_config = dataclasses.replace(config, **{**_legacy(), **VARIANTS[variant]})
                last = repeat == args.repeats - 1
                profile = args.profile_top if last and index in (0, len(args.variants) - 1) else 0
                counted, step_s, top, kernels = measure(variant_config, batches, num_labels,
                                                        args.steps, args.warmup, profile)
                flops = flops or counted  # the first variant's count, charged to all
                seconds[variant].append(step_s)
                attention[variant] = kernels["attention"]
                print(f"  {name}, {variant}, repeat {repeat + 1}: {step_s:.3f} s/step", flush=True)
                if top:
                    profiles.append((f"{name}, {variant}", top))
        baseline = statistics.median(seconds[args.variants[0]])
        for variant in args.variants:
            median = statistics.median(seconds[variant])
            rows.append([name, variant, attention[variant], f"{flops / 1e9:.1f}", f"{median:.3f}",
                         f"{min(seconds[variant]):.3f}-{max(seconds[variant]):.3f}",
                         f"{flops / median / 1e9:.0f}", f"{flops / median / 1e9 / peak:.1%}",
                         f"{baseline / median:.2f}x"])
    print()
    print(table(headers, rows))
    for title, top in profiles:
        print(f"\nProfile, {title} (self CPU per step):")
        print(table(["operator", "ms/step", "share", "calls/step"], top))
    return 0


def _legacy() -> dict:
    from ...trial.kernels import LEGACY_KERNELS

    return dict(LEGACY_KERNELS)


if __name__ == "__main__":
    run_main(main)
