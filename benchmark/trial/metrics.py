"""Classification metrics (scikit-learn) and steps-to-converge."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

DEFAULT_CONVERGE_TOLERANCE = 0.02


def classification_metrics(labels: Sequence[int], probs: np.ndarray,
                           label_names: Sequence[str]) -> dict:
    """Macro F1 (headline), accuracy, macro precision/recall, per-class F1, macro AUPRC.

    AUPRC is averaged over the classes present in `labels` (it is undefined for the rest).
    """
    from sklearn.metrics import (accuracy_score, average_precision_score,
                                 precision_recall_fscore_support)

    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    predictions = probs.argmax(axis=1)
    classes = list(range(len(label_names)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes never predicted: F1 0, as intended
        precision, recall, f1, _ = precision_recall_fscore_support(
            labels, predictions, labels=classes, average="macro", zero_division=0)
        _, _, per_class, _ = precision_recall_fscore_support(
            labels, predictions, labels=classes, average=None, zero_division=0)
        present = [c for c in classes if (labels == c).any()]
        auprc = float(np.mean([average_precision_score(labels == c, probs[:, c])
                               for c in present])) if present else float("nan")
    return {
        "macro_f1": float(f1),
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_precision": float(precision),
        "macro_recall": float(recall),
        "macro_auprc": auprc,
        "per_class_f1": {name: float(v) for name, v in zip(label_names, per_class)},
    }


def majority_macro_f1(train_labels: Sequence[int], test_labels: Sequence[int],
                      num_classes: int) -> float:
    """The test macro F1 of always predicting the train split's most frequent label: the
    floor a classifier that learned only the label prior sits on."""
    from sklearn.metrics import f1_score

    majority = int(np.bincount(np.asarray(train_labels), minlength=num_classes).argmax())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(f1_score(test_labels, [majority] * len(test_labels),
                              labels=list(range(num_classes)), average="macro", zero_division=0))


def steps_to_converge(history: Sequence[tuple[int, float]],
                      tolerance: float = DEFAULT_CONVERGE_TOLERANCE) -> int | None:
    """The first evaluated step whose dev macro F1 is within `tolerance` (relative) of the
    run's best dev macro F1. `history` holds (step, dev macro F1) in step order."""
    if not history:
        return None
    best = max(score for _, score in history)
    for step, score in history:
        if score >= best * (1.0 - tolerance):
            return step
    return None
