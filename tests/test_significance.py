"""The paired bootstrap, the hierarchical bootstrap, Holm, ASO and the claim verdicts,
against scikit-learn, hand-computed figures and cases whose answer is known."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from benchmark.reporting.runs import RunRecord
from benchmark.reporting.significance import (aso_epsilon_min, draw, hierarchical_bootstrap,
                                              holm, macro_f1_rows, paired_bootstrap,
                                              resampled_gaps)
from benchmark.reporting.verdicts import (AHEAD, BEHIND, NO_GAP, TOO_FEW_SEEDS, UNDECIDED,
                                          PairedPredictions, decide, judge_claim, method_text,
                                          paired_predictions)


def test_macro_f1_matches_scikit_learn_including_absent_classes():
    rng = np.random.default_rng(1)
    labels, predicted = rng.integers(0, 5, 300), rng.integers(0, 4, 300)  # class 4 never predicted
    expected = f1_score(labels, predicted, labels=range(6), average="macro", zero_division=0)
    assert np.isclose(macro_f1_rows(labels[None], predicted[None], 6)[0], expected)


def test_a_clearly_better_strategy_gets_a_small_p_and_identical_ones_p_one():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, 400)
    guess = rng.integers(0, 4, 400)
    better = np.where(rng.random(400) < 0.6, labels, guess)  # right on 60% more examples
    result = paired_bootstrap(labels, [better, better], [guess, guess], 4)
    assert result["gap"] > 0.3 and result["p_value"] < 0.01 and result["seeds_won"] == 2
    same = paired_bootstrap(labels, [guess], [guess], 4)
    assert same["gap"] == 0 and same["p_value"] == 1.0 and same["seeds_won"] == 0


def test_a_gap_from_a_handful_of_examples_is_not_significant():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 300)
    base = np.where(rng.random(300) < 0.5, labels, (labels + 1) % 3)
    nudged = base.copy()
    wrong = np.flatnonzero(base != labels)[:2]
    nudged[wrong] = labels[wrong]  # two more examples right
    result = paired_bootstrap(labels, [nudged], [base], 3)
    assert 0 < result["gap"] < 0.02 and result["p_value"] > 0.05


def test_a_gap_is_solid_only_with_a_small_p_on_every_seed_of_at_least_three():
    from benchmark.reporting.leaderboard import solid

    rng = np.random.default_rng(4)
    labels = rng.integers(0, 4, 400)
    guesses = [rng.integers(0, 4, 400) for _ in range(3)]
    better = [np.where(rng.random(400) < 0.6, labels, g) for g in guesses]
    three = paired_bootstrap(labels, better, guesses, 4)
    assert three["p_value"] < 0.01 and three["seeds_won"] == 3 and solid(three)
    assert solid(paired_bootstrap(labels, guesses, better, 4), reverse=True)
    assert not solid(paired_bootstrap(labels, guesses, better, 4))
    # The same clear gap on one seed: the test set cannot vouch for training randomness.
    one = paired_bootstrap(labels, better[:1], guesses[:1], 4)
    assert one["p_value"] < 0.01 and one["seeds_won"] == 1 and not solid(one)
    two = paired_bootstrap(labels, better[:2], guesses[:2], 4)
    assert two["seeds_won"] == 2 and not solid(two)


# The claims card's test: seeds and test examples resampled together.

def runs_right_on(labels: np.ndarray, share: float, seeds: int, rng, classes: int) -> np.ndarray:
    """`seeds` prediction rows, each right on about `share` of the examples, else a random class."""
    guess = rng.integers(0, classes, (seeds, len(labels)))
    return np.where(rng.random((seeds, len(labels))) < share, labels, guess)


def pair(labels, first, second, classes) -> PairedPredictions:
    seeds = lambda runs: tuple(str(s) for s in range(len(runs)))
    return PairedPredictions(labels, first, second, classes, seeds(first), seeds(second))


def test_each_resampled_gap_is_macro_f1_recomputed_on_the_drawn_examples_and_seeds():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, 120)
    first, second = runs_right_on(labels, 0.5, 3, rng, 4), runs_right_on(labels, 0.4, 2, rng, 5)
    draws = draw(np.random.default_rng(0), 40, len(labels), 3, 2)
    expected = [np.mean([macro_f1_rows(labels[None, ex], first[s][None, ex], 5)[0] for s in a])
                - np.mean([macro_f1_rows(labels[None, ex], second[s][None, ex], 5)[0] for s in b])
                for ex, a, b in zip(draws.examples, draws.first_seeds, draws.second_seeds)]
    assert np.allclose(resampled_gaps(labels, first, second, 5, draws), expected)


def test_the_resampling_is_paired_by_example_across_unequal_seed_counts():
    # The second strategy is the first with 40 of its errors fixed, on every run. Fixing an
    # error never lowers macro F1, so with both scored on the same drawn examples no
    # resample can favour the first; drawn separately, many would.
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 3, 300)
    first = runs_right_on(labels, 0.5, 1, rng, 3)[0]
    fixed = first.copy()
    wrong = np.flatnonzero(first != labels)[:40]
    fixed[wrong] = labels[wrong]
    draws = draw(np.random.default_rng(0), 500, len(labels), 3, 5)
    gaps = resampled_gaps(labels, np.tile(first, (3, 1)), np.tile(fixed, (5, 1)), 3, draws)
    assert (gaps < 0).all()
    result = hierarchical_bootstrap(labels, np.tile(first, (3, 1)), np.tile(fixed, (5, 1)), 3,
                                    resamples=500)
    assert result["ci_high"] < 0 and result["p_value"] == pytest.approx(2 / 501)


def test_a_clear_gap_is_ahead_with_a_small_p_and_an_interval_that_leaves_out_zero():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, 360)
    better, worse = runs_right_on(labels, 0.6, 5, rng, 4), runs_right_on(labels, 0.3, 3, rng, 4)
    result = hierarchical_bootstrap(labels, better, worse, 4, resamples=10_000)
    assert result["gap"] > 0.1 and result["p_value"] < 0.01 and result["ci_low"] > 0
    assert result["ci_low"] < result["gap"] < result["ci_high"]
    ahead, behind = judge_claim({"worse": pair(labels, better, worse, 4),
                                 "better": pair(labels, worse, better, 4)},
                                resamples=500, aso_iterations=50)
    assert (ahead.verdict, ahead.seeds_agreeing, ahead.stability_seeds) == (AHEAD, 20, 20)
    assert behind.verdict == BEHIND and behind.gap == pytest.approx(-ahead.gap)
    assert ahead.holm_p_value < 0.01 and ahead.aso_favours == "focus"
    assert behind.aso_favours == "baseline" and ahead.aso_dominant


def test_identical_strategies_give_p_one_and_no_solid_gap():
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 4, 200)
    runs = runs_right_on(labels, 0.5, 3, rng, 4)
    result = hierarchical_bootstrap(labels, runs, runs.copy(), 4, resamples=1000)
    # Seeds are drawn separately for the two, so resampled gaps spread around zero.
    assert result["gap"] == 0 and result["p_value"] > 0.5
    assert result["ci_low"] < 0 < result["ci_high"]
    one_run = runs[:1]
    same = hierarchical_bootstrap(labels, np.tile(one_run, (3, 1)), np.tile(one_run, (3, 1)), 4,
                                  resamples=1000)
    assert (same["gap"], same["p_value"], same["ci_low"], same["ci_high"]) == (0, 1.0, 0, 0)
    (verdict,) = judge_claim({"twin": pair(labels, runs, runs.copy(), 4)}, resamples=300,
                             aso_iterations=50)
    assert verdict.verdict == NO_GAP and verdict.seeds_agreeing == 20
    assert not verdict.aso_dominant


def test_holm_matches_a_hand_computed_example():
    # Sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> raised to 0.06.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0] and holm([0.02]) == [0.02] and holm([]) == []


def test_verdicts_follow_the_corrected_p_the_sign_and_the_seed_count():
    assert decide(0.03, 0.049, seeds=3) == AHEAD and decide(-0.03, 0.01, seeds=5) == BEHIND
    assert decide(0.03, 0.05, seeds=5) == NO_GAP and decide(0.3, 0.001, seeds=2) == TOO_FEW_SEEDS


def test_a_borderline_gap_is_undecided():
    # The focus is the baseline with k more examples right on every run; take the k whose
    # p on generator seed 0 is closest to 0.05: other generator seeds land on both sides.
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 3, 400)
    base = runs_right_on(labels, 0.5, 3, rng, 3)

    def focus(k: int) -> np.ndarray:
        improved = base.copy()
        for run in improved:
            wrong = np.flatnonzero(run != labels)[:k]
            run[wrong] = labels[wrong]
        return improved

    p = {k: hierarchical_bootstrap(labels, focus(k), base, 3, resamples=300)["p_value"]
         for k in range(2, 30, 2)}
    k = min(p, key=lambda k: abs(p[k] - 0.05))
    (verdict,) = judge_claim({"base": pair(labels, focus(k), base, 3)}, resamples=300,
                             aso_iterations=50)
    assert verdict.verdict == UNDECIDED and verdict.seeds_agreeing < 20
    assert set(verdict.seed_verdicts) == {AHEAD, NO_GAP}
    assert verdict.p_range[0] < 0.05 <= verdict.p_range[1]


def test_the_fixed_generator_seed_reproduces_every_figure():
    rng = np.random.default_rng(10)
    labels = rng.integers(0, 4, 200)
    first, second = runs_right_on(labels, 0.5, 3, rng, 4), runs_right_on(labels, 0.45, 4, rng, 4)
    once = hierarchical_bootstrap(labels, first, second, 4, resamples=3000, seed=3)
    assert hierarchical_bootstrap(labels, first, second, 4, resamples=3000, seed=3) == once
    other = hierarchical_bootstrap(labels, first, second, 4, resamples=3000, seed=4)
    assert other["gap"] == once["gap"] and other["ci_low"] != once["ci_low"]


def test_aso_favours_the_dominant_scores_and_leaves_numpy_state_alone():
    np.random.seed(123)
    expected_next = np.random.random()
    np.random.seed(123)
    high, low = [0.31, 0.33, 0.32, 0.34, 0.35], [0.25, 0.27, 0.26, 0.28, 0.24]
    assert aso_epsilon_min(high, low, iterations=100) < 0.2
    assert aso_epsilon_min(low, high, iterations=100) > 0.8
    assert np.random.random() == expected_next


def _run(seed: int, predictions: dict | None, labels=("a", "b", "c")) -> RunRecord:
    result = {"label_names": list(labels)}
    if predictions is not None:
        result["test_predictions"] = predictions
    return RunRecord("FINISHED", {"task": "t", "strategy": "s", "seed": str(seed)}, {}, {},
                     load_result=lambda: result)


def test_paired_predictions_match_examples_by_id_and_skip_runs_without_predictions():
    gold = {"x1": 0, "x2": 1, "x3": 2}
    first = [_run(1, {i: {"label": g, "predicted": 0} for i, g in reversed(gold.items())}),
             _run(0, {i: {"label": g, "predicted": g} for i, g in gold.items()}),
             _run(2, None)]
    second = [_run(4, {i: {"label": g, "predicted": 1} for i, g in gold.items()})]
    paired = paired_predictions(first, second)
    assert paired.labels.tolist() == [0, 1, 2] and paired.num_classes == 3
    assert paired.first.tolist() == [[0, 1, 2], [0, 0, 0]] and paired.first_seeds == ("0", "1")
    assert paired.second.tolist() == [[1, 1, 1]] and paired.second_seeds == ("4",)
    relabelled = [_run(5, {i: {"label": (g + 1) % 3, "predicted": 1} for i, g in gold.items()})]
    assert paired_predictions(first, relabelled) is None
    assert paired_predictions(first, [_run(6, None)]) is None
    # Records from before predictions were keyed by id: two lists in evaluation order.
    positional = [_run(7, {"labels": [0, 1, 2], "predicted": [2, 2, 2]})]
    assert paired_predictions(positional, positional).first.tolist() == [[2, 2, 2]]


def test_the_method_paragraph_states_the_settings_used():
    text = method_text(resamples=10_000, stability_seeds=20)
    for phrase in ("10,000 resamples", "seed 0", "Holm", "20 more generator seeds (1-20)",
                   "undecided", "2.5th to 97.5th percentile", "below 0.2", "fewer than 3 seeds"):
        assert phrase in text, phrase
