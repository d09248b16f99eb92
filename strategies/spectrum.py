"""Spectrum (Hartford et al., 2024, "Spectrum: Targeted Training on Signal to Noise Ratio";
`QuixiAI/spectrum`, also `cognitivecomputations/spectrum` and an axolotl plugin): train
the weight matrices whose singular values stand out most from noise; static and data-free.

As the original's `spectrum.py` computes it, for each weight matrix W (n x m, in float32):
- S = the singular values of W, descending;
- sigma = IQR(S) / 1.349 (torch.quantile's linear interpolation);
- the Marchenko-Pastur threshold sigma * (1 + sqrt(beta)), beta = min(n, m) / max(n, m);
- SNR = (sum of S above the threshold) / (sum of the rest), 0 and 1 where either side is
  empty, divided by S[0] (the original's "snr_ratio", what it ranks by). The division
  makes the score fall with the matrix's scale: a strong low-rank signal raises the
  ratio of sums but raises S[0] more, so low-rank plus noise can score below pure noise.
Per module type (its name inside a block: `self_attn.q_proj`, `mlp.down_proj`, BERT's
`attention.self.query`, `output.dense`, ...), the `int(L * top_percent / 100)` modules of
highest SNR train (ties in block order, as the original's stable sort); everything else
is frozen for the whole run. The scan runs once, in `prepare`, on the model as loaded.

What it scans: every linear layer of the blocks, or the module types `target_modules`
names (the original asks interactively; its README: "we typically only select the
MLP/attn layers"). Norms, embeddings and the head are not scanned.

Where this differs from the original's axolotl recipe: its generated file also unfreezes
the embeddings and the LM head; here the head trains as with every strategy of the
benchmark, the embeddings only with `train_embeddings: true` (on SmolLM2 they hold a fifth
of the weights). Default: the selected modules train fully (the original); `adapter: lora`
(or `dora`) puts LoRA on the selected modules only, to compare with IR-Tuning's LoRA on
equal footing. A module whose SNR is not a number (an all-zero matrix) ranks last.

`stats()` records each module type's chosen blocks, the blocks holding any chosen module,
and every scanned module's SNR, per block.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from benchmark.core.errors import UserError

from . import register_strategy
from .adapters import AdapterConfig, check_adapter, resolve_block_targets
from .base import Strategy
from .blocks import split_model

IQR_TO_SIGMA = 1.349  # the interquartile range of a standard normal


@torch.no_grad()
def singular_value_snr(weight: torch.Tensor) -> float:
    """What the original ranks by (its "snr_ratio"): `signal_to_noise` of the matrix's
    singular values divided by the largest one, so that c * W scores 1/c of W's."""
    weights = weight.detach().float()
    if weights.ndim < 2:
        weights = weights.unsqueeze(0)
    singular = torch.linalg.svdvals(weights)
    n, m = weights.shape[-2:]
    largest = float(singular[0])
    return signal_to_noise(singular, n, m) / largest if largest else math.nan  # all zero


def signal_to_noise(singular: torch.Tensor, n: int, m: int) -> float:
    """Sum of the singular values above the Marchenko-Pastur threshold over the sum of the
    rest (0 and 1 where a side is empty; infinite over a zero noise sum), the threshold
    being sigma * (1 + sqrt(beta)) with sigma = IQR / 1.349 of the singular values."""
    sigma = (torch.quantile(singular, 0.75) - torch.quantile(singular, 0.25)) / IQR_TO_SIGMA
    threshold = sigma * marchenko_pastur_edge(n, m)
    signal_mask = singular > threshold
    signal = float(singular[signal_mask].sum()) if signal_mask.any() else 0.0
    noise = float(singular[~signal_mask].sum()) if (~signal_mask).any() else 1.0
    return signal / noise if noise != 0 else math.inf


def marchenko_pastur_edge(n: int, m: int) -> float:
    """The original's threshold factor: sqrt((1 + sqrt(beta))^2), beta = min/max of n, m."""
    beta = n / m if n < m else m / n
    return math.sqrt((1 + math.sqrt(beta)) ** 2)


def top_blocks(snrs: list[float], top_percent: float) -> list[int]:
    """The `int(len * top_percent / 100)` blocks of highest SNR, highest first; ties keep
    block order and NaN ranks last."""
    order = sorted(range(len(snrs)), key=lambda i: (math.isnan(snrs[i]),
                                                     -snrs[i] if not math.isnan(snrs[i]) else 0.0))
    return order[:int(len(snrs) * top_percent / 100)]


@dataclasses.dataclass
class SpectrumConfig(AdapterConfig):
    # "none": the selected modules train fully (the original); "lora"/"dora": adapters on them only.
    adapter: Literal["none", "lora", "dora"] = "none"
    # The original's default and the setting of its published configurations (`--top-percent 50`).
    top_percent: float = 50.0
    train_embeddings: bool = False  # the original's axolotl file unfreezes them too

    def __post_init__(self):
        check_adapter(self.adapter)
        if not 0 < self.top_percent <= 100:
            raise ValueError(f"top_percent must be in (0, 100], not {self.top_percent}")
        if not isinstance(self.train_embeddings, bool):
            raise ValueError(f"train_embeddings must be true or false, not {self.train_embeddings!r}")


@register_strategy
class Spectrum(Strategy):
    name: ClassVar[str] = "spectrum"
    title = "Spectrum"
    description: ClassVar[str] = ("Spectrum: per module type, the top share of weight "
                                   "matrices by singular-value SNR train, the whole run")
    config_class = SpectrumConfig
    config: SpectrumConfig
    tiny_options = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0}

    def __init__(self, config: SpectrumConfig, seed: int = 0):
        super().__init__(config, seed)
        self.snr: dict[str, list[float]] = {}  # module type -> SNR of each block's module
        self.chosen: dict[str, list[int]] = {}  # module type -> blocks that train it

    @property
    def default_lr(self) -> float:  # type: ignore[override]
        return 1e-4 if self.config.adapter == "none" else 1e-3

    def prepare(self, model: nn.Module) -> nn.Module:
        parts = split_model(model)
        module_types = resolve_block_targets(parts.blocks[0], self.config.target_modules)
        self.snr = {name: [singular_value_snr(block.get_submodule(name).weight)
                           for block in parts.blocks]
                    for name in module_types}
        self.chosen = {name: top_blocks(snrs, self.config.top_percent)
                       for name, snrs in self.snr.items()}
        if not any(self.chosen.values()):
            raise UserError(f"spectrum: top_percent {self.config.top_percent:g} of "
                            f"{parts.num_blocks} blocks selects no module "
                            f"(int({parts.num_blocks} x {self.config.top_percent:g} / 100) = 0)")
        if self.config.adapter == "none":
            model.requires_grad_(False)
            for name, blocks in self.chosen.items():
                for i in blocks:
                    parts.blocks[i].get_submodule(name).requires_grad_(True)  # weight and bias
        else:
            model = self._add_lora_to_chosen(model, parts.blocks_name)
        self.model = model
        self.parts = split_model(model)
        always = list(self.parts.head)
        if self.config.train_embeddings:
            always += self.parts.embeddings
        for p in always:
            p.requires_grad_(True)
        return model

    def _add_lora_to_chosen(self, model: nn.Module, blocks_name: str) -> nn.Module:
        """peft LoRA (DoRA) on the chosen modules only; no task type, so that peft adds no
        copy of the head (as `adapters.add_lora`)."""
        from peft import LoraConfig, get_peft_model

        names = [rf"{re.escape(blocks_name)}\.{i}\.{re.escape(name)}"
                 for name, blocks in self.chosen.items() for i in blocks]
        c = self.config
        config = LoraConfig(r=c.lora_r, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout,
                            use_dora=c.adapter == "dora",
                            target_modules=rf"(.*\.)?({'|'.join(names)})")
        return get_peft_model(model, config)

    def chosen_blocks(self) -> list[int]:
        """The blocks that hold at least one chosen module."""
        return sorted({i for blocks in self.chosen.values() for i in blocks})

    def stats(self) -> dict[str, Any]:
        return {"chosen": {name: sorted(blocks) for name, blocks in self.chosen.items()},
                "blocks": self.chosen_blocks(),
                "snr": {name: [round(s, 6) if math.isfinite(s) else None for s in snrs]
                        for name, snrs in self.snr.items()}}
