"""GPU proof (issue 19): speed, memory and MFU of the strategies on random-weight models,
in one run sized to a device call, written to gpu_proof.json and gpu_proof.md under --out.

    python -m benchmark.tools.gpu_proof --out "$OUT"              # one H200, about 7 minutes
    python -m benchmark.tools.gpu_proof --size tiny --out /tmp/p  # the same path on a CPU

Parts, run in this order (the paper's scale first), each ending at its share of --budget-s:
- 8b: Llama-3.1-8B's architecture with random weights; lora, ir-tuning, random-layers, lisa
  and ist with LoRA r 32 on q/k/v/up/down (batch 16 x 256, bf16), and full-ft when its
  memory estimate fits under --full-ft-limit-gib;
- 1b: every strategy on the ~1B random Llama (bf16, batch 16 x 128 tokens);
- bookkeeping: IR-Tuning's tracker against the reference-style one (a hook per parameter
  reading its norm with .item(), a device sync each) on the 1B model;
- smollm: the revisions-deep suite's strategies on SmolLM2-135M's architecture, a few hundred
  steps each, where time remains.

No corpora and no hub: the batches are random token ids of the right length, since speed and
memory depend on neither the data nor the weights. Each strategy's steps are bounded by its
slot of the part's time (at least a few timed steps), and a strategy that fails (out of
memory) is a row of the table, not the end of the run. Nothing on this path imports
datasets, ray, mlflow or deepspeed (tests/test_gpu_proof.py checks it).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

NUM_LABELS = 5  # IteraTeR's classes: the head's size only
MIB = 1024 * 1024
GIB = 1024 * MIB
H200_BF16_TFLOPS = 790.0  # an 8192^3 bf16 matmul measured on this workplace's H200 (KINDS.md)
PAPER_LORA = {"lora_r": 32, "lora_alpha": 64, "lora_dropout": 0.05,
              "target_modules": ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]}
EIGHT_B_STRATEGIES = {  # the paper's LoRA on every strategy of the 8B comparison
    "lora": dict(PAPER_LORA),
    "ir-tuning": {"adapter": "lora", **PAPER_LORA},
    "random-layers": {"adapter": "lora", **PAPER_LORA},
    "lisa": {"adapter": "lora", **PAPER_LORA},
    "ist": {"adapter": "lora", **PAPER_LORA},
}
DEEP_SUITE = Path(__file__).resolve().parents[1] / "suites" / "revisions-deep.yaml"
PARTS = ("8b", "1b", "bookkeeping", "smollm")
PART_ENDS = {"8b": 0.35, "1b": 0.65, "bookkeeping": 0.80, "smollm": 1.0}  # shares of the budget
# galore's first step computes an SVD of every projected weight (cuSOLVER: possibly a minute
# on the 1B model): last in its part, so that its warm-up eats no other strategy's slot.
SLOW_FIRST_STEP = ("galore",)


@dataclasses.dataclass(frozen=True)
class Shape:
    """What one part trains: model alias, batch, tokens per example, and step bounds."""
    model: str
    batch_size: int
    seq_len: int
    max_steps: int  # timed steps at most (the slot usually ends them first)
    min_steps: int = 3  # timed steps at least, whatever the slot
    warmup_steps: int = 2  # untimed: CUDA kernels' first launches, allocator growth


SIZES: dict[str, dict[str, Shape]] = {
    "full": {"1b": Shape("llama-1b-random", 16, 128, 200),
             "8b": Shape("llama-3.1-8b-random", 16, 256, 100),
             "bookkeeping": Shape("llama-1b-random", 16, 128, 30),
             "smollm": Shape("smollm2-135m-random", 16, 128, 300)},
    # The CPU rehearsal: the same path on tiny-llama, a couple of steps each.
    "tiny": {"1b": Shape("tiny-llama", 2, 16, 2, 2, 1),
             "8b": Shape("tiny-llama", 2, 32, 2, 2, 1),
             "bookkeeping": Shape("tiny-llama", 2, 16, 3, 3, 1),
             "smollm": Shape("tiny-llama", 2, 16, 2, 2, 1)},
}


class Clock:
    """The run's time budget: each part ends at its share of it, and each strategy of a
    part gets an equal slot of what is left of the part."""

    def __init__(self, budget_s: float):
        self.started = time.perf_counter()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def part_deadline(self, part: str) -> float:
        return self.started + PART_ENDS[part] * self.budget_s

    def slot_deadline(self, part: str, entries_left: int) -> float:
        now = time.perf_counter()
        return now + max(0.0, self.part_deadline(part) - now) / max(1, entries_left)


def random_batches(count: int, batch_size: int, seq_len: int, vocab_size: int,
                   pad_token_id: int | None, seed: int) -> list[dict]:
    """Batches of random token ids, every example full length; the pad id is never drawn,
    so the classifier pools each example's last token as it would a real one's."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    low = 1 if pad_token_id == 0 else 0
    batches = []
    for _ in range(count):
        ids = torch.randint(low, vocab_size, (batch_size, seq_len), generator=generator)
        if pad_token_id not in (None, 0):
            ids[ids == pad_token_id] = pad_token_id + 1 if pad_token_id + 1 < vocab_size else 1
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                        "labels": torch.randint(0, NUM_LABELS, (batch_size,), generator=generator)})
    return batches


FLOP_FORMULA = (
    "model FLOPs per step, counted on the linear layers (2 FLOPs per multiply-add, T tokens "
    "per step): forward 2·T·N over every linear weight, LoRA's adapters included; backward "
    "2·T·N_path for the input gradients of the linear layers from the lowest block that "
    "trains up to the head (the whole model when the embeddings train), plus 2·T·N_train "
    "for the weight gradients of the trainable linear weights. Full fine-tuning gives the "
    "usual 6·T·N; LoRA on every block 4·T·N plus its adapters' share; a layer-wise step "
    "counts only the blocks its gradient passes. Embedding lookups, attention's score "
    "products (about 1% of the FLOPs at 256 tokens) and element-wise work are not counted. "
    "MFU = the timed steps' model FLOPs over their seconds, divided by the peak given "
    "(--peak-tflops).")


class StepFlops:
    """The model FLOPs of one step from what trains in it (see FLOP_FORMULA); call after
    the step, when the strategy's requires_grad flags still say what it trained."""

    def __init__(self, model, parts):
        from torch import nn

        block_of = {id(m): i for i, block in enumerate(parts.blocks) for m in block.modules()}
        top = len(parts.blocks)  # the head: above every block
        self.linears = [(block_of.get(id(m), top), m.weight) for m in model.modules()
                        if isinstance(m, nn.Linear)]
        self.block_params = [list(block.parameters()) for block in parts.blocks]
        self.embeddings = list(parts.embeddings)
        self.head = list(parts.head)
        self.top = top
        self.forward_weights = sum(w.numel() for _, w in self.linears)

    def lowest_trained(self) -> int | None:
        """The lowest position whose gradient is needed: 0 when the embeddings train, a
        block's index, `top` for the head alone, None when nothing trains."""
        if any(p.requires_grad for p in self.embeddings):
            return 0
        for i, params in enumerate(self.block_params):
            if any(p.requires_grad for p in params):
                return i
        return self.top if any(p.requires_grad for p in self.head) else None

    def step(self, tokens: int) -> float:
        lowest = self.lowest_trained()
        path = 0 if lowest is None else sum(w.numel() for at, w in self.linears if at >= lowest)
        trained = sum(w.numel() for _, w in self.linears if w.requires_grad)
        return 2.0 * tokens * (self.forward_weights + path + trained)


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def trial_config(model: str, strategy: str, options: dict, shape: Shape, precision: str,
                 device: str):
    from ..trial.config import TrainConfig

    # max_steps sizes the schedule only: the slot ends the loop; one warm-up step keeps
    # the learning rate nearly flat over the measured steps.
    return TrainConfig(model=model, strategy=strategy, strategy_options=dict(options),
                       max_steps=shape.warmup_steps + shape.max_steps, batch_size=shape.batch_size,
                       max_length=shape.seq_len, warmup_steps=1, precision=precision,
                       device=device, seed=0)


def train_for_slot(trial, shape: Shape, deadline: float, batches: list[dict],
                   flops: StepFlops | None = None) -> dict[str, Any]:
    """Warm-up steps, then timed steps until the slot ends (at least min_steps, at most
    max_steps); each step is timed to its loss on the host, the device synchronised."""
    trial.model.train()
    tokens = shape.batch_size * shape.seq_len
    seconds, warmup, step_flops, trainable = [], [], [], []
    step = 0
    while True:
        started = time.perf_counter()
        loss = trial.train_step([batches[step % len(batches)]], step)
        loss_value = loss.item()
        synchronize(trial.device)
        elapsed = time.perf_counter() - started
        trainable.append(trial.strategy.trainable_count())
        if step < shape.warmup_steps:
            warmup.append(elapsed)
        else:
            seconds.append(elapsed)
            if flops is not None:
                step_flops.append(flops.step(tokens))
        step += 1
        timed = len(seconds)
        if timed >= shape.max_steps or (timed >= shape.min_steps and time.perf_counter() >= deadline):
            break
    return {"seconds": seconds, "warmup_seconds": warmup, "flops": step_flops, "trainable": trainable,
            "last_loss": loss_value, "steps": step}


def memory_figures(sampler, device: str) -> dict[str, Any]:
    """NVML's per-process peak (RSS on a CPU) beside torch's allocator peaks, and how far
    NVML is from the reserved peak (the CUDA context and non-PyTorch allocations)."""
    out = sampler.result()
    row = {"nvml_peak_mib": out["peak_memory_mb"], "memory_source": out["memory_source"],
           "torch_max_allocated_mib": out.get("torch_peak_allocated_mb"),
           "torch_max_reserved_mib": None, "nvml_over_reserved": None}
    if device.startswith("cuda"):
        import torch

        reserved = torch.cuda.max_memory_reserved() / MIB
        row["torch_max_reserved_mib"] = round(reserved, 1)
        if reserved:
            row["nvml_over_reserved"] = round(out["peak_memory_mb"] / reserved - 1, 4)
    return row


def measure_strategy(name: str, options: dict, shape: Shape, precision: str, device: str,
                     deadline: float, peak_tflops: float, strategy_name: str | None = None) -> dict:
    """One strategy's row: build (on the device) and train for its slot, with memory sampled
    throughout."""
    from ..trial.build import build_trial
    from ..trial.memory import PeakMemorySampler
    from strategies.blocks import split_model

    config = trial_config(shape.model, strategy_name or name, options, shape, precision, device)
    with PeakMemorySampler(device) as sampler:
        started = time.perf_counter()
        trial = build_trial(config, num_labels=NUM_LABELS, with_data=False)
        model_config = trial.model.config
        batches = random_batches(8, shape.batch_size, shape.seq_len, model_config.vocab_size,
                                 model_config.pad_token_id, seed=0)
        probes = random_batches(4, shape.batch_size, shape.seq_len, model_config.vocab_size,
                                model_config.pad_token_id, seed=1)
        trial.attach_probe_batches(itertools.cycle(probes))  # IST's probe forwards
        build_s = time.perf_counter() - started
        flops = StepFlops(trial.model, split_model(trial.model))
        run = train_for_slot(trial, shape, deadline, batches, flops)
    step_s = statistics.median(run["seconds"])
    mean_flops = statistics.fmean(run["flops"])
    row = {"strategy": name, "steps": run["steps"], "timed_steps": len(run["seconds"]),
           "build_s": round(build_s, 3), "warmup_s": round(sum(run["warmup_seconds"]), 4),
           "step_ms": round(1000 * step_s, 2),
           "steps_per_s": round(1 / step_s, 2),
           "trainable_share": round(statistics.fmean(run["trainable"]) / trial.total_params, 6),
           "total_params": trial.total_params,
           "model_flop_per_step": float(f"{mean_flops:.4g}"),
           # Over all timed steps: a layer-wise step's FLOPs vary with its blocks, and so does its time.
           "mfu": float(f"{sum(run['flops']) / sum(run['seconds']) / (peak_tflops * 1e12):.4g}"),
           "last_loss": round(run["last_loss"], 4), "precision": trial.precision}
    row.update(memory_figures(sampler, device))
    return row


def guarded(name: str, measure, *args, **kwargs) -> dict:
    """A strategy's row, or its error as a row (an OOM is a finding); the GPU memory it held
    is given back either way, outside the except block so its traceback holds nothing."""
    from ..trial.memory import release_accelerator_memory

    try:
        row = measure(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - every failure is reported, the run goes on
        row = {"strategy": name, "error": " ".join(f"{type(error).__name__}: {error}".split())[:300]}
    release_accelerator_memory()
    return row


def full_ft_estimate(model: str, shape: Shape) -> dict[str, float]:
    """GiB that full fine-tuning needs under bf16 autocast, from the parameter count on the
    meta device: fp32 weights, gradients and AdamW's two states (16 bytes a parameter), the
    bf16 copies autocast keeps of the linear weights for backward (2 bytes), and activations
    (about 20·hidden + 8·intermediate bytes per token and block: bf16 saved tensors of
    attention and MLP, fp32 residuals; rough)."""
    from ..trial import models
    from torch import nn

    net, _ = models.load_model(model, NUM_LABELS, init_device="meta")
    params = sum(p.numel() for p in net.parameters())
    linear = sum(m.weight.numel() for m in net.modules() if isinstance(m, nn.Linear))
    c = net.config
    activations = (shape.batch_size * shape.seq_len * c.num_hidden_layers
                   * (20 * c.hidden_size + 8 * c.intermediate_size))
    parts = {"weights": 4 * params, "gradients": 4 * params, "adamw_states": 8 * params,
             "bf16_weight_copies": 2 * linear, "activations": activations}
    out = {key: round(value / GIB, 1) for key, value in parts.items()}
    out["total"] = round(sum(parts.values()) / GIB, 1)
    out["params_billions"] = round(params / 1e9, 3)
    return out


def full_ft_skip_reason(estimate: dict[str, float], limit_gib: float) -> str:
    return (f"needs about {estimate['total']} GiB (weights {estimate['weights']}, gradients "
            f"{estimate['gradients']}, AdamW {estimate['adamw_states']}, bf16 copies "
            f"{estimate['bf16_weight_copies']}, activations ~{estimate['activations']}) > "
            f"{limit_gib:g} GiB")


def part_rows(part: str, entries: list[tuple[str, str, dict]], shape: Shape, args,
              clock: Clock) -> list[dict]:
    rows = []
    for index, (name, strategy, options) in enumerate(entries):
        if clock.elapsed() >= clock.budget_s:
            rows.append({"strategy": name, "skipped": f"the run's budget of {args.budget_s:.0f} s is spent"})
            continue
        deadline = clock.slot_deadline(part, len(entries) - index)
        row = guarded(name, measure_strategy, name, options, shape, args.precision, args.device,
                      deadline, args.peak_tflops, strategy_name=strategy)
        rows.append(row)
        print(f"  [{part}] {name}: " + (f"{row['step_ms']} ms/step, {row['steps']} steps, NVML "
                                        f"{row['nvml_peak_mib']} MiB, MFU {row['mfu']:.2%}"
                                        if "step_ms" in row else f"FAILED: {row['error']}"),
              flush=True)
    return rows


def deep_suite_entries() -> list[tuple[str, str, dict]]:
    """(entry, strategy, options) of the revisions-deep suite, as its YAML names them."""
    import yaml

    suite = yaml.safe_load(DEEP_SUITE.read_text())
    return [(entry, spec.get("strategy", entry) if spec else entry, (spec or {}).get("options", {}))
            for entry, spec in suite["strategies"].items()]


def run_1b(args, clock: Clock) -> dict:
    from strategies import STRATEGIES

    shape = SIZES[args.size]["1b"]
    names = sorted(args.strategies or STRATEGIES.names(), key=lambda n: n in SLOW_FIRST_STEP)
    return {"shape": dataclasses.asdict(shape),
            "rows": part_rows("1b", [(n, n, {}) for n in names], shape, args, clock)}


def run_8b(args, clock: Clock) -> dict:
    shape = SIZES[args.size]["8b"]
    entries = [(name, name, options) for name, options in EIGHT_B_STRATEGIES.items()]
    estimate = full_ft_estimate(shape.model, shape)
    fits = estimate["total"] <= args.full_ft_limit_gib
    if fits:
        entries.append(("full-ft", "full-ft", {}))
    rows = part_rows("8b", entries, shape, args, clock)
    if not fits:
        rows.append({"strategy": "full-ft", "skipped": full_ft_skip_reason(estimate, args.full_ft_limit_gib)})
    return {"shape": dataclasses.asdict(shape), "full_ft_estimate_gib": estimate, "rows": rows}


def run_bookkeeping(args, clock: Clock) -> dict:
    """IR-Tuning with this suite's tracker, with the reference-style tracker, and
    random-layers replaying its blocks (no scoring): rounds alternate the variants."""
    from strategies.ir_tuning import IRTuning, IRTuningConfig

    from ..trial.build import build_trial
    from ..trial.memory import release_accelerator_memory
    from .perf.bookkeeping import ReferenceTrackerIRTuning, ReplayedLayers, timed_bookkeeping

    shape = SIZES[args.size]["bookkeeping"]
    rounds = 2 if args.size == "full" else 1
    variants = ("ir-tuning", "random-layers (same blocks)", "ir-tuning, reference tracker")
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    direct = {v: 0.0 for v in variants}
    timed_steps = {v: 0 for v in variants}
    trace: list[list[int]] | None = None
    reference_trace = None
    blocks = hooked = 0
    for round_index in range(rounds):
        for variant in variants:
            if clock.elapsed() >= clock.budget_s and seconds[variant]:
                continue
            if variant == "ir-tuning":
                strategy = IRTuning(IRTuningConfig(), seed=0)
            elif variant == "random-layers (same blocks)":
                # Repeated: this run's slot may hold more steps than IR-Tuning's did.
                strategy = ReplayedLayers(trace * (shape.warmup_steps + shape.max_steps))
            else:
                strategy = ReferenceTrackerIRTuning(IRTuningConfig(), seed=0)
            spent = timed_bookkeeping(strategy) if variant != "random-layers (same blocks)" else None
            config = trial_config(shape.model, strategy.name, {}, shape, args.precision, args.device)
            trial = build_trial(config, num_labels=NUM_LABELS, with_data=False, strategy=strategy)
            c = trial.model.config
            batches = random_batches(shape.max_steps + shape.warmup_steps, shape.batch_size,
                                     shape.seq_len, c.vocab_size, c.pad_token_id, seed=0)
            slot = clock.slot_deadline("bookkeeping", (rounds - round_index) * len(variants))
            run = train_for_slot(trial, shape, slot, batches)
            seconds[variant].append(statistics.median(run["seconds"]))
            timed_steps[variant] += len(run["seconds"])
            if spent is not None:
                extra = getattr(strategy, "hook_seconds", 0.0)
                direct[variant] += (spent["seconds"] + extra) / run["steps"] / rounds
            if variant == "ir-tuning":
                trace = trace or strategy.selection_trace
                blocks = strategy.num_blocks
            if variant == "ir-tuning, reference tracker":
                reference_trace = strategy.selection_trace
                hooked = sum(len(params) for params in strategy.block_params)
            del trial, strategy
            release_accelerator_memory()
    per_step = {v: statistics.median(s) for v, s in seconds.items()}
    base = per_step["random-layers (same blocks)"]
    compared = min(len(trace), len(reference_trace))
    return {"shape": dataclasses.asdict(shape), "rounds": rounds, "timed_steps": timed_steps,
            "per_step_ms": {v: round(1000 * s, 3) for v, s in per_step.items()},
            "over_random": {v: round(s / base - 1, 4) for v, s in per_step.items()},
            "bookkeeping_ms_per_step": {v: round(1000 * s, 3) for v, s in direct.items()
                                        if v != "random-layers (same blocks)"},
            "blocks": blocks, "hooked_params": hooked,
            "mean_selected": round(statistics.fmean(len(s) for s in trace), 2),
            "same_selection_as_reference": trace[:compared] == reference_trace[:compared]}


def run_smollm(args, clock: Clock) -> dict:
    shape = SIZES[args.size]["smollm"]
    if clock.part_deadline("smollm") - time.perf_counter() < args.smollm_min_s:
        return {"shape": dataclasses.asdict(shape), "rows": [],
                "skipped": f"under {args.smollm_min_s:g} s of the budget left"}
    entries = [e for e in deep_suite_entries() if not args.smollm_entries or e[0] in args.smollm_entries]
    rows = part_rows("smollm", entries, shape, args, clock)
    for row in rows:  # the suite's budget is 120 steps of this batch
        if "step_ms" in row:
            row["suite_trial_train_s"] = round(120 * row["step_ms"] / 1000, 1)
    return {"shape": dataclasses.asdict(shape), "suite": DEEP_SUITE.name, "rows": rows}


RUNNERS = {"1b": run_1b, "8b": run_8b, "bookkeeping": run_bookkeeping, "smollm": run_smollm}


def environment(device: str) -> dict[str, Any]:
    import peft
    import torch
    import transformers

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "transformers": transformers.__version__,
           "peft": peft.__version__, "device": "cpu", "cpu_cores": os.cpu_count()}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        env.update(device=props.name, gpu_memory_gib=round(props.total_memory / GIB, 1),
                   multiprocessors=props.multi_processor_count)
        try:
            import pynvml

            pynvml.nvmlInit()
            driver = pynvml.nvmlSystemGetDriverVersion()
            env["driver"] = driver.decode() if isinstance(driver, bytes) else driver
        except Exception as error:  # noqa: BLE001 - the driver line is informative only
            env["driver"] = f"unknown ({type(error).__name__})"
    return env


def cell(value, fmt: str = "{:,.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def strategy_table(rows: list[dict], with_mfu: bool, extra: tuple[str, str] | None = None) -> str:
    headers = ["strategy", "steps/s", "ms/step", "timed steps", "build + warm-up s", "trainable", "NVML peak MiB",
               "torch max allocated MiB", "torch max reserved MiB", "NVML vs reserved",
               "memory source"]
    if with_mfu:
        headers[3:3] = ["model TFLOP/step", "MFU"]
    if extra:
        headers.append(extra[1])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        if "step_ms" not in row:
            why = f"FAILED: {row['error']}" if "error" in row else f"skipped: {row['skipped']}"
            lines.append(f"| {row['strategy']} | {why} |" + " |" * (len(headers) - 2))
            continue
        gap = row["nvml_over_reserved"]
        gap_text = "-" if gap is None else f"{gap:+.1%}" + (" (>10%)" if abs(gap) > 0.10 else "")
        cells = [row["strategy"], cell(row["steps_per_s"], "{:,.2f}"), cell(row["step_ms"], "{:,.1f}"),
                 str(row["timed_steps"]), f"{row['build_s']:.1f} + {row['warmup_s']:.1f}",
                 f"{row['trainable_share']:.2%}", cell(row["nvml_peak_mib"]),
                 cell(row["torch_max_allocated_mib"]), cell(row["torch_max_reserved_mib"]), gap_text,
                 row["memory_source"]]
        if with_mfu:
            cells[3:3] = [f"{row['model_flop_per_step'] / 1e12:.3g}", f"{row['mfu']:.2%}"]
        if extra:
            cells.append(cell(row.get(extra[0])))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bookkeeping_table(result: dict) -> str:
    ms, over, direct = result["per_step_ms"], result["over_random"], result["bookkeeping_ms_per_step"]
    lines = ["| variant | ms/step (median) | over random-layers | scoring + split timed directly (ms/step) |",
             "|---|---:|---:|---:|"]
    for variant in ms:
        lines.append(f"| {variant} | {ms[variant]:,.2f} | {over[variant]:+.1%} | "
                     f"{cell(direct.get(variant), '{:,.3f}')} |")
    lines.append(f"\n{result['mean_selected']} of {result['blocks']} blocks trained per step; the "
                 f"reference tracker hooks {result['hooked_params']} parameters (one .item() each "
                 f"per backward); same blocks as the reference: "
                 f"{'yes' if result['same_selection_as_reference'] else 'no'}; "
                 f"{result['rounds']} round(s), timed steps {result['timed_steps']}")
    return "\n".join(lines)


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# GPU proof ({report['size']})", "",
             "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), "",
             f"Precision {report['precision']}; budget {report['budget_s']:g} s, took "
             f"{report['total_s']:g} s; peak for MFU {report['peak_tflops']:g} TFLOP/s.", ""]
    parts = report["parts"]
    titles = {"8b": "Llama-3.1-8B's architecture, random weights, LoRA r 32 on q/k/v/up/down",
              "1b": "Every strategy on the ~1B random Llama",
              "bookkeeping": "IR-Tuning's bookkeeping against the reference-style tracker",
              "smollm": "The revisions-deep suite's strategies on SmolLM2-135M's architecture"}
    for part, result in parts.items():
        shape = result.get("shape", {})
        lines += [f"## {part}: {titles[part]}", "",
                  f"{shape.get('model')}, batch {shape.get('batch_size')} x {shape.get('seq_len')} tokens", ""]
        if "error" in result:
            lines += [f"FAILED: {result['error']}", ""]
        elif part == "bookkeeping":
            lines += [bookkeeping_table(result), ""]
        elif result.get("skipped"):
            lines += [f"skipped: {result['skipped']}", ""]
        else:
            extra = ("suite_trial_train_s", "120-step trial, train s") if part == "smollm" else None
            lines += [strategy_table(result["rows"], with_mfu=part == "8b", extra=extra), ""]
            if part == "8b":
                est = result["full_ft_estimate_gib"]
                lines += [f"full-ft estimate: {est['total']} GiB for {est['params_billions']}B "
                          f"parameters ({', '.join(f'{k} {v}' for k, v in est.items() if k not in ('total', 'params_billions'))}).", ""]
    lines += ["MFU: " + FLOP_FORMULA, "",
              "NVML vs reserved: NVML's per-process peak over torch's max reserved, minus one "
              "(the CUDA context, cuBLAS workspaces and anything outside torch's caching "
              "allocator); (>10%) marks a gap above 10%. On a CPU the NVML column is the peak RSS."]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmark.tools.gpu_proof",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full",
                        help="full: the 1B and 8B models on one GPU; tiny: tiny-llama, the same path on a CPU")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for gpu_proof.json and gpu_proof.md (default: $OUT, else results/gpu)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--strategies", default=None,
                        help="the 1b part's strategies, comma-separated (default: every one)")
    parser.add_argument("--smollm-entries", default=None,
                        help="the smollm part's suite entries, comma-separated (default: every one)")
    parser.add_argument("--budget-s", type=float, default=390.0,
                        help="seconds for all parts together (the device call has 8 minutes)")
    parser.add_argument("--peak-tflops", type=float, default=H200_BF16_TFLOPS)
    parser.add_argument("--full-ft-limit-gib", type=float, default=130.0,
                        help="run full-ft at 8B only if its estimate is under this")
    parser.add_argument("--smollm-min-s", type=float, default=30.0,
                        help="skip the smollm part with less of the budget left")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not parts or set(parts) - set(PARTS):
        print(f"error: --parts takes {', '.join(PARTS)}", file=sys.stderr)
        return 2
    if args.strategies:
        from strategies import STRATEGIES

        args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
        unknown = sorted(set(args.strategies) - set(STRATEGIES.names()))
        if unknown:
            print(f"error: unknown strategy {unknown[0]}", file=sys.stderr)
            return 2
    if args.smollm_entries:
        args.smollm_entries = [s.strip() for s in args.smollm_entries.split(",") if s.strip()]
        unknown = sorted(set(args.smollm_entries) - {entry for entry, _, _ in deep_suite_entries()})
        if unknown:
            print(f"error: {DEEP_SUITE.name} has no entry {unknown[0]}", file=sys.stderr)
            return 2
    import torch

    if args.size == "full" and not torch.cuda.is_available():
        print("error: no GPU: torch sees no CUDA device, and the full proof needs one "
              "(--size tiny runs the same path on a CPU)", file=sys.stderr)
        return 2
    args.device = "cuda" if args.size == "full" else "cpu"
    args.precision = "bf16" if args.size == "full" else "fp32"
    out = args.out or Path(os.environ.get("OUT") or "results/gpu")
    out.mkdir(parents=True, exist_ok=True)
    clock = Clock(args.budget_s)
    env = environment(args.device)
    print(f"gpu_proof {args.size}: {', '.join(parts)} on {env['device']}, budget {args.budget_s:g} s", flush=True)
    report = {"size": args.size, "precision": args.precision, "budget_s": args.budget_s,
              "peak_tflops": args.peak_tflops, "environment": env, "parts": {}}
    for part in parts:
        try:
            report["parts"][part] = RUNNERS[part](args, clock)
        except Exception as error:  # noqa: BLE001 - a broken part leaves the others standing
            report["parts"][part] = {"error": " ".join(f"{type(error).__name__}: {error}".split())[:300]}
        report["total_s"] = round(clock.elapsed(), 1)
        # Written after every part: a run cut short still leaves what it measured.
        (out / "gpu_proof.json").write_text(json.dumps(report, indent=1))
        (out / "gpu_proof.md").write_text(markdown(report))
    print()
    print(markdown(report))
    print(f"written to {out / 'gpu_proof.json'} and {out / 'gpu_proof.md'}")
    failed = [p for p, r in report["parts"].items() if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
