"""IST, Importance-aware Sparse Tuning (Yao et al., 2024), as the IR-Tuning reference's
`ist.py` runs it (`docs/ist.md`).

Every block has a score, all 0 at the start. At every step `int(0.25 L)` blocks train,
drawn without replacement with probabilities proportional to sigmoid(-score). Every 10
steps (not at step 0) the scores are updated from probes: 3 rollouts, each suppressing
`int(0.5 L)` blocks (drawn by sigmoid(score)) by scaling their LoRA output by 0.25, then
running a training batch forward without gradients; the reward of a rollout is
exp(-loss) minus the mean over the rollouts, and every block in a rollout's draw gets
`score += 10 * reward * p * (1 - p)` with p = sigmoid(score) from before the update. A
block whose suppression costs nothing gains score and is trained less.

The probe forwards are compute this strategy spends besides training: `stats()` reports
their count and time.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, ClassVar, Literal, Sequence

import torch

from . import register_strategy
from .layerwise import LayerwiseConfig, LayerwiseStrategy

TRAIN_SHARE = 0.25
SUPPRESS_SHARE = 0.5
ROLLOUTS = 3
SCORE_LR = 10.0
SUPPRESSION = 0.25
PROBE_EVERY = 10


def trained_count(num_blocks: int) -> int:
    return max(1, int(TRAIN_SHARE * num_blocks))


def suppressed_count(num_blocks: int) -> int:
    return max(1, int(SUPPRESS_SHARE * num_blocks))


def rollout_rewards(losses: Sequence[float]) -> list[float]:
    """exp(-loss) of each rollout minus their mean."""
    values = [math.exp(-loss) for loss in losses]
    mean = sum(values) / len(values)
    return [v - mean for v in values]


def updated_scores(scores: Sequence[float], draws: Sequence[Sequence[int]],
                   rewards: Sequence[float], lr: float = SCORE_LR) -> list[float]:
    """score[i] += lr * reward_k * p[i] * (1 - p[i]) for every rollout k and block i in its
    draw; p = sigmoid(score) is taken once, before any update."""
    p = [1.0 / (1.0 + math.exp(-s)) for s in scores]
    new = list(scores)
    for draw, reward in zip(draws, rewards):
        for i in draw:
            new[i] += reward * p[i] * (1.0 - p[i]) * lr
    return new


@dataclasses.dataclass
class ISTConfig(LayerwiseConfig):
    adapter: Literal["lora", "dora"] = "lora"  # IST scales adapter outputs: no adapter "none"
    probe_every: int = PROBE_EVERY  # the reference's 10; smaller only to test probes quickly

    def __post_init__(self):
        super().__post_init__()
        if self.adapter == "none":
            raise ValueError("ist suppresses blocks by scaling their adapters: use adapter lora or dora")
        if self.probe_every < 1:
            raise ValueError("probe_every must be at least 1")


@register_strategy
class IST(LayerwiseStrategy):
    name: ClassVar[str] = "ist"
    title = "IST"
    description: ClassVar[str] = ("IST: 25% of blocks drawn by learned importance every step; "
                                  "scores from probe forwards every 10 steps")
    config_class = ISTConfig
    config: ISTConfig
    zero_stages = (2,)  # probes scale adapters ZeRO-3 partitions; not ported there
    tiny_options = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "probe_every": 2}

    def __init__(self, config: ISTConfig, seed: int = 0):
        super().__init__(config, seed)
        # The reference draws with torch.multinomial on the CPU: seeded, so every
        # data-parallel worker draws the same blocks.
        self.generator = torch.Generator().manual_seed(seed)
        self.probe_forwards = 0
        self.probe_seconds = 0.0
        self.probes = 0

    def prepare(self, model):
        model = super().prepare(model)
        self.scores = torch.zeros(self.num_blocks, dtype=torch.float64)
        self.adapter_modules = [
            [m for m in block.modules() if isinstance(getattr(m, "scaling", None), dict)]
            for block in self.parts.blocks]
        return model

    def choose(self, step: int) -> list[int]:
        if step % self.config.probe_every == 0 and step > 0:
            self.probe()
        weights = torch.sigmoid(-self.scores)
        return torch.multinomial(weights, trained_count(self.num_blocks), replacement=False,
                                 generator=self.generator).tolist()

    # -- probes ----------------------------------------------------------------------------
    def probe(self) -> None:
        """Three rollouts on the next training batch; updates the scores."""
        if self.runtime is None:
            raise RuntimeError("ist needs the trial's probe batches and loss (attach_runtime)")
        started = time.perf_counter()
        batch = self.runtime.probe_batch()
        n = suppressed_count(self.num_blocks)
        draws: list[list[int]] = []
        for _ in range(ROLLOUTS):
            draws.append(self._distinct_draw(draws, n))
        losses = []
        for draw in draws:
            saved = self._suppress(draw)
            try:
                losses.append(self.runtime.loss_without_grad(batch))
            finally:
                self._restore(saved)
        self.scores = torch.tensor(updated_scores(self.scores.tolist(), draws,
                                                  rollout_rewards(losses)), dtype=torch.float64)
        self.probe_forwards += ROLLOUTS
        self.probes += 1
        self.probe_seconds += time.perf_counter() - started

    def _distinct_draw(self, earlier: list[list[int]], n: int) -> list[int]:
        weights = torch.sigmoid(self.scores)
        distinct_sets = math.comb(self.num_blocks, n)
        while True:  # a draw equal (as a set) to an earlier one is redrawn, while one can differ
            draw = sorted(torch.multinomial(weights, n, replacement=False,
                                            generator=self.generator).tolist())
            if draw not in earlier or len(earlier) >= distinct_sets:
                return draw

    def _suppress(self, draw: list[int]) -> list[tuple[Any, str, float]]:
        saved = []
        for i in draw:
            for module in self.adapter_modules[i]:
                for adapter in module.active_adapters:
                    saved.append((module, adapter, module.scaling[adapter]))
                    module.scaling[adapter] = module.scaling[adapter] * SUPPRESSION
        return saved

    @staticmethod
    def _restore(saved: list[tuple[Any, str, float]]) -> None:
        for module, adapter, value in saved:
            module.scaling[adapter] = value

    def stats(self) -> dict[str, Any]:
        return {"probes": self.probes, "probe_forward_passes": self.probe_forwards,
                "probe_seconds": round(self.probe_seconds, 3),
                "scores": [round(s, 6) for s in self.scores.tolist()]}
