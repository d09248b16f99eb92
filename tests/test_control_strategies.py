"""The controls that isolate IR-Tuning's question: the count-matched random control
(`random-matched`) and Spectrum (`spectrum`), on the tiny random Llama through the
trial's own set-up."""

import json
import math

import numpy as np
import pytest
import torch

from benchmark.core.errors import UserError
from tiny_trials import tiny_batch as _batch, tiny_trial as _trial
from strategies.ir_tuning import INITIAL_SCORE, select_layers
from strategies.spectrum import signal_to_noise, singular_value_snr

TINY_LORA = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0}


def _weights(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _changed_blocks(blocks, before):
    return {i for i, block in enumerate(blocks)
            if any(not torch.equal(before[i][n], p.detach()) for n, p in block.named_parameters())}


# -- the count-matched random control ------------------------------------------------------

def _reference_score(grads):
    """IR-Tuning's block score: sqrt(sum over its parameters of sqrt(||grad||_2))."""
    return math.sqrt(sum(math.sqrt(float(g.norm())) for g in grads))


def _run_matched_control(seed, steps=3):
    """Steps the control through the loop's hooks while keeping IR-Tuning's rule by hand
    beside it: the group its split keeps on the scores, re-scored from that group's own
    gradients. Returns (the hand-kept groups, the blocks the control trained)."""
    trial = _trial("random-matched", TINY_LORA, seed=seed)
    strategy, model, blocks = trial.strategy, trial.model, trial.strategy.parts.blocks
    batch = _batch(trial.tokenizer)
    scores = [INITIAL_SCORE] * strategy.num_blocks
    split_rng = np.random.default_rng(seed)  # IR-Tuning's generator for its random first step
    groups, drawn = [], []
    for step in range(steps):
        group = select_layers(scores, rng=split_rng)
        before = [_weights(b) for b in blocks]
        chosen = strategy.before_step(step)
        assert len(chosen) == len(group)  # k: what IR-Tuning's split keeps
        model(**batch).loss.backward()
        for i in group:  # scored from gradients, trained or not
            scores[i] = _reference_score([p.grad for p in strategy.block_params[i]])
        strategy.after_backward(step)
        # Clipping sees the drawn blocks' gradients only, as IR-Tuning sees its own.
        assert all(p.grad is None for i in set(group) - set(chosen) for p in strategy.block_params[i])
        trial.backend.apply(trial.optimizer, strategy.trainable_params(), 1.0)
        assert list(strategy.scores) == pytest.approx(scores, rel=1e-5)
        # Drawn blocks train; the group's blocks that were not drawn had gradients, yet stay.
        assert _changed_blocks(blocks, before) == set(chosen)
        groups.append(group)
        drawn.append(chosen)
    assert strategy.selection_trace == drawn
    assert strategy.stats()["ir_tuning_trace"] == [
        "".join("1" if i in g else "0" for i in range(strategy.num_blocks)) for g in groups]
    return groups, drawn


def test_matched_control_trains_ir_tunings_count_drawn_at_random():
    runs = [_run_matched_control(seed) for seed in (0, 1, 2)]
    pairs = [(set(g), set(d)) for groups, drawn in runs for g, d in zip(groups, drawn)]
    assert any(g != d for g, d in pairs)  # the draw is not IR-Tuning's choice
    assert len({len(g) for g, _ in pairs}) > 1  # k follows the split: it varies
    assert len({tuple(map(tuple, drawn)) for _, drawn in runs}) == 3  # seeded per trial


def test_matched_control_shares_ir_tunings_first_split_for_a_seed():
    ir_tuning = _trial("ir-tuning", TINY_LORA, seed=5).strategy
    control = _trial("random-matched", TINY_LORA, seed=5).strategy
    ir_tuning.before_step(0)
    control.before_step(0)
    assert control.ir_tuning_group == ir_tuning.selected  # the draw has its own generator


def test_matched_control_refuses_zero():
    with pytest.raises(UserError, match="ZeRO"):
        from benchmark.trial.backends import check_zero_support
        from strategies import get_strategy

        check_zero_support("zero2", get_strategy("random-matched"))


# -- Spectrum ------------------------------------------------------------------------------

def _original_snr(weights):
    """The original's `calculate_snr_for_layer` body, line for line (QuixiAI/spectrum)."""
    S = torch.linalg.svdvals(weights)
    max_singular_value = S[0]
    iqr = torch.quantile(S, 0.75) - torch.quantile(S, 0.25)
    sigma_estimated = iqr / 1.349
    n, m = weights.shape[-2:]
    beta = n / m if n < m else m / n
    mp_threshold = sigma_estimated * np.sqrt((1 + np.sqrt(beta)) ** 2)
    signal_mask = S > mp_threshold
    noise_mask = ~signal_mask
    signal = S[signal_mask].sum() if signal_mask.any() else torch.tensor(0.0)
    noise = S[noise_mask].sum() if noise_mask.any() else torch.tensor(1.0)
    snr = signal / noise if noise != 0 else float("inf")
    return float(snr / max_singular_value)


def test_spectrum_snr_on_known_spectra():
    # Singular values 8..1 of a square matrix: IQR 6.25 - 2.75, threshold 2 * 3.5 / 1.349
    # = 5.19; signal 8 + 7 + 6 = 21, noise 15; 21 / 15 / 8.
    assert singular_value_snr(torch.diag(torch.arange(8, 0, -1).float())) == pytest.approx(0.175)
    # 4 x 8 with 4, 3, 2, 1: beta 0.5, threshold 1.5 / 1.349 * (1 + sqrt(0.5)) = 1.90;
    # signal 9, noise 1; 9 / 4. Its transpose scores the same.
    wide = torch.zeros(4, 8)
    wide[range(4), range(4)] = torch.tensor([4.0, 3.0, 2.0, 1.0])
    assert singular_value_snr(wide) == pytest.approx(2.25)
    assert singular_value_snr(wide.T) == pytest.approx(2.25)
    assert math.isnan(singular_value_snr(torch.zeros(3, 5)))  # ranks last


def test_spectrum_snr_reproduces_the_original_and_its_scale_dependence():
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(64, 128, generator=generator)
    low_rank = torch.randn(64, 4, generator=generator) @ torch.randn(4, 128, generator=generator)
    for weights in (noise, noise + low_rank, noise.T[:96], 3 * noise):
        assert singular_value_snr(weights) == pytest.approx(_original_snr(weights), rel=1e-6)
    # A low-rank signal lifts the ratio of sums above pure noise's...
    raw = [signal_to_noise(torch.linalg.svdvals(w), 64, 128) for w in (noise, noise + low_rank)]
    assert raw[1] > raw[0]
    # ...but the original ranks by it over S[0], which the signal lifts more, and c * W
    # scores 1/c of W: larger matrices of a type rank lower.
    assert singular_value_snr(noise + low_rank) < singular_value_snr(noise)
    assert singular_value_snr(3 * noise) == pytest.approx(singular_value_snr(noise) / 3, rel=1e-5)


def _linear_modules(strategy):
    """(block, module type) -> the module's parameters, for every linear layer scanned."""
    return {(i, name): block.get_submodule(name)
            for name in strategy.snr for i, block in enumerate(strategy.parts.blocks)}


def test_spectrum_chooses_the_top_half_per_type_and_trains_only_those():
    trial = _trial("spectrum", {})
    strategy = trial.strategy
    assert len(strategy.snr) == 7  # q, k, v, o, gate, up, down
    for name, snrs in strategy.snr.items():
        assert sorted(strategy.chosen[name]) == sorted(np.argsort(snrs)[::-1][:2].tolist())
    modules = _linear_modules(strategy)
    before = {key: _weights(m) for key, m in modules.items()}
    others_before = {n: p.detach().clone() for n, p in trial.model.named_parameters()}
    head = {id(p) for p in strategy.parts.head}
    batch = _batch(trial.tokenizer)
    for step in range(2):
        trial.train_step([batch], step)
    for (i, name), module in modules.items():
        moved = any(not torch.equal(before[(i, name)][n], p) for n, p in module.named_parameters())
        assert moved == (i in strategy.chosen[name]), (i, name)
    in_modules = {id(p) for m in modules.values() for p in m.parameters()}
    for n, p in trial.model.named_parameters():  # norms and embeddings stay, the head trains
        if id(p) not in in_modules:
            assert torch.equal(others_before[n], p.detach()) != (id(p) in head), n


def test_spectrum_lora_adapts_the_chosen_modules_only():
    trial = _trial("spectrum", {"adapter": "lora", **TINY_LORA})
    strategy = trial.strategy
    modules = _linear_modules(strategy)
    base_before = {key: m.base_layer.weight.detach().clone()
                   for key, m in modules.items() if hasattr(m, "base_layer")}
    assert set(base_before) == {(i, name) for name, blocks in strategy.chosen.items() for i in blocks}
    lora_before = {key: _weights(m) for key, m in modules.items() if key in base_before}
    batch = _batch(trial.tokenizer)
    for step in range(2):
        trial.train_step([batch], step)
    for key, module in modules.items():
        weight = getattr(module, "base_layer", module).weight
        if key in base_before:
            assert torch.equal(base_before[key], weight.detach())
            assert any(not torch.equal(lora_before[key][n], p) for n, p in module.named_parameters()
                       if "lora_B" in n)
        else:
            assert not weight.requires_grad


def test_spectrum_is_deterministic_and_recorded():
    first, second = _trial("spectrum", {}).strategy, _trial("spectrum", {}).strategy
    assert first.snr == second.snr and first.chosen == second.chosen
    stats = json.loads(json.dumps(first.stats()))
    assert stats["chosen"] == {n: sorted(b) for n, b in first.chosen.items()}
    assert stats["blocks"] == sorted({i for b in first.chosen.values() for i in b})
    assert stats["snr"]["self_attn.q_proj"] == pytest.approx(first.snr["self_attn.q_proj"], abs=1e-6)


def test_spectrum_refuses_a_share_that_selects_nothing():
    with pytest.raises(UserError, match="selects no module"):
        _trial("spectrum", {"top_percent": 20})  # int(4 x 20 / 100) = 0
