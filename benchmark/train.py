"""One training run (a trial): load task, model and strategy, train, pick the best dev
step, evaluate test there. The same loop serves every strategy."""

from __future__ import annotations

import dataclasses
import math
import platform
import time
from typing import Any, Callable

from .distributed import DEEPSPEED_CHOICES
from .errors import UserError
from .metrics import DEFAULT_CONVERGE_TOLERANCE, classification_metrics, steps_to_converge

EvalCallback = Callable[[int, dict], None]


class TrialFailed(RuntimeError):
    """A trial that cannot go on (NaN loss, ...): recorded as failed, never as a result."""


@dataclasses.dataclass
class TrainConfig:
    task: str = "iterater"
    strategy: str = "ir-tuning"
    strategy_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    model: str = "minilm"
    data_dir: str | None = None
    seed: int = 0
    max_steps: int = 300
    epochs: float | None = None  # when set, overrides max_steps: epochs over the train split
    batch_size: int = 16
    grad_accum: int = 1
    lr: float | None = None  # None: the strategy's default
    warmup_steps: int | None = None  # None: 10% of max_steps
    weight_decay: float = 0.0  # the reference's setting
    max_grad_norm: float = 1.0
    max_length: int = 128  # the reference pads to 256; 128 keeps CPU runs affordable (p90 = 143 tokens on IteraTeR)
    input_format: str | None = None  # None: the model's default (pair / instruction)
    eval_every: int = 50
    eval_batch_size: int = 64
    train_limit: int | None = None  # rows to use (deterministic random slices), None = all
    eval_limit: int | None = None  # dev rows
    test_limit: int | None = None
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    device: str = "auto"
    converge_tolerance: float = DEFAULT_CONVERGE_TOLERANCE
    deepspeed: str = "none"  # none | zero2 | zero3 (cluster/deepspeed/zero{2,3}.json)

    def __post_init__(self):
        if self.max_steps < 1 or self.batch_size < 1 or self.grad_accum < 1 or self.eval_every < 1:
            raise UserError("max_steps, batch_size, grad_accum and eval_every must be at least 1")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise UserError(f"precision must be auto, fp32, bf16 or fp16, not {self.precision!r}")
        if self.deepspeed not in DEEPSPEED_CHOICES:
            raise UserError(f"deepspeed must be none, zero2 or zero3, not {self.deepspeed!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown training option {unknown[0]!r}; known: {', '.join(sorted(known))}")
        return cls(**values)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device} asked for, but torch sees no GPU")
    return device


def resolve_precision(precision: str, device: str):
    """(autocast dtype or None, use a GradScaler)."""
    import torch

    if precision == "auto":
        if device.startswith("cuda"):
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return precision, dtype, precision == "fp16"


def run_trial(config: TrainConfig, on_eval: EvalCallback | None = None) -> dict[str, Any]:
    """Train and evaluate one configuration; returns the result record (JSON-ready)."""
    import torch
    import transformers

    import tasks
    from strategies import get_strategy

    from . import data, models
    from .distributed import make_backend
    from .memory import PeakMemorySampler, combine_worker_peaks

    started = time.time()
    transformers.set_seed(config.seed)
    device = resolve_device(config.device)
    precision, autocast_dtype, use_scaler = resolve_precision(config.precision, device)
    backend = make_backend(config.deepspeed, device, precision)
    backend.check_batch(config.batch_size)
    if backend.manages_precision:
        autocast_dtype, use_scaler = None, False
    input_format = config.input_format or models.default_input_format(config.model)

    task = tasks.get_task(config.task)
    raw = task.load(config.data_dir)
    strategy = get_strategy(config.strategy, config.strategy_options, seed=config.seed)
    model, tokenizer = models.load_model(config.model, len(task.label_names), config.seed)
    encoded = data.tokenize_task(task, raw, tokenizer, input_format, config.max_length)
    train_set = data.subsample(encoded["train"], config.train_limit, config.seed)
    dev_set = data.subsample(encoded["validation"], config.eval_limit)
    test_set = data.subsample(encoded["test"], config.test_limit)

    if config.epochs:
        per_epoch = math.ceil(len(train_set) / (config.batch_size * config.grad_accum))
        config = dataclasses.replace(config, max_steps=max(1, math.ceil(config.epochs * per_epoch)))

    model.to(device)
    model = strategy.prepare(model)
    total_params = sum(p.numel() for p in model.parameters())
    lr = config.lr if config.lr is not None else strategy.default_lr
    warmup = config.warmup_steps if config.warmup_steps is not None else max(1, config.max_steps // 10)
    model, optimizer, scheduler = setup_optimization(model, strategy, backend, config, lr, warmup)
    scaler = torch.amp.GradScaler(device.split(":")[0]) if use_scaler else None
    trainable = strategy.trainable_params()

    train_loader = data.make_loader(train_set, tokenizer, config.batch_size, shuffle=True,
                                    seed=config.seed)
    batches = _endless(train_loader)
    evaluate = lambda ds, keep_predictions=False: _evaluate(
        model, ds, tokenizer, config.eval_batch_size, device, autocast_dtype, task.label_names,
        keep_predictions)

    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"macro_f1": -1.0}
    best_weights = None
    trainable_counts: list[int] = []
    samples = 0
    train_seconds = 0.0
    loss_sum = torch.zeros((), device=device)
    loss_steps = 0

    with PeakMemorySampler(device) as memory:
        for step in range(config.max_steps):
            step_started = time.perf_counter()
            model.train()
            micro_batches = [next(batches) for _ in range(config.grad_accum)]
            loss_sum += optimizer_step(model, strategy, optimizer, micro_batches, step,
                                       device=device, autocast_dtype=autocast_dtype,
                                       scaler=scaler, max_grad_norm=config.max_grad_norm,
                                       trainable=trainable, backend=backend)
            scheduler.step()
            samples += sum(b["labels"].shape[0] for b in micro_batches)
            trainable_counts.append(strategy.trainable_count())
            loss_steps += 1
            train_seconds += time.perf_counter() - step_started

            if (step + 1) % config.eval_every == 0 or step + 1 == config.max_steps:
                train_loss = backend.mean(loss_sum / loss_steps).item()
                if not math.isfinite(train_loss):
                    raise TrialFailed(f"training diverged: loss is {train_loss} at step {step + 1}")
                loss_sum.zero_()
                loss_steps = 0
                dev = evaluate(dev_set)
                history.append({"step": step + 1, "train_loss": train_loss,
                                "dev_macro_f1": dev["macro_f1"], "dev_accuracy": dev["accuracy"]})
                if dev["macro_f1"] > best["macro_f1"]:
                    best = {**dev, "step": step + 1}
                    best_weights = backend.snapshot(trainable)
                if on_eval:
                    on_eval(step + 1, {"dev_macro_f1": dev["macro_f1"],
                                       "dev_accuracy": dev["accuracy"], "train_loss": train_loss})

        backend.restore(trainable, best_weights)  # test only at the best dev step
        test = evaluate(test_set, keep_predictions=True)
    test_predictions = test.pop("predictions")  # for paired significance tests
    # Every worker sampled its own processes; the trial's figure combines them.
    peak = combine_worker_peaks(backend.gather(memory.result()))

    converge_step = steps_to_converge([(h["step"], h["dev_macro_f1"]) for h in history],
                                      config.converge_tolerance)
    return {
        "task": task.name,
        "label_names": list(task.label_names),
        "strategy": strategy.name,
        "strategy_options": strategy.describe(),
        "model": config.model,
        "seed": config.seed,
        "config": {**dataclasses.asdict(config), "lr": lr, "warmup_steps": warmup,
                   "input_format": input_format, "precision": precision, "device": device},
        "best_step": best["step"],
        "steps_to_converge": converge_step,
        "dev": {k: v for k, v in best.items() if k != "step"},
        "test": test,
        "test_predictions": test_predictions,
        "history": history,
        **peak,
        "wall_time_s": round(time.time() - started, 2),
        "train_time_s": round(train_seconds, 2),
        "train_samples_per_s": round(samples / train_seconds, 2) if train_seconds else None,
        "total_params": total_params,
        "trainable_params_mean": round(sum(trainable_counts) / len(trainable_counts)),
        "trainable_params_max": max(trainable_counts),
        "trainable_share": round(sum(trainable_counts) / len(trainable_counts) / total_params, 6),
        "selection_trace": _compact_trace(strategy.selection_trace, getattr(strategy, "num_blocks", 0)),
        "num_blocks": strategy.parts.num_blocks,
        "sizes": {"train": len(train_set), "validation": len(dev_set), "test": len(test_set)},
        "environment": {**_environment(device), **backend.describe()},
    }


def setup_optimization(model, strategy, backend, config: TrainConfig, lr: float, warmup: int):
    """(model to call, optimizer to step, scheduler): AdamW over the strategy's parameter
    groups (one per block), built once; the scheduler drives the groups' learning rates
    and the backend (DeepSpeed) may wrap both."""
    import transformers

    from strategies.optimizer import BlockwiseAdamW

    optimizer = BlockwiseAdamW(strategy.param_groups(), lr=lr, weight_decay=config.weight_decay)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, warmup, config.max_steps)
    strategy.attach(optimizer)
    model, step_optimizer = backend.wrap(model, optimizer, strategy, config)
    strategy.read_grad = backend.grad
    return model, step_optimizer, scheduler


def optimizer_step(model, strategy, optimizer, micro_batches, step: int, *, device: str = "cpu",
                   autocast_dtype=None, scaler=None, max_grad_norm: float | None = 1.0,
                   trainable=None, backend=None):
    """One optimizer step over the micro-batches (gradient accumulation); each micro-batch
    is a global batch of which this worker takes its share. Returns this worker's mean
    loss of the step as a detached device tensor (no host sync here)."""
    import torch

    from .distributed import LocalBackend

    backend = backend or LocalBackend()
    trainable = trainable if trainable is not None else strategy.trainable_params()
    strategy.before_step(step)
    step_loss = torch.zeros((), device=device)
    for i, batch in enumerate(micro_batches):
        batch = {k: v.to(device) for k, v in backend.shard(batch).items()}
        with torch.autocast(device.split(":")[0], dtype=autocast_dtype,
                            enabled=autocast_dtype is not None):
            loss = model(**batch).loss / len(micro_batches)
        backend.backward(loss, scaler)
        backend.end_micro_batch(last=i == len(micro_batches) - 1)
        step_loss += loss.detach().float()
    backend.reduce_gradients(trainable)
    if scaler:
        scaler.unscale_(optimizer)  # the scores read unscaled gradients
    strategy.after_backward(step)  # gradients before clipping, as the reference
    backend.apply(optimizer, trainable, max_grad_norm, scaler)
    return step_loss


def _endless(loader):
    while True:  # epochs roll over; each pass reshuffles
        yield from loader


def _evaluate(model, dataset, tokenizer, batch_size, device, autocast_dtype, label_names,
              keep_predictions=False):
    import numpy as np
    import torch

    from .data import make_loader

    model.eval()
    probs, labels = [], []
    with torch.no_grad():
        for batch in make_loader(dataset, tokenizer, batch_size, shuffle=False):
            batch = {k: v.to(device) for k, v in batch.items()}
            gold = batch.pop("labels")
            with torch.autocast(device.split(":")[0], dtype=autocast_dtype,
                                enabled=autocast_dtype is not None):
                logits = model(**batch).logits
            probs.append(torch.softmax(logits.float(), dim=-1).cpu())
            labels.append(gold.cpu())
    probs = torch.cat(probs)
    if not torch.isfinite(probs).all():
        raise TrialFailed("training diverged: the model's outputs are NaN or infinite")
    labels = torch.cat(labels).numpy()
    metrics = classification_metrics(labels, probs.numpy(), label_names)
    if keep_predictions:  # in dataset order, so runs of one task pair up example by example
        metrics["predictions"] = {"labels": labels.tolist(),
                                  "predicted": probs.argmax(dim=1).tolist()}
    return metrics


def _compact_trace(trace: list[list[int]], num_blocks: int) -> list[str]:
    """One string per step, a character per block: '1' trained, '0' frozen."""
    return ["".join("1" if i in set(chosen) else "0" for i in range(num_blocks))
            for chosen in trace]


def _environment(device: str) -> dict[str, Any]:
    import sys

    import torch

    env = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
           "machine": platform.machine(), "cpu_count": __import__("os").cpu_count()}
    if device.startswith("cuda"):
        env["gpu_name"] = torch.cuda.get_device_name()
        env["gpu_count"] = torch.cuda.device_count()
    ray = sys.modules.get("ray")  # only inside a Ray worker; never start Ray here
    if ray is not None and ray.is_initialized():
        env["ray_node_id"] = ray.get_runtime_context().get_node_id()
    return env
