"""LoRA on the transformer blocks through peft, shared by `lora` and the layer-wise strategies."""

from __future__ import annotations

import dataclasses
import re

from torch import nn

from benchmark.core.errors import UserError

from .base import StrategyConfig
from .blocks import linear_module_suffixes, split_model


@dataclasses.dataclass
class AdapterConfig(StrategyConfig):
    """LoRA options, under the same names for every strategy that takes an adapter."""

    lora_r: int = 32  # the IR-Tuning paper's setting: r=32, alpha=64, dropout 0.05
    lora_alpha: int = 64
    lora_dropout: float = 0.05
    target_modules: list[str] | None = None  # LoRA targets inside a block; None = all linear


def resolve_block_targets(block: nn.Module, target_modules: list[str] | None) -> list[str]:
    """Names (relative to the block) of the linear layers that `target_modules` select.

    A target equal to a layer's whole name inside the block selects that layer only
    (on BERT, `output.dense` is the feed-forward down projection, not also
    `attention.output.dense`); any other target selects every layer whose name ends in
    "." + target (`q_proj`, `query`, `dense`). None selects every linear layer.
    """
    names = linear_module_suffixes(block)
    if not target_modules:
        return names
    chosen, unmatched = set(), []
    for target in target_modules:
        if target in names:  # a whole name: exact, so that it cannot catch a longer one
            chosen.add(target)
        else:
            found = [n for n in names if n.endswith("." + target)]
            chosen.update(found)
            if not found:
                unmatched.append(str(target))
    if unmatched:  # known only once the model is there: still the user's input
        short = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise UserError(f"option target_modules: {','.join(unmatched)} "
                        f"{'matches' if len(unmatched) == 1 else 'match'} no linear layer "
                        f"in the model's blocks; it takes names among {','.join(short)} "
                        f"(or paths such as {names[0]})")
    return [n for n in names if n in chosen]  # in the block's order


def block_lora_targets(model: nn.Module, target_modules: list[str] | None) -> str:
    """A peft `target_modules` regex that matches linear layers inside the blocks only.

    `target_modules` narrows them by name (see `resolve_block_targets`), e.g. the paper's
    q/k/v/up/down projections: ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"] on
    a Llama, ["attention.self.query", "attention.self.key", "attention.self.value",
    "intermediate.dense", "output.dense"] on BERT. None means every linear layer.
    """
    parts = split_model(model)
    names = resolve_block_targets(parts.blocks[0], target_modules)
    alternatives = "|".join(re.escape(n) for n in names)
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
