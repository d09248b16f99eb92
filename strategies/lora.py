"""LoRA (via peft) on every block at every step; the classification head trains fully."""

from __future__ import annotations

import dataclasses

from . import register_strategy
from .adapters import add_lora
from .base import Strategy, StrategyConfig
from .blocks import split_model


@dataclasses.dataclass
class LoraStrategyConfig(StrategyConfig):
    r: int = 32  # the IR-Tuning paper's setting: r=32, alpha=64, dropout 0.05
    alpha: int = 64
    dropout: float = 0.05
    target_modules: list[str] | None = None  # None: every linear layer inside the blocks


@register_strategy
class Lora(Strategy):
    name = "lora"
    description = "LoRA adapters on every block (peft), trained at every step"
    config_class = LoraStrategyConfig
    default_lr = 1e-3

    def prepare(self, model):
        c = self.config
        model = add_lora(model, c.r, c.alpha, c.dropout, c.target_modules)
        self.model = model
        self.parts = split_model(model)
        for p in self.parts.head:
            p.requires_grad_(True)
        return model
