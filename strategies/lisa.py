"""LISA (Pan et al., 2024): every K steps sample gamma blocks uniformly; embeddings and head
always train. Defaults from the LISA paper: gamma=2 blocks, K=20 steps, all weights of
the chosen blocks (adapter "none")."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from . import register_strategy
from .layerwise import LayerwiseConfig, LayerwiseStrategy


@dataclasses.dataclass
class LisaConfig(LayerwiseConfig):
    gamma: int = 2
    interval: int = 20

    def __post_init__(self):
        super().__post_init__()
        if self.gamma < 1 or self.interval < 1:
            raise ValueError("gamma and interval must be at least 1")


@register_strategy
class Lisa(LayerwiseStrategy):
    name: ClassVar[str] = "lisa"
    title = "LISA"
    description: ClassVar[str] = "LISA: every K steps, gamma blocks sampled uniformly train"
    config_class = LisaConfig
    config: LisaConfig
    trains_embeddings = True
    tiny_options = {"gamma": 2, "interval": 2}

    def choose(self, step: int) -> list[int]:
        if step % self.config.interval == 0 or not self.selected:
            k = min(self.config.gamma, self.num_blocks)
            return sorted(self.rng.choice(self.num_blocks, size=k, replace=False).tolist())
        return self.selected
