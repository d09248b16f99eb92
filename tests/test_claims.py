"""Time to target, selection dynamics and the claims card, on run records built by hand (the
functions read nothing else), and the `claims` command on the committed revisions files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmark.reporting import claims, convergence, leaderboard
from benchmark.reporting.runs import RunRecord
from benchmark.reporting.selection import dynamics

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["a", "b", "c"]


def record(strategy: str, seed: int, curve: list[float], correct: float = 0.5, trace=None,
           memory: float = 1000.0, device: str = "cpu", entry: str | None = None,
           options: dict | None = None, rng=None) -> RunRecord:
    """A finished run: a learning curve every 10 steps (10 CPU seconds per step), test
    predictions right on a `correct` share of 200 examples, an optional selection trace."""
    rng = rng or np.random.default_rng(seed)
    labels = [i % 3 for i in range(200)]
    predicted = [l if rng.random() < correct else (l + 1) % 3 for l in labels]
    predictions = {f"x{i}": {"label": l, "predicted": p}
                   for i, (l, p) in enumerate(zip(labels, predicted))}
    result = {"label_names": LABELS, "test_predictions": predictions, "config": {"device": device},
              "curve": [{"step": 10 * (i + 1), "macro_f1": f, "train_time_s": 20.0 * (i + 1),
                         "train_cpu_s": 10.0 * (i + 1)} for i, f in enumerate(curve)],
              "curve_rows": 96, "selection_trace": trace or [], "sizes": {"train": 800}}
    f1 = float(np.mean([p == l for p, l in zip(predicted, labels)]))
    params = {"task": "t", "strategy": strategy, "seed": str(seed),
              **{f"opt.{k}": str(v) for k, v in (options or {}).items()}}
    if entry:
        params["entry"] = entry
    return RunRecord("FINISHED", params,
                     {"test_macro_f1": f1, "dev_best_macro_f1": curve[-1], "peak_memory_mb": memory,
                      "majority_test_macro_f1": 0.17, "trainable_share": 0.1},
                     {"config_key": f"{entry or strategy}", "memory_source": "rss"},
                     load_result=lambda result=result: result)


def test_target_is_a_share_of_the_best_final_mean_and_runs_that_never_reach_it_say_so():
    records = [record("fast", s, [0.3, 0.5, 0.6]) for s in range(3)]
    records += [record("slow", s, [0.1, 0.2, 0.55]) for s in range(3)]
    records += [record("flat", s, [0.1, 0.1, 0.1]) for s in range(3)]
    entries = leaderboard.collect(records)["t"]
    target = convergence.task_target(entries)
    assert target.leader == "fast" and target.value == pytest.approx(0.9 * 0.6)
    assert target.every == 10 and target.rows == 96
    by_name = {e.strategy: convergence.entry_time(e, target) for e in entries}
    assert by_name["fast"].mean_step == 30 and by_name["fast"].reached == 3
    assert by_name["slow"].mean_step == 30 and by_name["slow"].mean_seconds == 30.0  # CPU seconds
    assert by_name["flat"].reached == 0 and by_name["flat"].text() == "not reached (0/3)"
    board = leaderboard.markdown("s", leaderboard.collect(records),
                                 leaderboard.RunSource("results", "x"))
    assert "steps to target | s to target" in board and "not reached (0/3)" in board


def test_seconds_to_target_are_wall_seconds_off_the_cpu():
    run = record("gpu", 0, [0.5, 0.9], device="cuda")
    assert convergence.reached(run, 0.8).train_seconds == 40.0  # train_time_s, not CPU seconds
    assert convergence.reached(record("cpu", 0, [0.5, 0.9]), 0.8).train_seconds == 20.0


def test_boards_name_the_cpus_and_warn_when_a_suite_finished_on_another(tmp_path):
    records = [record("a", s, [0.5, 0.9]) for s in range(3)]
    for r, cpu in zip(records, ["AMD EPYC", "AMD EPYC", "Intel Xeon"]):
        r.result()["environment"] = {"device": "cpu", "cpu_model": cpu,
                                     "cpu_flags": ["avx2", "avx512_bf16"]}
    source = leaderboard.RunSource("results", "x")
    board = leaderboard.markdown("s", leaderboard.collect(records), source)
    assert "CPUs: AMD EPYC (avx2, avx512_bf16): 2 runs; Intel Xeon (avx2, avx512_bf16): 1 run." in board
    assert "compare only between runs of one CPU" in board
    card = claims.render_claims("s", records, source, "a", tmp_path)
    assert "compare only between runs of one CPU" in card.read_text()
    one_cpu = leaderboard.markdown("s", leaderboard.collect(records[:2]), source)
    assert "CPUs: AMD EPYC (avx2, avx512_bf16): 2 runs." in one_cpu
    assert "compare only" not in one_cpu
    records[2].result()["environment"] = {"device": "cpu"}  # a file older than the CPU record
    older = leaderboard.markdown("s", leaderboard.collect(records), source)
    assert "not recorded (trial files older than the record): 1 run." in older
    assert "compare only between runs of one CPU" in older


def test_selection_dynamics_count_blocks_changes_and_the_last_change():
    found = dynamics([["1100", "1100", "0110", "0110"], ["1110", "1110", "1110", "1110"]])
    assert (found.fewest, found.most, found.blocks) == (2, 3, 4)
    assert found.mean_per_step == pytest.approx((2 * 4 + 3 * 4) / 8)
    assert found.change_share == pytest.approx((1 / 3 + 0) / 2)
    assert found.last_change == pytest.approx((3 + 1) / 2)  # step 3 in the first, none in the second


def _suite_records(focus_correct: float, focus_curve: list[float], focus_memory: float,
                   device: str = "cpu"):
    records = []
    for s in range(3):
        records.append(record("ir-tuning", s, focus_curve, focus_correct, trace=["1010", "0110"],
                              memory=focus_memory, device=device))
        records.append(record("random-layers", s, [0.2, 0.4, 0.5], 0.45, trace=["1100", "0011"],
                              memory=1000, device=device))
        records.append(record("lora", s, [0.2, 0.45, 0.55], 0.5, memory=1200, device=device))
        records.append(record("full-ft", s, [0.3, 0.5, 0.6], 0.6, memory=2000, device=device))
    return records


def test_claims_card_verdicts_follow_the_rules(tmp_path):
    strong = _suite_records(0.9, [0.5, 0.6, 0.62], 900)
    path = claims.render_claims("deep", strong, leaderboard.RunSource("results", "x"), "ir-tuning",
                                tmp_path, small=(strong, leaderboard.RunSource("results", "y")))
    text = path.read_text()
    assert "### 1. Outperforms the layer-wise baselines: **supported**" in text
    assert "### 2. Converges fast: **supported**" in text
    assert "### 3. Uses little memory: **not testable here**" in text  # CPU runs
    assert "### 4. Works on small corpora: **supported**" in text
    assert "What ir-tuning trained: 2 of 4 blocks per step" in text

    weak = _suite_records(0.35, [0.1, 0.2, 0.56], 1500, device="cuda")
    for r in weak:
        r.tags["memory_source"] = "nvml"
    text = claims.render_claims("deep", weak, leaderboard.RunSource("results", "x"), "ir-tuning",
                                tmp_path).read_text()
    assert "### 1. Outperforms the layer-wise baselines: **not supported**" in text
    assert "### 2. Converges fast: **not supported**" in text
    assert "### 3. Uses little memory: **not supported**" in text  # above LoRA's 1200 MiB
    assert "### 4. Works on small corpora: **not testable here**" in text
    companion = claims.render_claims("deep-small", weak, leaderboard.RunSource("results", "x"),
                                     "ir-tuning", tmp_path).read_text()
    assert "the small-corpus companion of `deep`" in companion


def test_claims_card_names_variants_of_the_focus_strategy(tmp_path):
    records = _suite_records(0.9, [0.5, 0.6, 0.62], 900)
    records.append(record("ir-tuning", 0, [0.1, 0.2, 0.3], 0.4, trace=["1010"],
                          entry="ir-tuning-frozen-head", options={"train_head": False}))
    text = claims.render_claims("deep", records, leaderboard.RunSource("results", "x"),
                                "ir-tuning", tmp_path).read_text()
    assert "`ir-tuning-frozen-head` (train_head=False; 1 seed(s))" in text
    # A variant of the focus is a caveat, not a baseline: its one seed decides nothing.
    assert "| ir-tuning-frozen-head | variant (not a baseline) |" in text
    assert "### 1. Outperforms the layer-wise baselines: **supported**" in text
    assert "### 2. Converges fast: **supported**" in text


def test_claims_command_on_the_committed_revisions_files(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmark", "claims", "--from-results",
                           str(ROOT / "results" / "revisions"), "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "revisions" / "claims.md").read_text()
    # No curves in that suite, and it ran on a CPU: both claims are untestable there.
    assert text.count("### 2. Converges fast: **not testable here**") == 2
    assert text.count("### 3. Uses little memory: **not testable here**") == 2
    assert "3-4 of 6 blocks per step" in text
