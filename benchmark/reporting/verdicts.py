"""Verdicts for one claim: is the focus strategy ahead of, behind or level with each
baseline, in a way that does not hinge on the resampling draw?

For each baseline: the hierarchical bootstrap (`significance.hierarchical_bootstrap`:
seeds and test examples resampled together, two-sided), Holm's correction across the
claim's baselines, a verdict at alpha after correction, and the same test, correction
included, re-run under more generator seeds: a verdict that any of them changes is
"undecided". deepsig's ASO over the per-seed scores rides along as a second opinion.
`method_text` says all this in a paragraph a card can print as it is.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .runs import RunRecord
from .significance import (ASO_ITERATIONS, ASO_THRESHOLD, HIERARCHICAL_RESAMPLES,
                           aso_epsilon_min, hierarchical_bootstrap, holm)

AHEAD, BEHIND, NO_GAP = "ahead", "behind", "no solid gap"
UNDECIDED, TOO_FEW_SEEDS = "undecided", "too few seeds"
ALPHA = 0.05
STABILITY_SEEDS = 20
# Resampling one or two runs cannot show how much training randomness moves the score.
MIN_SEEDS = 3


@dataclass(frozen=True)
class PairedPredictions:
    """Two strategies' stored test predictions over the same examples: `labels`
    (examples,), `first` (its runs, examples) and `second` (its runs, examples), in one
    example order; the run counts may differ."""
    labels: np.ndarray
    first: np.ndarray
    second: np.ndarray
    num_classes: int
    first_seeds: tuple[str, ...]
    second_seeds: tuple[str, ...]


def _labelled_predictions(saved: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """{example id: (label, predicted)} of a result record; records written before
    predictions were keyed by id hold two lists in evaluation order, keyed by position."""
    predictions = saved["test_predictions"]
    if set(predictions) == {"labels", "predicted"}:
        return {str(i): (int(label), int(guess)) for i, (label, guess)
                in enumerate(zip(predictions["labels"], predictions["predicted"]))}
    return {key: (int(v["label"]), int(v["predicted"])) for key, v in predictions.items()}


def paired_predictions(first_runs: Sequence[RunRecord],
                       second_runs: Sequence[RunRecord]) -> PairedPredictions | None:
    """The arrays the test needs from two strategies' runs (e.g. two leaderboard entries'
    `runs`), examples matched by id. Runs that stored no test predictions are left out;
    None when a side has none left, or when the runs were not all tested on the same
    examples with the same labels and label set."""
    def stored(runs: Sequence[RunRecord]) -> list[tuple[str, dict, int]]:
        kept = [(r.seed, r.result()) for r in sorted(runs, key=lambda r: int(r.seed))]
        return [(seed, _labelled_predictions(saved), len(saved["label_names"]))
                for seed, saved in kept if saved.get("test_predictions")]

    first, second = stored(first_runs), stored(second_runs)
    if not first or not second:
        return None
    reference, num_classes = first[0][1], first[0][2]
    ids = sorted(reference)
    for _, by_id, classes in first + second:
        if classes != num_classes or by_id.keys() != reference.keys() \
                or any(by_id[i][0] != reference[i][0] for i in ids):
            return None

    def predicted(runs):
        return np.array([[by_id[i][1] for i in ids] for _, by_id, _ in runs])

    return PairedPredictions(np.array([reference[i][0] for i in ids]), predicted(first),
                             predicted(second), num_classes,
                             tuple(s for s, _, _ in first), tuple(s for s, _, _ in second))


@dataclass(frozen=True)
class Verdict:
    """One baseline of a claim, `first` (the focus) against it. Figures are those of the
    generator seed the claim was judged with; `*_range` spans all generator seeds."""
    baseline: str
    gap: float  # focus − baseline, seed means of test macro F1
    ci_low: float
    ci_high: float
    p_value: float  # two-sided, before correction
    holm_p_value: float
    verdict: str  # AHEAD, BEHIND, NO_GAP, UNDECIDED or TOO_FEW_SEEDS
    seeds_agreeing: int  # re-runs whose verdict matched the first one's
    stability_seeds: int
    seed_verdicts: dict[str, int]  # verdict -> how many generator seeds gave it, all runs
    p_range: tuple[float, float]
    holm_p_range: tuple[float, float]
    aso_epsilon_min: float  # ε_min of the higher-mean strategy over the other
    aso_favours: str  # "focus" or "baseline": whose dominance ε_min measures
    focus_f1: tuple[float, ...]  # per-seed test macro F1
    baseline_f1: tuple[float, ...]

    @property
    def aso_dominant(self) -> bool:
        return self.aso_epsilon_min < ASO_THRESHOLD


def decide(gap: float, holm_p_value: float, seeds: int, alpha: float = ALPHA,
           min_seeds: int = MIN_SEEDS) -> str:
    """One run's verdict: AHEAD or BEHIND when the Holm-corrected p is below alpha (the
    sign of the gap says which), NO_GAP otherwise; TOO_FEW_SEEDS when the side with fewer
    runs has under `min_seeds`."""
    if seeds < min_seeds:
        return TOO_FEW_SEEDS
    if holm_p_value < alpha:
        return AHEAD if gap > 0 else BEHIND
    return NO_GAP


def _test_claim(comparisons: Mapping[str, PairedPredictions], resamples: int, seed: int,
                alpha: float, min_seeds: int) -> tuple[list[dict], list[float], list[str]]:
    """The whole test under one generator seed: every baseline's bootstrap (each from a
    fresh generator with that seed, so a baseline's figures do not depend on which others
    the claim has), Holm across them, and the verdicts."""
    tests = [hierarchical_bootstrap(c.labels, c.first, c.second, c.num_classes,
                                    resamples=resamples, seed=seed)
             for c in comparisons.values()]
    corrected = holm([t["p_value"] for t in tests])
    verdicts = [decide(t["gap"], p, min(len(c.first), len(c.second)), alpha, min_seeds)
                for t, p, c in zip(tests, corrected, comparisons.values())]
    return tests, corrected, verdicts


def judge_claim(comparisons: Mapping[str, PairedPredictions], alpha: float = ALPHA,
                resamples: int = HIERARCHICAL_RESAMPLES, seed: int = 0,
                stability_seeds: int = STABILITY_SEEDS, min_seeds: int = MIN_SEEDS,
                aso_iterations: int = ASO_ITERATIONS) -> list[Verdict]:
    """Verdicts of the focus (every comparison's `first`) against each baseline of one
    claim (name -> its PairedPredictions, all of one family for Holm; leave out baselines
    whose runs do not pair, where paired_predictions gave None), in the mapping's order.
    The test runs under generator `seed`, then again under seed + 1 ... seed +
    `stability_seeds`; a verdict that any re-run changes becomes UNDECIDED."""
    if not comparisons:
        return []
    runs = [_test_claim(comparisons, resamples, s, alpha, min_seeds)
            for s in range(seed, seed + stability_seeds + 1)]
    tests, corrected, _ = runs[0]
    verdicts = []
    for k, name in enumerate(comparisons):
        by_seed = [verdicts_k[k] for _, _, verdicts_k in runs]
        agreeing = sum(v == by_seed[0] for v in by_seed[1:])
        test = tests[k]
        focus_leads = test["gap"] >= 0
        leader, trailer = ((test["first_f1"], test["second_f1"]) if focus_leads
                           else (test["second_f1"], test["first_f1"]))
        raw_ps = [tests_k[k]["p_value"] for tests_k, _, _ in runs]
        holm_ps = [corrected_k[k] for _, corrected_k, _ in runs]
        verdicts.append(Verdict(
            baseline=name, gap=test["gap"], ci_low=test["ci_low"], ci_high=test["ci_high"],
            p_value=test["p_value"], holm_p_value=corrected[k],
            verdict=by_seed[0] if agreeing == stability_seeds else UNDECIDED,
            seeds_agreeing=agreeing, stability_seeds=stability_seeds,
            seed_verdicts=dict(Counter(by_seed)),
            p_range=(min(raw_ps), max(raw_ps)), holm_p_range=(min(holm_ps), max(holm_ps)),
            aso_epsilon_min=aso_epsilon_min(leader, trailer, num_comparisons=len(comparisons),
                                            iterations=aso_iterations, seed=seed),
            aso_favours="focus" if focus_leads else "baseline",
            focus_f1=tuple(test["first_f1"]), baseline_f1=tuple(test["second_f1"])))
    return verdicts


def method_text(alpha: float = ALPHA, resamples: int = HIERARCHICAL_RESAMPLES, seed: int = 0,
                stability_seeds: int = STABILITY_SEEDS, min_seeds: int = MIN_SEEDS,
                aso_iterations: int = ASO_ITERATIONS) -> str:
    """The method in one paragraph, for a card to print as it is (pass the settings the
    verdicts were made with)."""
    return (
        f"Each gap is the focus's mean test macro F1 over its seeds minus the baseline's. It "
        f"is tested with a hierarchical paired bootstrap of {resamples:,} resamples (numpy's "
        f"default generator, seed {seed}): each resample draws the test examples with "
        f"replacement, one draw shared by both strategies and all their runs, and, separately "
        f"for each strategy, its seeds with replacement (the seed counts may differ), then "
        f"recomputes macro F1 from the stored predictions of every drawn run on the drawn "
        f"examples. The {1 - alpha:.0%} interval is the {100 * alpha / 2:g}th to "
        f"{100 - 100 * alpha / 2:g}th percentile of the resampled gaps; the two-sided p is "
        f"twice the smaller share of resampled gaps at or below zero and at or above it, "
        f"counting the observed sample as one resample. The p values of one claim's "
        f"baselines are corrected together by Holm's method; the focus is ahead of (behind) "
        f"a baseline when the corrected p is below {alpha:g} and the gap is positive "
        f"(negative), and otherwise there is no solid gap; with fewer than {min_seeds} seeds "
        f"on either side there is no verdict (too few seeds). The whole test, correction "
        f"included, is run again under "
        f"{stability_seeds} more generator seeds ({seed + 1}-{seed + stability_seeds}); a "
        f"verdict that any of them changes is reported undecided. As a second opinion, "
        f"deepsig's Almost Stochastic Order (Dror et al. 2019; {aso_iterations:,} bootstrap "
        f"iterations, confidence 0.95, Bonferroni over the claim's baselines) gives "
        f"epsilon_min of the strategy with the higher mean over the other from the per-seed "
        f"scores; below {ASO_THRESHOLD:g} (deepsig's recommended threshold) reads as almost "
        f"stochastic dominance, but from a handful of seeds a side it is a rough guide, not "
        f"the verdict.")
