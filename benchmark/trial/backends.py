"""How the gradients of one optimizer step are made, reduced, read and applied.

The training loop (`loop.py`) is the same for one process and for many; it asks a
backend for the parts that differ:

- `LocalBackend`: one process, or several data-parallel workers without DeepSpeed. Each
  worker takes its share of every global batch and gradients are all-reduced by hand. (No
  DDP wrapper: DDP fixes its gradient buckets when it wraps the model, and layer-wise
  strategies change `requires_grad` at every step.)
- `DeepSpeedBackend`: DeepSpeed ZeRO stage 2 or 3. ZeRO keeps flat, partitioned optimizer
  state built once at `deepspeed.initialize` and ignores `requires_grad` flipped later,
  so layer-wise strategies also freeze a block through the optimizer: its parameter
  group is marked frozen and the optimizer skips it (`optimizer.py`), which
  leaves its weights, moments and step count unchanged.

Workers are Ray Train workers (`benchmark/sweep/ray_workers.py`) or a single process; either way
`torch.distributed` is set up before the backend is made.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from ..core.errors import UserError

DEEPSPEED_CONFIG_DIR = Path(__file__).resolve().parents[2] / "cluster" / "deepspeed"
DEEPSPEED_CHOICES = ("none", "zero2", "zero3")


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torch.distributed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_process_group(device: str) -> None:
    """A one-process group for DeepSpeed in a plain `train` run. Its own free port: two
    trials on one machine must not both take DeepSpeed's default 29500."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if device.startswith("cuda") else "gloo",
                               verbose=False)


def check_zero_support(deepspeed: str, strategy) -> None:
    """Strategy settings that ZeRO cannot honour; the CLI and suite loading call this before
    any model loads, so the refusal is immediate."""
    if deepspeed == "none":
        return
    refusal = strategy.zero_refusal(int(deepspeed.removeprefix("zero")))
    if refusal:
        raise UserError(refusal)


def make_backend(deepspeed: str, device: str, precision: str) -> "LocalBackend":
    if deepspeed == "none":
        return LocalBackend()
    ensure_process_group(device)
    return DeepSpeedBackend(deepspeed, precision)


class LocalBackend:
    """Plain PyTorch; gradients all-reduced by hand when there are several workers."""

    name = "none"
    manages_precision = False  # True: the backend casts the model, so no autocast

    def __init__(self):
        self.rank, self.world_size = world()

    # -- set-up -------------------------------------------------------------------------
    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.world_size:
            raise UserError(f"batch_size {batch_size} is the global batch: it must divide "
                            f"evenly over {self.world_size} workers")

    def wrap(self, model, optimizer, strategy, config):
        """(model to call, optimizer to step); the loop keeps the base optimizer for the
        scheduler and the strategy."""
        return model, optimizer

    # -- one step -------------------------------------------------------------------------
    def shard(self, batch: dict) -> dict:
        """This worker's rows of a global batch (every worker draws the same batches)."""
        if self.world_size == 1:
            return batch
        return {k: v[self.rank::self.world_size] for k, v in batch.items()}

    def backward(self, loss, scaler=None) -> None:
        (scaler.scale(loss) if scaler else loss).backward()

    def end_micro_batch(self, last: bool) -> None:
        """Called after each micro-batch's backward."""

    def reduce_gradients(self, params) -> None:
        """Average the gradients over the workers before anyone reads them."""
        if self.world_size == 1:
            return
        import torch
        import torch.distributed as dist

        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def grad(self, param):
        """The full, averaged gradient of a parameter after backward (None if it has none)."""
        return param.grad

    def apply(self, optimizer, params, max_grad_norm, scaler=None) -> None:
        import torch

        if max_grad_norm:  # the loop has unscaled fp16 gradients already
            torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None],
                                           max_grad_norm)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # frozen blocks: None grad, so no update at all

    # -- across workers -------------------------------------------------------------------
    def mean(self, value):
        """The mean of a scalar tensor over the workers."""
        if self.world_size == 1:
            return value
        import torch.distributed as dist

        value = value.clone()
        dist.all_reduce(value)
        return value / self.world_size

    def gather(self, obj: Any) -> list[Any]:
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def snapshot(self, params) -> list:
        return [p.detach().to("cpu", copy=True) for p in params]

    def restore(self, params, saved) -> None:
        import torch

        with torch.no_grad():
            for p, value in zip(params, saved):
                p.copy_(value.to(p.device))

    def describe(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "deepspeed": self.name,
                "rendezvous_port": os.environ.get("MASTER_PORT")}


class DeepSpeedBackend(LocalBackend):
    """DeepSpeed ZeRO-2/3 around the loop's own optimizer (one parameter group per block)."""

    def __init__(self, deepspeed: str, precision: str):
        super().__init__()
        self.name = deepspeed
        self.stage = int(deepspeed.removeprefix("zero"))
        self.precision = precision
        # DeepSpeed casts the model itself and scales fp16 losses: no autocast, no scaler.
        self.manages_precision = precision in ("bf16", "fp16")
        self.engine = None

    def wrap(self, model, optimizer, strategy, config):
        import deepspeed

        check_zero_support(self.name, strategy)
        ds_config = deepspeed_config(self.stage, config, self.world_size, self.precision)
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                                    config=ds_config)
        return self.engine, self.engine

    def backward(self, loss, scaler=None) -> None:
        # The loop already divides the loss by the number of micro-batches.
        self.engine.backward(loss, scale_wrt_gas=False)

    def end_micro_batch(self, last: bool) -> None:
        if not last:  # DeepSpeed counts micro-steps; it applies the update at the boundary
            self.engine.step()

    def reduce_gradients(self, params) -> None:
        """ZeRO reduces (and partitions) gradients itself."""

    def grad(self, param):
        from deepspeed.utils import safe_get_full_grad

        # A collective under ZeRO: every worker asks for the same parameters, in order.
        return safe_get_full_grad(param)

    def apply(self, optimizer, params, max_grad_norm, scaler=None) -> None:
        self.engine.step()  # clipping per the config; zeroes the gradients

    def snapshot(self, params) -> list:
        if self.stage < 3:
            return super().snapshot(params)
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(params)):
            return super().snapshot(params)

    def restore(self, params, saved) -> None:
        if self.stage < 3:
            return super().restore(params, saved)
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(params), modifier_rank=0):
            super().restore(params, saved)


def deepspeed_config(stage: int, config, world_size: int, precision: str) -> dict[str, Any]:
    """The shipped `cluster/deepspeed/zero{stage}.json` with its "auto" values filled from
    the trial's TrainConfig (global batch, accumulation, clipping, precision)."""
    path = DEEPSPEED_CONFIG_DIR / f"zero{stage}.json"
    if not path.is_file():
        raise UserError(f"DeepSpeed config {path} is missing (it ships in the repository)")
    ds = json.loads(path.read_text())
    filled = {
        "train_micro_batch_size_per_gpu": config.batch_size // world_size,
        "gradient_accumulation_steps": config.grad_accum,
        "train_batch_size": config.batch_size * config.grad_accum,
        "gradient_clipping": float(config.max_grad_norm or 0.0),
    }
    for key, value in filled.items():
        if ds.get(key) == "auto":
            ds[key] = value
    for name in ("bf16", "fp16"):
        section = ds.setdefault(name, {})
        if section.get("enabled") == "auto":
            section["enabled"] = precision == name
    return ds
