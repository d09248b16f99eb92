"""Everything a trial trains with, built in one place: task data, model, strategy,
optimizer, schedule and backend. `run_trial`, the tools (parity, GPU check, perf
scripts) and the tests all start from `build_trial`."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .config import TrainConfig, resolve_device, resolve_precision


@dataclasses.dataclass
class Trial:
    config: TrainConfig  # max_steps resolved from epochs
    model: Any  # what to call (a DeepSpeed engine under ZeRO)
    tokenizer: Any
    strategy: Any
    optimizer: Any  # what to step (the engine under ZeRO)
    scheduler: Any
    backend: Any
    device: str
    precision: str
    autocast_dtype: Any
    scaler: Any
    lr: float
    warmup: int
    input_format: str
    total_params: int
    task: Any = None  # None when built without data
    splits: dict[str, Any] | None = None  # tokenized train / validation / test
    class_weights: Any = None  # per-class loss weights (loss balanced-ce), on the device
    kernels: dict[str, Any] | None = None  # the kernel choices applied (kernels.apply_kernels)

    def attach_probe_batches(self, batches) -> None:
        """Give the strategy a source of probe batches (an endless iterator) and a
        gradient-free loss; `build_trial` does it from the train split."""
        self.strategy.attach_runtime(ProbeRuntime(self, batches))

    def train_step(self, micro_batches: list[dict], step: int):
        """One optimizer step and the schedule's; returns this worker's mean loss (on device)."""
        from .step import optimizer_step

        loss = optimizer_step(self.model, self.strategy, self.optimizer, micro_batches, step,
                              device=self.device, autocast_dtype=self.autocast_dtype,
                              scaler=self.scaler, max_grad_norm=self.config.max_grad_norm,
                              backend=self.backend, class_weights=self.class_weights)
        self.scheduler.step()
        return loss


class ProbeRuntime:
    """What a strategy may ask of the trial besides its hooks: the next probe batch, and
    the model's loss on a batch without gradients (under the trial's precision; with
    several workers, each takes its share and the mean is over all of them)."""

    def __init__(self, trial: Trial, batches):
        self.trial = trial
        self.batches = batches

    def probe_batch(self) -> dict:
        return next(self.batches)

    def loss_without_grad(self, batch: dict) -> float:
        import torch

        from .step import batch_loss

        t = self.trial
        was_training = t.model.training
        t.model.eval()
        try:
            with torch.no_grad(), torch.autocast(t.device.split(":")[0], dtype=t.autocast_dtype,
                                                 enabled=t.autocast_dtype is not None):
                shard = {k: v.to(t.device) for k, v in t.backend.shard(batch).items()}
                loss = batch_loss(t.model, shard, t.class_weights).detach().float()
        finally:
            t.model.train(was_training)
        return t.backend.mean(loss).item()


def endless(loader):
    while True:  # epochs roll over; each pass reshuffles
        yield from loader


def build_trial(config: TrainConfig, *, num_labels: int | None = None,
                with_data: bool = True, strategy: Any = None) -> Trial:
    """Set up one trial. Without data (`with_data=False`), `num_labels` sizes the head and
    the caller brings its own batches; `strategy` (an instance) replaces the one the config
    names, for scripts that measure a variant."""
    import torch
    import transformers

    import tasks
    from strategies import get_strategy

    from . import data, models
    from .backends import make_backend
    from .kernels import apply_kernels

    transformers.set_seed(config.seed)
    device = resolve_device(config.device)
    precision, autocast_dtype, use_scaler = resolve_precision(config.precision, device,
                                                              config.deepspeed)
    backend = make_backend(config.deepspeed, device, precision)
    backend.check_batch(config.batch_size)
    if backend.manages_precision:
        autocast_dtype, use_scaler = None, False
    input_format = config.input_format or models.default_input_format(config.model)

    task = raw = None
    if with_data:
        task = tasks.get_task(config.task)
        raw = task.load(config.data_dir)
        num_labels = len(task.label_names)
    if num_labels is None:
        raise ValueError("build_trial without data needs num_labels")
    if strategy is None:
        strategy = get_strategy(config.strategy, config.strategy_options, seed=config.seed)
    model, tokenizer = models.load_model(config.model, num_labels, config.seed, init_device=device)
    splits = None
    if with_data:
        encoded = data.tokenize_task(task, raw, tokenizer, input_format, config.max_length)
        splits = {"train": data.subsample(encoded["train"], config.train_limit, config.seed),
                  "validation": data.subsample(encoded["validation"], config.eval_limit),
                  "test": data.subsample(encoded["test"], config.test_limit)}
        if config.curve_every:  # the same rows for every run, seed and strategy
            splits["curve"] = data.subsample(encoded["validation"], config.curve_limit)
        if config.epochs:
            per_epoch = math.ceil(len(splits["train"]) / (config.batch_size * config.grad_accum))
            config = dataclasses.replace(config, max_steps=max(1, math.ceil(config.epochs * per_epoch)))

    model.to(device)
    model = strategy.prepare(model)
    total_params = sum(p.numel() for p in model.parameters())
    lr = config.lr if config.lr is not None else strategy.default_lr
    warmup = config.warmup_steps if config.warmup_steps is not None else max(1, config.max_steps // 10)
    model, optimizer, scheduler = setup_optimization(model, strategy, backend, config, lr, warmup)
    applied = apply_kernels(model, optimizer, attention=config.attention,
                            dropout_masks=config.dropout_masks,
                            frozen_weights=config.frozen_weights, device=device,
                            autocast_dtype=autocast_dtype, lora_input_cast=config.lora_input_cast)
    scaler = torch.amp.GradScaler(device.split(":")[0]) if use_scaler else None
    trial = Trial(config=config, model=model, tokenizer=tokenizer, strategy=strategy,
                  optimizer=optimizer, scheduler=scheduler, backend=backend, device=device,
                  precision=precision, autocast_dtype=autocast_dtype, scaler=scaler, lr=lr,
                  warmup=warmup, input_format=input_format, total_params=total_params,
                  task=task, splits=splits, kernels=applied)
    if config.loss == "balanced-ce":
        if splits is None:
            raise ValueError("loss balanced-ce weighs classes by the train split: build with data")
        trial.class_weights = balanced_class_weights(splits["train"]["labels"], num_labels).to(device)
    if splits is not None:  # probes draw from their own shuffle of the train split
        trial.attach_probe_batches(endless(data.make_loader(
            splits["train"], tokenizer, config.batch_size, shuffle=True, seed=config.seed + 1)))
    return trial


def balanced_class_weights(labels, num_labels: int):
    """scikit-learn's "balanced" weights: n_samples / (n_classes * count of the class)."""
    import torch

    counts = torch.bincount(torch.as_tensor(list(labels)), minlength=num_labels).float()
    return counts.sum() / (num_labels * counts.clamp(min=1))


def setup_optimization(model, strategy, backend, config: TrainConfig, lr: float, warmup: int):
    """(model to call, optimizer to step, scheduler): the strategy's optimizer, else AdamW
    over its parameter groups (one per block), built once; the scheduler drives the groups'
    learning rates and the backend (DeepSpeed) may wrap both."""
    import transformers

    from .optimizer import BlockwiseAdamW

    optimizer = strategy.build_optimizer(lr, config.weight_decay)
    if optimizer is None:
        optimizer = BlockwiseAdamW(strategy.param_groups(), lr=lr, weight_decay=config.weight_decay,
                                   fused=config.adamw == "fused" or None)
    if config.head_lr is not None:  # before the schedule records each group's initial lr
        for group in optimizer.param_groups:
            if group.get("name") == "head":
                group["lr"] = config.head_lr
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, warmup, config.max_steps)
    strategy.attach(optimizer)
    model, step_optimizer = backend.wrap(model, optimizer, strategy, config)
    strategy.read_grad = backend.grad
    return model, step_optimizer, scheduler
