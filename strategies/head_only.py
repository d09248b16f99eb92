"""The floor every leaderboard needs: only the classification head trains (a linear probe
of the frozen model). A strategy that does not beat it has learned nothing from
fine-tuning the blocks."""

from __future__ import annotations

from . import register_strategy
from .base import Strategy
from .blocks import split_model


@register_strategy
class HeadOnly(Strategy):
    name = "head-only"
    title = "Head only"
    description = "Floor: only the classification head trains (a linear probe of the frozen model)"
    default_lr = 1e-2  # a linear probe wants a large step

    def prepare(self, model):
        model.requires_grad_(False)
        self.model = model
        self.parts = split_model(model)
        for p in self.parts.head:
            p.requires_grad_(True)
        return model

    def param_groups(self):
        # Not named "head": the head is all that trains, so its learning rate is `lr`
        # (what this strategy's search tunes), never `head_lr`.
        return [{"params": self.trainable_params(), "name": "all"}]
