"""`select_layers` against cases worked out by hand from the reference's rule."""

import numpy as np
import pytest

from strategies.ir_tuning import INITIAL_SCORE, select_layers


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
