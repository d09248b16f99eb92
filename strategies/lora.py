"""LoRA (via peft) on every block at every step; the classification head trains fully."""

from __future__ import annotations

import dataclasses
from typing import Literal

from . import register_strategy
from .adapters import AdapterConfig, add_lora, check_adapter
from .base import Strategy
from .blocks import split_model


@dataclasses.dataclass
class LoraStrategyConfig(AdapterConfig):
    option_aliases = {"r": "lora_r", "alpha": "lora_alpha", "dropout": "lora_dropout"}
    adapter: Literal["lora", "dora"] = "lora"  # dora: peft's weight-decomposed LoRA

    def __post_init__(self):
        check_adapter(self.adapter, ("lora", "dora"))


@register_strategy
class Lora(Strategy):
    name = "lora"
    title = "LoRA"
    description = "LoRA adapters on every block (peft), trained at every step"
    config_class = LoraStrategyConfig
    default_lr = 1e-3
    tiny_options = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0}

    def prepare(self, model):
        c = self.config
        model = add_lora(model, c.lora_r, c.lora_alpha, c.lora_dropout, c.target_modules,
                         dora=c.adapter == "dora")
        self.model = model
        self.parts = split_model(model)
        for p in self.parts.head:
            p.requires_grad_(True)
        return model
