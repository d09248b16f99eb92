"""Faults lose no work: resume from the committed trial files alone, precision refusals,
a tracking outage, a killed worker, a store being created by another process, and two
runs of one suite at once. Real Ray, real MLflow (SQLite, and a real `mlflow server`)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.sweep.tracking import connect, runs_of

REPO = Path(__file__).resolve().parents[1]


def _runs(uri, suite):
    client = connect(uri)
    experiment = client.get_experiment_by_name(suite)
    return [] if experiment is None else runs_of(client, experiment.experiment_id)


def _table_rows(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("|")]


def _committed_copy(tmp_path, suite="revisions") -> Path:
    """A fresh clone's results folder: the committed trial files, no MLflow store."""
    results = tmp_path / "results"
    shutil.copytree(REPO / "results" / suite / "trials", results / suite / "trials")
    return results


def _bf16_here(monkeypatch, native: bool) -> None:
    """This machine's answer to 'does the CPU compute bf16', whatever CPU runs the test."""
    import benchmark.trial.config as config

    monkeypatch.setattr(config, "cpu_computes_bf16", lambda: native)


@pytest.mark.slow
def test_a_fresh_clone_resumes_from_its_trial_files_alone(tmp_path, data_dir, monkeypatch, capsys):
    """`run --suite revisions` with no MLflow store trains nothing: its 48 committed trial
    files become 48 FINISHED runs with everything a live run logs, once. They ran in bf16;
    here `auto` is fp32, yet with every trial in the files nothing is trained, so nothing
    is mixed and the README's first command works on either kind of CPU."""
    _bf16_here(monkeypatch, False)
    results = _committed_copy(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["run", "--suite", "revisions", "--tracking-uri", uri, "--data-dir", str(data_dir),
            "--results-dir", str(results), "--storage-path", str(tmp_path / "ray")]
    before = {p.name: p.read_text() for p in (results / "revisions" / "trials").glob("*.json")}
    board_files = ("leaderboard.md", "leaderboard.html", "f1_vs_memory.png", "dev_f1_curves.png")
    for name in board_files:  # as a fresh clone has them: committed
        shutil.copy(REPO / "results" / "revisions" / name, results / "revisions" / name)
    assert main(args) == 0
    out = capsys.readouterr().out
    # The committed board, re-rendered from the same runs (from MLflow, at another time),
    # is left as it is: the clone's `git status` stays clean.
    for name in board_files:
        assert (results / "revisions" / name).read_bytes() == (
            REPO / "results" / "revisions" / name).read_bytes(), name
    tags = connect(uri).get_experiment_by_name("revisions").tags
    assert tags["last_run.trials_resumed"] == "48" and tags["last_run.trials_trained"] == "0"
    # Stage select's 24 trials, then stage final's 24 (seeds 1 and 2 of the chosen rates).
    restored = [int(line.split()[0]) for line in out.splitlines()
                if "finished trial(s) restored into MLflow from their trial files" in line]
    assert restored == [24, 24], out
    assert "stage final: 36 trials, 36 already finished" in out
    runs = _runs(uri, "revisions")
    assert len(runs) == 48 and all(r.info.status == "FINISHED" for r in runs)
    records = {json.loads(text)["trial_key"]: json.loads(text) for text in before.values()}
    assert {r.data.tags["trial_key"] for r in runs} == set(records)
    client = connect(uri)
    for run in runs[:3]:
        record = records[run.data.tags["trial_key"]]
        assert run.data.metrics["test_macro_f1"] == pytest.approx(record["result"]["test"]["macro_f1"])
        assert run.data.params["task"] == record["trial"]["task"]
        assert run.data.params["config.precision"] == "bf16"
        assert run.data.tags["restored_from"] == "trial file"
        assert run.data.tags["device"] == "cpu"
        curve = client.get_metric_history(run.info.run_id, "dev_macro_f1")
        assert [m.step for m in curve] == [h["step"] for h in record["result"]["history"]]
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {
            "result.json", "selection_trace.json"}
    # Nothing trained: the files are as committed, and the board is the committed one.
    assert {p.name: p.read_text() for p in (results / "revisions" / "trials").glob("*.json")} == before
    assert _table_rows((results / "revisions" / "leaderboard.md").read_text()) == _table_rows(
        (REPO / "results" / "revisions" / "leaderboard.md").read_text())
    # A second run finds them in MLflow: no duplicates.
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "24 trials in stage select, 24 already finished" in out and "restored" not in out
    assert len(_runs(uri, "revisions")) == 48


def test_trial_files_of_another_precision_are_refused_in_one_line(tmp_path, data_dir, monkeypatch, capsys):
    _bf16_here(monkeypatch, False)  # here `auto` resolves to fp32; the files say bf16
    results = _committed_copy(tmp_path, "revisions-smollm")
    sorted((results / "revisions-smollm" / "trials").glob("*.json"))[0].unlink()  # one to train
    code = main(["run", "--suite", "revisions-smollm", "--tracking-uri",
                 f"sqlite:///{tmp_path}/mlflow.db", "--data-dir", str(data_dir),
                 "--results-dir", str(results)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: 4 FINISHED trial file(s)")
    assert "precision bf16" in err[0] and "resolves to fp32" in err[0]
    assert not (tmp_path / "mlflow.db").exists()  # refused before anything was written


def test_a_pinned_bf16_suite_is_refused_on_a_cpu_that_emulates_bf16(tmp_path, data_dir, monkeypatch, capsys):
    import yaml

    _bf16_here(monkeypatch, False)
    spec = yaml.safe_load((REPO / "benchmark" / "suites" / "smoke.yaml").read_text())
    spec["budget"]["precision"] = "bf16"
    path = tmp_path / "pinned.yaml"
    path.write_text(yaml.safe_dump(spec))
    code = main(["run", "--suite", str(path), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
                 "--data-dir", str(data_dir), "--results-dir", str(tmp_path / "results")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "pins precision bf16" in err[0] and "does not compute bf16 natively" in err[0]


# -- runs in a subprocess, as a user starts them --------------------------------------------

TINY_BUDGET = {"max_steps": 4, "eval_every": 2, "batch_size": 8, "train_limit": 32,
               "eval_limit": 16, "test_limit": 16, "max_length": 48}


def _suite_file(tmp_path, name, lrs, **resources):
    import yaml

    spec = {"name": name, "model": "tiny-llama", "tasks": ["iterater"], "seeds": [0],
            "budget": TINY_BUDGET, "strategies": {"lora": {"search": {"lr": lrs}}},
            "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 1, "reuse_workers": True,
                          **resources}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _run_command(tmp_path, suite, data_dir, uri, *extra):
    return [sys.executable, "-m", "benchmark", "run", "--suite", str(suite), "--tracking-uri", uri,
            "--data-dir", str(data_dir), "--results-dir", str(tmp_path / "results"),
            "--storage-path", str(tmp_path / "ray"), *extra]


def _start(command, log: Path, env=None) -> subprocess.Popen:
    """A process in its own session, output to `log` (a pipe could fill and block it)."""
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env)


def _wait_for(condition, proc=None, timeout=240, what="the condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the process ended (status {proc.returncode}) before {what}")
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}")


def _stop(proc) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _trial_files(tmp_path, suite) -> list[dict]:
    folder = tmp_path / "results" / suite / "trials"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


@pytest.mark.slow
def test_a_second_run_is_refused_and_sigterm_stops_a_run_that_resumes(tmp_path, data_dir, capsys):
    """Two runs of one suite into one results folder: the second refuses in one line naming
    the first. SIGTERM stops the first as Ctrl-C does (status 130, finished trials kept);
    the same command then finishes the rest, nothing duplicated."""
    suite = _suite_file(tmp_path, "terminated", [1e-3, 2e-3, 3e-3])
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    command = _run_command(tmp_path, suite, data_dir, uri)
    first = _start(command, tmp_path / "first.log")
    try:
        lock = tmp_path / "results" / "terminated" / "run.lock"
        _wait_for(lock.exists, first, what="the first run's lock")
        assert main(command[3:]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"(pid {first.pid} on {socket.gethostname()}" in err[0], err
        assert err[0].startswith("error: another run of this suite is writing")
        _wait_for(lambda: len(_trial_files(tmp_path, "terminated")) >= 1, first,
                  what="a finished trial")
        first.send_signal(signal.SIGTERM)  # the driver only, as `kill PID` does
        assert first.wait(timeout=120) == 130
    finally:
        _stop(first)
    log = (tmp_path / "first.log").read_text()
    assert "run the same command to resume" in log.strip().splitlines()[-1]
    assert not lock.exists()  # released on the way out
    kept = {f["trial_key"] for f in _trial_files(tmp_path, "terminated")}
    assert 1 <= len(kept) < 3
    for record in _trial_files(tmp_path, "terminated"):  # the CPU each trial ran on
        env = record["result"]["environment"]
        assert isinstance(env["cpu_model"], str) and env["cpu_model"]
        assert env["cpu_flags"] == sorted(env["cpu_flags"])
        assert set(env["cpu_flags"]) <= {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}
    assert main(command[3:]) == 0
    out = capsys.readouterr().out
    assert f"3 trials, {len(kept)} already finished" in out
    runs = _runs(uri, "terminated")
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["trial_key"] for r in runs}) == 3


def test_a_lock_left_by_a_dead_run_is_taken_over(tmp_path):
    from benchmark.sweep.lock import LOCK_NAME, suite_lock

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid is free now
    folder = tmp_path / "results" / "s"
    folder.mkdir(parents=True)
    (folder / LOCK_NAME).write_text(json.dumps(
        {"pid": gone.pid, "host": socket.gethostname(), "started": "earlier"}))
    with suite_lock(folder) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not (folder / LOCK_NAME).exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlflow_server(tmp_path, port: int, log_name: str) -> subprocess.Popen:
    """A real `mlflow server` on localhost, its store and artifacts in tmp_path."""
    import urllib.request

    server = _start([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
                     "--port", str(port), "--workers", "1",
                     "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
                     "--artifacts-destination", str(tmp_path / "server-artifacts")],
                    tmp_path / log_name,
                    # Without its job runner (seven more processes, none needed here).
                    env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})

    def answers() -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
        except OSError:
            return False

    # Its start-up takes seconds on an idle machine, minutes on a loaded 2-core one.
    try:
        _wait_for(answers, server, timeout=420, what="mlflow server to answer")
    except BaseException:
        _stop(server)
        raise
    return server


def _finished_runs(db: Path) -> int:
    """FINISHED runs in a server's SQLite store, read without the server."""
    import sqlite3

    try:
        with sqlite3.connect(db, timeout=1) as con:
            return con.execute("select count(*) from runs where status = 'FINISHED'").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_a_tracking_outage_mid_suite_costs_no_training(tmp_path, data_dir):
    """The server stops after the first trial and comes back after the second: every trial
    trains once, one line says tracking was lost and one that it is back, and MLflow ends
    with one FINISHED run per trial."""
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _mlflow_server(tmp_path, port, "server1.log")
    suite = _suite_file(tmp_path, "outage", [1e-3, 2e-3, 3e-3])
    run = _start(_run_command(tmp_path, suite, data_dir, uri), tmp_path / "run.log")
    try:
        _wait_for(lambda: _finished_runs(tmp_path / "server.db") >= 1, run, what="run 1")
        _stop(server)
        _wait_for(lambda: len(_trial_files(tmp_path, "outage")) >= 2, run, what="trial 2")
        server = _mlflow_server(tmp_path, port, "server2.log")
        assert run.wait(timeout=300) == 0, (tmp_path / "run.log").read_text()[-3000:]
        log = (tmp_path / "run.log").read_text()
        assert log.count("tracking lost: ") == 1 and log.count("tracking back: ") == 1, log
        assert "Traceback" not in log and "View run" not in log  # MLflow's per-run links too
        assert "iterater/lora/s0 lr=0.002 test macro F1" in log  # trials told apart
        runs = _runs(uri, "outage")
        assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
        assert len({r.data.tags["trial_key"] for r in runs}) == 3
        assert len({r.info.run_name for r in runs}) == 3  # lr in the name: runs told apart
        client = connect(uri)
        for r in runs:
            assert "test_macro_f1" in r.data.metrics
            assert "result.json" in {a.path for a in client.list_artifacts(r.info.run_id)}
        files = _trial_files(tmp_path, "outage")
        assert len(files) == 3 and all(f["status"] == "FINISHED" for f in files)
    finally:
        _stop(run)
        _stop(server)


@pytest.mark.slow
def test_a_run_whose_tracking_never_returns_says_so_and_sync_logs_it_later(tmp_path, data_dir, capsys):
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _mlflow_server(tmp_path, port, "server1.log")
    suite = _suite_file(tmp_path, "degraded", [1e-3])
    log = tmp_path / "run.log"
    run = _start(_run_command(tmp_path, suite, data_dir, uri, "--tracking-patience", "2"), log)
    try:
        _wait_for(lambda: "suite degraded: 1 trials" in log.read_text(), run, what="the start")
        _stop(server)
        assert run.wait(timeout=300) == 3, log.read_text()[-3000:]
    finally:
        _stop(run)
    lines = log.read_text().strip().splitlines()
    assert lines[-1].startswith("tracking degraded: 1 finished trial(s)") and "sync" in lines[-1]
    assert [f["status"] for f in _trial_files(tmp_path, "degraded")] == ["FINISHED"]
    assert (tmp_path / "results" / "degraded" / "leaderboard.md").exists()  # from the files
    server = _mlflow_server(tmp_path, port, "server2.log")
    try:
        assert main(["sync", "--suite", str(suite), "--tracking-uri", uri,
                     "--results-dir", str(tmp_path / "results")]) == 0
        assert "synced 1 trial file(s)" in capsys.readouterr().out
        runs = _runs(uri, "degraded")
        assert [r.info.status for r in runs] == ["FINISHED"]
        assert main(["sync", "--suite", str(suite), "--tracking-uri", uri,
                     "--results-dir", str(tmp_path / "results")]) == 0
        assert "synced 0 trial file(s)" in capsys.readouterr().out
        assert len(_runs(uri, "degraded")) == 1
    finally:
        _stop(server)


def _worker_of_first_trial(run: subprocess.Popen):
    """The Ray worker process running the suite's first trial (its working directory is
    the trial's, named with the trial's index 00000), or None."""
    import psutil

    for child in psutil.Process(run.pid).children(recursive=True):
        try:
            if "ImplicitFunc" in " ".join(child.cmdline()) and "_00000_" in child.cwd():
                return child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


@pytest.mark.slow
def test_a_killed_worker_is_retried_up_to_the_bound_then_failed_while_others_go_on(tmp_path, data_dir):
    # Fresh worker processes (the default): a retry must start a new one.
    suite = _suite_file(tmp_path, "killed", [1e-3, 2e-3], max_retries=1, reuse_workers=False)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    log = tmp_path / "run.log"
    run = _start(_run_command(tmp_path, suite, data_dir, uri), log)
    try:
        killed = []
        for attempt in (1, 2):  # the first try and its one retry
            found = []
            _wait_for(lambda: bool(found.append(_worker_of_first_trial(run)) or found[-1])
                      and found[-1].pid not in killed, run, what=f"attempt {attempt}'s worker")
            killed.append(found[-1].pid)
            found[-1].kill()  # SIGKILL
            if attempt == 1:
                _wait_for(lambda: "retry 1 of 1" in log.read_text(), run, what="the retry")
        assert run.wait(timeout=300) == 1, log.read_text()[-3000:]
    finally:
        _stop(run)
    text = log.read_text()
    assert "its process died" in text and "retry 1 of 1" in text and "retry 2" not in text
    assert "Traceback" not in text  # Ray Tune's own record of the failure is filtered
    files = {f["trial"]["hyperparameters"]["lr"]: f for f in _trial_files(tmp_path, "killed")}
    assert files[1e-3]["status"] == "FAILED" and "(after 1 retries)" in files[1e-3]["error"]
    assert files[2e-3]["status"] == "FINISHED"  # the other trial went on
    assert files[2e-3]["result"]["process"] == {"trials_before": 0}  # in a process of its own
    runs = {r.data.params["hp.lr"]: r for r in _runs(uri, "killed")}
    assert len(runs) == 2 and runs["0.001"].info.status == "FAILED"
    assert "(after 1 retries)" in runs["0.001"].data.tags["error"]
    assert runs["0.002"].info.status == "FINISHED"


def test_a_store_being_created_by_another_process_is_waited_for(tmp_path, monkeypatch, capsys):
    """The errors a fresh SQLite store shows while another process migrates it are retried
    (one line), not fatal; other errors still are."""
    import mlflow.tracking

    real = mlflow.tracking.MlflowClient
    races = iter(["(sqlite3.OperationalError) table _alembic_tmp_experiments already exists",
                  "Online migration expected to match one row when updating 'abc' to 'def' in "
                  "'alembic_version'; but got 0"])

    class RacingClient(real):
        def search_experiments(self, *args, **kwargs):
            message = next(races, None)
            if message:
                raise RuntimeError(message)
            return super().search_experiments(*args, **kwargs)

    monkeypatch.setattr(mlflow.tracking, "MlflowClient", RacingClient)
    assert connect(f"sqlite:///{tmp_path}/mlflow.db") is not None
    err = [line for line in capsys.readouterr().err.splitlines() if "INFO mlflow" not in line]
    assert err == [f"tracking store sqlite:///{tmp_path}/mlflow.db is being created by another "
                   "process; waiting for it"]
    from benchmark.core.errors import UserError

    races = iter(["no such host"])
    with pytest.raises(UserError, match="is not usable: no such host"):
        connect(f"sqlite:///{tmp_path}/other.db")


@pytest.mark.slow
def test_processes_creating_one_fresh_store_at_once_all_connect(tmp_path):
    code = ("import sys; from benchmark.sweep.tracking import connect, experiment_id;"
            "c = connect(sys.argv[1]); print(experiment_id(c, 'race', sys.argv[1]))")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    procs = [subprocess.Popen([sys.executable, "-c", code, uri], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=420) for p in procs]  # minutes on a loaded machine
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-500:] for _, err in outs]
    assert len({out.strip().splitlines()[-1] for out, _ in outs}) == 1  # one experiment



POLLER = """
import os, sys, time
from mlflow.tracking import MlflowClient
path = sys.argv[1][len("sqlite:///"):]
while not os.path.exists(path):  # from the moment `run` starts creating the store
    time.sleep(0.01)
while True:  # a notebook or an `mlflow ui` reading the store, five times a second
    try:
        MlflowClient(sys.argv[1]).search_experiments()
        print("poller: read", flush=True)
    except Exception as error:  # the poller's own failures are not under test
        print("poller:", str(error).splitlines()[0][:100], flush=True)
    time.sleep(0.2)
"""


@pytest.mark.slow
def test_a_run_trains_while_another_process_polls_its_fresh_store(tmp_path, data_dir):
    """A second process opens the SQLite store five times a second from the moment `run`
    starts creating it, so both migrate it at once: `run` waits that out and trains."""
    suite = _suite_file(tmp_path, "polled", [1e-3])
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    poller = _start([sys.executable, "-c", POLLER, uri], tmp_path / "poller.log")
    try:
        run = _start(_run_command(tmp_path, suite, data_dir, uri), tmp_path / "run.log")
        try:
            status = run.wait(timeout=420)
        finally:
            _stop(run)
    finally:
        _stop(poller)
    log = (tmp_path / "run.log").read_text()
    assert status == 0, log[-2000:]
    assert "Traceback" not in log
    assert [f["status"] for f in _trial_files(tmp_path, "polled")] == ["FINISHED"]
    runs = _runs(uri, "polled")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"


def test_leftover_migration_copies_are_dropped_only_beside_their_originals(tmp_path):
    """A migration that died half-way leaves `_alembic_tmp_` copies that stop every later
    one; all of them go at once (one at a time livelocks), but never a copy whose original
    is gone, as its rows may live only there."""
    import sqlite3

    from benchmark.sweep.tracking import _drop_leftover_migration_tables

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    connect(uri)
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        for name in ("experiments", "model_versions"):
            db.execute(f"CREATE TABLE _alembic_tmp_{name} AS SELECT * FROM {name}")
        db.execute("CREATE TABLE _alembic_tmp_gone (x INTEGER)")
    _drop_leftover_migration_tables(uri)
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        left = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE name LIKE '_alembic_tmp%'")]
    assert left == ["_alembic_tmp_gone"]
    assert connect(uri).search_experiments() is not None


@pytest.mark.slow
def test_a_fresh_clone_holding_part_of_a_suite_trains_only_the_rest(tmp_path, data_dir, capsys):
    """Trial files for two of three trials and no MLflow store (a clone of a suite left
    half-done on another machine): the run trains one trial and restores two runs."""
    suite = _suite_file(tmp_path, "partial", [1e-3, 2e-3, 3e-3])
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = _run_command(tmp_path, suite, data_dir, uri)[3:]
    assert main(args) == 0
    folder = tmp_path / "results" / "partial" / "trials"
    files = sorted(folder.glob("*.json"))
    assert len(files) == 3
    files[1].unlink()
    kept = {p.name: p.read_text() for p in folder.glob("*.json")}
    (tmp_path / "mlflow.db").unlink()
    capsys.readouterr()
    uri = f"sqlite:///{tmp_path}/fresh.db"
    assert main(_run_command(tmp_path, suite, data_dir, uri)[3:]) == 0
    out = capsys.readouterr().out
    assert "2 finished trial(s) restored into MLflow" in out and "3 trials, 2 already finished" in out
    assert out.count(" trained, ") and "[3/3 done: 1 trained, 2 resumed" in out, out
    assert {p.name: p.read_text() for p in folder.glob("*.json") if p.name in kept} == kept
    runs = _runs(uri, "partial")
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["trial_key"] for r in runs}) == 3
