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


_trials_in_this_process = 0  # trials this worker process trained (reuse_workers: several)


def tune_trainable(config: dict[str, Any], finished: dict[str, dict], data_dir: str | None,
                   cpus: float, workers=None, storage_path: str | None = None,
                   report_curve: bool = False) -> None:
    """One Tune trial; `report_curve`: its learning-curve points go to Tune as they are
    evaluated (stage select's scheduler cuts on them)."""
    from ..core.quiet import quiet

    quiet()  # the driver's --verbose choice, from the environment
    import torch
    from ray import tune

    from ..trial.loop import run_trial
    from ..trial.memory import release_accelerator_memory

    global _trials_in_this_process
    trial = concrete_trial(config)
    key = trial_key(trial)
    if key in finished:  # done in an earlier run of this suite: report it, train nothing
        tune.report({**finished[key], "dev_macro_f1": finished[key].get("dev_best_macro_f1"),
                     "already_finished": 1})
        return
    trials_before = _trials_in_this_process
    _trials_in_this_process += 1
    try:
        if workers is not None:  # data-parallel: Ray Train workers report through Tune
            from .ray_workers import run_on_workers

            result = run_on_workers(train_config(trial, data_dir), workers,
                                    storage_path=storage_path, inside_tune=True)
        else:
            torch.set_num_threads(max(1, int(cpus)))
            result = run_trial(train_config(trial, data_dir),
                               on_eval=lambda step, metrics: tune.report({**metrics, "step": step}),
                               on_curve=(lambda step, point: tune.report(curve_report(step, point)))
                               if report_curve else None)
    except Exception as error:
        import traceback

        from ..trial.contract import failure_line

        # One line (type, message, where it was raised) for the console and the MLflow
        # tag; the whole traceback for the trial file. Tune wants its metric in every
        # report. Not raised on: Tune would retry it, and an exception (a diverged loss)
        # comes back every time; retries are for a worker process that died.
        tune.report({"error": failure_line(error), "traceback": traceback.format_exc()[-20000:],
                     "dev_macro_f1": float("nan")})
        return
    finally:  # the next trial on this GPU must not find our cached memory there
        release_accelerator_memory()
    if workers is None:  # a reused worker held earlier trials: their leftovers are in our RSS
        result["process"] = {"trials_before": trials_before}
    tune.report({**final_metrics(result), "dev_macro_f1": result["dev"]["macro_f1"],
                 "result_json": json.dumps(result), "trial_finished": 1})


def curve_report(step: int, point: dict[str, Any]) -> dict[str, Any]:
    """A learning-curve point as a Tune result: `budget_share` (step / the trial's steps) is
    the time of stage select's scheduler; no "step" key, so the driver does not log it as
    a dev evaluation; Tune wants its metric (dev macro F1) in every report."""
    return {"curve_macro_f1": point["curve_macro_f1"], "curve_accuracy": point["curve_accuracy"],
            "curve_step": step, "max_steps": point["max_steps"],
            "budget_share": step / point["max_steps"], "dev_macro_f1": float("nan")}


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
            self.suite_meta = {"name": suite.name, "focus": suite.focus,
                               "statistics": suite.statistics}
            self.done = self.failed = self.skipped = 0
            # Trial keys counted once: a staged suite's stage final holds stage select's
            # full-budget trials again, which must not count twice.
            self.counted: set[str] = set()
            self.running: set[str] = set()
            self.most_running = 1  # the parallelism seen so far, for the time estimate
            self.durations: list[float] = []
            self.started: dict[str, float] = {}
            self.t0 = time.time()
            self.last_line = time.time()
            self.total = total
            self.finished: dict[str, dict] = {}  # trial key -> metrics, set per stage
            self.curves: dict[str, list[dict]] = {}  # Ray trial id -> curve points reported
            self.scheduler: str | None = None  # what may stop this stage's trials early
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
            if "curve_step" in result:  # kept for the file of a trial the scheduler cuts
                self.curves.setdefault(trial.trial_id, []).append(
                    {"step": int(result["curve_step"]), "max_steps": int(result["max_steps"]),
                     "macro_f1": result["curve_macro_f1"]})
                return
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
                self._failed(trial, last["error"], last.get("traceback"))
                return
            self.running.discard(trial.trial_id)
            if last.get("already_finished"):
                self._count_resumed(concrete_trial(trial.config))
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
                self.counted.add(trial_key(concrete))
                self.done += 1
                self.durations.append(time.time() - self.started.get(trial.trial_id, self.t0))
                outcome = f"test macro F1 {last.get('test_macro_f1', float('nan')):.3f}"
            else:  # stopped by the scheduler before its test evaluation
                self._log(trial, lambda logger: logger.stopped_early())
                points = self.curves.get(trial.trial_id, [])
                trial_files.write_trial_file(
                    trial_folder, concrete_trial(trial.config), "KILLED", self.run,
                    self.suite_meta, stopped_early={
                        "by": self.scheduler or "the scheduler",
                        "at_step": points[-1]["step"] if points else None,
                        "max_steps": points[-1]["max_steps"] if points else None,
                        "curve": points,
                        "note": "stopped early by stage select's scheduler: never a candidate "
                                "nor a final result"})
                self.done += 1
                outcome = ("stopped early by the scheduler"
                           + (f" at step {points[-1]['step']}/{points[-1]['max_steps']}"
                              if points else ""))
            self._progress(trial, outcome)

        def skip(self, concrete: dict) -> None:
            """A trial finished by an earlier run: counted, its file made sure of, not run."""
            self._count_resumed(concrete)
            self._restore_trial_file(concrete)

        def _count_resumed(self, concrete: dict) -> None:
            key = trial_key(concrete)
            if key not in self.counted:  # not one this run trained (stage select) or counted
                self.counted.add(key)
                self.skipped += 1

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
                       "git_commit": tags.get("git_commit", "unknown"), "git_dirty": None,
                       "training_code": None}  # not known from the run
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

        def _failed(self, trial, message: str, traceback: str | None = None) -> None:
            self.running.discard(trial.trial_id)
            self._log(trial, lambda logger: logger.fail(message, traceback))
            trial_files.write_trial_file(trial_folder, concrete_trial(trial.config), "FAILED",
                                         self.run, self.suite_meta, error=message,
                                         traceback=traceback)
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
          f"scheduler: {suite.scheduler['type'] if suite.scheduler else 'none (fixed budget)'}"
          + (" in stage final; stage select's below" if suite.select is not None else ""),
          file=out)
    if suite.pin_training_code:
        print(f"training code pinned: this checkout's digest "
              f"{trial_files.training_code()['sha256'][:12]} (benchmark/trial/, strategies/, "
              "tasks/); trial files of another are refused (--allow-mixed-code)", file=out)
    if suite.distributed:
        d = suite.worker_resources
        print(f"data-parallel trials: {d.workers} Ray Train workers of {d.cpus_per_worker} CPU, "
              f"{d.gpus_per_worker} GPU each; deepspeed {suite.distributed.get('deepspeed', 'none')}",
              file=out)
    if suite.select is not None:
        spec = suite.select.get("scheduler")
        print(f"stage select: the {len(trials)} trials below, budget "
              f"{json.dumps(suite.select['budget'])}", file=out)
        print("stage select's scheduler: " + (
            asha_description(spec)
            + " (a cut trial's file says stopped early; it is never a candidate nor a result)"
            if spec else "none (every trial runs its whole budget)"), file=out)
    print("order: seed-major (every entry's seed 0, then seed 1, ...)", file=out)
    for i, t in enumerate(trials):
        values = {**t["hyperparameters"], **t["options"]}
        text = " ".join(f"{k}={v}" for k, v in values.items()) or "(defaults)"
        print(f"  {i + 1:>3}. {t['task']:<18} {entry_name(t):<14} seed "
              f"{t['seed']:<3} {text}", file=out)
    if suite.select is not None:
        final = sum(len(spec.get("tasks", suite.tasks)) * len(spec.get("seeds", suite.seeds))
                    for spec in suite.strategies.values())
        print(f"stage final: {final} trials: per task and strategy, the stage-select "
              f"configuration with the best mean dev macro F1, on seeds {suite.seeds} at the "
              f"suite budget, never stopped early", file=out)


@dataclasses.dataclass
class SuiteOutcome:
    failed: int  # trials that failed
    untracked: int  # FINISHED trials not in MLflow: tracking was lost and did not come back


def run_suite(suite: Suite, tracking_uri: str, address: str | None = None,
              storage_path: str | None = None, data_dir: str | None = None,
              results_dir: str | Path = "results", command: list[str] | None = None,
              tracking_patience_s: float = 120.0,
              entries: set[str] | None = None,
              allow_mixed_code: bool = False) -> SuiteOutcome:
    """Run every trial not already finished (both stages of a staged suite). Each trial
    that ends also writes its file under results_dir/<suite>/trials/; a FINISHED file
    counts as finished even without an MLflow run (whose run is then made from it). If
    MLflow goes away mid-suite, trials go on, and at the end the run waits up to
    `tracking_patience_s` for it before leaving their runs to `sync` or the next run.
    `entries`: only these suite entries' trials (`run --only`). A suite that pins its
    training code refuses trial files of another digest unless `allow_mixed_code`."""
    trials = [t for t in expand_trials(suite) if entries is None or entry_name(t) in entries]
    folder = trial_files.trials_dir(results_dir, suite.name)
    on_disk = resume.finished_trial_files(folder)
    resume.check_precision(suite, on_disk, folder)  # before anything is written
    stopped = resume.stopped_trial_files(folder)  # cut by stage select's scheduler: not re-run
    resume.check_training_code(suite, {**stopped, **on_disk}, folder, allow_mixed_code)
    client = connect(tracking_uri)
    tracking = Tracking(client, experiment_id(client, suite.name, tracking_uri), suite.name,
                        tracking_uri)
    finished = _restore_from_files(tracking, on_disk, trials, folder)
    pending = sum(trial_key(t) not in finished for t in trials)
    stage = " in stage select" if suite.select is not None else ""
    print(f"suite {suite.name}: {len(trials)} trials{stage}, {len(trials) - pending} already "
          f"finished in {tracking_uri}", flush=True)
    suite_started = time.time()
    # Pooled workers import the trial's libraries ahead only where trials will train in
    # them: a data-parallel trial's Ray Train processes (and its helper actors) would each
    # pay the imports too (seen: the ZeRO parity fixture 74 s -> 202 s with them).
    started_ray = start_ray(address, preload=pending > 0 and suite.worker_resources is None)
    try:
        total = len(trials) * (int(suite.search.get("num_samples", 1)) if suite.algorithm == "optuna" else 1)
        callback = _make_callback(tracking, suite, total, folder, command, data_dir)
        select_scheduler = (suite.select or {}).get("scheduler")
        _fit_stage(suite, trials, finished, callback, data_dir, storage_path,
                   stopped=stopped if select_scheduler else None,
                   scheduler=(grouped_asha(select_scheduler, trials, on_disk, stopped)
                              if select_scheduler else _scheduler(suite)))
        if suite.select is not None:
            select_keys = {trial_key(t) for t in trials}  # stage final repeats some of them
            on_disk = resume.finished_trial_files(folder)  # with stage select's trials
            finished = _restore_from_files(tracking, on_disk, [], folder)
            final, candidates = final_trials(
                suite, trials, {k: m.get("dev_best_macro_f1", 0.0) for k, m in finished.items()})
            _print_choices(candidates)
            finished = _restore_from_files(tracking, on_disk, final, folder)
            done = sum(trial_key(t) in finished for t in final)
            print(f"stage final: {len(final)} trials, {done} already finished (by an earlier "
                  "run, or by stage select at the full budget)", flush=True)
            callback.total += sum(trial_key(t) not in select_keys for t in final)
            # Stage final never stops early: it is the result, and an early-stopping
            # scheduler would bias steps-to-converge and memory.
            _fit_stage(suite, final, finished, callback, data_dir, storage_path, scheduler=None)
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
               data_dir: str | None, storage_path: str | None,
               stopped: dict[str, dict] | None = None, scheduler=None) -> None:
    """Run one stage's trials through Ray Tune (trials in `finished` only report; those in
    `stopped`, cut early by stage select's scheduler in an earlier run, do not run again)
    under `scheduler` (None: every trial runs its whole budget)."""
    from ray import tune

    callback.finished = finished
    callback.scheduler = getattr(scheduler, "description", None)
    if suite.algorithm != "optuna":  # known keys: finished trials need no Ray worker at all
        done = {**(stopped or {}), **finished}
        for trial in trials:
            if trial_key(trial) in done:
                callback.skip(trial)
        trials = [t for t in trials if trial_key(t) not in done]
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
                             workers=workers, storage_path=storage,
                             report_curve=getattr(scheduler, "metric_name", None) == "curve_macro_f1"),
        trial_resources)
    for param_space, search_alg, num_samples in _tuner_runs(suite, trials):
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(
                metric="dev_macro_f1", mode="max", search_alg=search_alg,
                num_samples=num_samples, scheduler=scheduler,
                # A fresh process per trial by default: its peak RSS is its own, not what
                # earlier trials left in a reused worker (seen here: 2.2 GiB vs 4.8 GiB).
                reuse_actors=bool(suite.resources.get("reuse_workers", False)),
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


def grouped_asha(spec: dict[str, Any], trials: list[dict[str, Any]],
                 finished: dict[str, dict] | None = None, stopped: dict[str, dict] | None = None):
    """Stage select's scheduler (suite.select["scheduler"]): Ray Tune's ASHA, one per task
    and entry, primed with the curves of the stage's trials an earlier run finished or cut."""
    scheduler = GroupedASHA(spec["metric"], spec["grace_period"], spec["reduction_factor"])
    keys = {trial_key(t): t for t in trials}
    for key, record in {**(finished or {}), **(stopped or {})}.items():
        if key in keys:
            scheduler.prime(keys[key], key, _recorded_curve(record))
    return scheduler


def _recorded_curve(record: dict[str, Any]) -> list[dict[str, Any]]:
    """A trial file's curve points with their trial's steps: a finished trial's result, a
    cut one's `stopped_early`."""
    if record.get("stopped_early"):
        return list(record["stopped_early"].get("curve") or [])
    result = record.get("result") or {}
    steps = (result.get("config") or {}).get("max_steps")
    return [{**p, "max_steps": steps} for p in result.get("curve") or []] if steps else []


def asha_rungs(grace_period: float, reduction_factor: float) -> list[float]:
    """The budget shares at which stage select's ASHA compares a trial with the others of
    its task and strategy: grace_period x reduction_factor^k, below the whole budget."""
    rungs = [grace_period]
    while rungs[-1] * reduction_factor < 1 - 1e-9:
        rungs.append(rungs[-1] * reduction_factor)
    return rungs


def asha_description(spec: dict[str, Any]) -> str:
    rungs = asha_rungs(spec["grace_period"], spec["reduction_factor"])
    return (f"ASHA (Ray Tune) on {spec['metric']} per task and strategy, rungs at "
            + ", ".join(f"{r:.0%}" for r in rungs) + " of each trial's budget, reduction "
            f"factor {spec['reduction_factor']:g} (a trial below the top "
            f"{1 / spec['reduction_factor']:.0%} of its group at a rung is cut)")


def _trial_group(trial: dict[str, Any]) -> tuple[str, str]:
    return trial["task"], entry_name(trial)


def _asha_class():
    from ray.tune.schedulers import FIFOScheduler

    class GroupedASHA(FIFOScheduler):
        """Ray Tune's ASHA (ASHAScheduler), one instance per task and suite entry: a
        configuration is cut only against the same strategy's other configurations on the
        same task, never against another strategy. Its time is `budget_share` (a curve
        point's step over its trial's steps), so the rungs are the same shares of every
        trial's budget whatever its task's epoch size; the rungs lie below 1, so a trial
        that reaches its last curve point always finishes (and is tested). Trials start
        first in, first out, in the order given (seed-major)."""

        _supports_buffered_results = False  # a cut applies at the point it is decided

        def __init__(self, metric: str, grace_period: float, reduction_factor: float):
            super().__init__()
            self.metric_name, self.grace, self.factor = metric, grace_period, reduction_factor
            self.rungs = asha_rungs(grace_period, reduction_factor)
            self.max_t = self.rungs[-1] * (1 + 1e-9)  # ASHA's rungs: these, none at 1
            self.groups: dict[tuple[str, str], Any] = {}
            self.description = asha_description(
                {"metric": metric, "grace_period": grace_period,
                 "reduction_factor": reduction_factor})

        def set_search_properties(self, metric, mode, **spec) -> bool:
            return True  # its own metric and mode, whatever the Tuner's

        def _group(self, trial) -> Any:
            from ray.tune.schedulers import ASHAScheduler

            key = _trial_group(concrete_trial(trial.config)) if hasattr(trial, "config") else trial
            if key not in self.groups:
                self.groups[key] = ASHAScheduler(
                    time_attr="budget_share", metric=self.metric_name, mode="max",
                    max_t=self.max_t, grace_period=self.grace,
                    reduction_factor=self.factor, stop_last_trials=False)
            return self.groups[key]

        def prime(self, trial: dict[str, Any], name: str, points: list[dict[str, Any]]) -> None:
            """An earlier run's trial of this stage, recorded in its group's rungs as if it
            ran now (its curve points in order), so a resumed stage cuts as one run would."""
            import types

            asha = self._group(_trial_group(trial))
            bracket = asha._brackets[0]
            stand_in = types.SimpleNamespace(trial_id=f"file:{name}")
            for point in points:
                if point.get("max_steps"):
                    bracket.on_result(stand_in, point["step"] / point["max_steps"],
                                      float(point["macro_f1"]))

        def on_trial_add(self, tune_controller, trial):
            self._group(trial).on_trial_add(tune_controller, trial)

        def on_trial_result(self, tune_controller, trial, result):
            if result.get("budget_share", 0) >= 1:  # its last point: it finishes and is tested
                return self.CONTINUE
            return self._group(trial).on_trial_result(tune_controller, trial, result)

        def on_trial_complete(self, tune_controller, trial, result):
            self._group(trial).on_trial_complete(tune_controller, trial, result)

        def on_trial_remove(self, tune_controller, trial):
            self._group(trial).on_trial_remove(tune_controller, trial)

        def debug_string(self) -> str:
            return self.description

    return GroupedASHA


def GroupedASHA(metric: str, grace_period: float, reduction_factor: float):
    """Stage select's scheduler (see _asha_class): Ray is imported only when one is made."""
    return _asha_class()(metric, grace_period, reduction_factor)


def _scheduler(suite: Suite):
    if not suite.scheduler:
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="training_iteration",
                         grace_period=int(suite.scheduler.get("grace_period", 1)),
                         reduction_factor=float(suite.scheduler.get("reduction_factor", 2)))
