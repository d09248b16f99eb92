"""The count-matched random control of IR-Tuning: each step, as many blocks as IR-Tuning's
split would keep, drawn uniformly at random.

IR-Tuning differs from random-layers (RST) in two ways at once: which blocks train, and
how many (its split keeps a varying number; 11-20 of SmolLM2's 30, against RST's fixed
k). This control removes the second difference, so a gap between the two measures the
gradient choice alone.

Each step runs IR-Tuning's own rule in the shadow (every line shared through subclassing:
scores, their initial 1000, the random first step, the split with its window and
`split_num`, the metric): the group it would train fixes k, and k blocks drawn uniformly
without replacement train instead. The draw has its own generator, seeded from the trial
seed, so the shadow's generator (used for the random first step) follows the same stream
as IR-Tuning's with that seed: the first step's k is the same as IR-Tuning's.

Which blocks are scored next step: the shadow group, not the blocks drawn. A fair control
must train the same number of blocks as IR-Tuning by the same process; the count is a
function of the score vector, and IR-Tuning refreshes only the scores of the blocks it
picks (the others keep stale ones: on SmolLM2, blocks scored once while LoRA's B was zero
keep a score near 0 and are never chosen again). Re-scoring the random draw instead would
refresh every block in turn, change the spread of the scores and with it the split's
count, so k would follow another process than IR-Tuning's. Scoring the shadow group needs
its gradients: for the gradient metric its blocks get gradients in backward too, are
scored from them (before clipping, as IR-Tuning), and then lose them before clipping and
the update, so those not drawn stay bit-for-bit unchanged and the clipping norm covers
the trained blocks only, as in IR-Tuning. The price is backward compute for up to twice
the blocks: the control's time per step is not comparable with IR-Tuning's (it is an
accuracy control). The `weight` and `cosine` metrics need no extra gradients.

`selection_trace` holds the blocks drawn at each step (k = its length);
`stats()["ir_tuning_trace"]` the shadow group of each step, one '0'/'1' character per
block, as the trial writes `selection_trace`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from . import register_strategy
from .ir_tuning import IRTuning

# Second entropy word of the draw's generator: a stream apart from the shadow's (seeded
# with the seed alone), so that drawing never shifts IR-Tuning's own random first step.
DRAW_STREAM = 1


@register_strategy
class RandomMatched(IRTuning):
    name: ClassVar[str] = "random-matched"
    title = "Random, IR-Tuning's count"
    description: ClassVar[str] = ("Control: each step, as many blocks as IR-Tuning's split "
                                  "would keep, drawn uniformly")

    def __init__(self, config, seed: int = 0):
        super().__init__(config, seed)
        self.draw_rng = np.random.default_rng([seed, DRAW_STREAM])
        self.ir_tuning_group: list[int] = []
        self.ir_tuning_trace: list[list[int]] = []

    # Under ZeRO the shadow group's gradients would enter the clipping norm (ZeRO clips
    # every gradient it holds); plain data parallel is fine.
    zero_stages = ()

    def zero_refusal(self, stage: int) -> str | None:
        return ("random-matched does not run under DeepSpeed ZeRO: it scores blocks it does "
                "not train from their gradients, which ZeRO would clip together with the "
                "trained ones; run it without DeepSpeed (plain data parallel is fine)")

    def choose(self, step: int) -> list[int]:
        self.ir_tuning_group = super().choose(step)
        self.ir_tuning_trace.append(self.ir_tuning_group)
        k = len(self.ir_tuning_group)
        return self.draw_rng.choice(self.num_blocks, size=k, replace=False).tolist()

    def _shadow_only(self) -> list[int]:
        """Blocks IR-Tuning would train this step that were not drawn."""
        drawn = set(self.selected)
        return [i for i in self.ir_tuning_group if i not in drawn]

    def before_step(self, step: int) -> list[int]:
        chosen = super().before_step(step)
        if self.config.metric == "gradient":  # gradients to score, never to update
            for i in self._shadow_only():
                for p in self.block_params[i]:
                    p.requires_grad_(True)
        return chosen

    def scored_blocks(self) -> list[int]:
        return self.ir_tuning_group

    def after_backward(self, step: int) -> None:
        super().after_backward(step)
        if self.config.metric == "gradient":
            for i in self._shadow_only():
                for p in self.block_params[i]:
                    p.grad = None  # so the clipping norm covers the drawn blocks only
                    p.requires_grad_(False)

    def stats(self) -> dict[str, Any]:
        rows = []
        for group in self.ir_tuning_trace:
            kept = set(group)
            rows.append("".join("1" if i in kept else "0" for i in range(self.num_blocks)))
        return {"ir_tuning_trace": rows}
