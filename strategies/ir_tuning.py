"""IR-Tuning (Liu & Litman, EMNLP 2025): train only the blocks whose gradients say they matter.

Follows the reference implementation as described in `docs/ir-tuning.md`:
- score of a block = sqrt(sum over its trainable params of sqrt(||grad||_2)), taken before
  clipping; NaN/Inf counts as 1000; frozen blocks keep their last score; all start at 1000;
- while every score is still 1000 the scores are random (a random first selection), and
  then every never-trained block keeps 1000 and is selected;
- the split is 1-D and variance-minimising within a window, keeping one boundary block
  more than the clean split (see `select_layers`).
Unlike the reference, norms are accumulated on the device and read to the host once per
optimizer step, not once per parameter.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal, Sequence

import numpy as np
import torch

from . import register_strategy
from .blocks import attention_output_projection
from .layerwise import LayerwiseConfig, LayerwiseStrategy

INITIAL_SCORE = 1000.0


def select_layers(scores: Sequence[float], splits: int = 1,
                  window: tuple[float, float] = (0.35, 0.65),
                  rng: np.random.Generator | None = None) -> list[int]:
    """Indices of the high-score blocks, ascending, chosen as the reference does.

    1. sort ascending (ties by block index);
    2. V[j] = var(r[:j+1]) + var(r[j+1:]) (population variance) for the cuts k = j+1;
    3. the minimum over V[int(lo*n) : int(hi*n) + 1];
    4. j* = the first index in all of V holding that minimum;
    5. keep sorted positions j*..n-1 (j* is the boundary block, one more than the clean split).
    `splits` > 1 repeats the split on the kept group. When every score is still the
    initial 1000, random scores drawn from `rng` stand in.
    """
    scores = [float(s) for s in scores]
    if scores and all(s == INITIAL_SCORE for s in scores):
        rng = rng if rng is not None else np.random.default_rng()
        scores = list(rng.random(len(scores)))
    indices = list(range(len(scores)))
    for _ in range(splits):
        indices = _split_once(indices, scores, window)
    return sorted(indices)


def _split_once(indices: list[int], scores: list[float],
                window: tuple[float, float]) -> list[int]:
    n = len(indices)
    if n < 2:
        return indices
    order = sorted(indices, key=lambda i: (scores[i], i))
    ranked = np.array([scores[i] for i in order], dtype=np.float64)
    variances = [float(np.var(ranked[:k]) + np.var(ranked[k:])) for k in range(1, n)]
    eligible = variances[int(window[0] * n): int(window[1] * n) + 1]
    best = min(eligible) if eligible else min(variances)
    cut = variances.index(best)
    return order[cut:]


@dataclasses.dataclass
class IRTuningConfig(LayerwiseConfig):
    adapter: Literal["lora", "dora", "none"] = "lora"  # the paper's setting
    split_num: int = 1
    metric: Literal["gradient", "weight", "cosine"] = "gradient"
    window: tuple[float, float] = (0.35, 0.65)

    def __post_init__(self):
        super().__post_init__()
        if self.metric not in ("gradient", "weight", "cosine"):
            raise ValueError(f"metric must be gradient, weight or cosine, not {self.metric!r}")
        if self.split_num < 1:
            raise ValueError("split_num must be at least 1")
        if self.metric == "weight" and self.adapter == "dora":
            raise ValueError("metric=weight reads base + LoRA delta weights, which DoRA's "
                             "magnitude rescales; use metric=gradient with adapter=dora")
        self.window = tuple(float(w) for w in self.window)


@register_strategy
class IRTuning(LayerwiseStrategy):
    name: ClassVar[str] = "ir-tuning"
    title = "IR-Tuning"
    description: ClassVar[str] = ("IR-Tuning: each step, train the blocks whose gradient "
                                  "norms fall in the high group of a variance split")
    config_class = IRTuningConfig
    config: IRTuningConfig

    def zero_refusal(self, stage: int) -> str | None:
        if stage == 3 and self.config.metric == "weight":
            return ("IR-Tuning's metric=weight reads whole weight matrices, which ZeRO-3 "
                    "partitions across workers; use metric=gradient or deepspeed zero2")
        return super().zero_refusal(stage)

    def prepare(self, model):
        model = super().prepare(model)
        self.scores = np.full(self.num_blocks, INITIAL_SCORE)
        if self.config.metric == "cosine":
            self._similarity = torch.zeros(self.num_blocks)
            self._similarity_batches = 0
            for i, block in enumerate(self.parts.blocks):
                block.register_forward_hook(self._cosine_hook(i), with_kwargs=True)
        return model

    def choose(self, step: int) -> list[int]:
        if self.config.metric == "weight":
            self.scores = self._weight_scores()
        elif self.config.metric == "cosine":  # forget what evaluation forwards added
            self._similarity.zero_()
            self._similarity_batches = 0
        return select_layers(self.scores, self.config.split_num, self.config.window, self.rng)

    def after_backward(self, step: int) -> None:
        if self.config.metric == "gradient":
            self._update_gradient_scores()
        elif self.config.metric == "cosine" and self._similarity_batches:
            similarity = (self._similarity / self._similarity_batches).tolist()  # one sync
            self.scores = 1.0 - np.asarray(similarity)  # high score = low similarity
            self._similarity.zero_()
            self._similarity_batches = 0

    def _update_gradient_scores(self) -> None:
        grads, owner = [], []
        for i in self.selected:
            for p in self.block_params[i]:
                grad = self.read_grad(p)
                if grad is not None:
                    grads.append(grad)
                    owner.append(i)
        if not grads:
            return
        norms = torch.stack(torch._foreach_norm(grads)).float()
        device = norms.device
        owner_index = torch.tensor(owner, device=device)
        per_block = torch.zeros(self.num_blocks, device=device).index_add_(
            0, owner_index, norms.sqrt())
        block_scores = per_block.sqrt()
        block_scores = torch.where(torch.isfinite(block_scores), block_scores,
                                   torch.full_like(block_scores, INITIAL_SCORE))
        values = block_scores.tolist()  # the one device->host read of the step
        for i in set(owner):
            self.scores[i] = values[i]

    def _weight_scores(self) -> np.ndarray:
        with torch.no_grad():
            norms = []
            for block in self.parts.blocks:
                projection = attention_output_projection(block)
                if hasattr(projection, "get_delta_weight"):
                    weight = projection.base_layer.weight + sum(
                        projection.get_delta_weight(a) for a in projection.active_adapters)
                else:
                    weight = projection.weight
                norms.append(weight.float().norm())
            return np.asarray(torch.stack(norms).tolist())

    def _cosine_hook(self, index: int):
        def hook(module, args, kwargs, output):
            hidden_in = args[0] if args else kwargs.get("hidden_states")
            hidden_out = output[0] if isinstance(output, tuple) else output
            if not torch.is_tensor(hidden_in) or not torch.is_tensor(hidden_out):
                return
            with torch.no_grad():
                cos = torch.nn.functional.cosine_similarity(
                    hidden_in.float(), hidden_out.float(), dim=-1).mean()
                if self._similarity.device != cos.device:
                    self._similarity = self._similarity.to(cos.device)
                self._similarity[index] += cos
                if index == 0:
                    self._similarity_batches += 1
        return hook
