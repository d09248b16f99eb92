"""`select_layers` and `split_keep_range` against cases worked out by hand from the
reference's rules, and against the reference's split function transcribed."""

import numpy as np
import pytest

from strategies.ir_tuning import (INITIAL_SCORE, INITIAL_SIMILARITY, select_layers,
                                  split_keep_range)


def test_n6_keeps_the_boundary_block():
    # Clean split {1,2,3} | {10,11,12}; the reference keeps position j*=2 (score 3) too.
    assert select_layers([1, 2, 3, 10, 11, 12]) == [2, 3, 4, 5]


def test_n6_permuted_scores_map_back_to_block_indices():
    assert select_layers([10, 1, 12, 3, 11, 2]) == [0, 2, 3, 4]


def test_ties_are_ordered_by_block_index():
    # Sorted: blocks 1,3,5 (score 1) then 0,2,4 (score 2); V[2] = 0 is the first minimum,
    # so block 5, the last of the low group, is the boundary block kept.
    assert select_layers([2, 1, 2, 1, 2, 1]) == [0, 2, 4, 5]


def test_all_equal_scores_keep_every_block():
    # Every V is 0: the first index of the minimum in the whole list is 0.
    assert select_layers([5.0] * 6) == list(range(6))


def test_n32_linear_scores_split_in_the_middle():
    # var(k) + var(32-k) of consecutive integers is smallest at k = 16: j* = 15.
    assert select_layers(list(range(32))) == list(range(15, 32))


def test_n32_minimum_outside_window_is_not_eligible():
    # The global minimum (cut after the 30 ones) lies outside V[11:21]; inside it the
    # smallest is V[11], so 21 blocks are kept: the reference's upper bound for n = 32.
    assert select_layers([1.0] * 30 + [100.0, 100.0]) == list(range(11, 32))


def test_split_num_2_splits_the_kept_group_again():
    # First split keeps blocks 2..5 (scores 3, 10, 11, 12); the second split on those
    # four: window V[1:3], minimum V[1] = var(3,10) + var(11,12) = 12.5, keep positions 1..3.
    assert select_layers([1, 2, 3, 10, 11, 12], splits=2) == [3, 4, 5]


def test_all_initial_scores_use_random_scores_from_rng():
    expected = select_layers(list(np.random.default_rng(7).random(6)))
    assert select_layers([INITIAL_SCORE] * 6, rng=np.random.default_rng(7)) == expected
    assert 3 <= len(expected) <= 4


@pytest.mark.parametrize("seed", range(20))
def test_random_start_sizes_match_reference_ranges(seed):
    rng = np.random.default_rng(seed)
    assert 12 <= len(select_layers([INITIAL_SCORE] * 32, rng=rng)) <= 21
    assert 3 <= len(select_layers([INITIAL_SCORE] * 6, rng=rng)) <= 4
    assert 11 <= len(select_layers([INITIAL_SCORE] * 30, rng=rng)) <= 20


def test_untrained_blocks_at_1000_are_selected_next():
    scores = [0.7, 0.8, INITIAL_SCORE, INITIAL_SCORE, 0.9, 0.95]
    chosen = select_layers(scores)
    assert {2, 3} <= set(chosen)
    assert chosen == sorted(chosen)


# -- metric=weight: window V[int(.35n)+1 : int(.65n)+1], keeps r[j*:] ------------------

def test_weight_n6_window_starts_one_cut_later():
    # V = [21.2, 15.5, 2.22, 12.75, 20.24]. Only V[3] is eligible (the gradient rule also
    # sees V[2] and keeps 4 blocks): j* = 3, keep the 3 highest.
    assert select_layers([1, 2, 3, 10, 12, 13], metric="weight") == [3, 4, 5]
    assert select_layers([1, 2, 3, 10, 12, 13], metric="gradient") == [2, 3, 4, 5]


def test_weight_symmetric_scores_tie_before_the_window():
    # V = [17.84, 12.75, 1.33, 12.75, 17.84]: the window's V[3] = 12.75 first occurs at
    # V[1], so j* = 1 and 5 blocks are kept.
    assert select_layers([1, 2, 3, 10, 11, 12], metric="weight") == [1, 2, 3, 4, 5]


def test_weight_tie_puts_the_first_minimum_before_the_window():
    # Sorted: blocks 1,3,5 (score 1) then 0,2,4 (score 2). The window holds V[3] only:
    # var(1,1,1,2) + var(2,2) = 0.1875, which V[1] = var(1,1) + var(1,2,2,2) equals, so
    # j* = 1 and every block but block 1 is kept.
    assert select_layers([2, 1, 2, 1, 2, 1], metric="weight") == [0, 2, 3, 4, 5]


def test_weight_n32_minimum_outside_window_takes_the_later_window_start():
    # As the gradient case below it, but the window starts at V[12]: 20 blocks, not 21.
    assert select_layers([1.0] * 30 + [100.0, 100.0], metric="weight") == list(range(12, 32))
    assert select_layers(list(range(32)), metric="weight") == list(range(15, 32))


# -- metric=cosine: window V[int(.35n) : int(.65n)], keeps r[:j*] ----------------------

def test_cosine_first_step_trains_no_block():
    # Every similarity is still 1.0: V is all zeros, j* = 0, r[:0] is empty.
    assert select_layers([INITIAL_SIMILARITY] * 6, metric="cosine") == []
    assert select_layers([INITIAL_SIMILARITY] * 32, metric="cosine") == []


def test_cosine_n6_keeps_the_low_similarity_side_without_the_boundary_block():
    # Sorted: blocks 3,1,5 (0.1, 0.2, 0.3) | 2,0,4. The window is V[2:3], j* = 2, keep
    # r[:2] = blocks 3 and 1; block 5 (position j*) is not kept. The old rule (1 - sim
    # through the gradient split) kept blocks 1, 2, 3 and 5.
    assert select_layers([0.9, 0.2, 0.8, 0.1, 0.95, 0.3], metric="cosine") == [1, 3]


def test_cosine_ties_are_ordered_by_block_index():
    # Sorted: blocks 1,3,5 then 0,2,4; V[2] = 0 and no earlier V is 0: keep blocks 1, 3.
    assert select_layers([2, 1, 2, 1, 2, 1], metric="cosine") == [1, 3]


def test_cosine_n32_linear_scores():
    # Window V[11:20]; the minimum is at j* = 15 as for the gradient, the low 15 are kept.
    # The old rule kept blocks 0..16.
    assert select_layers(list(range(32)), metric="cosine") == list(range(15))


def test_cosine_n32_window_edges():
    # 30 similar blocks, then 2: V grows with j from the window's start, j* = 11.
    assert select_layers([0.1] * 30 + [0.9] * 2, metric="cosine") == list(range(11))
    # 2 dissimilar blocks, then 30: V[1] = 0 lies outside the window, where V falls to
    # its end, j* = 19: 19 blocks are kept, not the 2 dissimilar ones.
    assert select_layers([0.1] * 2 + [0.9] * 30, metric="cosine") == list(range(19))


def test_cosine_split_num_2_takes_the_first_of_tied_cuts():
    # First split keeps blocks 0..14; on those 15 the window is V[5:9], where V[6] =
    # var(0..6) + var(7..14) = 4 + 5.25 and V[7] = 5.25 + 4 tie: j* = 6, keep 0..5.
    assert select_layers(list(range(32)), splits=2, metric="cosine") == list(range(6))
    # With 6 blocks the second split gets 2 and keeps none of them.
    assert select_layers([0.9, 0.2, 0.8, 0.1, 0.95, 0.3], splits=2, metric="cosine") == []


# -- all three against the reference's `split_layer_norms`, transcribed ----------------

def _reference_split(layers, norms, metric):
    """ir.py's split_layer_norms of IRCallback / WeightCallback / CosineCallback."""
    ranked_norm = [x for x, y in sorted(zip(norms, layers))]
    ranked_layer = [y for x, y in sorted(zip(norms, layers))]
    quantile1 = int(len(ranked_norm) * 0.35) + (1 if metric == "weight" else 0)
    quantile2 = int(len(ranked_norm) * 0.65)
    var_list = [np.var(np.array(ranked_norm[:k])) + np.var(np.array(ranked_norm[k:]))
                for k in range(1, len(ranked_norm))]
    stop = quantile2 if metric == "cosine" else quantile2 + 1
    split = var_list.index(min(var_list[quantile1:stop]))  # raises on an empty window
    if metric == "cosine":
        return ranked_layer[:split], ranked_norm[:split]
    return ranked_layer[split:], ranked_norm[split:]


@pytest.mark.parametrize("metric", ["gradient", "weight", "cosine"])
@pytest.mark.parametrize("splits", [1, 2])
def test_every_metric_matches_the_reference_split_with_many_ties(metric, splits):
    rng = np.random.default_rng(11)
    compared = 0
    for _ in range(300):
        n = int(rng.choice([4, 5, 6, 7, 8, 12, 30, 32]))
        # Few distinct values: ties between scores and between the V's are common.
        scores = [float(x) for x in rng.integers(0, 4, n)]
        try:
            layers, norms = _reference_split(list(range(n)), scores, metric)
            if splits == 2:
                layers, norms = _reference_split(layers, norms, metric)
        except ValueError:  # the reference fails on an empty window or group; ours does not
            continue
        assert select_layers(scores, splits=splits, metric=metric) == sorted(layers)
        compared += 1
    assert compared > 150


# -- split_keep_range -------------------------------------------------------------------

def test_split_keep_range_of_the_documented_sizes():
    assert split_keep_range(6) == (3, 4)
    assert split_keep_range(30) == (11, 20)
    assert split_keep_range(32) == (12, 21)


def _varied_scores(rng, n):
    # Skewed draws push the unconstrained best cut to either end, so that the window's
    # edges are reached; plain uniform draws land inside.
    kind = rng.integers(4)
    if kind == 0:
        return rng.random(n)
    if kind == 1:
        return rng.lognormal(0.0, 3.0, n)
    if kind == 2:
        return -rng.lognormal(0.0, 3.0, n)
    return rng.normal(size=n)


@pytest.mark.parametrize("metric,splits", [("gradient", 1), ("gradient", 2),
                                           ("weight", 1), ("cosine", 1)])
def test_split_keep_range_equals_brute_force_over_random_scores(metric, splits):
    rng = np.random.default_rng(5)
    for n in (2, 3, 4, 5, 6, 7, 8, 12, 30, 32):
        kept = {len(select_layers(_varied_scores(rng, n), splits=splits, metric=metric))
                for _ in range(120)}
        assert (min(kept), max(kept)) == split_keep_range(n, splits=splits, metric=metric), n


def test_split_keep_range_is_exceeded_only_by_ties():
    # All scores equal: j* = 0, every block is kept, above the range's 4.
    assert len(select_layers([5.0] * 6)) == 6 > split_keep_range(6)[1]
