"""The loop's optimizer: AdamW that leaves parameter groups marked `frozen` untouched.

Layer-wise strategies mark each block's group frozen or not at every step. Without
DeepSpeed this changes nothing (a frozen block has no gradient, and AdamW skips it), but
DeepSpeed ZeRO steps every partition it holds, gradient or not: ZeRO-2 and ZeRO-3 call
the wrapped optimizer once per group, and skipping a frozen group there is what keeps its
weights, its moments and its step count as they were (ZeRO would otherwise apply weight
decay, decay the moments and advance the bias correction of a block that did not train).
"""

from __future__ import annotations

import torch


class BlockwiseAdamW(torch.optim.AdamW):
    @torch.no_grad()
    def step(self, closure=None):
        groups = self.param_groups
        active = [g for g in groups if not g.get("frozen", False)]
        if len(active) == len(groups):
            return super().step(closure)
        self.param_groups = active
        try:
            return super().step(closure)
        finally:
            self.param_groups = groups
