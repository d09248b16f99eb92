"""The fake-tensor memory estimate (`benchmark.trial.memory_estimate`, `benchmark memory`):
it counts what real tensors count, and it follows each strategy's own code."""

from __future__ import annotations

import pytest

from benchmark.trial.memory_estimate import MIB, estimate_memory, meta_model

SMALL = dict(batch_size=4, max_length=32, precision="fp32")


@pytest.mark.parametrize("strategy", ["lora", "ir-tuning"])
def test_fake_count_equals_real_count_of_the_same_step(strategy):
    fake = estimate_memory("tiny-llama", strategy, {"lora_dropout": 0.05}, steps=6, **SMALL)
    real = estimate_memory("tiny-llama", strategy, {"lora_dropout": 0.05}, steps=6, real=True, **SMALL)
    assert fake["tensors"] == "fake" and real["tensors"] == "real"
    assert fake["measured_step"] == real["measured_step"]
    assert fake["selected_blocks"] == real["selected_blocks"]
    assert abs(fake["peak_bytes"] / real["peak_bytes"] - 1) < 0.02
    assert fake["categories"]["activations"] > 0 and fake["categories"]["parameters"] > 0
    # RSS is sampled around the real step only, and holds at least the tensors counted
    assert real["rss_peak_mib"] >= real["peak_bytes"] / MIB
    assert "rss_peak_mib" not in fake


def test_full_fine_tuning_holds_adamw_state_of_every_parameter():
    row = estimate_memory("tiny-llama", "full-ft", {}, **SMALL)
    c = row["categories"]
    params = c["parameters"]
    # fp32 AdamW: two moments per parameter (plus a scalar step each)
    assert 2 * params <= c["optimizer_state"] < 2 * params * 1.01
    assert row["trainable_params"] == row["total_params"]


def test_optimizer_state_of_frozen_blocks_follows_the_strategy_option():
    """LISA trains 2 blocks at a time; with optimizer_state keep every block it ever trained
    keeps its AdamW state, with drop only the current ones do (the strategy's own code)."""
    options = {"gamma": 1, "interval": 1}
    keep = estimate_memory("tiny-llama", "lisa", {**options, "optimizer_state": "keep"}, steps=12, **SMALL)
    drop = estimate_memory("tiny-llama", "lisa", {**options, "optimizer_state": "drop"}, steps=12, **SMALL)
    assert drop["blocks_with_optimizer_state"] == 1
    assert keep["blocks_with_optimizer_state"] > 1
    assert keep["categories"]["optimizer_state"] > drop["categories"]["optimizer_state"]


def test_lora_dropout_costs_activations():
    with_dropout = estimate_memory("tiny-llama", "lora", {"lora_dropout": 0.05}, steps=2, **SMALL)
    without = estimate_memory("tiny-llama", "lora", {"lora_dropout": 0.0}, steps=2, **SMALL)
    assert with_dropout["categories"]["activations"] > without["categories"]["activations"]


def test_shipped_config_gives_the_paper_model_without_weights():
    net, source = meta_model("llama-3.1-8b")
    params = sum(p.numel() for p in net.parameters())
    assert 7.4e9 < params < 7.6e9  # Llama-3.1-8B without its LM head
    assert next(net.parameters()).is_meta
    assert str(next(net.parameters()).dtype) == "torch.bfloat16"  # the checkpoint's dtype
    assert "Llama-3.1-8B" in source


def test_memory_command_prints_the_table(capsys):
    from benchmark.cli import main

    status = main(["memory", "--model", "tiny-llama", "--strategy", "head-only,top-layers",
                   "--batch-size", "2", "--max-length", "16", "--precision", "fp32", "--steps", "3"])
    out = capsys.readouterr().out
    assert status == 0
    assert "| head-only |" in out and "| top-layers |" in out
    assert "peak GiB" in out and "optimizer state" in out


def test_memory_command_refuses_an_unknown_strategy(capsys):
    from benchmark.cli import main

    assert main(["memory", "--model", "tiny-llama", "--strategy", "no-such"]) == 2
    assert "no-such" in capsys.readouterr().err


def test_every_trial_records_its_tensor_memory_by_category(data_dir):
    from benchmark.trial.config import TrainConfig
    from benchmark.trial.loop import run_trial

    result = run_trial(TrainConfig(task="iterater", strategy="full-ft", model="tiny-llama",
                                   data_dir=str(data_dir), max_steps=4, batch_size=4,
                                   eval_every=4, train_limit=16, eval_limit=8, test_limit=8,
                                   max_length=32, precision="fp32"))
    by_category = result["tensor_peak_by_category_mb"]
    assert result["tensor_tracked_steps"] == [3, 4]  # a few steps, not all
    assert result["tensor_peak_mb"] == pytest.approx(sum(by_category.values()), abs=0.3)
    # full fine-tuning: fp32 AdamW holds two moments of every parameter
    assert by_category["optimizer_state"] == pytest.approx(2 * by_category["parameters"], rel=0.02)
    assert result["peak_memory_mb"] > result["tensor_peak_mb"]  # RSS stays beside it
    assert 0 <= result["tensor_tracking_overhead_s"] <= result["tensor_tracked_steps_s"]
    assert result["tensor_tracking_overhead_cpu_s"] > 0  # MemTracker costs CPU time
