"""Top layers: the last k blocks and the head train for the whole run; everything else is
frozen (LLaMA-Factory's `freeze` fine-tuning mode). The static baseline that layer-wise
selection has to beat."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Literal

from . import register_strategy
from .layerwise import LayerwiseConfig, LayerwiseStrategy

DEFAULT_SHARE = 0.25


@dataclasses.dataclass
class TopLayersConfig(LayerwiseConfig):
    adapter: Literal["lora", "dora", "none"] = "none"  # LLaMA-Factory's freeze: whole blocks
    k: int | None = None  # None: 25% of the blocks, rounded up

    def __post_init__(self):
        super().__post_init__()
        if self.k is not None and self.k < 1:
            raise ValueError("k must be at least 1")


@register_strategy
class TopLayers(LayerwiseStrategy):
    name: ClassVar[str] = "top-layers"
    title = "Top layers"
    description: ClassVar[str] = "Top layers: the last k blocks (default 25%) train every step"
    config_class = TopLayersConfig
    config: TopLayersConfig
    tiny_options = {"k": 1}

    def choose(self, step: int) -> list[int]:
        k = min(self.num_blocks, self.config.k or math.ceil(DEFAULT_SHARE * self.num_blocks))
        return list(range(self.num_blocks - k, self.num_blocks))
