"""The perf scripts on tiny settings: they run and their bookkeeping is right (timings
are printed, never asserted)."""

import pytest

from benchmark.tools.perf import bookkeeping, input_pipeline, memory


def test_bookkeeping_variants_train_the_same_blocks(data_dir, capsys):
    assert bookkeeping.main(["--models", "tiny-llama", "--steps", "4", "--rounds", "1",
                             "--data-dir", str(data_dir), "--device", "cpu"]) == 0
    row = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("| tiny-llama |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert all(float(cells[i]) > 0 for i in (1, 2, 4))  # ms per step of the three variants
    # The reference-style tracker scores the same way, so it picks the same blocks.
    assert cells[-1] == "yes"


def test_input_pipeline_compares_padding_rules(data_dir):
    rows = input_pipeline.measure("tiny-llama", "iterater", str(data_dir), steps=2,
                                  batch_size=8, device="cpu")
    by_name = {r["pipeline"]: r for r in rows}
    reference = by_name["padded to 256 (reference)"]
    suite = by_name["dynamic, length-grouped (suite)"]
    assert reference["mean_batch_length"] == 256
    # Length grouping pads least: the claim the suite's pipeline rests on.
    assert suite["padding_share"] < by_name["dynamic, random order"]["padding_share"] < reference["padding_share"]


def test_frozen_blocks_hold_no_gradient_and_state_only_once_trained(data_dir):
    keep = memory.frozen_block_state("tiny-llama", "iterater", str(data_dir), steps=3,
                                     batch_size=8, device="cpu", optimizer_state="keep")
    drop = memory.frozen_block_state("tiny-llama", "iterater", str(data_dir), steps=3,
                                     batch_size=8, device="cpu", optimizer_state="drop")
    for step in keep["per_step"] + drop["per_step"]:
        assert step["state_only_for_trained"] and step["grad_only_for_selected"]
    assert [s["blocks_with_state"] for s in keep["per_step"]] == [s["trained_so_far"] for s in keep["per_step"]]
    # drop: a block's state goes when it is frozen, so only the blocks of this step hold any.
    assert [s["blocks_with_state"] for s in drop["per_step"]] == [s["selected"] for s in drop["per_step"]]
    assert keep["per_step"][0]["state_mb"] < keep["full_ft_state_mb"]


def test_memory_script_runs_each_strategy_in_its_own_process(data_dir, capsys):
    assert memory.main(["--model", "tiny-llama", "--steps", "2", "--strategies", "full-ft", "lora",
                        "--data-dir", str(data_dir), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "| full-ft |" in out and "| lora |" in out and "1.00x" in out
    assert "| NO |" not in out


def test_precision_script_trains_fp32_and_bf16_at_the_same_seed(data_dir, capsys):
    from benchmark.tools.perf import precision

    assert precision.main(["--model", "tiny-llama", "--strategies", "lora", "--steps", "2",
                           "--batch-size", "8", "--data-dir", str(data_dir), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| lora |")]
    assert [r[2].strip() for r in rows] == ["fp32", "bf16"]
    assert rows[0][4].strip() == "1.00x" and float(rows[1][3]) > 0


def test_peer_runs_the_same_trial_through_the_loop_and_the_trainer(data_dir):
    from benchmark.tools.perf import peer

    args = peer.build_parser().parse_args(["--model", "tiny-llama", "--batch-size", "4",
                                           "--data-dir", str(data_dir)])
    for strategy in ("full-ft", "lora"):
        config = peer.config_for(strategy, args, seed=0, steps=2)
        assert config.lr == peer.DEFAULT_LR[strategy] and config.eval_every == 2
        for run in (peer.run_loop, peer.run_trainer):
            figures = run(config, peer.StepProfiler(0))
            assert figures["samples_per_s"] > 0 and 0 <= figures["test_macro_f1"] <= 1
    # The Trainer's groups carry the loop's base rates (not the warm-up's first, 0).
    from benchmark.trial.build import build_trial

    trial = build_trial(peer.config_for("full-ft", args, seed=0, steps=4))
    rates = sorted({g["lr"] for g in peer.trainer_groups(trial)})
    assert rates == [peer.DEFAULT_LR["full-ft"], 1e-3]
    # A profile covers exactly its steps, after the warm-up, in either runner.
    config = peer.config_for("lora", args, seed=0, steps=peer.PROFILE_WARMUP + 2 + 1)
    for run in (peer.run_loop, peer.run_trainer):
        profiler = peer.StepProfiler(2)
        run(config, profiler)
        found = profiler.top(3)
        assert found["step_ms"] > 0 and len(found["top"]) == 3
        assert any(name == "aten::mm" for name, _, _ in found["top"]) or found["top"][0][1] > 0


def test_step_candidates_and_cost_growth_print_their_tables(data_dir, capsys):
    from benchmark.tools.perf import cost_growth, step_candidates

    assert step_candidates.main(["--model", "tiny-llama", "--no-compile", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "AdamW, fused" in out and "F.dropout" in out
    assert cost_growth.main(["--model", "tiny-llama", "--trials", "1", "--at-a-time", "1",
                             "--steps", "2", "--train-limit", "16", "--eval-limit", "8",
                             "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 1 ")]
    assert len(rows) == 2  # one point (one real run); its fit needs two, so it says nan
    assert float(rows[0].split("|")[4]) > 0
    assert "start-up s (fit)" in out


def test_utilisation_counts_flops_and_times_every_variant_against_the_legacy_path(capsys):
    from benchmark.tools.perf import mfu

    assert mfu.main(["--suite", "smoke", "--strategies", "lora", "--steps", "1", "--warmup", "0",
                     "--variants", "legacy", "fast masks", "--profile-top", "2"]) == 0
    out = capsys.readouterr().out
    peak = float(out.split("GFLOP/s")[0].rsplit(":", 1)[1])
    assert peak > 0  # this device's own measured matmul rate
    rows = [[c.strip() for c in l.strip("|").split("|")] for l in out.splitlines()
            if l.startswith("| lora |")]
    assert [r[1] for r in rows] == ["legacy", "fast masks"]
    assert rows[0][3] == rows[1][3] and float(rows[0][3]) > 0  # the same FLOPs charged to both
    assert rows[0][-1] == "1.00x"
    mfu_share = float(rows[1][7].rstrip("%")) / 100
    rate = float(rows[1][3]) / float(rows[1][4])  # GFLOP per step / seconds per step
    assert mfu_share == pytest.approx(rate / peak, rel=0.1)  # MFU: the rate over the peak
    assert "Profile, lora, legacy" in out and "Profile, lora, fast masks" in out
