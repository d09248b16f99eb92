"""MLflow tracking: one experiment per suite, one run per trial, all written from the Ray
driver (a Tune callback), so concurrent trials never contend for the SQLite store.

Runs are tagged with `trial_key` (a hash of the trial's configuration): a re-run of a
suite skips the keys that already have a FINISHED run and replaces (deletes) runs of the
same key left RUNNING or FAILED by an earlier, interrupted attempt.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from .suite import config_key, trial_label
from .trial_files import git_state, strategy_code, strategy_code_tags

DEFAULT_TRACKING_URI = "sqlite:///results/mlflow.db"
FINAL_METRICS = ("test_macro_f1", "test_accuracy", "test_macro_precision", "test_macro_recall",
                 "test_macro_auprc", "dev_best_macro_f1", "best_step", "steps_to_converge",
                 "peak_memory_mb", "torch_peak_allocated_mb", "peak_memory_mb_max_worker",
                 "wall_time_s", "train_time_s", "eval_time_s", "setup_time_s",
                 "train_samples_per_s", "trainable_share", "trainable_params_mean",
                 "total_params", "majority_test_macro_f1", "tensor_peak_mb")


def connect(tracking_uri: str):
    """An MlflowClient for the URI, checked now: a bad URI is one line, not a stack."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"tracking URI {tracking_uri}: cannot create {db.parent}: {error.strerror}") from None
    with _creating_store(tracking_uri):
        return _first_contact(tracking_uri, MlflowClient)


def _first_contact(tracking_uri: str, MlflowClient):
    """The client, once the store answers; a fresh SQLite store that another process is
    creating or migrating is waited for (one line), for up to STORE_CREATION_WAIT_S."""
    waited_s = 0.0  # time spent waiting, not in attempts (slow on a loaded machine)
    while True:
        try:
            client = MlflowClient(tracking_uri=tracking_uri)
            client.search_experiments(max_results=1)
            return client
        except Exception as error:  # mlflow raises many types for an unreachable store
            text = " ".join(str(error).split())
            if (tracking_uri.startswith("sqlite:") and _being_created(text)
                    and waited_s < STORE_CREATION_WAIT_S):
                if not waited_s:
                    print(f"tracking store {tracking_uri} is being created by another process; "
                          "waiting for it", file=sys.stderr, flush=True)
                if waited_s > 5:  # still there: a crashed migration's leftover
                    _drop_leftover_migration_tables(tracking_uri)
                pause = 0.5 + random.random()  # apart from the other process's retries
                time.sleep(pause)
                waited_s += pause
                continue
            raise UserError(f"tracking URI {tracking_uri} is not usable: {text[:300]}") from None


@contextlib.contextmanager
def _creating_store(tracking_uri: str):
    """Processes of this benchmark create or migrate one SQLite store one at a time (an
    exclusive lock on its folder while connecting); MLflow's migrations are not safe to
    run twice at once and can leave a half-made table behind."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # not on POSIX: the retries alone
        yield
        return
    fd = os.open(Path(tracking_uri[len("sqlite:///"):]).parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _drop_leftover_migration_tables(tracking_uri: str) -> None:
    """A migration that died half-way leaves `_alembic_tmp_<table>` copies behind, and
    every later migration stops at one of them (dropping only the one named in the error
    livelocks: the next attempt re-creates it and stops at the next). After several
    seconds they are no live migration's; each is dropped only while its original table
    still exists, so no row lives only in the copy."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(tracking_uri[len("sqlite:///"):], timeout=5)) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for name in sorted(tables):
            if name.startswith("_alembic_tmp_") and name[len("_alembic_tmp_"):] in tables:
                db.execute(f'DROP TABLE "{name}"')
        db.commit()


# Another process creating or migrating a fresh SQLite store at the same moment shows as
# one of these; waiting a moment and trying again finds the store ready.
STORE_CREATION_RACES = ("_alembic_tmp_", "Online migration expected to match one row",
                        "already exists", "database is locked", "alembic_version",
                        "duplicate column name", "no such table", "no such column",
                        "UNIQUE constraint failed",
                        # SQLAlchemy sorting a schema that the other process is half-way through
                        "Circular dependency detected")
STORE_CREATION_WAIT_S = 60.0


def _being_created(error_text: str) -> bool:
    return any(marker in error_text for marker in STORE_CREATION_RACES)


# MLflow 3.x UIs open an experiment without this tag on their GenAI (traces) view; with it,
# on the training runs (3.17 decides by its own switch instead: see experiment_link).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def experiment_id(client, suite_name: str, tracking_uri: str) -> str:
    experiment = client.get_experiment_by_name(suite_name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # made by an older version
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return experiment.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):  # artifacts beside the database, not ./mlruns
        db = Path(tracking_uri[len("sqlite:///"):]).resolve()
        location = (db.parent / "mlartifacts").as_uri()
    try:
        return client.create_experiment(suite_name, artifact_location=location,
                                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except Exception:  # another run created it this instant
        experiment = client.get_experiment_by_name(suite_name)
        if experiment is None:
            raise
        return experiment.experiment_id


def experiment_link(tracking_uri: str, exp_id: str) -> str:
    """Where to see a suite's runs. MLflow 3.17's UI picks its view from a GenAI / Model
    training switch (remembered in the browser, GenAI at first), not from the experiment's
    kind tag that earlier 3.x UIs read: the link asks for the training view."""
    page = f"#/experiments/{exp_id}?workflowType=machine_learning"
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/{page}"
    return f"`mlflow ui --backend-store-uri {tracking_uri}`, then http://127.0.0.1:5000/{page}"


SPLITS = ("train", "validation", "test")
LIMITS = {"train": "train_limit", "validation": "eval_limit", "test": "test_limit"}


def corpus_splits(task_name: str, data_dir: str | None) -> dict[str, dict[str, Any]]:
    """Per split of a task's corpus: its row count, a content digest (sha256 of its rows)
    and where it was read from; for the runs' Dataset inputs."""
    import hashlib

    import tasks

    task = tasks.get_task(task_name)
    corpus = task.load(data_dir)
    root = str(tasks.resolve_data_dir(data_dir))
    out = {}
    for split in SPLITS:
        rows = corpus[split]
        digest = hashlib.sha256(json.dumps(rows.to_dict(), sort_keys=True, default=str).encode())
        out[split] = {"rows": len(rows), "digest": digest.hexdigest()[:16], "source": root,
                      "columns": list(rows.column_names)}
    return out


def dataset_inputs(trial: dict[str, Any], corpus: dict[str, dict[str, Any]]) -> list:
    """MLflow DatasetInputs for a trial: one per split (context train/validation/test),
    named after the task, with the corpus's digest and the rows the trial uses (a seeded
    slice where the budget sets a limit)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    settings = {**trial.get("budget", {}), **trial.get("hyperparameters", {})}
    inputs = []
    for split in SPLITS:
        info = corpus[split]
        limit = settings.get(LIMITS[split])
        used = info["rows"] if limit is None else min(int(limit), info["rows"])
        profile = {"num_rows": used, "corpus_rows": info["rows"], "split": split,
                   "limit": limit}
        schema = {"mlflow_colspec": [{"name": c, "type": "string"} for c in info["columns"]]}
        dataset = Dataset(name=trial["task"], digest=info["digest"], source_type="local",
                          source=json.dumps({"uri": info["source"], "task": trial["task"],
                                             "split": split}),
                          schema=json.dumps(schema), profile=json.dumps(profile))
        inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", split)]))
    return inputs


def runs_of(client, exp_id: str, statuses=None) -> list:
    """Every live run of the experiment (paged)."""
    runs, token = [], None
    while True:
        page = client.search_runs([exp_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    if statuses:
        runs = [r for r in runs if r.info.status in statuses]
    return runs


def finished_results(client, exp_id: str) -> dict[str, dict[str, Any]]:
    """trial_key -> final metrics of FINISHED runs (what a resumed suite does not re-run)."""
    return {r.data.tags["trial_key"]: dict(r.data.metrics)
            for r in runs_of(client, exp_id, {"FINISHED"}) if "trial_key" in r.data.tags}


def finished_run_result(client, exp_id: str, key: str) -> tuple[dict, dict] | None:
    """(result.json, tags + run_id) of the FINISHED run of a trial key, or None."""
    import tempfile

    for run in runs_of(client, exp_id, {"FINISHED"}):
        if run.data.tags.get("trial_key") != key:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = client.download_artifacts(run.info.run_id, "result.json", tmp)
                return (json.loads(Path(path).read_text()),
                        {**run.data.tags, "run_id": run.info.run_id})
            except Exception:  # mlflow raises several types for a missing artifact
                return None
    return None


def trial_params(trial: dict[str, Any]) -> dict[str, str]:
    """A trial's identity as flat MLflow params: task, strategy, model, seed, stage and the
    searched values (hp.* training fields, opt.* strategy options)."""
    params = {k: str(trial[k]) for k in ("task", "strategy", "model", "seed")}
    if trial.get("entry"):  # the suite entry, when it renames the strategy
        params["entry"] = str(trial["entry"])
    if trial.get("stage"):
        params["stage"] = str(trial["stage"])
    params.update({f"hp.{k}": str(v) for k, v in trial["hyperparameters"].items()})
    params.update({f"opt.{k}": str(v) for k, v in trial["options"].items()})
    return params


def config_params(result: dict[str, Any]) -> dict[str, str]:
    """The trial's full training configuration as it ran (config.* params)."""
    return {f"config.{k}": str(v) for k, v in result["config"].items()
            if k not in ("task", "strategy", "model", "seed", "strategy_options")}


def final_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The flat numbers of a trial result that MLflow stores as final metrics."""
    values = {f"test_{k}": v for k, v in result["test"].items() if k != "per_class_f1"}
    values.update({f"test_f1.{name}": v for name, v in result["test"]["per_class_f1"].items()})
    values["dev_best_macro_f1"] = result["dev"]["macro_f1"]
    for key in FINAL_METRICS:
        if key in result and key not in values and result[key] is not None:
            values[key] = result[key]
    return {k: float(v) for k, v in values.items() if v is not None}


def result_tags(result: dict[str, Any]) -> dict[str, str]:
    """Where a finished trial ran: device, GPUs and memory source; and tags only some
    trials have: workers and ZeRO stage of a data-parallel trial, the Ray node that ran
    the trial (rank 0's), on an NVML figure whether other processes shared the GPU
    (unknown: NVML could not tell), and how many trials its reused worker process ran
    before it."""
    env = result.get("environment", {})
    tags = {"device": str(env.get("device")),
            # The memory sampler's GPU count (distinct UUIDs over all workers) wins over
            # the environment's, which is one worker's view.
            "gpu": f"{result.get('gpu_count', env.get('gpu_count', 0))} x "
                   f"{result.get('gpu_name', env.get('gpu_name', '-'))}",
            "memory_source": str(result.get("memory_source"))}
    if env.get("world_size", 1) > 1 or env.get("deepspeed", "none") != "none":
        tags["workers"] = str(env.get("world_size", 1))
        tags["deepspeed"] = str(env.get("deepspeed"))
    if env.get("ray_node_id"):
        tags["ray_node_id"] = str(env["ray_node_id"])
    if result.get("process", {}).get("trials_before"):  # resources.reuse_workers
        tags["worker_trials_before"] = str(result["process"]["trials_before"])
    if "memory_shared_device" in result:
        shared = result["memory_shared_device"]
        tags["memory_shared_device"] = "unknown" if shared is None else str(shared).lower()
    return tags


def replace_unfinished_runs(client, exp_id: str, key: str) -> None:
    """Delete the runs of a trial key left RUNNING, FAILED or KILLED by an earlier attempt."""
    for old in runs_of(client, exp_id):
        if old.data.tags.get("trial_key") == key and old.info.status != "FINISHED":
            client.delete_run(old.info.run_id)


def log_trial_file(client, exp_id: str, suite_name: str, record: dict[str, Any]) -> str:
    """Re-create a FINISHED trial's MLflow run from its trial file (a fresh clone, or a run
    that could not be logged while tracking was down): the params, eval curve, final
    metrics, tags and artifacts a trial logged live has, tagged `restored_from`."""
    from mlflow.entities import Metric, Param

    trial, result, key = record["trial"], record["result"], record["trial_key"]
    replace_unfinished_runs(client, exp_id, key)
    name = trial_label(trial)  # searched values too: two lrs' runs differ
    tags = {"suite": suite_name, "trial_key": key, "config_key": record["config_key"],
            "git_commit": str(record.get("run", {}).get("git_commit", "unknown")),
            "ray_trial_id": "-", "restored_from": "trial file", "mlflow.runName": name,
            **result_tags(result), **strategy_code_tags(record.get("strategy_code"))}
    if trial.get("stage"):
        tags["stage"] = str(trial["stage"])
    run_id = client.create_run(exp_id, tags=tags, run_name=name).info.run_id
    now = int(time.time() * 1000)
    curve = [Metric(k, float(point[k]), now, int(point["step"])) for point in result.get("history", [])
             for k in ("dev_macro_f1", "dev_accuracy", "train_loss") if point.get(k) is not None]
    finals = [Metric(k, v, now, int(result["best_step"])) for k, v in final_metrics(result).items()]
    params = {**trial_params(trial), **config_params(result)}
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    for start in range(0, len(curve) + len(finals), 900):  # MLflow takes 1000 metrics a batch
        client.log_batch(run_id, metrics=(curve + finals)[start:start + 900])
    client.log_text(run_id, json.dumps(result, indent=1), "result.json")
    client.log_text(run_id, json.dumps(result.get("selection_trace", [])), "selection_trace.json")
    client.set_terminated(run_id, "FINISHED")
    return run_id


class TrialLogger:
    """Writes one trial's MLflow run. The Tune callback drives it from the driver."""

    def __init__(self, client, exp_id: str, suite_name: str, trial: dict[str, Any],
                 key: str, ray_trial_id: str, corpus: dict[str, dict] | None = None):
        from mlflow.entities import Param

        self.client = client
        # An earlier, interrupted attempt at the same trial is replaced, not duplicated.
        replace_unfinished_runs(client, exp_id, key)
        name = trial_label(trial)  # searched values too: two lrs' runs differ
        tags = {"suite": suite_name, "trial_key": key, "config_key": config_key(trial),
                "ray_trial_id": ray_trial_id, "git_commit": git_state()["git_commit"],
                "mlflow.runName": name, **strategy_code_tags(strategy_code(trial["strategy"]))}
        if trial.get("stage"):
            tags["stage"] = str(trial["stage"])
        run = client.create_run(exp_id, tags=tags, run_name=name)
        self.run_id = run.info.run_id
        client.log_batch(self.run_id, params=[Param(k, v) for k, v in trial_params(trial).items()])
        if corpus:  # the runs table's Dataset column
            client.log_inputs(self.run_id, datasets=dataset_inputs(trial, corpus))

    def log_eval(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(k, float(v), now, int(step)) for k, v in metrics.items()])

    def finish(self, result: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(k, v, now, int(result["best_step"])) for k, v in final_metrics(result).items()]
            + [Metric("curve_macro_f1", float(p["macro_f1"]), now, int(p["step"]))
               for p in result.get("curve", [])],
            params=[Param(k, v) for k, v in config_params(result).items()],
            tags=[RunTag(k, v) for k, v in result_tags(result).items()])
        self.client.log_text(self.run_id, json.dumps(result, indent=1), "result.json")
        self.client.log_text(self.run_id, json.dumps(result.get("selection_trace", [])),
                             "selection_trace.json")
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, error: str, traceback: str | None = None) -> None:
        self.client.set_tag(self.run_id, "error", error[:4900])
        self.client.log_text(self.run_id, traceback or error, "error.txt")
        self.client.set_terminated(self.run_id, "FAILED")

    def stopped_early(self) -> None:
        self.client.set_tag(self.run_id, "stopped_early", "true")
        self.client.set_terminated(self.run_id, "KILLED")



class Tracking:
    """The driver's MLflow writes, kept from stopping a suite when the store goes away: a
    write that fails is retried twice (0.5 s, then 1 s apart); after that tracking counts
    as lost (one line), trials go on writing their files, and the store is probed with a
    growing interval (5 s doubling to 60 s). When it answers again (one line), the runs of
    trials that finished meanwhile are logged from their trial files."""

    RETRY_DELAYS_S = (0.5, 1.0)
    FIRST_PROBE_S, LONGEST_PROBE_S = 5.0, 60.0

    def __init__(self, client, exp_id: str, suite_name: str, uri: str):
        self.client, self.exp_id, self.suite_name, self.uri = client, exp_id, suite_name, uri
        self.lost = False
        self.probe_interval = self.FIRST_PROBE_S
        self.next_probe = 0.0
        self.unlogged: dict[str, Path] = {}  # trial key -> its FINISHED trial file

    def attempt(self, write) -> bool:
        """Run `write()` (MLflow calls); False when tracking is or becomes lost."""
        if self.lost:
            return False
        for delay in (*self.RETRY_DELAYS_S, None):
            try:
                write()
                return True
            except UserError:
                raise
            except Exception as error:  # mlflow raises many types for an unreachable store
                if delay is None:
                    self._lose(error)
                    return False
                time.sleep(delay)
        return False

    def _lose(self, error: Exception) -> None:
        self.lost = True
        self.probe_interval = self.FIRST_PROBE_S
        self.next_probe = time.time() + self.probe_interval
        text = " ".join(str(error).split())[:160]
        print(f"tracking lost: {self.uri} does not answer ({text}); trials go on and write "
              "their trial files, their runs are logged when it is back", flush=True)

    def log_later(self, key: str, path: Path) -> None:
        """A FINISHED trial whose run could not be written completely."""
        self.unlogged[key] = path
        self.poll(force=not self.lost)

    def poll(self, force: bool = False) -> None:
        """Probe a lost store when its time has come; log what waits once it answers."""
        if self.lost and not force and time.time() < self.next_probe:
            return
        if self.lost:
            try:
                self.client.search_experiments(max_results=1)
            except Exception:
                self.probe_interval = min(self.probe_interval * 2, self.LONGEST_PROBE_S)
                self.next_probe = time.time() + self.probe_interval
                return
            self.lost = False
            print(f"tracking back: {self.uri} answers again; logging {len(self.unlogged)} "
                  "run(s) from their trial files", flush=True)
        for key, path in list(self.unlogged.items()):
            record = json.loads(path.read_text())
            if not self.attempt(lambda: log_trial_file(self.client, self.exp_id,
                                                       self.suite_name, record)):
                return
            del self.unlogged[key]

    def wait_for_store(self, patience_s: float) -> int:
        """At the end of a run: keep probing a lost store for up to `patience_s`; returns
        how many FINISHED trials are still not in MLflow."""
        deadline = time.time() + patience_s
        self.poll(force=True)
        while self.unlogged and time.time() < deadline:
            time.sleep(min(self.probe_interval, max(0.0, deadline - time.time())))
            self.poll(force=True)
        return len(self.unlogged)
