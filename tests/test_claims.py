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


def test_hierarchical_statistics_give_intervals_holm_and_stable_verdicts(tmp_path, monkeypatch):
    """A suite with `statistics: hierarchical` (issue 30): the card states the method, shows
    the interval and the Holm p of every baseline, and supports claim 1 only when the focus
    is ahead of every layer-wise baseline under all generator seeds."""
    import functools

    # The real test with fewer resamples and ASO iterations, to keep the suite quick.
    monkeypatch.setattr(claims.verdicts, "judge_claim", functools.partial(
        claims.verdicts.judge_claim, resamples=1000, aso_iterations=100))
    strong = _suite_records(0.9, [0.5, 0.6, 0.62], 900)
    text = claims.render_claims("deep", strong, leaderboard.RunSource("results", "x"),
                                "ir-tuning", tmp_path, statistics=claims.HIERARCHICAL).read_text()
    assert "hierarchical paired bootstrap of" in text and "Holm's method" in text
    assert "### 1. Outperforms the layer-wise baselines: **supported**" in text
    row = next(line for line in text.splitlines() if line.startswith("| random-layers |"))
    assert "ir-tuning ahead (20/20)" in row and "[+" in row  # interval above zero
    assert "End slopes: Budget rule" in text and "ir-tuning +0.020 (steps 20-30" in text

    level = _suite_records(0.45, [0.5, 0.6, 0.62], 900)  # as accurate as random-layers
    text = claims.render_claims("deep", level, leaderboard.RunSource("results", "x"),
                                "ir-tuning", tmp_path, statistics=claims.HIERARCHICAL).read_text()
    assert "### 1. Outperforms the layer-wise baselines: **not supported**" in text
    row = next(line for line in text.splitlines() if line.startswith("| random-layers |"))
    assert "ahead (20/20)" not in row
    full_ft = next(line for line in text.splitlines() if line.startswith("| full-ft |"))
    assert "full-ft ahead (20/20)" in full_ft  # the context family: 0.6 against 0.45


def _with_tensor_memory(records, peaks: dict[str, float]):
    for r in records:
        peak = peaks[r.strategy]
        r.metrics["tensor_peak_mb"] = peak
        r.result()["tensor_peak_by_category_mb"] = {"parameters": 500.0, "activations": peak - 500}
    return records


def _estimate_row(strategy: str, peak_gib: float) -> dict:
    gib = 2**30
    return {"strategy": strategy, "model": "llama-3.1-8b", "batch_size": 16, "max_length": 256,
            "precision": "bf16", "peak_bytes": int(peak_gib * gib), "peak_phase": "forward",
            "categories": {"parameters": int(14 * gib), "activations": int((peak_gib - 14) * gib)}}


def test_memory_claim_is_judged_from_tensor_memory_measured_and_estimated():
    """Claim 3 on CPU runs (issue 31): from the trials' tensor memory and the 8B estimate,
    supported only when the focus is below LoRA and full-ft in both; RSS alone stays
    not testable."""
    records = _suite_records(0.9, [0.5, 0.6, 0.62], 900)
    entries = leaderboard.collect(records)["t"]
    verdict, _ = claims.memory_claim("t", entries, "ir-tuning")
    assert verdict == claims.UNTESTABLE  # RSS only

    _with_tensor_memory(records, {"ir-tuning": 800, "random-layers": 700, "lora": 900, "full-ft": 1500})
    board = leaderboard.markdown("s", leaderboard.collect(records), leaderboard.RunSource("results", "x"))
    assert "peak memory (MiB): tensors / RSS" in board and "| 800 / 900 |" in board
    entries = leaderboard.collect(records)["t"]
    estimate = [_estimate_row("ir-tuning", 52.1), _estimate_row("lora", 54.7),
                _estimate_row("full-ft", 66.8), _estimate_row("random-layers", 48.2),
                _estimate_row("badam", 16.8)]  # not in the suite: left out
    verdict, lines = claims.memory_claim("t", entries, "ir-tuning", estimate)
    text = "\n".join(lines)
    assert verdict == claims.SUPPORTED
    assert "| ir-tuning | 800 | 500 |" in text and "| lora | 54.70 |" in text
    assert "badam" not in text and "under ir-tuning's estimate: random-layers" in text
    assert "CUDA context" in text

    estimate[0] = _estimate_row("ir-tuning", 60.0)  # above LoRA at 8B: the claim fails
    verdict, lines = claims.memory_claim("t", entries, "ir-tuning", estimate)
    assert verdict == claims.NOT_SUPPORTED and "estimated at 8B: not below both" in "\n".join(lines)


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


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "benchmark", *args], capture_output=True,
                          text=True, cwd=cwd)


def test_a_comparison_gets_the_card_against_the_committed_baselines(tmp_path):
    """The committed `run --only` folder results/revisions+top-layers holds only the new
    entry's 8 trials; its card judges top-layers against the 48 committed runs."""
    done = _cli("claims", "--from-results", "results/revisions+top-layers", "--results-dir",
                str(tmp_path))
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "revisions+top-layers" / "claims.md").read_text()
    assert "# Claims card: suite `revisions+top-layers`, focus `top-layers`" in text
    assert ("by `python -m benchmark claims --from-results results/revisions+top-layers "
            f"--results-dir {tmp_path}`") in text  # the line that reproduces it
    # Claim 1 has verdicts on both corpora, against the committed layer-wise baselines.
    assert text.count("### 1. Outperforms the layer-wise baselines: **not supported**") == 2
    assert "not testable here**\n\nNo " not in text.split("### 2.")[0]
    for strategy in ("lisa", "ir-tuning", "random-layers"):
        assert f"| {strategy} | layer-wise |" in text
    assert "| random-layers | layer-wise | 0.211 | +0.027 | < 0.001 | 3/3 | top-layers solidly ahead |" in text
    assert "| full-ft | other |" in text
    # The small-corpus claim looks for the base suite's companion, not `revisions+...-small`.
    assert "by default `revisions-small`, or its comparison `revisions-small+top-layers`" in text


def test_a_comparison_report_and_board_look_into_the_new_entry_and_mark_it(tmp_path):
    done = _cli("report", "--from-results", "results/revisions+lora-r4", "--results-dir",
                str(tmp_path))
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "revisions+lora-r4"
    report = (folder / "report.md").read_text()
    assert "## lora-r4 against every other strategy" in report
    assert "| iterater | lisa |" in report and "IR-Tuning against" not in report
    board = (folder / "leaderboard.md").read_text()
    assert board.count("| lora-r4 (new) |") == 2 and "| ir-tuning |" in board
    assert "(new) marks the entries this comparison ran" in board
    html = (folder / "leaderboard.html").read_text()
    assert "<code>revisions+lora-r4</code>" in html and "`" not in html


def test_a_typo_in_focus_is_one_line_naming_the_entries_and_the_comparison():
    done = _cli("claims", "--from-results", "results/revisions", "--focus", "top-layer",
                "--results-dir", "/nonexistent")
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: no runs of entry 'top-layer' in suite revisions")
    assert "its entries: full-ft, head-only, ir-tuning, lisa, lora, random-layers" in line
    done = _cli("claims", "--from-results", "results/revisions", "--focus", "top-layers")
    assert done.returncode == 2
    assert "--from-results results/revisions+top-layers" in done.stderr


def test_a_board_regenerated_from_the_same_runs_is_left_untouched_and_a_partial_one_refused(
        tmp_path):
    import shutil

    folder = tmp_path / "revisions"
    shutil.copytree(ROOT / "results" / "revisions" / "trials", folder / "trials")
    records, source, _ = leaderboard_records(folder)
    board = leaderboard.collect(records)
    leaderboard.write_board("revisions", board, source, tmp_path, records=records)
    first = (folder / "leaderboard.md").read_bytes()
    assert b"`results/revisions`" not in first  # rendered from the copy, not the repository
    # Another time and another source line: the same board, so the file stays as it was.
    other = leaderboard.RunSource("mlflow", "sqlite:///elsewhere.db")
    md = leaderboard.write_board("revisions", board, other, tmp_path, records=records)
    assert "sqlite:///elsewhere.db" in md and (folder / "leaderboard.md").read_bytes() == first
    # A board missing runs whose trial files are in the folder is never written there.
    some = [r for r in records if r.strategy != "lora"]
    with pytest.raises(leaderboard.PartialBoard, match="not written: these runs lack 8 FINISHED"):
        leaderboard.write_board("revisions", leaderboard.collect(some), other, tmp_path,
                                records=some)
    assert (folder / "leaderboard.md").read_bytes() == first


def leaderboard_records(folder):
    from benchmark.reporting.runs import from_results

    return from_results(folder)


def test_the_pareto_front_keeps_points_no_other_beats_on_both_axes():
    from benchmark.reporting.plots import pareto_front

    points = [(900, 0.30, "lora"), (500, 0.25, "ir"), (2000, 0.35, "full"), (1000, 0.20, "lisa"),
              (500, 0.22, "rst")]
    assert [p[2] for p in pareto_front(points)] == ["ir", "lora", "full"]
