"""The paired bootstrap against scikit-learn and on cases whose answer is known."""

import numpy as np
from sklearn.metrics import f1_score

from benchmark.reporting.significance import macro_f1_rows, paired_bootstrap


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
