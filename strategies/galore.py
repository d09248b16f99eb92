"""GaLore (Zhao et al., 2024): full-parameter training whose gradients of the blocks'
linear weights are projected to a low rank before AdamW, through the PyPI package
`galore-torch` (its `GaLoreAdamW`). Defaults from the official code: rank 128, projection
updated every 200 steps, scale 0.25."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from torch import nn

from . import register_strategy
from .base import Strategy, StrategyConfig
from .blocks import split_model


@dataclasses.dataclass
class GaLoreConfig(StrategyConfig):
    rank: int = 128
    update_proj_gap: int = 200
    scale: float = 0.25
    proj_type: str = "std"

    def __post_init__(self):
        if self.rank < 1 or self.update_proj_gap < 1:
            raise ValueError("rank and update_proj_gap must be at least 1")


@register_strategy
class GaLore(Strategy):
    name: ClassVar[str] = "galore"
    title = "GaLore"
    description: ClassVar[str] = ("GaLore: every parameter trains; the blocks' linear weights "
                                  "through low-rank projected gradients (galore-torch)")
    config_class = GaLoreConfig
    config: GaLoreConfig
    default_lr = 1e-4
    tiny_options = {"rank": 8, "update_proj_gap": 2}
    zero_stages = ()

    def zero_refusal(self, stage: int) -> str | None:
        return ("galore projects whole gradient matrices inside its own optimizer, which "
                "DeepSpeed ZeRO partitions; run it without --deepspeed")

    def prepare(self, model):
        model.requires_grad_(True)
        self.model = model
        self.parts = split_model(model)
        return model

    def projected_params(self) -> list[nn.Parameter]:
        """The 2-D weights of the linear layers inside the blocks."""
        return [module.weight for block in self.parts.blocks for module in block.modules()
                if isinstance(module, nn.Linear) and module.weight.requires_grad]

    def build_optimizer(self, lr: float, weight_decay: float):
        GaLoreAdamW = galore_adamw_class()
        projected = self.projected_params()
        chosen = {id(p) for p in projected}
        head = {id(p) for p in self.parts.head}
        rest = [p for p in self.trainable_params() if id(p) not in chosen]
        c = self.config
        groups = [{"params": [p for p in rest if id(p) not in head], "name": "body"},
                  {"params": [p for p in rest if id(p) in head], "name": "head"},
                  {"params": projected, "name": "galore", "rank": c.rank,
                   "update_proj_gap": c.update_proj_gap, "scale": c.scale,
                   "proj_type": c.proj_type}]
        return GaLoreAdamW([g for g in groups if g["params"]], lr=lr,
                           weight_decay=weight_decay, no_deprecation_warning=True)


def galore_adamw_class():
    """galore_torch's AdamW. The package's __init__ also imports its 8-bit AdamW, which
    needs bitsandbytes (a wheel of CUDA kernels, too big to carry to the GPU machine) that
    the plain AdamW never calls: without bitsandbytes, its adamw module is loaded under a
    bare package object, so that __init__ does not run."""
    import importlib
    import importlib.util
    import sys
    import types

    if "galore_torch" not in sys.modules:
        if importlib.util.find_spec("bitsandbytes") is not None:
            import galore_torch  # noqa: F401  (the whole package, as published)
        else:
            spec = importlib.util.find_spec("galore_torch")
            if spec is None or not spec.submodule_search_locations:
                raise ModuleNotFoundError("No module named 'galore_torch'", name="galore_torch")
            package = types.ModuleType("galore_torch")
            package.__path__ = list(spec.submodule_search_locations)
            package.__spec__ = spec
            sys.modules["galore_torch"] = package
    return importlib.import_module("galore_torch.adamw").AdamW
