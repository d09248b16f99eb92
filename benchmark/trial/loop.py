"""One training run (a trial): train, pick the best dev step, evaluate test there. The same
loop serves every strategy, one process or many, with or without DeepSpeed."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import Any, Callable

from ..core.errors import TrialFailed
from .build import build_trial, endless
from .config import TrainConfig
from .metrics import classification_metrics, majority_macro_f1, steps_to_converge

EvalCallback = Callable[[int, dict], None]
# (step, total steps, train loss where it was checked at this step else None, step seconds)
StepCallback = Callable[[int, int, "float | None", float], None]
__all__ = ["run_trial", "TrialFailed"]


def run_trial(config: TrainConfig, on_eval: EvalCallback | None = None,
              on_step: StepCallback | None = None,
              on_curve: EvalCallback | None = None) -> dict[str, Any]:
    """Train and evaluate one configuration; returns the result record (JSON-ready).
    `on_curve(step, {"curve_macro_f1", "curve_accuracy", "max_steps"})` after each
    learning-curve point (a suite's early-stopping scheduler reads them)."""
    import torch

    from . import data
    from .memory import PeakMemorySampler, TensorMemory, combine_worker_peaks
    from .result import compact_trace, environment

    started = time.time()
    trial = build_trial(config)
    config, model, strategy, backend = trial.config, trial.model, trial.strategy, trial.backend
    task, tokenizer, device = trial.task, trial.tokenizer, trial.device
    train_set, dev_set, test_set = (trial.splits[s] for s in ("train", "validation", "test"))
    trainable = strategy.trainable_params()

    train_loader = data.make_loader(train_set, tokenizer, config.batch_size, shuffle=True,
                                    seed=config.seed)
    batches = endless(train_loader)
    setup_seconds = time.time() - started  # model, tokens, strategy, optimizer
    # Adapters merged into their base weights while evaluating (not under DeepSpeed, whose
    # ZeRO-3 partitions the weights): one matmul per adapted layer instead of three.
    merge = backend.name == "none"

    def evaluate(ds, keep_predictions=False):
        with merged_adapters(model, enabled=merge):
            return _evaluate(model, ds, tokenizer, config.eval_batch_size, device,
                             trial.autocast_dtype, task.label_names, keep_predictions)

    curve_set = trial.splits.get("curve")
    history: list[dict[str, Any]] = []
    curve: list[dict[str, Any]] = []  # the learning curve on the fixed dev subset
    best: dict[str, Any] = {"macro_f1": -1.0}
    best_weights = None
    trainable_counts: list[int] = []
    samples = 0
    train_seconds = 0.0
    train_cpu_seconds = 0.0
    eval_seconds = 0.0  # dev and test evaluation with the best-weights snapshots
    loss_sum = torch.zeros((), device=device)
    loss_steps = 0

    training_started = time.time()
    tensors = TensorMemory(config.max_steps, enabled=backend.name == "none")  # a few steps
    with PeakMemorySampler(device) as memory:
        for step in range(config.max_steps):
            step_started = time.perf_counter()
            step_cpu_started = time.process_time()
            model.train()
            micro_batches = [next(batches) for _ in range(config.grad_accum)]
            with tensors.track(step, trial.model, trial.optimizer):
                loss_sum += trial.train_step(micro_batches, step)
            samples += sum(b["labels"].shape[0] for b in micro_batches)
            trainable_counts.append(strategy.trainable_count())
            loss_steps += 1
            last = step + 1 == config.max_steps
            checkpoint = (step + 1) % config.eval_every == 0 or last
            evaluate_now = checkpoint and (step + 1 >= config.eval_from or last)
            curve_now = curve_set is not None and ((step + 1) % config.curve_every == 0 or last)
            if checkpoint:  # the loss is checked even where dev is not evaluated yet
                # .item() waits for the device's queued work: it is training time.
                train_loss = backend.mean(loss_sum / loss_steps).item()
                if not math.isfinite(train_loss):
                    raise TrialFailed(f"training diverged: loss is {train_loss} at step {step + 1}")
            train_seconds += time.perf_counter() - step_started - tensors.overhead(step)[0]
            # CPU seconds of this process: unlike wall time, not inflated when other work
            # shares the machine (a one-thread trial's CPU time is its compute time).
            train_cpu_seconds += time.process_time() - step_cpu_started - tensors.overhead(step)[1]
            if on_step:
                on_step(step + 1, config.max_steps, train_loss if checkpoint else None,
                        time.perf_counter() - step_started)

            if evaluate_now or curve_now:
                eval_started = time.perf_counter()
                point = {"step": step + 1, "train_time_s": round(train_seconds, 2),
                         "train_cpu_s": round(train_cpu_seconds, 2),
                         "elapsed_s": round(time.time() - training_started, 2)}
            if evaluate_now:
                loss_sum.zero_()
                loss_steps = 0
                dev = evaluate(dev_set, keep_predictions=curve_now)
                predictions = dev.pop("predictions", None)
                history.append({"step": step + 1, "train_loss": train_loss,
                                "dev_macro_f1": dev["macro_f1"], "dev_accuracy": dev["accuracy"]})
                if dev["macro_f1"] > best["macro_f1"]:
                    best = {**dev, "step": step + 1}
                    best_weights = backend.snapshot(trainable)
                if curve_now:  # the subset's rows out of dev's predictions, when it holds them
                    curve_now = not _add_curve_point(curve, point, predictions, curve_set,
                                                     len(task.label_names))
                eval_seconds += time.perf_counter() - eval_started
                if on_eval:
                    on_eval(step + 1, {"dev_macro_f1": dev["macro_f1"],
                                       "dev_accuracy": dev["accuracy"], "train_loss": train_loss})

            if curve_now:
                subset_started = time.perf_counter()
                subset = evaluate(curve_set)
                curve.append({**point, "macro_f1": subset["macro_f1"],
                              "accuracy": subset["accuracy"]})
                eval_seconds += time.perf_counter() - subset_started
            if on_curve and curve and curve[-1]["step"] == step + 1:
                on_curve(step + 1, {"curve_macro_f1": curve[-1]["macro_f1"],
                                    "curve_accuracy": curve[-1]["accuracy"],
                                    "max_steps": config.max_steps})

        eval_started = time.perf_counter()
        backend.restore(trainable, best_weights)  # test only at the best dev step
        test = evaluate(test_set, keep_predictions=True)
        eval_seconds += time.perf_counter() - eval_started
    test_predictions = test.pop("predictions")  # for paired significance tests
    # Every worker sampled its own processes; the trial's figure combines them.
    peak = combine_worker_peaks(backend.gather(memory.result()))

    converge_step = steps_to_converge([(h["step"], h["dev_macro_f1"]) for h in history],
                                      config.converge_tolerance)
    total_params = trial.total_params
    return {
        "task": task.name,
        "label_names": list(task.label_names),
        "strategy": strategy.name,
        "strategy_options": strategy.describe(),
        "model": config.model,
        "seed": config.seed,
        "config": {**dataclasses.asdict(config), "lr": trial.lr, "warmup_steps": trial.warmup,
                   "input_format": trial.input_format, "precision": trial.precision,
                   "device": device},
        "kernels": trial.kernels,  # attention kernel, dropout masks, frozen weights' dtype
        "best_step": best["step"],
        "steps_to_converge": converge_step,
        "dev": {k: v for k, v in best.items() if k != "step"},
        "test": test,
        "test_predictions": test_predictions,
        "history": history,
        "curve": curve,  # learning curve: dev-subset macro F1 by step and training seconds
        "curve_rows": len(curve_set) if curve_set is not None else 0,
        **peak,
        **tensors.result(),  # live tensor memory by category (MemTracker, a few steps)
        "wall_time_s": round(time.time() - started, 2),
        "train_time_s": round(train_seconds, 2),
        "train_cpu_s": round(train_cpu_seconds, 2),
        "eval_time_s": round(eval_seconds, 2),
        "setup_time_s": round(setup_seconds, 2),
        "train_samples_per_s": round(samples / train_seconds, 2) if train_seconds else None,
        "total_params": total_params,
        "trainable_params_mean": round(sum(trainable_counts) / len(trainable_counts)),
        "trainable_params_max": max(trainable_counts),
        "trainable_share": round(sum(trainable_counts) / len(trainable_counts) / total_params, 6),
        "selection_trace": compact_trace(strategy.selection_trace, getattr(strategy, "num_blocks", 0)),
        "strategy_stats": strategy.stats(),  # e.g. IST's probe forwards and their time
        "majority_test_macro_f1": majority_macro_f1(train_set["labels"], test_set["labels"],
                                                    len(task.label_names)),
        "num_blocks": strategy.parts.num_blocks,
        "sizes": {"train": len(train_set), "validation": len(dev_set), "test": len(test_set)},
        "environment": {**environment(device), **backend.describe()},
    }


def _add_curve_point(curve: list, point: dict, predictions: dict | None, curve_set,
                     num_classes: int) -> bool:
    """Score the curve's rows from a dev evaluation's predictions (keyed by example id);
    False when dev does not hold every row of the curve (the caller evaluates them)."""
    from sklearn.metrics import accuracy_score, f1_score

    from . import data

    ids = curve_set[data.ID_COLUMN]
    if predictions is None or any(i not in predictions for i in ids):
        return False
    labels = [predictions[i]["label"] for i in ids]
    guesses = [predictions[i]["predicted"] for i in ids]
    curve.append({**point, "macro_f1": float(f1_score(labels, guesses, labels=list(range(num_classes)),
                                                      average="macro", zero_division=0)),
                  "accuracy": float(accuracy_score(labels, guesses))})
    return True


@contextlib.contextmanager
def merged_adapters(model, enabled: bool = True):
    """The model's LoRA/DoRA adapters merged into their base weights for the block, then
    the base weights restored exactly, from a copy (unmerging by subtraction would leave
    rounding drift in them after every evaluation)."""
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules()
              if enabled and isinstance(m, BaseTunerLayer) and not m.merged and m.active_adapters]
    if not layers:
        yield
        return
    with torch.no_grad():
        saved = [(layer, layer.get_base_layer().weight.detach().clone()) for layer in layers]
        for layer in layers:
            layer.merge()
    try:
        yield
    finally:
        with torch.no_grad():
            for layer, weight in saved:
                layer.get_base_layer().weight.copy_(weight)
                layer.merged_adapters = []


def _evaluate(model, dataset, tokenizer, batch_size, device, autocast_dtype, label_names,
              keep_predictions=False):
    import torch

    from . import data
    from .data import make_loader

    model.eval()
    probs, labels = [], []
    with torch.inference_mode():
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
    if keep_predictions:  # keyed by example id: runs of one task pair up example by example
        column = dataset[data.ID_COLUMN]
        ids = [column[i] for i in data.evaluation_order(dataset)]
        metrics["predictions"] = {example: {"label": int(label), "predicted": int(guess)}
                                  for example, label, guess in zip(ids, labels.tolist(),
                                                                   probs.argmax(dim=1).tolist())}
    return metrics
