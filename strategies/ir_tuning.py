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

The ablation metrics follow the reference's code too, each with its own split rule
(`SPLIT_RULES`):
- `weight`: the Frobenius norm of each block's attention output projection, its frozen
  base weight only, window V[int(.35n)+1 : int(.65n)+1], keeps r[j*:]. With a LoRA
  adapter the selection is the same at every step; with adapter=none it follows the
  trained weights.
- `cosine`: the similarity of a block's input and output (`mean_position_cosine`) on the
  step's first micro-batch, scores start at 1.0, window V[int(.35n) : int(.65n)], keeps
  r[:j*] (the low-similarity side, without the boundary block). Followed literally:
  at the first step every score is 1.0, so j* = 0 and no block trains (the head does);
  the split can also keep no block later (always with 6 blocks and split_num=2). Where
  the reference differs by accident, this follows what it means: the step after an
  evaluation is scored on its own first training micro-batch (the reference scores the
  evaluation batch that its hooks recorded first), and padding positions count as
  they come (the loop pads to the longest sequence of the batch, the reference to 256).
- `train_head=False` keeps the classification head at its random initialisation, as the
  reference's causal-LM adapter configuration does.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal, Sequence

import numpy as np
import torch

from . import register_strategy
from .blocks import attention_output_projection
from .layerwise import LayerwiseConfig, LayerwiseStrategy

INITIAL_SCORE = 1000.0  # every block's gradient score before it has trained
INITIAL_SIMILARITY = 1.0  # every block's cosine score before it has been measured


@dataclasses.dataclass(frozen=True)
class SplitRule:
    """One metric's split, as the reference writes it: the minimum of V is taken over
    V[int(lo*n) + start_offset : int(hi*n) + stop_offset], and the kept side is r[j*:]
    (the high scores) or r[:j*] (the low scores, without the boundary block)."""

    start_offset: int
    stop_offset: int
    keep_low: bool


SPLIT_RULES: dict[str, SplitRule] = {
    "gradient": SplitRule(start_offset=0, stop_offset=1, keep_low=False),
    "weight": SplitRule(start_offset=1, stop_offset=1, keep_low=False),
    "cosine": SplitRule(start_offset=0, stop_offset=0, keep_low=True),
}


def select_layers(scores: Sequence[float], splits: int = 1,
                  window: tuple[float, float] = (0.35, 0.65),
                  rng: np.random.Generator | None = None,
                  metric: str = "gradient") -> list[int]:
    """Indices of the blocks to train, ascending, chosen as the reference does for `metric`.

    1. sort ascending (ties by block index);
    2. V[j] = var(r[:j+1]) + var(r[j+1:]) (population variance) for the cuts k = j+1;
    3. the minimum over the metric's window of V (see `SPLIT_RULES`): `gradient`
       V[int(lo*n) : int(hi*n) + 1], `weight` V[int(lo*n) + 1 : int(hi*n) + 1],
       `cosine` V[int(lo*n) : int(hi*n)];
    4. j* = the first index in all of V holding that minimum;
    5. `gradient` and `weight` keep sorted positions j*..n-1 (j* is the boundary block,
       one more than the clean split); `cosine` keeps positions 0..j*-1 (possibly none).
    `splits` > 1 repeats the split on the kept group. When every score is still the
    initial 1000, random scores drawn from `rng` stand in. Where the reference would fail
    (a window with no cut in it, or a group of fewer than 2 blocks to split again), the
    minimum is taken over all of V, and a group of fewer than 2 blocks is kept as it is.
    """
    rule = SPLIT_RULES[metric]
    scores = [float(s) for s in scores]
    if scores and all(s == INITIAL_SCORE for s in scores):
        rng = rng if rng is not None else np.random.default_rng()
        scores = list(rng.random(len(scores)))
    indices = list(range(len(scores)))
    for _ in range(splits):
        indices = _split_once(indices, scores, window, rule)
    return sorted(indices)


def _split_once(indices: list[int], scores: list[float],
                window: tuple[float, float], rule: SplitRule) -> list[int]:
    n = len(indices)
    if n < 2:
        return indices
    order = sorted(indices, key=lambda i: (scores[i], i))
    ranked = np.array([scores[i] for i in order], dtype=np.float64)
    variances = [float(np.var(ranked[:k]) + np.var(ranked[k:])) for k in range(1, n)]
    eligible = variances[int(window[0] * n) + rule.start_offset:
                         int(window[1] * n) + rule.stop_offset]
    best = min(eligible) if eligible else min(variances)
    cut = variances.index(best)
    return order[:cut] if rule.keep_low else order[cut:]


def _cuts_in_window(n: int, window: tuple[float, float], rule: SplitRule) -> range:
    """The indices j of V that can be j* when the window's minimum occurs once in V."""
    cuts = range(n - 1)
    in_window = cuts[int(window[0] * n) + rule.start_offset:int(window[1] * n) + rule.stop_offset]
    return in_window if len(in_window) else cuts


def split_keep_range(n: int, window: tuple[float, float] = (0.35, 0.65), splits: int = 1,
                     metric: str = "gradient") -> tuple[int, int]:
    """(fewest, most) blocks that `select_layers` can keep out of n with `metric`'s rule,
    for scores whose variance sums V hold the window's minimum only once (any scores drawn
    from a continuous distribution, the random first step included). Ties can fall
    outside: with all scores equal, j* = 0, so the gradient split keeps every block and
    the cosine split none (its first step).
    Gradient split: n = 6 -> (3, 4), n = 30 -> (11, 20), n = 32 -> (12, 21).
    """
    rule = SPLIT_RULES[metric]
    sizes = {n}
    for _ in range(splits):
        sizes = set().union(*(_kept_sizes(m, window, rule) for m in sizes))
    return min(sizes), max(sizes)


def _kept_sizes(m: int, window: tuple[float, float], rule: SplitRule) -> set[int]:
    if m < 2:  # kept as it is (see select_layers)
        return {m}
    return {j if rule.keep_low else m - j for j in _cuts_in_window(m, window, rule)}


@dataclasses.dataclass
class IRTuningConfig(LayerwiseConfig):
    adapter: Literal["lora", "dora", "none"] = "lora"  # the paper's setting
    split_num: int = 1
    metric: Literal["gradient", "weight", "cosine"] = "gradient"
    window: tuple[float, float] = (0.35, 0.65)
    # False: the head keeps its random initialisation, as in the reference (whose adapter
    # is configured for a causal LM, so peft never unfreezes the classification head).
    train_head: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.metric not in SPLIT_RULES:
            raise ValueError(f"metric must be gradient, weight or cosine, not {self.metric!r}")
        if self.split_num < 1:
            raise ValueError("split_num must be at least 1")
        if not isinstance(self.train_head, bool):
            raise ValueError(f"train_head must be true or false, not {self.train_head!r}")
        if self.metric == "cosine" and not self.train_head:
            # The cosine split can keep no block (always at the first step): with the head
            # frozen too, nothing would train and the loss would have no gradient.
            raise ValueError("metric=cosine needs train_head=true: its split can select no "
                             "block, and then nothing at all would train")
        self.window = tuple(float(w) for w in self.window)


@register_strategy
class IRTuning(LayerwiseStrategy):
    name: ClassVar[str] = "ir-tuning"
    title = "IR-Tuning"
    description: ClassVar[str] = ("IR-Tuning: each step, train the blocks whose gradient "
                                  "norms fall in the high group of a variance split")
    config_class = IRTuningConfig
    config: IRTuningConfig

    @property
    def trains_head(self) -> bool:
        return self.config.train_head

    def zero_refusal(self, stage: int) -> str | None:
        if stage == 3 and self.config.metric == "weight":
            return ("IR-Tuning's metric=weight reads whole weight matrices, which ZeRO-3 "
                    "partitions across workers; use metric=gradient or deepspeed zero2")
        return super().zero_refusal(stage)

    def prepare(self, model):
        model = super().prepare(model)
        initial = INITIAL_SIMILARITY if self.config.metric == "cosine" else INITIAL_SCORE
        self.scores = np.full(self.num_blocks, initial)
        if self.config.metric == "cosine":
            self._similarity = torch.zeros(self.num_blocks)
            self._measured = [False] * self.num_blocks
            self._measuring = False
            for i, block in enumerate(self.parts.blocks):
                block.register_forward_hook(self._cosine_hook(i), with_kwargs=True)
        return model

    def choose(self, step: int) -> list[int]:
        if self.config.metric == "weight":
            self.scores = self._weight_scores()
        elif self.config.metric == "cosine":  # measure this step's first forward only
            self._measured = [False] * self.num_blocks
            self._measuring = True
        return select_layers(self.scores, self.config.split_num, self.config.window, self.rng,
                             metric=self.config.metric)

    def after_backward(self, step: int) -> None:
        if self.config.metric == "gradient":
            self._update_gradient_scores()
        elif self.config.metric == "cosine":
            self._measuring = False  # evaluation forwards until the next step are not scored
            if any(self._measured):
                similarity = self._similarity.tolist()  # the one device->host read of the step
                for i, measured in enumerate(self._measured):
                    if measured:
                        self.scores[i] = similarity[i]

    def scored_blocks(self) -> list[int]:
        """The blocks whose gradient scores this step refreshes: the ones trained, as the
        reference (frozen blocks keep their last score)."""
        return self.selected

    def _update_gradient_scores(self) -> None:
        grads, owner = [], []
        for i in self.scored_blocks():
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
        """Frobenius norm of each block's attention output projection, its base weight only
        (a LoRA delta on it, where targeted, is left out, as in the reference)."""
        with torch.no_grad():
            norms = []
            for block in self.parts.blocks:
                projection = attention_output_projection(block)
                weight = getattr(projection, "base_layer", projection).weight
                norms.append(torch.linalg.vector_norm(weight.float()))
            return np.asarray(torch.stack(norms).tolist())

    def _cosine_hook(self, index: int):
        def hook(module, args, kwargs, output):
            if not self._measuring or self._measured[index]:
                return
            hidden_in = args[0] if args else kwargs.get("hidden_states")
            hidden_out = output[0] if isinstance(output, tuple) else output
            if not torch.is_tensor(hidden_in) or not torch.is_tensor(hidden_out):
                return
            self._similarity = self._similarity.to(hidden_out.device)
            self._similarity[index] = mean_position_cosine(hidden_in, hidden_out)
            self._measured[index] = True
        return hook


@torch.no_grad()
def mean_position_cosine(hidden_in: torch.Tensor, hidden_out: torch.Tensor) -> torch.Tensor:
    """The reference's similarity of a block's input and output (batch x seq x hidden):
    both averaged over the batch, each position's vector L2-normalised, then the mean over
    positions of the cosine at that position (trace of the product / seq length)."""
    before = hidden_in.float().mean(dim=0)
    after = hidden_out.float().mean(dim=0)
    before = before / before.norm(dim=-1, keepdim=True)
    after = after / after.norm(dim=-1, keepdim=True)
    return (before * after).sum(dim=-1).mean()
