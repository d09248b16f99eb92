"""BAdam (Luo et al., 2024): block coordinate descent. One block trains at a time; every K
steps the next block takes over (descending from the last block by default, as the
`badam` package's `BlockOptimizer`) and the optimizer state is dropped. The head always
trains here (the package leaves that to the user).

Built on the project's layer-wise machinery; `tests/test_new_strategies.py` checks the
block sequence against the package's own `BlockOptimizer` on the same model.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import torch

from . import register_strategy
from .layerwise import LayerwiseConfig, LayerwiseStrategy

ORDERS = ("descending", "ascending", "random")


@dataclasses.dataclass
class BAdamConfig(LayerwiseConfig):
    adapter: Literal["lora", "dora", "none"] = "none"  # BAdam trains whole blocks
    switch_every: int = 50  # K: steps before the next block takes over
    order: Literal["descending", "ascending", "random"] = "descending"

    def __post_init__(self):
        super().__post_init__()
        if self.switch_every < 1:
            raise ValueError("switch_every must be at least 1")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {self.order!r}")


@register_strategy
class BAdam(LayerwiseStrategy):
    name: ClassVar[str] = "badam"
    title = "BAdam"
    description: ClassVar[str] = ("BAdam: block coordinate descent, one block at a time, the "
                                  "next every K steps, optimizer state dropped at each switch")
    config_class = BAdamConfig
    config: BAdamConfig
    tiny_options = {"switch_every": 2}
    zero_stages = ()

    def __init__(self, config: BAdamConfig, seed: int = 0):
        super().__init__(config, seed)
        self.generator = torch.Generator().manual_seed(seed)  # random order: like torch.randperm
        self.order: list[int] = []
        self.upcoming: int | None = None

    def zero_refusal(self, stage: int) -> str | None:
        return ("badam drops the optimizer state at every block switch, which DeepSpeed ZeRO's "
                "partitioned optimizer state cannot do; run it without --deepspeed")

    def choose(self, step: int) -> list[int]:
        if step == 0:
            self.upcoming = self._first_block()
        elif step % self.config.switch_every:
            return self.selected
        elif self.optimizer is not None:
            self.optimizer.state.clear()  # BlockOptimizer resets the whole state at a switch
        current = self.upcoming
        self.upcoming = self._next_block(current)
        return [current]

    def _first_block(self) -> int:
        if self.config.order == "descending":
            return self.num_blocks - 1
        if self.config.order == "ascending":
            return 0
        self.order = torch.randperm(self.num_blocks, generator=self.generator).tolist()
        return self.order.pop()

    def _next_block(self, current: int) -> int:
        """As `BlockOptimizer._update_active_block_idx`, which runs right after a switch."""
        if self.config.order == "descending":
            return (current - 1) % self.num_blocks
        if self.config.order == "ascending":
            return (current + 1) % self.num_blocks
        if not self.order:
            self.order = torch.randperm(self.num_blocks, generator=self.generator).tolist()
        return self.order.pop()
