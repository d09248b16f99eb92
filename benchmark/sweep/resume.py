"""Resuming a suite from its committed trial files alone (a fresh clone has no MLflow
store): FINISHED trial files are not trained again, and their MLflow runs are re-created
from the files. A file made under another precision than this machine would use is
refused, never mixed in, unless the files already hold every trial of the suite: then
nothing is trained and the board is rebuilt from them, on any machine. So is, in a suite
that pins its training code (`pin_training_code: true`), a file trained under another
digest of the training code than this checkout's (`run --allow-mixed-code` overrides).
A trial stage select's scheduler stopped early (status KILLED, `stopped_early`) is not
run again and never counts as finished."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from ..core.errors import UserError
from .suite import Suite, expand_trials, final_trials, trial_key
from .tracking import final_metrics, log_trial_file
from .trial_files import TRAINING_CODE, training_code


def _trial_records(folder: Path, keep) -> dict[str, dict[str, Any]]:
    """trial key -> record of every trial file under `folder` that `keep` accepts
    (unreadable or half-written files are left out: their trials run again)."""
    records = {}
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("trial_key") and keep(record):
            records[record["trial_key"]] = record
    return records


def finished_trial_files(folder: Path) -> dict[str, dict[str, Any]]:
    """trial key -> record of every FINISHED trial file under `folder`."""
    return _trial_records(folder, lambda r: r.get("status") == "FINISHED" and r.get("result"))


def stopped_trial_files(folder: Path) -> dict[str, dict[str, Any]]:
    """trial key -> record of every trial file of a trial stage select's scheduler stopped
    early: not trained again, never a candidate nor a final result."""
    return _trial_records(folder, lambda r: r.get("stopped_early"))


def code_digest(record: dict[str, Any]) -> str | None:
    """The training-code digest a trial file's run recorded (None: not recorded)."""
    return ((record.get("run") or {}).get("training_code") or {}).get("sha256")


def check_training_code(suite: Suite, records: dict[str, dict[str, Any]], folder: Path,
                        allow_mixed: bool = False, here: str | None = None) -> None:
    """Refuse (one line) to add trials to a suite that pins its training code when its
    trial files (finished or stopped early) were trained under another digest than this
    checkout's, or record none; a suite whose every trial is in the files trains nothing,
    so nothing is mixed."""
    if not suite.pin_training_code or allow_mixed or not records:
        return
    if not untrained(suite, records):
        return
    here = here or training_code()["sha256"]
    other = [r for r in records.values() if code_digest(r) != here]
    if not other:
        return
    theirs = sorted({code_digest(r) or "not recorded" for r in other})
    commits = sorted({str((r.get("run") or {}).get("git_commit", "?")) for r in other})
    raise UserError(
        f"suite {suite.name} pins its training code, but {len(other)} trial file(s) in {folder} "
        f"were trained under training code {', '.join(t[:12] for t in theirs)} (commit "
        f"{', '.join(commits)}) and this checkout's is {here[:12]} ({', '.join(TRAINING_CODE)}): "
        "its trials would mix code versions; run the code they ran, another --results-dir, "
        "or pass --allow-mixed-code")


def _runs_on_cpu(suite: Suite, budget: dict[str, Any]) -> bool:
    """Whether the suite's trials run on CPUs, where the driver can tell their precision
    (a GPU's bf16 support is only known on the node that has it)."""
    workers = suite.worker_resources
    gpus = workers.gpus_per_worker if workers else suite.resources.get("gpus_per_trial", 0)
    return budget.get("device", "auto") == "cpu" or (
        budget.get("device", "auto") == "auto" and not gpus)


def untrained(suite: Suite, records: dict[str, dict[str, Any]]) -> int:
    """How many of the suite's trials no FINISHED trial file holds; for a staged suite
    whose stage select is complete, stage final's trials are chosen from the files."""
    trials = expand_trials(suite)
    missing = sum(trial_key(t) not in records for t in trials)
    if missing or suite.select is None:
        return missing
    dev = {k: final_metrics(r["result"]).get("dev_best_macro_f1", 0.0) for k, r in records.items()
           if r.get("status") == "FINISHED"}
    final, _ = final_trials(suite, trials, dev)
    return sum(trial_key(t) not in records for t in final)


def check_precision(suite: Suite, records: dict[str, dict[str, Any]], folder: Path) -> None:
    """Refuse (one line) a suite this machine must not finish: bf16 pinned on a CPU that
    only emulates it (about 100x slower), or `auto` resolving here to another precision
    than the FINISHED trial files it would reuse were made with. A suite whose every
    trial is in the files trains nothing here, so nothing is mixed: it is not refused."""
    from ..trial.config import cpu_computes_bf16, resolve_precision

    if records and not untrained(suite, records):
        return

    budgets = [suite.budget] + ([suite.select["budget"]] if suite.select else [])
    for budget in budgets:
        if not _runs_on_cpu(suite, budget):
            return
        if budget.get("precision") == "bf16" and not cpu_computes_bf16():
            raise UserError(f"suite {suite.name} pins precision bf16, but this CPU does not "
                            "compute bf16 natively (no AVX512-BF16 or AMX): it would be emulated, "
                            "about 100x slower; run it on a CPU that has them or with fp32")
    if suite.budget.get("precision", "auto") != "auto":
        return  # a pinned precision is part of every trial key: files match it or not at all
    here = resolve_precision("auto", "cpu", suite.budget.get("deepspeed", "none"))[0]
    other = [r for r in records.values() if r.get("run", {}).get("precision") not in (None, here)]
    if other:
        theirs = sorted({r["run"]["precision"] for r in other})
        raise UserError(f"{len(other)} FINISHED trial file(s) in {folder} were made with "
                        f"precision {'/'.join(theirs)}, but precision auto resolves to {here} on "
                        f"this machine: results would mix precisions; run on a machine that "
                        f"resolves {'/'.join(theirs)}, pin `precision: {theirs[0]}` in the "
                        f"suite's budget, or use another --results-dir")


def restore_runs(client, exp_id: str, suite_name: str, records: dict[str, dict[str, Any]],
                 keys: Iterable[str], in_mlflow: dict[str, Any]) -> int:
    """Log into MLflow the trial files of `keys` that have no FINISHED run there; returns
    how many were logged."""
    restored = 0
    for key in keys:
        if key in records and key not in in_mlflow:
            log_trial_file(client, exp_id, suite_name, records[key])
            restored += 1
    return restored
