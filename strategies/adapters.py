"""LoRA on the transformer blocks through peft, shared by `lora` and the layer-wise strategies."""

from __future__ import annotations

import dataclasses
import re

from torch import nn

from .base import StrategyConfig
from .blocks import linear_module_suffixes, split_model


@dataclasses.dataclass
class AdapterConfig(StrategyConfig):
    """LoRA options, under the same names for every strategy that takes an adapter."""

    lora_r: int = 32  # the IR-Tuning paper's setting: r=32, alpha=64, dropout 0.05
    lora_alpha: int = 64
    lora_dropout: float = 0.05
    target_modules: list[str] | None = None  # LoRA targets inside a block; None = all linear


def block_lora_targets(model: nn.Module, target_modules: list[str] | None) -> str:
    """A peft `target_modules` regex that matches linear layers inside the blocks only.

    `target_modules` narrows them by name (e.g. the paper's q/k/v/up/down projections:
    ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"]); None means every linear layer.
    """
    parts = split_model(model)
    suffixes = linear_module_suffixes(parts.blocks[0])
    if target_modules:
        suffixes = [s for s in suffixes
                    if any(s == t or s.endswith("." + t) for t in target_modules)]
        if not suffixes:
            raise ValueError(f"target_modules {target_modules} match no linear layer in the "
                             f"blocks; they have: {linear_module_suffixes(parts.blocks[0])}")
    alternatives = "|".join(re.escape(s) for s in suffixes)
    return rf"(.*\.)?{re.escape(parts.blocks_name)}\.\d+\.({alternatives})"


ADAPTERS = ("lora", "dora", "none")


def add_lora(model: nn.Module, r: int, alpha: int, dropout: float,
             target_modules: list[str] | None, dora: bool = False) -> nn.Module:
    """Wrap the model with LoRA adapters on its blocks (DoRA, peft's weight-decomposed
    LoRA, with `dora`); every base weight ends frozen.

    No peft task type is set on purpose: the head is trained by the strategy itself, so
    peft must not add its own `modules_to_save` copy of it.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, use_dora=dora,
                        target_modules=block_lora_targets(model, target_modules))
    return get_peft_model(model, config)


def check_adapter(adapter: str, allowed: tuple[str, ...] = ADAPTERS) -> None:
    if adapter not in allowed:
        raise ValueError(f"adapter must be {' or '.join(repr(a) for a in allowed)}, not {adapter!r}")


def lora_params(module: nn.Module) -> list[nn.Parameter]:
    return [p for name, p in module.named_parameters() if "lora_" in name]
