"""The interface between a strategy and the training loop.

The loop calls, in order:
    model = strategy.prepare(model)            # adapters, what may ever train
    optimizer = strategy.build_optimizer(...)  # None: the loop's AdamW over param_groups()
    strategy.attach(optimizer)
    for every optimizer step:
        strategy.before_step(step)             # choose what trains in this step
        ... forward / backward over the micro-batches ...
        strategy.after_backward(step)          # read what it needs from the gradients
        ... clip, optimizer.step(), zero_grad(set_to_none=True) ...
`strategy.selection_trace` holds the blocks trained at each step (layer-wise strategies).

Besides the loop, a strategy tells the tools what they need (`tiny_options`,
`zero_stages`, `zero_refusal`), so a new strategy is one file.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from .blocks import ModelParts


@dataclasses.dataclass
class StrategyConfig:
    """Options every strategy takes; subclasses add their own fields."""

    # Old option name -> current name; suite files written with the old names still load.
    option_aliases: ClassVar[dict[str, str]] = {}


class Strategy:
    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # display name in reports, e.g. "IR-Tuning"
    description: ClassVar[str] = ""
    config_class: ClassVar[type[StrategyConfig]] = StrategyConfig
    # Learning rate used when the user gives none: adapters want a larger one.
    default_lr: ClassVar[float] = 1e-4
    # Chooses blocks step by step (it fills `selection_trace`).
    layerwise: ClassVar[bool] = False
    # Options for tiny models in smoke runs, the parity check and the tests: small
    # adapters and no dropout, so that data-parallel workers match one process exactly.
    tiny_options: ClassVar[dict[str, Any]] = {}
    # DeepSpeed ZeRO stages the strategy runs under (see `zero_refusal` for options).
    zero_stages: ClassVar[tuple[int, ...]] = (2, 3)

    def __init__(self, config: StrategyConfig, seed: int = 0):
        self.config = config
        self.seed = seed
        self.model: nn.Module | None = None
        self.parts: ModelParts | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.selection_trace: list[list[int]] = []
        # Set by the training backend: how to read a parameter's full gradient (ZeRO
        # partitions gradients).
        self.read_grad = lambda p: p.grad
        # Set by the trial: probe batches and a gradient-free loss, for strategies that
        # score blocks by extra forward passes (IST); None where the caller gives none.
        self.runtime = None

    # -- what the tools ask -----------------------------------------------------------
    def zero_refusal(self, stage: int) -> str | None:
        """Why this strategy, with these options, cannot run under ZeRO `stage` (None: it can)."""
        if stage not in self.zero_stages:
            return f"strategy {self.name!r} does not run under DeepSpeed ZeRO-{stage}"
        return None

    # -- set-up ---------------------------------------------------------------------
    def prepare(self, model: nn.Module) -> nn.Module:
        """Return the model to train (possibly wrapped), with requires_grad set."""
        raise NotImplementedError

    def trainable_params(self) -> list[nn.Parameter]:
        """Every parameter that may train at some step: the optimizer holds all of them."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's groups; the loop gives the one named "head" `head_lr`."""
        head = {id(p) for p in self.parts.head}
        trainable = self.trainable_params()
        groups = [{"params": [p for p in trainable if id(p) not in head], "name": "body"},
                  {"params": [p for p in trainable if id(p) in head], "name": "head"}]
        return [g for g in groups if g["params"]]

    def build_optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer | None:
        """The strategy's own optimizer over `param_groups()`, or None for the loop's AdamW."""
        return None

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def attach_runtime(self, runtime) -> None:
        """`runtime.probe_batch()` -> a training batch; `runtime.loss_without_grad(batch)`
        -> the model's mean loss on it (eval mode, no gradients), as a float."""
        self.runtime = runtime

    # -- per step -------------------------------------------------------------------
    def before_step(self, step: int) -> list[int] | None:
        """Choose what trains in this step; return the selected block indices or None (all)."""
        return None

    def after_backward(self, step: int) -> None:
        """Read gradients (before clipping) if the strategy needs them."""

    # -- reporting ------------------------------------------------------------------
    def trainable_count(self) -> int:
        """Parameters that receive updates in the current step."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def stats(self) -> dict[str, Any]:
        """What the strategy spent or learned besides training (e.g. probe forwards)."""
        return {}

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.name, **dataclasses.asdict(self.config)}
