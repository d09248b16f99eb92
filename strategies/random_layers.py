"""Random layers (the IR-Tuning reference's RST baseline): k blocks drawn uniformly every step."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from . import register_strategy
from .layerwise import LayerwiseConfig, LayerwiseStrategy


@dataclasses.dataclass
class RandomLayersConfig(LayerwiseConfig):
    adapter: Literal["lora", "dora", "none"] = "lora"  # as the reference's RST runs
    k: int = 4
    # Train these blocks every step instead of drawing (for like-for-like cost benchmarks).
    fixed_blocks: list[int] | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.k < 1:
            raise ValueError("k must be at least 1")


@register_strategy
class RandomLayers(LayerwiseStrategy):
    name: ClassVar[str] = "random-layers"
    title = "Random layers"
    description: ClassVar[str] = "Random layers (RST): k blocks drawn uniformly at every step"
    config_class = RandomLayersConfig
    config: RandomLayersConfig
    tiny_options = {"k": 2, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0}

    def choose(self, step: int) -> list[int]:
        if self.config.fixed_blocks is not None:
            return list(self.config.fixed_blocks)
        k = min(self.config.k, self.num_blocks)
        return sorted(self.rng.choice(self.num_blocks, size=k, replace=False).tolist())
