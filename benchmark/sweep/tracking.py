"""MLflow tracking: one experiment per suite, one run per trial, all written from the Ray
driver (a Tune callback), so concurrent trials never contend for the SQLite store.

Runs are tagged with `trial_key` (a hash of the trial's configuration): a re-run of a
suite skips the keys that already have a FINISHED run and replaces (deletes) runs of the
same key left RUNNING or FAILED by an earlier, interrupted attempt.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from .suite import config_key, entry_name
from .trial_files import git_state

DEFAULT_TRACKING_URI = "sqlite:///results/mlflow.db"
FINAL_METRICS = ("test_macro_f1", "test_accuracy", "test_macro_precision", "test_macro_recall",
                 "test_macro_auprc", "dev_best_macro_f1", "best_step", "steps_to_converge",
                 "peak_memory_mb", "torch_peak_allocated_mb", "peak_memory_mb_max_worker",
                 "wall_time_s", "train_time_s", "eval_time_s", "setup_time_s",
                 "train_samples_per_s", "trainable_share", "trainable_params_mean",
                 "total_params", "majority_test_macro_f1")


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
    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        client.search_experiments(max_results=1)
    except Exception as error:  # mlflow raises many types for an unreachable store
        text = " ".join(str(error).split())[:300]
        raise UserError(f"tracking URI {tracking_uri} is not usable: {text}") from None
    return client


def experiment_id(client, suite_name: str, tracking_uri: str) -> str:
    experiment = client.get_experiment_by_name(suite_name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):  # artifacts beside the database, not ./mlruns
        db = Path(tracking_uri[len("sqlite:///"):]).resolve()
        location = (db.parent / "mlartifacts").as_uri()
    return client.create_experiment(suite_name, artifact_location=location)


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
    the trial (rank 0's), and on an NVML figure whether other processes shared the GPU
    (unknown: NVML could not tell)."""
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
    if "memory_shared_device" in result:
        shared = result["memory_shared_device"]
        tags["memory_shared_device"] = "unknown" if shared is None else str(shared).lower()
    return tags


class TrialLogger:
    """Writes one trial's MLflow run. The Tune callback drives it from the driver."""

    def __init__(self, client, exp_id: str, suite_name: str, trial: dict[str, Any],
                 key: str, ray_trial_id: str):
        from mlflow.entities import Param

        self.client = client
        # An earlier, interrupted attempt at the same trial is replaced, not duplicated.
        for old in runs_of(client, exp_id):
            if old.data.tags.get("trial_key") == key and old.info.status != "FINISHED":
                client.delete_run(old.info.run_id)
        name = f"{trial['task']}/{entry_name(trial)}/s{trial['seed']}"
        tags = {"suite": suite_name, "trial_key": key, "config_key": config_key(trial),
                "ray_trial_id": ray_trial_id, "git_commit": git_state()["git_commit"],
                "mlflow.runName": name}
        if trial.get("stage"):
            tags["stage"] = str(trial["stage"])
        run = client.create_run(exp_id, tags=tags, run_name=name)
        self.run_id = run.info.run_id
        client.log_batch(self.run_id, params=[Param(k, v) for k, v in trial_params(trial).items()])

    def log_eval(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric
        import time

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(k, float(v), now, int(step)) for k, v in metrics.items()])

    def finish(self, result: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag
        import time

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(k, v, now, int(result["best_step"])) for k, v in final_metrics(result).items()],
            params=[Param(k, v) for k, v in config_params(result).items()],
            tags=[RunTag(k, v) for k, v in result_tags(result).items()])
        self.client.log_text(self.run_id, json.dumps(result, indent=1), "result.json")
        self.client.log_text(self.run_id, json.dumps(result.get("selection_trace", [])),
                             "selection_trace.json")
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, error: str) -> None:
        self.client.set_tag(self.run_id, "error", error[:4900])
        self.client.log_text(self.run_id, error, "error.txt")
        self.client.set_terminated(self.run_id, "FAILED")

    def stopped_early(self) -> None:
        self.client.set_tag(self.run_id, "stopped_early", "true")
        self.client.set_terminated(self.run_id, "KILLED")

