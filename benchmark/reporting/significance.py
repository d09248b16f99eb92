"""Paired bootstrap over test examples: is one strategy's macro F1 really above another's?

Both strategies were tested on the same examples with the same seeds. Each resample draws
the test examples with replacement (the same draw for both strategies and for every seed),
scores each seed's predictions on it, and averages over seeds. The p-value is the share of
resamples in which the challenger scores at least as well as the leader: a small value
means the leader's advantage does not hinge on which examples happened to be in the test
set. (Koehn 2004; Berg-Kirkpatrick et al. 2012 use the same resampling.)
"""

from __future__ import annotations

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
