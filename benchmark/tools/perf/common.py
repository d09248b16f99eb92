"""What the perf scripts share: fixed batches, a fresh model per variant, timed steps."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable


def machine() -> str:
    import torch

    gpu = (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU")
    return (f"{platform.machine()} {os.cpu_count()} CPU cores{gpu}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; Python {platform.python_version()}")


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data-dir", default=None, help="corpora (default: $BENCHMARK_DATA_DIR)")
    parser.add_argument("--task", default="iterater")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    return parser


def encoded_task(model_name: str, task_name: str, data_dir: str | None, max_length: int):
    """(task, tokenizer, tokenized splits) through the suite's own cached pipeline."""
    import tasks

    from ...trial import data, models

    task = tasks.get_task(task_name)
    raw = task.load(str(tasks.resolve_data_dir(data_dir)))
    _, tokenizer = models.load_model(model_name, len(task.label_names))
    encoded = data.tokenize_task(task, raw, tokenizer, models.default_input_format(model_name),
                                 max_length)
    return task, tokenizer, encoded


def fixed_batches(encoded, tokenizer, batch_size: int, count: int, seed: int = 0) -> list[dict]:
    """`count` training batches, drawn once, so every variant trains on the same ones."""
    from ...trial import data

    loader = data.make_loader(encoded["train"], tokenizer, batch_size, shuffle=True, seed=seed)
    batches = []
    while len(batches) < count:
        for batch in loader:
            batches.append(batch)
            if len(batches) == count:
                break
    return batches


def prepared(model_name: str, num_labels: int, strategy, device: str, lr: float, steps: int):
    """A fresh, seeded model prepared by `strategy` (an instance, so a script can bring its
    own variant), its optimizer and scheduler: `build_trial` without data."""
    from ...trial.build import build_trial
    from ...trial.config import TrainConfig

    config = TrainConfig(model=model_name, strategy=strategy.name, max_steps=steps, batch_size=1,
                         lr=lr, warmup_steps=1, device=device, precision="fp32")
    trial = build_trial(config, num_labels=num_labels, with_data=False, strategy=strategy)
    return trial.model, trial.optimizer, trial.scheduler


def timed_steps(model, strategy, optimizer, scheduler, batches: list[dict], device: str,
                on_step: Callable[[int], None] | None = None) -> list[float]:
    """Seconds per optimizer step (the device synchronised at each step's end)."""
    import torch

    from ...trial.step import optimizer_step

    trainable = strategy.trainable_params()
    model.train()
    seconds = []
    for step, batch in enumerate(batches):
        started = time.perf_counter()
        loss = optimizer_step(model, strategy, optimizer, [batch], step, device=device,
                              trainable=trainable)
        scheduler.step()
        loss.item()  # the step is done when its loss is on the host
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
        if on_step:
            on_step(step)
    return seconds


def median_after_warmup(seconds: list[float], warmup: int = 2) -> float:
    kept = seconds[warmup:] if len(seconds) > warmup else seconds
    return statistics.median(kept)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def run_main(main: Callable[[list[str] | None], int]) -> None:
    from ...core.errors import UserError

    try:
        sys.exit(main(None))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
