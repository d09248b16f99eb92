"""Full fine-tuning: every parameter trains at every step."""

from __future__ import annotations

from . import register_strategy
from .base import Strategy
from .blocks import split_model


@register_strategy
class FullFineTuning(Strategy):
    name = "full-ft"
    title = "Full fine-tuning"
    description = "Full fine-tuning: every parameter trains at every step"
    default_lr = 1e-4

    def prepare(self, model):
        model.requires_grad_(True)
        self.model = model
        self.parts = split_model(model)
        return model
