"""Is one strategy's macro F1 really above another's? Two tests.

`paired_bootstrap` (the leaderboard's column): both strategies were tested on the same
examples with the same seeds. Each resample draws the test examples with replacement (the
same draw for both strategies and for every seed), scores each seed's predictions on it,
and averages over seeds. The p-value is the share of resamples in which the challenger
scores at least as well as the leader: a small value means the leader's advantage does not
hinge on which examples happened to be in the test set. (Koehn 2004; Berg-Kirkpatrick et
al. 2012 use the same resampling.)

`hierarchical_bootstrap` (the claims card's): the seeds are resampled too, so the interval
and the two-sided p also cover training randomness; `holm` corrects a claim's family of
tests, and `aso_epsilon_min` gives deepsig's Almost Stochastic Order as a second opinion.
`verdicts.py` turns these into verdicts that are checked under many generator seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

DEFAULT_RESAMPLES = 2000


def macro_f1_rows(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Macro F1 of every row of (labels, predicted), both shaped (resamples, examples).
    Per class 2·tp / (2·tp + fp + fn), and 0 where a class is neither present nor
    predicted: scikit-learn's macro F1 with labels=all classes and zero_division=0."""
    f1 = np.zeros(labels.shape[0])
    for c in range(num_classes):
        gold, guess = labels == c, predicted == c
        tp = (gold & guess).sum(axis=1)
        denominator = 2 * tp + (guess & ~gold).sum(axis=1) + (gold & ~guess).sum(axis=1)
        f1 += np.divide(2 * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)
    return f1 / num_classes


def paired_bootstrap(labels: Sequence[int], leader: Sequence[Sequence[int]],
                     challenger: Sequence[Sequence[int]], num_classes: int,
                     resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, float]:
    """`leader` and `challenger` hold one prediction list per seed, paired by position.
    Returns the observed seed-mean macro F1 gap (leader − challenger) and the p-value."""
    labels = np.asarray(labels)
    leader, challenger = np.asarray(leader), np.asarray(challenger)
    if leader.shape != challenger.shape or leader.shape[1:] != labels.shape:
        raise ValueError(f"predictions do not pair up: {leader.shape}, {challenger.shape}, "
                         f"labels {labels.shape}")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(labels), size=(resamples, len(labels)))
    gold = labels[draws]

    def seed_mean(predictions: np.ndarray) -> np.ndarray:
        return np.mean([macro_f1_rows(gold, p[draws], num_classes) for p in predictions], axis=0)

    per_seed = lambda predictions: np.array([macro_f1_rows(labels[None], p[None], num_classes)[0]
                                             for p in predictions])
    leader_f1, challenger_f1 = per_seed(leader), per_seed(challenger)
    gaps = seed_mean(leader) - seed_mean(challenger)
    # The resampling covers which examples were tested, not training randomness: how many
    # seeds the leader won on its own says whether the gap also holds seed by seed.
    return {"gap": float(leader_f1.mean() - challenger_f1.mean()),
            "p_value": float(np.mean(gaps <= 0)), "resamples": resamples,
            "seeds_won": int((leader_f1 > challenger_f1).sum()),
            "seeds_lost": int((leader_f1 < challenger_f1).sum()), "seeds": len(leader)}


# The claims card's test: seeds and test examples resampled together.

HIERARCHICAL_RESAMPLES = 10_000
_CHUNK = 2_000  # resamples drawn and scored at a time: bounds memory on large test sets


@dataclass(frozen=True)
class Draws:
    """One chunk of hierarchical resamples: `examples` (resamples, examples) test-example
    indices shared by both strategies; `first_seeds` and `second_seeds` (resamples, seeds)
    run indices drawn for each strategy separately."""
    examples: np.ndarray
    first_seeds: np.ndarray
    second_seeds: np.ndarray


def draw(rng: np.random.Generator, resamples: int, examples: int, first_seeds: int,
         second_seeds: int) -> Draws:
    return Draws(rng.integers(0, examples, size=(resamples, examples)),
                 rng.integers(0, first_seeds, size=(resamples, first_seeds)),
                 rng.integers(0, second_seeds, size=(resamples, second_seeds)))


def per_seed_macro_f1(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Macro F1 of each run (row of `predictions`) on the whole test set."""
    predictions = np.asarray(predictions)
    return macro_f1_rows(np.broadcast_to(labels, predictions.shape), predictions, num_classes)


def resampled_gaps(labels: np.ndarray, first: np.ndarray, second: np.ndarray,
                   num_classes: int, draws: Draws) -> np.ndarray:
    """(seed-mean macro F1 of `first` − that of `second`) in each resample of `draws`.

    Drawing an example k times counts it k times, so each run's per-class counts on a
    resample are a weighted sum over examples: one matrix product scores every run on every
    resample at once (the same figure as macro_f1_rows on the drawn rows, far faster)."""
    resamples, n = draws.examples.shape
    weights = np.bincount((draws.examples + n * np.arange(resamples)[:, None]).ravel(),
                          minlength=resamples * n).reshape(resamples, n).astype(np.float64)
    classes = np.arange(num_classes)
    gold = (labels[:, None] == classes).astype(np.float64)  # (examples, classes)
    gold_counts = weights @ gold  # (resamples, classes)

    def seed_mean_f1(predictions: np.ndarray, seed_draws: np.ndarray) -> np.ndarray:
        # (examples, seeds · classes): whether run s predicted class c for the example
        guess = (predictions.T[:, :, None] == classes).reshape(n, -1).astype(np.float64)
        hits = guess * np.tile(gold, len(predictions))
        shape = (resamples, len(predictions), num_classes)
        tp, predicted = (weights @ hits).reshape(shape), (weights @ guess).reshape(shape)
        denominator = gold_counts[:, None, :] + predicted  # 2·tp + fp + fn
        f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
        macro = f1.sum(axis=2) / num_classes  # (resamples, seeds)
        return np.take_along_axis(macro, seed_draws, axis=1).mean(axis=1)

    return seed_mean_f1(first, draws.first_seeds) - seed_mean_f1(second, draws.second_seeds)


def hierarchical_bootstrap(labels: Sequence[int], first: Sequence[Sequence[int]],
                           second: Sequence[Sequence[int]], num_classes: int,
                           resamples: int = HIERARCHICAL_RESAMPLES, seed: int = 0,
                           confidence: float = 0.95) -> dict:
    """Is `first`'s seed-mean test macro F1 above or below `second`'s, allowing for both the
    training seeds and the test examples being a sample?

    `first` and `second` hold one prediction list per run (seed), each over the same test
    examples in the order of `labels`; their numbers of seeds may differ. Each resample
    draws the test examples with replacement (one draw for both strategies and all their
    runs: the comparison is paired by example) and, independently for each strategy, its
    runs with replacement (not paired by seed number: the counts may differ, and where one
    seed does make two strategies' runs alike, e.g. through a shared data order, pairing
    would narrow the interval, so this is the cautious choice), then recomputes every
    drawn run's macro F1 on the drawn examples.

    Returns the observed gap (first − second, seed means on the whole test set), the
    percentile interval of the resampled gaps, and the two-sided p: twice the smaller
    share of resampled gaps at or below zero and at or above it, counting the observed
    sample as one resample ((1 + k) / (1 + R), so p is never 0), capped at 1. So p < 0.05
    about when the 95% interval leaves out 0, and identical strategies (every gap 0) get 1."""
    labels = np.asarray(labels)
    first, second = np.asarray(first), np.asarray(second)
    if first.ndim != 2 or second.ndim != 2 or first.shape[1:] != labels.shape \
            or second.shape[1:] != labels.shape:
        raise ValueError(f"predictions do not pair up: {first.shape}, {second.shape}, "
                         f"labels {labels.shape}")
    rng = np.random.default_rng(seed)
    gaps = np.concatenate([
        resampled_gaps(labels, first, second, num_classes,
                       draw(rng, min(_CHUNK, resamples - start), len(labels), len(first),
                            len(second)))
        for start in range(0, resamples, _CHUNK)])
    first_f1 = per_seed_macro_f1(labels, first, num_classes)
    second_f1 = per_seed_macro_f1(labels, second, num_classes)
    tail = (1 - confidence) / 2
    low, high = np.quantile(gaps, [tail, 1 - tail])
    far_side = min(int((gaps <= 0).sum()), int((gaps >= 0).sum()))
    return {"gap": float(first_f1.mean() - second_f1.mean()),
            "ci_low": float(low), "ci_high": float(high), "confidence": confidence,
            "p_value": min(1.0, 2 * (1 + far_side) / (1 + resamples)),
            "resamples": resamples, "generator_seed": seed,
            "first_f1": first_f1.tolist(), "second_f1": second_f1.tolist()}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p values, in the input order: the i-th smallest p times
    (m − i + 1), never below the one before it, capped at 1. A p below alpha after this
    keeps the chance of any false "gap" among the m tests below alpha."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    m = len(p)
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return adjusted.tolist()


# deepsig's recommended τ: ε_min below it reads "almost stochastically dominant".
ASO_THRESHOLD = 0.2
ASO_ITERATIONS = 1000  # deepsig's default; each call takes about 4 s on one core


def aso_epsilon_min(better: Sequence[float], worse: Sequence[float], num_comparisons: int = 1,
                    confidence: float = 0.95, iterations: int = ASO_ITERATIONS,
                    seed: int = 0) -> float:
    """deepsig's Almost Stochastic Order (Dror et al. 2019; del Barrio et al. 2018) over
    per-seed scores: ε_min, an upper bound on how far `better`'s score distribution
    fails to dominate `worse`'s (0: dominates on every quantile; 0.5: no order), with
    deepsig's Bonferroni correction for `num_comparisons`. It compares distributions of a
    handful of runs (3 to 5 here), so it says little that is firm; a second opinion."""
    import warnings

    from deepsig import aso

    # deepsig seeds numpy's global generator on every iteration: keep the caller's state.
    state = np.random.get_state()
    try:
        with warnings.catch_warnings():
            # Identical score sets make the Wasserstein distance 0; deepsig then warns and
            # reads it as no order (0.5), which is the right answer here.
            warnings.filterwarnings("ignore", message="Division by zero encountered")
            return float(aso(list(map(float, better)), list(map(float, worse)),
                             confidence_level=confidence, num_comparisons=num_comparisons,
                             num_bootstrap_iterations=iterations, show_progress=False, seed=seed))
    finally:
        np.random.set_state(state)
