"""Shared machinery of the strategies that choose, at every step, which blocks train.

Freezing goes through `requires_grad` plus `zero_grad(set_to_none=True)`: a frozen block
gets no gradient, and AdamW skips parameters whose gradient is None (no update, no
weight decay, no momentum), so its weights stay bit-for-bit unchanged. The optimizer is
built once over every block's trainable parameters, one parameter group per block: a
block first selected late still gets updated (a known LISA pitfall is freezing before
the optimizer is built).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from .adapters import AdapterConfig, add_lora, check_adapter, lora_params
from .base import Strategy, StrategyConfig
from .blocks import split_model


@dataclasses.dataclass
class LayerwiseConfig(AdapterConfig):
    # "lora" / "dora": train the (Do)LoRA weights of the selected blocks; "none": all their weights.
    adapter: Literal["lora", "dora", "none"] = "none"
    # What happens to a block's optimizer state while it is frozen.
    optimizer_state: Literal["keep", "drop", "offload"] = "keep"

    def __post_init__(self):
        check_adapter(self.adapter)
        if self.optimizer_state not in ("keep", "drop", "offload"):
            raise ValueError("optimizer_state must be 'keep', 'drop' or 'offload', "
                             f"not {self.optimizer_state!r}")


class LayerwiseStrategy(Strategy):
    config_class: ClassVar[type[StrategyConfig]] = LayerwiseConfig
    config: LayerwiseConfig
    layerwise = True
    tiny_options = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0}
    # Train the embeddings at every step too (LISA does; IR-Tuning and RST do not).
    trains_embeddings: ClassVar[bool] = False

    @property
    def trains_head(self) -> bool:
        """Whether the head (final norm, pooler, classifier) trains at every step."""
        return True

    def __init__(self, config: LayerwiseConfig, seed: int = 0):
        super().__init__(config, seed)
        self.rng = np.random.default_rng(seed)  # same seed on every worker: same choices
        self.selected: list[int] = []
        self._offloaded: dict[nn.Parameter, dict[str, Any]] = {}

    @property
    def default_lr(self) -> float:  # type: ignore[override]
        return 1e-4 if self.config.adapter == "none" else 1e-3

    def zero_refusal(self, stage: int) -> str | None:
        if self.config.optimizer_state != "keep":
            return (f"optimizer_state={self.config.optimizer_state} cannot run under DeepSpeed "
                    "ZeRO: ZeRO keeps every block's optimizer state in flat partitions it owns; "
                    "use optimizer_state=keep")
        return super().zero_refusal(stage)

    # -- set-up ---------------------------------------------------------------------
    def prepare(self, model: nn.Module) -> nn.Module:
        if self.config.adapter != "none":
            model = add_lora(model, self.config.lora_r, self.config.lora_alpha,
                             self.config.lora_dropout, self.config.target_modules,
                             dora=self.config.adapter == "dora")
        else:
            model.requires_grad_(False)
        self.model = model
        self.parts = split_model(model)
        self.block_params = [self._trainable_in_block(b) for b in self.parts.blocks]
        self.always_params = list(self.parts.head) if self.trains_head else []
        if self.trains_embeddings:
            self.always_params = list(self.parts.embeddings) + self.always_params
        for p in self.always_params:
            p.requires_grad_(True)
        for params in self.block_params:
            for p in params:
                p.requires_grad_(True)  # until before_step chooses
        return model

    def _trainable_in_block(self, block: nn.Module) -> list[nn.Parameter]:
        if self.config.adapter != "none":
            return lora_params(block)
        return list(block.parameters())

    def trainable_params(self) -> list[nn.Parameter]:
        return [p for params in self.block_params for p in params] + self.always_params

    def param_groups(self) -> list[dict[str, Any]]:
        groups = [{"params": params, "name": f"block.{i}"}
                  for i, params in enumerate(self.block_params)]
        head = {id(p) for p in self.parts.head}
        embeddings = [p for p in self.always_params if id(p) not in head]
        if embeddings:
            groups.append({"params": embeddings, "name": "always"})
        head_params = [p for p in self.always_params if id(p) in head]
        if head_params:  # a frozen head gets no group, rather than an empty one
            groups.append({"params": head_params, "name": "head"})
        return groups

    @property
    def num_blocks(self) -> int:
        return len(self.block_params)

    # -- per step -------------------------------------------------------------------
    def choose(self, step: int) -> list[int]:
        """The blocks to train in this step, ascending."""
        raise NotImplementedError

    def before_step(self, step: int) -> list[int]:
        chosen = sorted(int(i) for i in self.choose(step))
        previous = set(self.selected)
        for i, params in enumerate(self.block_params):
            on = i in chosen
            for p in params:
                p.requires_grad_(on)
            if not on and i in previous:
                self._on_freeze(params)
            elif on and i not in previous:
                self._on_unfreeze(params)
        self._mark_frozen_groups(chosen)
        self.selected = chosen
        self.selection_trace.append(chosen)
        return chosen

    def _mark_frozen_groups(self, chosen: list[int]) -> None:
        """Flag the unselected blocks' parameter groups: the loop's optimizer skips them
        (needed under DeepSpeed ZeRO, which steps every partition; see benchmark/trial/optimizer.py)."""
        if self.optimizer is None:
            return
        chosen_set = set(chosen)
        for group in self.optimizer.param_groups:
            name = group.get("name", "")
            if name.startswith("block."):
                group["frozen"] = int(name.split(".")[1]) not in chosen_set

    # -- optimizer state of frozen blocks ----------------------------------------------
    def _on_freeze(self, params: list[nn.Parameter]) -> None:
        if self.optimizer is None or self.config.optimizer_state == "keep":
            return
        for p in params:
            state = self.optimizer.state.pop(p, None)
            if state and self.config.optimizer_state == "offload":
                self._offloaded[p] = {k: v.to("cpu", non_blocking=True)
                                      if torch.is_tensor(v) else v for k, v in state.items()}

    def _on_unfreeze(self, params: list[nn.Parameter]) -> None:
        if self.optimizer is None:
            return
        for p in params:
            state = self._offloaded.pop(p, None)
            if state is not None:
                # AdamW keeps `step` on the CPU unless fused or capturable.
                step_on_device = any(self.optimizer.defaults.get(k) for k in ("fused", "capturable"))
                self.optimizer.state[p] = {
                    k: v.to(p.device, non_blocking=True)
                    if torch.is_tensor(v) and (k != "step" or step_on_device) else v
                    for k, v in state.items()}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "num_blocks": self.num_blocks}
