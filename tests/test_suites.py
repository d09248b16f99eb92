"""Suites through real Ray Tune into a temporary MLflow (SQLite) store."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main
from benchmark.sweep.suite import expand_trials, load_suite
from benchmark.sweep.tracking import connect, runs_of

REPO = Path(__file__).resolve().parents[1]
TINY_BUDGET = {"max_steps": 4, "eval_every": 2, "batch_size": 8, "train_limit": 32,
               "eval_limit": 16, "test_limit": 16, "max_length": 48}


@pytest.mark.parametrize("suite,trials", [("revisions", 48), ("revisions-extended", 44),
                                          ("revisions-smollm", 5),
                                          ("revisions-deep", 25),
                                          ("revisions-deep-small", 12),
                                          # comparisons: their 8 files and the committed 48
                                          ("revisions+top-layers", 8),
                                          ("revisions+lora-r4", 8)])
def test_committed_leaderboard_rebuilds_from_its_trial_files(suite, trials, tmp_path):
    """The committed reference results stay auditable: their trial files alone give the
    committed table rows, with no MLflow store."""
    committed = REPO / "results" / suite
    assert len(list((committed / "trials").glob("*.json"))) == trials
    assert main(["leaderboard", "--suite", suite, "--from-results", str(committed),
                 "--results-dir", str(tmp_path), "--tracking-uri", "http://127.0.0.1:9"]) == 0
    assert _table_rows((tmp_path / suite / "leaderboard.md").read_text()) == _table_rows(
        (committed / "leaderboard.md").read_text())


def _suite_file(tmp_path, name, strategies, **extra):
    spec = {"name": name, "model": "tiny-llama", "tasks": ["iterater"], "seeds": [0],
            "budget": TINY_BUDGET, "strategies": strategies, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _run_args(tmp_path, suite, data_dir):
    """`run` arguments that keep MLflow, results and Ray state inside tmp_path."""
    return ["run", "--suite", str(suite), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
            "--data-dir", str(data_dir), "--results-dir", str(tmp_path / "results"),
            "--storage-path", str(tmp_path / "ray")]


def _runs(uri, suite):
    client = connect(uri)
    return runs_of(client, client.get_experiment_by_name(suite).experiment_id)


def _fresh_clone(tmp_path, data_dir) -> Path:
    """The repository's files as a fresh clone has them, with the corpora at ../shared/data
    beside it (a link), as a new user's checkout."""
    clone = tmp_path / "clone"
    shutil.copytree(REPO, clone, ignore=shutil.ignore_patterns(
        ".git", ".venv", "results", "__pycache__", "*.egg-info", ".pytest_cache"))
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(Path(data_dir).resolve())
    return clone


def _table_rows(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("|")]


def test_a_newcomers_first_run_from_a_fresh_clone_finishes_and_resumes(tmp_path, data_dir, capsys):
    """The README's main command with --suite smoke, exactly, from the clone's root with the
    relative data path; then resume, report, and a leaderboard rebuilt from trial files."""
    clone = _fresh_clone(tmp_path, data_dir)
    command = [sys.executable, "-m", "benchmark", "run", "--suite", "smoke",
               "--data-dir", "../shared/data"]
    done = subprocess.run(command, cwd=clone, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    uri = f"sqlite:///{clone}/results/mlflow.db"
    runs = _runs(uri, "smoke")
    trials = expand_trials(load_suite("smoke"))
    assert len(runs) == len(trials) == 10
    assert all(r.info.status == "FINISHED" for r in runs)
    for r in runs:
        for metric in ("test_macro_f1", "dev_best_macro_f1", "steps_to_converge", "peak_memory_mb",
                       "wall_time_s", "train_samples_per_s", "trainable_share"):
            assert metric in r.data.metrics, (metric, r.data.tags)
        assert r.data.tags["ray_trial_id"] and r.data.tags["trial_key"]
        assert r.data.params["model"] == "tiny-llama"
    # The leaderboard lists every trial's strategy on every task, with its figures.
    results = clone / "results"
    board = (results / "smoke" / "leaderboard.md").read_text()
    for task in ("iterater", "argrewrite"):
        section = board.split(f"## {task}")[1].split("## ")[0]
        for strategy in ("full-ft", "lora", "lisa", "random-layers", "ir-tuning"):
            assert f"| {strategy} |" in section
    assert "FAILED" not in board and "Leaderboard: suite `smoke`" in out
    # smoke reuses its two worker processes (resources.reuse_workers): files and board say so.
    earlier = [json.loads(p.read_text())["result"]["process"]["trials_before"]
               for p in (results / "smoke" / "trials").glob("*.json")]
    assert sorted(earlier)[:2] == [0, 0] and max(earlier) >= 1, earlier
    reused = sum(1 for n in earlier if n)
    assert f"RSS: {reused} of 10 runs trained in a worker process that earlier trials" in board
    for plot in ("f1_vs_memory.png", "f1_vs_time.png", "dev_f1_curves.png", "ir_tuning_selection.png"):
        assert (results / "smoke" / plot).stat().st_size > 1000
    _check_trial_files(results / "smoke" / "trials", trials)
    _check_report_and_overhead(clone, uri, capsys)
    # The committed-results path: the same table rows from the trial files alone.
    capsys.readouterr()
    rebuilt = tmp_path / "rebuilt"
    assert main(["leaderboard", "--suite", "smoke", "--from-results", str(results / "smoke"),
                 "--results-dir", str(rebuilt), "--tracking-uri", "http://127.0.0.1:9"]) == 0
    assert _table_rows((rebuilt / "smoke" / "leaderboard.md").read_text()) == _table_rows(board)
    assert main(["report", "--suite", "smoke", "--from-results", str(results / "smoke"),
                 "--results-dir", str(rebuilt), "--tracking-uri", "http://127.0.0.1:9"]) == 0
    assert "## IR-Tuning against every other strategy" in (rebuilt / "smoke" / "report.md").read_text()
    # A second run finds every trial finished: nothing re-runs, nothing is duplicated.
    before = {r.info.run_id for r in runs}
    again = subprocess.run(command, cwd=clone, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "10 already finished" in again.stdout
    assert {r.info.run_id for r in _runs(uri, "smoke")} == before


def _check_trial_files(folder: Path, trials: list[dict]) -> None:
    files = sorted(folder.glob("*.json"))
    assert len(files) == len(trials)
    for path in files:
        record = json.loads(path.read_text())
        trial = record["trial"]
        assert path.name == (f"{trial['task']}--{trial['strategy']}--{record['config_key']}"
                             f"--s{trial['seed']}.json")
        assert record["status"] == "FINISHED" and record["error"] is None
        run = record["run"]
        assert run["command"].startswith("python -m benchmark run --suite smoke")
        assert len(run["git_commit"]) >= 7 or run["git_commit"] == "unknown"
        assert set(run["versions"]) == {"torch", "transformers", "peft", "ray", "mlflow", "deepspeed"}
        assert run["device"] == "cpu" and run["precision"] in ("fp32", "bf16")
        result = record["result"]
        assert [h["step"] for h in result["history"]] == [3, 6]
        assert result["peak_memory_mb"] > 0 and result["train_time_s"] > 0
        predictions = result["test_predictions"]
        assert len(predictions) == result["sizes"]["test"] == 32
        assert all(set(p) == {"label", "predicted"} for p in predictions.values())


def _check_report_and_overhead(root, uri, capsys):
    """`report` and the suite-overhead benchmark on the smoke suite's fresh store."""
    from benchmark.tools.perf import suite_overhead

    capsys.readouterr()
    assert main(["report", "--suite", "smoke", "--tracking-uri", uri,
                 "--results-dir", str(root / "results")]) == 0
    report = (root / "results" / "smoke" / "report.md").read_text()
    for heading in ("## Leaderboard", "## Test F1 per class", "## IR-Tuning: which blocks it trained",
                    "## IR-Tuning against every other strategy",
                    "## Settings beside the reference implementation"):
        assert heading in report
    # Every trial kept its test predictions, so every non-leader has a bootstrap p-value.
    section = report.split("### iterater")[1].split("### ")[0]
    rows = [line.split("|") for line in section.splitlines() if line.startswith("| ")][1:]
    assert "majority class" in rows[-1][2]  # the floor, last in each task's table
    rows = rows[:-1]
    assert len(rows) == 5 and rows[0][4].strip() == ""
    for row in rows[1:]:  # e.g. "0.043 * (1/1)": p-value, then seeds #1 won of seeds compared
        p_value, seeds = row[4].split("(")
        assert 0 <= float(p_value.replace("*", "").replace("<", "").strip()) <= 1
        assert seeds.strip() in ("0/1)", "1/1)")
    assert report.count("no paired test predictions") == 0
    # Tiny Llama has 4 blocks: one frequency per block, each a share of the 6 steps.
    frequency = next(l for l in report.splitlines() if l.startswith("| % of steps |"))
    assert len(frequency.split("|")) == 4 + 3
    assert (root / "results" / "smoke" / "ir_tuning_frequency.png").stat().st_size > 1000
    measured = suite_overhead.measure("smoke", uri)
    assert measured["trials"] == 10 and measured["parallel"] == 2
    assert 0 < measured["train_s"] < measured["trial_wall_s"] < 2 * measured["wall_s"]
    assert measured["overhead"] > 0  # a suite cannot beat its own training time


def test_concurrent_trials_log_completely_and_a_failure_is_recorded(tmp_path, data_dir, capsys):
    strategies = {"full-ft": {"search": {"lr": [1e-4, 1e30]}},  # 1e30: the loss goes NaN
                  "lora": {"search": {"lr": [1e-3, 3e-3]}},
                  "random-layers": {"options": {"k": 1}}}
    path = _suite_file(tmp_path, "concurrent", strategies,
                       budget={**TINY_BUDGET, "max_grad_norm": 0},
                       resources={"cpus_per_trial": 0.4, "max_concurrent_trials": 5,
                                  "reuse_workers": True})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(_run_args(tmp_path, path, data_dir)) == 1  # a trial failed: the exit says so
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("1 trial(s) failed") and "trials/*.json" in last
    runs = _runs(uri, "concurrent")
    assert len(runs) == 5
    failed = [r for r in runs if r.info.status == "FAILED"]
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(failed) == 1 and failed[0].data.params["hp.lr"] == "1e+30"
    assert "TrialFailed: training diverged" in failed[0].data.tags["error"]
    assert len(finished) == 4
    client = connect(uri)
    for r in finished:  # every run complete: eval history, final metrics, artifacts
        assert [m.step for m in client.get_metric_history(r.info.run_id, "dev_macro_f1")] == [2, 4]
        assert "test_macro_f1" in r.data.metrics
        assert {a.path for a in client.list_artifacts(r.info.run_id)} >= {"result.json", "selection_trace.json"}
    # They ran at the same time: at least four runs were open at once.
    events = sorted([(r.info.start_time, 1) for r in runs] + [(r.info.end_time, -1) for r in runs])
    open_runs, most = 0, 0
    for _, change in events:
        open_runs += change
        most = max(most, open_runs)
    assert most >= 4
    board = (tmp_path / "results" / "concurrent" / "leaderboard.md").read_text()
    assert "FAILED" not in board.split("| full-ft |")[1].split("\n")[0]  # lr 1e-4 still ranks
    assert "(1 failed)" in board
    failed_file = [json.loads(p.read_text()) for p in
                   (tmp_path / "results" / "concurrent" / "trials").glob("*.json")]
    assert sorted(f["status"] for f in failed_file) == ["FAILED"] + ["FINISHED"] * 4
    assert any("diverged" in (f["error"] or "") for f in failed_file)


def test_a_missing_corpus_stops_run_before_ray_starts(tmp_path, capsys):
    started = time.time()
    code = main(["run", "--suite", "smoke", "--data-dir", str(tmp_path / "nowhere"),
                 "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
                 "--results-dir", str(tmp_path / "results")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and time.time() - started < 10
    assert len(err) == 1 and err[0].startswith("error: iterater: data files not found")
    assert "python -m benchmark data fetch" in err[0] and str(tmp_path / "nowhere") in err[0]
    import ray

    assert not ray.is_initialized()
    assert not (tmp_path / "mlflow.db").exists()  # nothing started, nothing written


def test_killed_suite_resumes_without_losing_or_duplicating_runs(tmp_path, data_dir):
    strategies = {"lora": {"search": {"lr": [1e-3, 2e-3, 3e-3, 4e-3]}}}
    path = _suite_file(tmp_path, "resume", strategies,
                       budget={**TINY_BUDGET, "max_steps": 6, "eval_every": 2},
                       resources={"cpus_per_trial": 1, "max_concurrent_trials": 2,
                                  "reuse_workers": True})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cmd = [sys.executable, "-m", "benchmark", *_run_args(tmp_path, path, data_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    db = tmp_path / "mlflow.db"
    deadline = time.time() + 240
    finished_before = 0
    while time.time() < deadline and proc.poll() is None:
        finished_before = _count(db, "FINISHED")
        if finished_before >= 1:
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the suite ended before it could be killed"
    assert finished_before >= 1
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait()
    kept = {r.info.run_id for r in _runs(uri, "resume") if r.info.status == "FINISHED"}
    assert main(cmd[3:]) == 0
    runs = _runs(uri, "resume")
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["trial_key"] for r in runs}) == 4
    assert kept <= {r.info.run_id for r in runs}  # finished trials were not re-run


def test_ctrl_c_stops_the_suite_with_status_130(tmp_path, data_dir):
    strategies = {"lora": {"search": {"lr": [1e-3, 2e-3, 3e-3]}}}
    path = _suite_file(tmp_path, "interrupted", strategies,
                       budget={**TINY_BUDGET, "max_steps": 6, "eval_every": 2},
                       resources={"cpus_per_trial": 1, "max_concurrent_trials": 1,
                                  "reuse_workers": True})
    cmd = [sys.executable, "-m", "benchmark", *_run_args(tmp_path, path, data_dir)]
    # The suite starts with Ctrl-C at its default, as from a terminal: a child inherits an
    # ignored SIGINT, and under pytest-xdist this process had SIGINT and SIGQUIT ignored
    # by the time this test ran (seen in a clean clone; the suite then ran to the end).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and _count(tmp_path / "mlflow.db", "FINISHED") < 1:
        time.sleep(0.5)
    assert proc.poll() is None, "the suite ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)  # Ctrl-C: the driver only, as a terminal would send it
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-2000:]
    assert "run the same command to resume" in err.strip().splitlines()[-1]


def _count(db: Path, status: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("select count(*) from runs where status = ? and lifecycle_stage = 'active'",
                               (status,)).fetchone()[0]
    except sqlite3.Error:
        return 0


def test_random_search_draws_the_same_configurations_on_every_load(tmp_path):
    path = _suite_file(tmp_path, "random", {"lora": {"search": {"lr": {"loguniform": [1e-4, 1e-2]},
                                                               "r": [4, 8]}}},
                       search={"algorithm": "random", "num_samples": 3, "seed": 5},
                       seeds=[0, 1])
    first, second = expand_trials(load_suite(str(path))), expand_trials(load_suite(str(path)))
    assert first == second and len(first) == 2 * 3 * 2  # r grid x samples x seeds
    lrs = {t["hyperparameters"]["lr"] for t in first}
    assert len(lrs) == 6 and all(1e-4 <= lr <= 1e-2 for lr in lrs)
    assert {t["options"]["lora_r"] for t in first} == {4, 8}  # the old name r, made current


def test_an_entry_may_run_on_its_own_seeds_without_changing_the_others(tmp_path, capsys):
    strategies = {"lora": {}, "lora-one-seed": {"strategy": "lora", "seeds": [1]}}
    trials = expand_trials(load_suite(str(_suite_file(tmp_path, "seeds", strategies, seeds=[0, 1, 2]))))
    seeds = {}
    for t in trials:
        seeds.setdefault(t.get("entry", t["strategy"]), []).append(t["seed"])
    assert seeds == {"lora": [0, 1, 2], "lora-one-seed": [1]}
    plain = expand_trials(load_suite(str(_suite_file(tmp_path, "plain", {"lora": {}}, seeds=[0, 1, 2]))))
    assert [t for t in trials if "entry" not in t] == plain  # the other entries' trial keys hold
    bad = _suite_file(tmp_path, "badseeds", {"lora": {"seeds": []}})
    assert main(["run", "--suite", str(bad), "--dry-run"]) == 2
    assert "strategies.lora.seeds must be a non-empty list" in capsys.readouterr().err


def test_distribution_under_grid_search_is_refused(tmp_path, capsys):
    path = _suite_file(tmp_path, "badgrid", {"lora": {"search": {"lr": {"uniform": [0.1, 0.2]}}}})
    assert main(["run", "--suite", str(path), "--dry-run"]) == 2
    assert "use search.algorithm random or optuna" in capsys.readouterr().err


def test_optuna_search_and_asha_scheduler_run_through_ray(tmp_path, data_dir):
    path = _suite_file(tmp_path, "optuna", {"lora": {"search": {"lr": {"loguniform": [1e-4, 1e-2]}}}},
                       search={"algorithm": "optuna", "num_samples": 3, "seed": 1},
                       scheduler={"type": "asha", "grace_period": 1},
                       budget={**TINY_BUDGET, "max_steps": 4, "eval_every": 1},
                       resources={"cpus_per_trial": 1, "max_concurrent_trials": 2,
                                  "reuse_workers": True})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(_run_args(tmp_path, path, data_dir)) == 0
    runs = _runs(uri, "optuna")
    assert len(runs) == 3
    lrs = {float(r.data.params["hp.lr"]) for r in runs}
    assert len(lrs) == 3 and all(1e-4 <= lr <= 1e-2 for lr in lrs)
    # ASHA may stop some trials early; those are KILLED and tagged, the rest FINISHED.
    for r in runs:
        assert r.info.status in ("FINISHED", "KILLED")
        if r.info.status == "KILLED":
            assert r.data.tags["stopped_early"] == "true"
    assert any(r.info.status == "FINISHED" for r in runs)


def test_staged_suite_selects_each_strategys_lr_then_runs_every_seed(tmp_path, data_dir, capsys):
    """Stage select on seed 0 at the full budget, then the chosen lr on seeds 0 and 1: the
    seed-0 runs of stage select count for stage final and do not run again."""
    strategies = {"lora": {"options": {"lora_r": 4, "lora_alpha": 8},
                           "search": {"lr": [1e-5, 1e-2]}},
                  "head-only": {"search": {"lr": [1e-2]}}}
    path = _suite_file(tmp_path, "staged", strategies, seeds=[0, 1],
                       budget={**TINY_BUDGET, "max_steps": 4, "eval_every": 2},
                       stages={"select": {"seeds": [0]}},
                       resources={"cpus_per_trial": 1, "max_concurrent_trials": 2,
                                  "reuse_workers": True})
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["run", "--suite", str(path), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "stage select: the 3 trials below" in plan and "stage final: 4 trials" in plan
    assert main(_run_args(tmp_path, path, data_dir)) == 0
    assert "stage final: 4 trials, 2 already finished" in capsys.readouterr().out
    runs = _runs(uri, "staged")
    select = [r for r in runs if r.data.params.get("stage") == "select"]
    final = [r for r in runs if r.data.params.get("stage") == "final"]
    assert len(select) == 3 and len(final) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.params["seed"] for r in final} == {"1"}  # seed 0 came from stage select
    lora = {r.data.params["hp.lr"]: r.data.metrics["dev_best_macro_f1"] for r in select
            if r.data.params["strategy"] == "lora"}
    chosen = {r.data.params["hp.lr"] for r in final if r.data.params["strategy"] == "lora"}
    assert chosen == {max(["1e-05", "0.01"], key=lora.get)}  # the first listed on a tie
    board = (tmp_path / "results" / "staged" / "leaderboard.md").read_text()
    assert "chosen from (stage one: mean dev macro F1)" in board
    lora_row = next(line for line in board.splitlines() if "| lora |" in line).split("|")
    assert lora_row[7].strip() == "2"  # both seeds of the chosen lr: 0 from select, 1 from final
    assert f"lr={chosen.pop()}" in lora_row[12] and "lr=0.01, lora_alpha=8, lora_r=4: 0." in lora_row[13]
    assert "Gaps to #1" in board
    # The two stages' cost against a plain grid (every lr on every seed): 2 lrs x 2 seeds of
    # lora and 1 x 2 of head-only, each at its final trials' mean time, over 2 slots.
    from benchmark.tools.perf import suite_overhead

    measured = suite_overhead.measure("staged", uri)
    assert (measured["select_trials"], measured["final_trials"]) == (3, 2)
    wall = {r.data.params["strategy"]: r.data.metrics["wall_time_s"] for r in final}
    assert measured["grid_s"] == pytest.approx((wall["lora"] * 4 + wall["head-only"] * 2) / 2)
    # What the trials' time outside training went to, overall and per strategy.
    assert measured["eval_s"] == pytest.approx(sum(r.data.metrics["eval_time_s"] for r in runs) / 2)
    assert {name: b["trials"] for name, b in measured["by_strategy"].items()} == {"lora": 3, "head-only": 2}
    assert "of which evaluation" in suite_overhead.report(measured)
    # Resumed: both stages are found finished, nothing re-runs.
    assert main(_run_args(tmp_path, path, data_dir)) == 0
    out = capsys.readouterr().out
    assert "3 trials in stage select, 3 already finished" in out
    assert "stage final: 4 trials, 4 already finished" in out
    assert len(_runs(uri, "staged")) == 5
