"""Run a suite on Ray Tune: one Tune trial = one `run_trial`, logged to MLflow from the
driver, resumable by trial key."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import resume, trial_files
from .ray_cluster import resolve_storage_path, start_ray
from .suite import (Suite, entry_name, expand_trials, final_trials, split_hyperparameters,
                    train_config, trial_key, trial_label)
from .tracking import (Tracking, TrialLogger, connect, corpus_splits, experiment_id,
                       experiment_link, final_metrics, finished_results, finished_run_result)

# -- inside a trial (a Ray worker) --------------------------------------------------------

def concrete_trial(config: dict[str, Any]) -> dict[str, Any]:
    """The trial a Tune config stands for; Optuna's suggestions arrive under "suggested"."""
    trial = json.loads(json.dumps(config["trial"]))
    if config.get("suggested"):
        hyper, options = split_hyperparameters(trial["strategy"], config["suggested"])
        trial["hyperparameters"].update(hyper)
        trial["options"].update(options)
    return trial


def tune_trainable(config: dict[str, Any], finished: dict[str, dict], data_dir: str | None,
                   cpus: float, workers=None, storage_path: str | None = None) -> None:
    from ..core.quiet import quiet

    quiet()  # the driver's --verbose choice, from the environment
    import torch
    from ray import tune

    from ..trial.loop import run_trial
    from ..trial.memory import release_accelerator_memory

    trial = concrete_trial(config)
    key = trial_key(trial)
    if key in finished:  # done in an earlier run of this suite: report it, train nothing
        tune.report({**finished[key], "dev_macro_f1": finished[key].get("dev_best_macro_f1"),
                     "already_finished": 1})
        return
    try:
        if workers is not None:  # data-parallel: Ray Train workers report through Tune
            from .ray_workers import run_on_workers

            result = run_on_workers(train_config(trial, data_dir), workers,
                                    storage_path=storage_path, inside_tune=True)
        else:
            torch.set_num_threads(max(1, int(cpus)))
            result = run_trial(train_config(trial, data_dir),
                               on_eval=lambda step, metrics: tune.report({**metrics, "step": step}))
    except Exception as error:
        message = " ".join(f"{type(error).__name__}: {error}".split())
        # The driver records the message on the MLflow run; Tune wants its metric in every
        # report. Not raised on: Tune would retry it, and an exception (a diverged loss)
        # comes back every time; retries are for a worker process that died.
        tune.report({"error": message, "dev_macro_f1": float("nan")})
        return
    finally:  # the next trial on this GPU must not find our cached memory there
        release_accelerator_memory()
    tune.report({**final_metrics(result), "dev_macro_f1": result["dev"]["macro_f1"],
                 "result_json": json.dumps(result), "trial_finished": 1})


# -- on the driver ----------------------------------------------------------------------------

def _make_callback(tracking: Tracking, suite: Suite, total: int, trial_folder: Path,
                   command: list[str] | None, data_dir: str | None = None):
    from ray.tune import Callback

    class SuiteCallback(Callback):
        """MLflow logging (one writer: the driver) and a compact progress line. A trial
        whose run could not be written while tracking was lost is logged from its trial
        file later (Tracking.log_later)."""

        def __init__(self):
            self.loggers: dict[str, TrialLogger] = {}
            self.tracking = tracking
            self.untracked: set[str] = set()  # Ray trial ids whose MLflow run is incomplete
            self.retried: dict[str, int] = {}  # Ray trial id -> retries after its process died
            self.run = trial_files.run_info(command)
            self.suite_meta = {"name": suite.name, "focus": suite.focus}
            self.done = self.failed = self.skipped = 0
            self.running: set[str] = set()
            self.most_running = 1  # the parallelism seen so far, for the time estimate
            self.durations: list[float] = []
            self.started: dict[str, float] = {}
            self.t0 = time.time()
            self.last_line = time.time()
            self.total = total
            self.finished: dict[str, dict] = {}  # trial key -> metrics, set per stage
            self.corpora: dict[str, dict | None] = {}  # task -> its splits' digests and sizes

        def _corpus(self, task: str) -> dict | None:
            if task not in self.corpora:
                try:
                    self.corpora[task] = corpus_splits(task, data_dir)
                except Exception as error:  # the Dataset column is a courtesy, not a reason to stop
                    print(f"note: no dataset inputs for {task} in MLflow: {error}", file=sys.stderr)
                    self.corpora[task] = None
            return self.corpora[task]

        def _logger(self, trial) -> TrialLogger:
            if trial.trial_id not in self.loggers:
                concrete = concrete_trial(trial.config)
                self.loggers[trial.trial_id] = TrialLogger(
                    tracking.client, tracking.exp_id, suite.name, concrete,
                    trial_key(concrete), trial.trial_id, corpus=self._corpus(concrete["task"]))
            return self.loggers[trial.trial_id]

        def _log(self, trial, write) -> bool:
            """One MLflow write for a trial; once one is lost, the trial's run is left to
            its trial file."""
            if trial.trial_id in self.untracked:
                return False
            if tracking.attempt(lambda: write(self._logger(trial))):
                return True
            self.untracked.add(trial.trial_id)
            return False

        def on_step_end(self, iteration, trials, **info):
            tracking.poll()  # a lost store is probed between trial events too

        def on_trial_start(self, iteration, trials, trial, **info):
            self.running.add(trial.trial_id)
            self.most_running = max(self.most_running, len(self.running))
            self.started[trial.trial_id] = time.time()
            if trial_key(concrete_trial(trial.config)) not in self.finished:
                self._log(trial, lambda logger: None)  # the run starts with the trial

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "step" not in result or result.get("error") or result.get("trial_finished"):
                return  # only evaluation reports carry a step
            metrics = {k: result[k] for k in ("dev_macro_f1", "dev_accuracy", "train_loss")
                       if k in result}
            self._log(trial, lambda logger: logger.log_eval(int(result["step"]), metrics))
            if time.time() - self.last_line >= HEARTBEAT_SECONDS:  # long trials: still alive
                concrete = concrete_trial(trial.config)
                steps = {**concrete.get("budget", {}), **concrete["hyperparameters"]}.get("max_steps")
                self._progress(trial, f"at step {int(result['step'])}"
                               + (f"/{steps}" if steps else "")
                               + f", dev macro F1 {result.get('dev_macro_f1', float('nan')):.3f}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            if last.get("error"):  # an exception in the trial, reported by it
                self._failed(trial, last["error"])
                return
            self.running.discard(trial.trial_id)
            if last.get("already_finished"):
                self.skipped += 1
                outcome = "already finished"
                self._restore_trial_file(concrete_trial(trial.config))
            elif last.get("trial_finished"):  # Tune's own "done" key means something else
                result = json.loads(last["result_json"])
                # The file first: a run FINISHED in MLflow is never re-run, so its file
                # must exist by then.
                concrete = concrete_trial(trial.config)
                path = trial_files.write_trial_file(trial_folder, concrete, "FINISHED",
                                                    self.run, self.suite_meta, result=result)
                if not self._log(trial, lambda logger: logger.finish(result)):
                    tracking.log_later(trial_key(concrete), path)
                self.done += 1
                self.durations.append(time.time() - self.started.get(trial.trial_id, self.t0))
                outcome = f"test macro F1 {last.get('test_macro_f1', float('nan')):.3f}"
            else:  # stopped by the scheduler before its test evaluation
                self._log(trial, lambda logger: logger.stopped_early())
                self.done += 1
                outcome = "stopped early by the scheduler"
            self._progress(trial, outcome)

        def skip(self, concrete: dict) -> None:
            """A trial finished by an earlier run: counted, its file made sure of, not run."""
            self.skipped += 1
            self._restore_trial_file(concrete)

        def _restore_trial_file(self, concrete: dict) -> None:
            """A trial finished by an earlier run whose file is missing (another results
            folder, an older version): rewritten from its MLflow run."""
            if (trial_folder / trial_files.file_name(concrete)).exists():
                return
            found = []  # stays empty while tracking is lost
            tracking.attempt(lambda: found.append(finished_run_result(
                tracking.client, tracking.exp_id, trial_key(concrete))))
            if found and found[0] is not None:
                result, tags = found[0]
                run = {**self.run, "command": f"(from MLflow run {tags['run_id']})",
                       "git_commit": tags.get("git_commit", "unknown"), "git_dirty": None}
                trial_files.write_trial_file(trial_folder, concrete, "FINISHED", run,
                                             self.suite_meta, result=result)

        def on_trial_recover(self, iteration, trials, trial, **info):
            """Its process died (killed, out of memory): Tune runs it again from the
            start; its next attempt gets a new MLflow run in place of this one."""
            self.running.discard(trial.trial_id)
            self.loggers.pop(trial.trial_id, None)
            self.untracked.discard(trial.trial_id)
            retries = suite.resources.get("max_retries", 0)
            self.retried[trial.trial_id] = self.retried.get(trial.trial_id, 0) + 1
            concrete = concrete_trial(trial.config)
            print(f"{trial_label(concrete)}: its process "
                  f"died ({_error_text(trial)[:160]}); retry {self.retried[trial.trial_id]} of "
                  f"{retries}", flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            retries = self.retried.get(trial.trial_id, 0)
            reason = _error_text(trial)
            self._failed(trial, f"{reason} (after {retries} retries)" if retries else reason)

        def _failed(self, trial, message: str) -> None:
            self.running.discard(trial.trial_id)
            self._log(trial, lambda logger: logger.fail(message))
            trial_files.write_trial_file(trial_folder, concrete_trial(trial.config), "FAILED",
                                         self.run, self.suite_meta, error=message)
            self.failed += 1
            self._progress(trial, f"FAILED ({message[:120]})")

        def _progress(self, trial, what: str) -> None:
            concrete = concrete_trial(trial.config)
            finished = self.done + self.failed + self.skipped
            left = self.total - finished
            eta = ""
            if self.durations and left:
                parallel = self.most_running
                eta = f", about {_minutes(sum(self.durations) / len(self.durations) * left / parallel)} left"
            self.last_line = time.time()
            print(f"[{finished}/{self.total} done: {self.done} trained, {self.skipped} resumed, "
                  f"{self.failed} failed, {len(self.running)} running, "
                  f"{_minutes(time.time() - self.t0)} so far{eta}] {trial_label(concrete)} {what}",
                  flush=True)

    return SuiteCallback()


# A progress line at least this often while trials run (from their evaluation reports).
HEARTBEAT_SECONDS = float(os.environ.get("BENCHMARK_PROGRESS_SECONDS", 120))


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _error_text(trial) -> str:
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        text = ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "trial failed (no error message)"


def print_plan(suite: Suite, trials: list[dict[str, Any]], out=None) -> None:
    out = out or sys.stdout
    r = suite.resources
    print(f"suite {suite.name} ({suite.path}): {len(trials)} trials, search {suite.algorithm}"
          + (f" ({suite.search.get('num_samples', 1)} samples per strategy, task and seed)"
             if suite.algorithm == "optuna" else ""), file=out)
    print(f"model {suite.model}; budget {json.dumps(suite.budget)}", file=out)
    per_trial = ("no CPU of its own (it waits for its workers)" if suite.distributed
                 else f"{r['cpus_per_trial']} CPU, {r['gpus_per_trial']} GPU")
    print(f"resources per trial: {per_trial}; "
          f"at most {r.get('max_concurrent_trials', 'as many as fit')} at once; "
          f"scheduler: {suite.scheduler['type'] if suite.scheduler else 'none (fixed budget)'}",
          file=out)
    if suite.distributed:
        d = suite.worker_resources
        print(f"data-parallel trials: {d.workers} Ray Train workers of {d.cpus_per_worker} CPU, "
              f"{d.gpus_per_worker} GPU each; deepspeed {suite.distributed.get('deepspeed', 'none')}",
              file=out)
    if suite.select is not None:
        print(f"stage select: the {len(trials)} trials below, budget "
              f"{json.dumps(suite.select['budget'])}", file=out)
    for i, t in enumerate(trials):
        values = {**t["hyperparameters"], **t["options"]}
        text = " ".join(f"{k}={v}" for k, v in values.items()) or "(defaults)"
        print(f"  {i + 1:>3}. {t['task']:<18} {entry_name(t):<14} seed "
              f"{t['seed']:<3} {text}", file=out)
    if suite.select is not None:
        final = len(suite.tasks) * sum(len(spec.get("seeds", suite.seeds))
                                       for spec in suite.strategies.values())
        print(f"stage final: {final} trials: per task and strategy, the stage-select "
              f"configuration with the best mean dev macro F1, on seeds {suite.seeds} at the "
              f"suite budget", file=out)


@dataclasses.dataclass
class SuiteOutcome:
    failed: int  # trials that failed
    untracked: int  # FINISHED trials not in MLflow: tracking was lost and did not come back


def run_suite(suite: Suite, tracking_uri: str, address: str | None = None,
              storage_path: str | None = None, data_dir: str | None = None,
              results_dir: str | Path = "results", command: list[str] | None = None,
              tracking_patience_s: float = 120.0,
              entries: set[str] | None = None) -> SuiteOutcome:
    """Run every trial not already finished (both stages of a staged suite). Each trial
    that ends also writes its file under results_dir/<suite>/trials/; a FINISHED file
    counts as finished even without an MLflow run (whose run is then made from it). If
    MLflow goes away mid-suite, trials go on, and at the end the run waits up to
    `tracking_patience_s` for it before leaving their runs to `sync` or the next run.
    `entries`: only these suite entries' trials (`run --only`)."""
    trials = [t for t in expand_trials(suite) if entries is None or entry_name(t) in entries]
    folder = trial_files.trials_dir(results_dir, suite.name)
    on_disk = resume.finished_trial_files(folder)
    resume.check_precision(suite, on_disk, folder)  # before anything is written
    client = connect(tracking_uri)
    tracking = Tracking(client, experiment_id(client, suite.name, tracking_uri), suite.name,
                        tracking_uri)
    finished = _restore_from_files(tracking, on_disk, trials, folder)
    pending = sum(trial_key(t) not in finished for t in trials)
    stage = " in stage select" if suite.select is not None else ""
    print(f"suite {suite.name}: {len(trials)} trials{stage}, {len(trials) - pending} already "
          f"finished in {tracking_uri}", flush=True)
    suite_started = time.time()
    started_ray = start_ray(address)
    try:
        total = len(trials) * (int(suite.search.get("num_samples", 1)) if suite.algorithm == "optuna" else 1)
        callback = _make_callback(tracking, suite, total, folder, command, data_dir)
        _fit_stage(suite, trials, finished, callback, data_dir, storage_path)
        if suite.select is not None:
            on_disk = resume.finished_trial_files(folder)  # with stage select's trials
            finished = _restore_from_files(tracking, on_disk, [], folder)
            final, candidates = final_trials(
                suite, trials, {k: m.get("dev_best_macro_f1", 0.0) for k, m in finished.items()})
            _print_choices(candidates)
            finished = _restore_from_files(tracking, on_disk, final, folder)
            done = sum(trial_key(t) in finished for t in final)
            print(f"stage final: {len(final)} trials, {done} already finished (by an earlier "
                  "run, or by stage select at the full budget)", flush=True)
            callback.total += len(final)
            _fit_stage(suite, final, finished, callback, data_dir, storage_path)
        tracking.attempt(lambda: _record_suite_run(tracking, time.time() - suite_started, callback))
        untracked = tracking.wait_for_store(tracking_patience_s) if tracking.unlogged else 0
        print(f"MLflow runs: {experiment_link(tracking_uri, tracking.exp_id)}", flush=True)
        return SuiteOutcome(callback.failed, untracked)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def _restore_from_files(tracking: Tracking, on_disk: dict[str, dict],
                        trials: list[dict[str, Any]], folder: Path) -> dict[str, dict]:
    """trial key -> final metrics of every finished trial, from MLflow and from the
    FINISHED trial files (all there is while tracking is lost); those of `trials` whose
    file MLflow lacks (a fresh clone, an earlier outage) are logged from the file."""
    in_mlflow: dict[str, dict] = {}
    tracking.attempt(lambda: in_mlflow.update(finished_results(tracking.client, tracking.exp_id)))
    missing = sorted({trial_key(t) for t in trials} & set(on_disk) - set(in_mlflow))
    for key in missing:
        tracking.unlogged[key] = folder / trial_files.file_name(on_disk[key]["trial"])
    tracking.poll(force=not tracking.lost)
    restored = sum(key not in tracking.unlogged for key in missing)
    if restored:
        print(f"{restored} finished trial(s) restored into MLflow from their trial files in "
              f"{folder}: they are not trained again", flush=True)
    return {**{k: final_metrics(r["result"]) for k, r in on_disk.items()}, **in_mlflow}


def _fit_stage(suite: Suite, trials: list[dict[str, Any]], finished: dict[str, dict], callback,
               data_dir: str | None, storage_path: str | None) -> None:
    """Run one stage's trials through Ray Tune (trials in `finished` only report)."""
    from ray import tune

    callback.finished = finished
    if suite.algorithm != "optuna":  # known keys: finished trials need no Ray worker at all
        for trial in trials:
            if trial_key(trial) in finished:
                callback.skip(trial)
        trials = [t for t in trials if trial_key(t) not in finished]
    if not trials:
        return
    cpus = suite.resources["cpus_per_trial"]
    storage = resolve_storage_path(storage_path)
    workers = suite.worker_resources
    # A data-parallel trial only waits for its workers, which hold the CPUs and GPUs;
    # Ray refuses an all-zero request, so it asks for one byte of memory.
    trial_resources = ({"cpu": 0, "memory": 1} if workers else
                       {"cpu": cpus, "gpu": suite.resources["gpus_per_trial"]})
    trainable = tune.with_resources(
        tune.with_parameters(tune_trainable, finished=finished, data_dir=data_dir, cpus=cpus,
                             workers=workers, storage_path=storage),
        trial_resources)
    for param_space, search_alg, num_samples in _tuner_runs(suite, trials):
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(
                metric="dev_macro_f1", mode="max", search_alg=search_alg,
                num_samples=num_samples, scheduler=_scheduler(suite),
                # A fresh process per trial: its peak RSS is its own, not what earlier
                # trials left in a reused worker (seen here: 2.2 GiB vs 4.8 GiB).
                reuse_actors=False,
                max_concurrent_trials=suite.resources.get("max_concurrent_trials")),
            run_config=tune.RunConfig(
                name=f"{suite.name}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=storage,
                callbacks=[callback], verbose=0,
                # A trial whose process dies is run again up to max_retries times.
                failure_config=tune.FailureConfig(
                    max_failures=int(suite.resources.get("max_retries", 0)))))
        tuner.fit()


def _print_choices(candidates: dict) -> None:
    for (task, strategy), by_config in sorted(candidates.items()):
        best = max(by_config.values(), key=lambda c: c[2])
        text = ", ".join(f"{_describe(h, o)}: {m:.3f}" for h, o, m in by_config.values())
        print(f"  {task}/{strategy}: chose {_describe(*best[:2])} (dev macro F1 {text})", flush=True)


def _describe(hyperparameters: dict, options: dict) -> str:
    values = {**hyperparameters, **options}
    return " ".join(f"{k}={v}" for k, v in values.items()) or "defaults"


def _record_suite_run(tracking: Tracking, wall_time_s: float, callback) -> None:
    """The latest run's wall time and trial counts, as experiment tags: the suite-overhead
    benchmark (benchmark/perf/suite_overhead.py) compares them with the trials' own times."""
    for key, value in {"last_run.wall_time_s": f"{wall_time_s:.1f}",
                       "last_run.trials_trained": callback.done,
                       "last_run.trials_failed": callback.failed,
                       "last_run.trials_resumed": callback.skipped,
                       "last_run.parallel_trials": callback.most_running,
                       "last_run.ended": time.strftime("%Y-%m-%d %H:%M:%S")}.items():
        tracking.client.set_experiment_tag(tracking.exp_id, key, str(value))


def _tuner_runs(suite: Suite, trials: list[dict[str, Any]]):
    """(param_space, search_alg, num_samples) per Tuner: one for grid and random search;
    one per (task, strategy, seed) for Optuna, whose searcher suggests the values."""
    from ray import tune

    if suite.algorithm != "optuna":
        yield {"trial": tune.grid_search(trials)}, None, 1
        return
    from ray.tune.search.optuna import OptunaSearch

    from .suite import tune_domain

    for trial in trials:
        space = suite.strategies[entry_name(trial)]["search"]
        domains = {k: (tune.choice(v) if isinstance(v, list) else tune_domain(v))
                   for k, v in space.items()}
        searcher = OptunaSearch(seed=suite.search.get("seed", 0) + trial["seed"])
        yield ({"trial": trial, "suggested": domains}, searcher,
               int(suite.search.get("num_samples", 1)))


def _scheduler(suite: Suite):
    if not suite.scheduler:
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration",
                         grace_period=int(suite.scheduler.get("grace_period", 1)),
                         reduction_factor=float(suite.scheduler.get("reduction_factor", 2)))
