"""The reference's other baselines and the methods asked for next: IST, DoRA, BAdam,
GaLore, top layers, and the head-only floor; each on real (tiny) models."""

import json
import math

import pytest
import torch

from benchmark.cli import main
from benchmark.core.errors import UserError
from benchmark.trial.backends import check_zero_support
from tiny_trials import tiny_batch as _batch, tiny_trial as _trial
from strategies import get_strategy, list_strategies
from strategies.ist import (ROLLOUTS, SUPPRESSION, rollout_rewards, suppressed_count,
                            trained_count, updated_scores)


def test_the_new_strategies_are_listed():
    assert {"ist", "badam", "galore", "top-layers", "head-only"} <= set(list_strategies())


@pytest.mark.parametrize("strategy", ["ist", "badam", "galore", "top-layers", "head-only"])
def test_each_new_strategy_trains_two_steps_through_the_cli(strategy, tmp_path, data_dir):
    out = tmp_path / "r.json"
    assert main(["train", "--strategy", strategy, "--model", "tiny-llama", "--max-steps", "2",
                 "--data-dir", str(data_dir), "--train-limit", "32", "--eval-limit", "16",
                 "--test-limit", "16", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["strategy"] == strategy and len(result["history"]) == 1


@pytest.mark.parametrize("strategy", ["lora", "ir-tuning", "random-layers", "lisa", "top-layers"])
def test_dora_is_an_adapter_choice(strategy, tmp_path, data_dir):
    out = tmp_path / "r.json"
    assert main(["train", "--strategy", strategy, "--option", "adapter=dora", "--model",
                 "tiny-llama", "--max-steps", "2", "--data-dir", str(data_dir), "--train-limit",
                 "32", "--eval-limit", "16", "--test-limit", "16", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["strategy_options"]["adapter"] == "dora"
    trial = _trial(strategy, {"adapter": "dora", "lora_r": 2})
    names = [n for n, p in trial.model.named_parameters() if p.requires_grad]
    assert any("lora_magnitude_vector" in n for n in names)  # peft's own DoRA


# -- IST: the reference's rule, on hand-computed cases --------------------------------------

def test_ist_counts_follow_the_reference():
    assert [trained_count(n) for n in (4, 6, 32)] == [1, 1, 8]  # int(0.25 L)
    assert [suppressed_count(n) for n in (4, 6, 32)] == [2, 3, 16]  # int(0.5 L)


def test_ist_reward_is_exp_minus_loss_minus_the_mean():
    rewards = rollout_rewards([1.0, 2.0, 3.0])
    values = [math.exp(-1), math.exp(-2), math.exp(-3)]
    mean = sum(values) / 3
    assert rewards == pytest.approx([v - mean for v in values])
    assert sum(rewards) == pytest.approx(0.0)


def test_ist_score_update_uses_p_from_before_any_update():
    # Block 1 is in both draws: both updates use p(0) = 0.5, i.e. 10 * r * 0.25 each.
    scores = updated_scores([0.0, 0.0, 2.0], draws=[[0, 1], [1, 2]], rewards=[0.2, -0.1])
    p2 = 1 / (1 + math.exp(-2.0))
    assert scores == pytest.approx([10 * 0.2 * 0.25, 10 * 0.2 * 0.25 + 10 * -0.1 * 0.25,
                                    2.0 + 10 * -0.1 * p2 * (1 - p2)])


def test_ist_draws_trained_blocks_by_sigmoid_of_minus_score():
    trial = _trial("ist", {"lora_r": 2, "probe_every": 1000})
    strategy = trial.strategy
    strategy.scores = torch.tensor([-6.0, 6.0, 6.0, 6.0], dtype=torch.float64)
    picks = [strategy.choose(step) for step in range(1, 200)]
    assert all(len(p) == 1 for p in picks)  # int(0.25 * 4) blocks per step
    share = sum(p == [0] for p in picks) / len(picks)
    weights = torch.sigmoid(-strategy.scores)
    assert share == pytest.approx(float(weights[0] / weights.sum()), abs=0.05)  # about 0.99


def test_ist_probes_every_k_steps_with_three_suppressed_rollouts(data_dir):
    trial = _trial("ist", {"lora_r": 2, "probe_every": 3})
    strategy = trial.strategy
    batch = _batch(trial.tokenizer)
    seen = []

    class Runtime:  # records each probe forward: which adapters were scaled down
        def probe_batch(self):
            return batch

        def loss_without_grad(self, probe):
            scaled = [i for i, modules in enumerate(strategy.adapter_modules)
                      if all(m.scaling[a] == pytest.approx(SUPPRESSION * m.lora_alpha[a] / m.r[a])
                             for m in modules for a in m.active_adapters)]
            seen.append(scaled)
            return float(len(seen))  # losses 1, 2, 3, ...

    strategy.attach_runtime(Runtime())
    before = strategy.scores.clone()
    for step in range(7):
        trial.train_step([batch], step)
    assert strategy.probes == 2 and strategy.probe_forwards == 2 * ROLLOUTS  # steps 3 and 6
    assert all(len(s) == suppressed_count(4) for s in seen)  # int(0.5 L) blocks suppressed
    assert len({tuple(s) for s in seen[:3]}) == 3  # distinct draws within a probe
    for modules in strategy.adapter_modules:  # every scaling restored exactly
        assert all(m.scaling[a] == m.lora_alpha[a] / m.r[a] for m in modules
                   for a in m.active_adapters)
    # The first probe's update, by hand: losses 1, 2, 3 from scores 0 (p = 0.5).
    expected = updated_scores(before.tolist(), seen[:3], rollout_rewards([1.0, 2.0, 3.0]))
    second = updated_scores(expected, seen[3:], rollout_rewards([4.0, 5.0, 6.0]))
    assert strategy.scores.tolist() == pytest.approx(second)
    assert strategy.stats()["probe_forward_passes"] == 6


# -- BAdam: the package's block order, state dropped at each switch ---------------------------

@pytest.mark.parametrize("order", ["descending", "ascending", "random"])
def test_badam_block_sequence_matches_the_badam_package(order):
    from badam import BlockOptimizer

    switch_every, switches = 3, 10
    trial = _trial("badam", {"switch_every": switch_every, "order": order}, seed=7)
    strategy = trial.strategy
    ours = [strategy.before_step(step)[0] for step in range(switch_every * switches)]
    ours = ours[::switch_every]
    # The package on the same model: one prefix per block, switching by hand K at a time.
    model = trial.model
    prefixes = [[f"{strategy.parts.blocks_name}.{i}."] for i in range(strategy.num_blocks)]
    torch.manual_seed(7)
    package = BlockOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-3),
                             list(model.named_parameters()), block_prefix_list=prefixes,
                             switch_block_every=switch_every, switch_mode=order, verbose=0)
    theirs = []
    for _ in range(switches):
        theirs.append(prefixes.index([package.active_param_prefixs[0]]))
        package.switch_trainable_params(verbose=0)
    assert ours == theirs


def test_badam_trains_one_block_drops_state_at_a_switch_and_keeps_the_head():
    trial = _trial("badam", {"switch_every": 2})
    strategy, optimizer = trial.strategy, trial.optimizer
    batch = _batch(trial.tokenizer)
    head = [p for p in strategy.parts.head if p.requires_grad]
    for step in range(4):
        before = [p.detach().clone() for p in head]
        trial.train_step([batch], step)
        assert len(strategy.selection_trace[-1]) == 1
        assert all(not torch.equal(a, p) for a, p in zip(before, head))  # the head trains
        blocks_with_state = {i for i, params in enumerate(strategy.block_params)
                             if any(p in optimizer.state for p in params)}
        assert blocks_with_state == set(strategy.selection_trace[-1])
    assert strategy.selection_trace == [[3], [3], [2], [2]]  # descending from the last block
    # The step count restarted at the switch: the state was dropped.
    assert float(optimizer.state[head[0]]["step"]) == 2


def test_galore_trains_through_galore_torch():
    from galore_torch import GaLoreAdamW

    trial = _trial("galore", {"rank": 4, "update_proj_gap": 2}, lr=1e-3)
    assert isinstance(trial.optimizer, GaLoreAdamW)
    galore_group = next(g for g in trial.optimizer.param_groups if g.get("name") == "galore")
    assert galore_group["rank"] == 4 and galore_group["params"]
    batch = _batch(trial.tokenizer)
    weight = galore_group["params"][0]
    before = weight.detach().clone()
    for step in range(3):
        trial.train_step([batch], step)
    assert "projector" in trial.optimizer.state[weight]  # the gradient went through GaLore
    assert not torch.equal(before, weight)


def test_galore_defaults_are_the_official_ones():
    config = get_strategy("galore").config
    assert (config.rank, config.update_proj_gap, config.scale) == (128, 200, 0.25)


def test_top_layers_trains_the_last_quarter_every_step():
    trial = _trial("top-layers", {})
    batch = _batch(trial.tokenizer)
    for step in range(2):
        trial.train_step([batch], step)
    assert trial.strategy.selection_trace == [[3], [3]]  # ceil(25% of 4) = 1: the last block
    assert _trial("top-layers", {"k": 2}).strategy.choose(0) == [2, 3]


def test_head_only_trains_the_head_and_nothing_else():
    trial = _trial("head-only", {})
    trainable = {n for n, p in trial.model.named_parameters() if p.requires_grad}
    head = {n for n, p in trial.model.named_parameters()
            if any(p is h for h in trial.strategy.parts.head)}
    assert "score.weight" in trainable and trainable == head  # after the blocks: norm, score


@pytest.mark.parametrize("strategy,options,message", [
    ("badam", {}, "badam drops the optimizer state"),
    ("galore", {}, "galore projects whole gradient matrices"),
])
def test_strategies_zero_cannot_run_are_refused_in_one_line(strategy, options, message):
    with pytest.raises(UserError, match=message):
        check_zero_support("zero2", get_strategy(strategy, options))


def test_ist_is_refused_under_zero3_only():
    check_zero_support("zero2", get_strategy("ist"))
    with pytest.raises(UserError, match="ZeRO-3"):
        check_zero_support("zero3", get_strategy("ist"))
