"""Data-parallel trials: a Ray Train `TorchTrainer` whose workers each run the one training
loop (`trial.loop.run_trial`) on their share of every global batch, with or without DeepSpeed.

Launched from inside a Ray Tune trial (Ray Train V2's way: a Tune function trainable
starts the trainer; `max_concurrent_trials` caps how many run), or on its own from
`python -m benchmark train --workers N`. Ray Train sets up the process group with a free
rendezvous port per trainer, so concurrent DeepSpeed trials never collide on 29500.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

from ..trial.config import TrainConfig
from ..core.errors import TrialFailed
from .ray_cluster import resolve_storage_path
from .suite import WorkerResources


def run_on_workers(config: TrainConfig, resources: WorkerResources, *,
                   storage_path: str | None = None, inside_tune: bool = False) -> dict[str, Any]:
    """Train one trial on `resources.workers` Ray Train workers; returns rank 0's result."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    callbacks = []
    if inside_tune:  # forwards the workers' evaluation reports to the Tune trial
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    use_gpu = resources.gpus_per_worker > 0
    per_worker = {"CPU": resources.cpus_per_worker}
    if use_gpu:
        per_worker["GPU"] = resources.gpus_per_worker
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"config": dataclasses.asdict(config),
                           "threads": max(1, int(resources.cpus_per_worker)),
                           "print_progress": not inside_tune},
        scaling_config=ScalingConfig(num_workers=resources.workers, use_gpu=use_gpu,
                                     resources_per_worker=per_worker),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name=f"{config.task}-{config.strategy}-{uuid.uuid4().hex[:8]}",
                             storage_path=resolve_storage_path(storage_path),
                             callbacks=callbacks,
                             failure_config=FailureConfig(max_failures=0)))
    try:
        result = trainer.fit()
    except Exception as error:  # TrainingFailedError wraps the worker's own exception
        raise TrialFailed(_worker_error(error)) from None
    if result.error:
        raise TrialFailed(_worker_error(result.error))
    with result.checkpoint.as_directory() as folder:
        return json.loads((Path(folder) / "result.json").read_text())


def _worker_loop(loop_config: dict[str, Any]) -> None:
    """What every worker runs: the one training loop, reporting each evaluation."""
    from ..core.quiet import quiet

    quiet()  # the driver's --verbose choice, from the environment
    import ray.train
    import torch

    from ..trial.loop import run_trial
    from ..trial.memory import release_accelerator_memory

    torch.set_num_threads(loop_config["threads"])
    config = TrainConfig.from_dict(loop_config["config"])
    rank = ray.train.get_context().get_world_rank()

    def on_eval(step: int, metrics: dict[str, float]) -> None:
        if rank == 0 and loop_config["print_progress"]:
            print(f"  step {step}: dev macro F1 {metrics['dev_macro_f1']:.4f}, "
                  f"train loss {metrics['train_loss']:.4f}", flush=True)
        ray.train.report({**metrics, "step": step})  # every worker reports, rank 0's count

    try:
        result = run_trial(config, on_eval=on_eval)
        # Ray Train V2 keeps only metrics that come with a checkpoint: rank 0 writes the
        # result into one (it lands in the storage path, beside the trial's other state).
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = None
            if rank == 0:
                (Path(folder) / "result.json").write_text(json.dumps(result))
                checkpoint = ray.train.Checkpoint.from_directory(folder)
            # Tune (when inside a trial) wants its metric in every report.
            ray.train.report({"dev_macro_f1": result["dev"]["macro_f1"]}, checkpoint=checkpoint)
    finally:
        release_accelerator_memory()


def _worker_error(error: BaseException) -> str:
    """The worker's own error line, not Ray's wrapping of it."""
    cause = error
    while getattr(cause, "__cause__", None) is not None:
        cause = cause.__cause__
    text = " ".join(str(cause).split())
    for marker in ("TrialFailed: ", "UserError: "):
        if marker in text:
            text = text.split(marker)[-1]
    return text[:500] or type(error).__name__
