"""A real two-node Ray cluster on this machine: `ray start --head` and a second
`ray start --address ...`, each a separate raylet with one CPU and its own temp dir. The
smoke suite (a 4-trial cut of it, to stay near a minute) runs against it through
`--address`; trials must land on both nodes and every result in the one MLflow store.

Only the processes started here are stopped (never `ray stop`, which would stop every
Ray process on the machine, other people's included).
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

from benchmark.sweep.suite import SUITES_DIR, expand_trials, load_suite
from benchmark.sweep.tracking import connect, runs_of

RAY = str(Path(sys.executable).parent / "ray")
# Ray >= 2.5x turns token authentication on for `ray start --head` when a token file
# exists; this throwaway local cluster and its driver agree to run without one. No drain
# wait on SIGTERM, so the nodes stop in seconds.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _node_args(temp_dir: Path, resources: str) -> list[str]:
    # Every port Ray would otherwise take by default (52365 for the agent, ...) is a free
    # one, so this cluster does not collide with another Ray running on the machine.
    return ["--num-cpus", "1", "--resources", resources, "--temp-dir", str(temp_dir), "--block",
            "--disable-usage-stats", "--include-log-monitor", "false",
            "--dashboard-agent-listen-port", str(_free_port()),
            "--dashboard-agent-grpc-port", str(_free_port()),
            "--runtime-env-agent-port", str(_free_port()),
            "--metrics-export-port", str(_free_port()),
            "--object-manager-port", str(_free_port()),
            "--node-manager-port", str(_free_port())]


def _wait_for_log(process: subprocess.Popen, log: Path, text: str, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"ray start exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        if text in log.read_text(errors="replace"):
            return
        time.sleep(0.3)
    pytest.fail(f"ray start did not report {text!r} within {timeout_s} s:\n{log.read_text()[-2000:]}")


def _wait_for_port(process: subprocess.Popen, log: Path, address: str, timeout_s: float) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"ray start exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"the head's GCS did not listen on {address} within {timeout_s} s")


@pytest.fixture
def two_node_cluster(tmp_path, monkeypatch):
    """The address of a running head + worker node; both stopped afterwards."""
    import ray

    for key, value in RAY_ENV.items():
        monkeypatch.setenv(key, value)
    ip = ray.util.get_node_ip_address()  # Ray advertises this address, not 127.0.0.1
    address = f"{ip}:{_free_port()}"
    # Unix socket paths must stay under ~107 characters: short temp dirs under /tmp.
    short_dir = Path(os.path.realpath(os.environ.get("TMPDIR", "/tmp")))
    temp_dirs = [Path(tempfile.mkdtemp(prefix=f"r{name}", dir=short_dir))
                 for name in ("h", "w")]
    started: list[subprocess.Popen] = []
    logs = []
    try:
        for role, temp_dir in zip(("head", "worker"), temp_dirs):
            log = tmp_path / f"ray-{role}.log"
            logs.append(log)
            if role == "head":
                command = [RAY, "start", "--head", "--port", address.rsplit(":", 1)[1],
                           "--include-dashboard", "false",
                           *_node_args(temp_dir, '{"bench_head_node": 1}')]
            else:
                command = [RAY, "start", "--address", address,
                           *_node_args(temp_dir, '{"bench_worker_node": 1}')]
            with open(log, "w") as out:
                # Its own process group: stopping it cannot touch anything else.
                started.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                                 env={**os.environ, **RAY_ENV},
                                                 start_new_session=True))
            if role == "head":  # the worker node may start as soon as the GCS listens
                _wait_for_port(started[-1], log, address, timeout_s=60)
        for process, log in zip(started, logs):
            _wait_for_log(process, log, "Ray runtime started", timeout_s=60)
        yield address
    finally:
        _stop(started)
        for temp_dir in temp_dirs:
            subprocess.run(["rm", "-rf", str(temp_dir)], check=False)


def _stop(started: list[subprocess.Popen]) -> None:
    """SIGTERM each `ray start --block` (it stops its node's processes), then make sure
    that every process it had started is gone: Ray workers run in their own process
    groups, so they are collected by ancestry first."""
    descendants = []
    for process in started:
        try:
            descendants += psutil.Process(process.pid).children(recursive=True)
        except psutil.Error:
            pass
    for process in reversed(started):  # the worker node before the head
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in started:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    _, alive = psutil.wait_procs(descendants, timeout=10)
    for leftover in alive:
        try:
            leftover.kill()
        except psutil.Error:
            pass


def test_smoke_suite_on_a_two_node_cluster_uses_both_nodes_and_one_mlflow_store(
        tmp_path, data_dir, two_node_cluster):
    address = two_node_cluster
    # The shipped smoke suite, cut to two strategies on both tasks: 4 trials, 2 at once,
    # and one CPU per node, so the two running trials cannot share a node.
    smoke = yaml.safe_load((SUITES_DIR / "smoke.yaml").read_text())
    smoke.update(name="smoke-two-node",
                 strategies={k: smoke["strategies"][k] for k in ("lora", "ir-tuning")},
                 resources={"cpus_per_trial": 1, "max_concurrent_trials": 2,
                            "reuse_workers": True})
    suite = tmp_path / "smoke-two-node.yaml"
    suite.write_text(yaml.safe_dump(smoke))
    trials = expand_trials(load_suite(str(suite)))
    assert len(trials) == 4

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # The driver is its own process, as for a user. In-process it would inherit this pytest
    # process's Ray state: after any earlier test had started a local Ray (token
    # authentication on), every trial actor here was "cancelled before it started".
    run = subprocess.run(
        [sys.executable, "-m", "benchmark", "run", "--suite", str(suite), "--address", address,
         "--tracking-uri", uri, "--data-dir", str(data_dir),
         "--results-dir", str(tmp_path / "results"), "--storage-path", str(tmp_path / "ray")],
        env={**os.environ, **RAY_ENV}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    client = connect(uri)
    runs = runs_of(client, client.get_experiment_by_name("smoke-two-node").experiment_id)
    assert len(runs) == len(trials)
    assert all(r.info.status == "FINISHED" for r in runs)
    for r in runs:  # every trial's full result reached the store the driver writes
        assert "test_macro_f1" in r.data.metrics and "peak_memory_mb" in r.data.metrics
        assert "result.json" in {a.path for a in client.list_artifacts(r.info.run_id)}
        assert re.fullmatch(r"[0-9a-f]{56}", r.data.tags["ray_node_id"]), r.data.tags
    nodes = {r.data.tags["ray_node_id"] for r in runs}
    assert len(nodes) == 2, f"all trials ran on one node: {nodes}"
    assert len({r.data.tags["trial_key"] for r in runs}) == len(trials)
