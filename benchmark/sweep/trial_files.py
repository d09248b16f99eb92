"""Per-trial result files: `results/<suite>/trials/<task>--<strategy>--<config key>--s<seed>.json`.

Written by the driver as each trial ends (beside MLflow, the live store), like peft's
`method_comparison`: committed next to the leaderboard, they let anyone audit a result
and rebuild the leaderboard and report without an MLflow store
(`python -m benchmark leaderboard --from-results results/<suite>`). Each file holds:
- `run`: the command, git commit and whether the tree was dirty, package versions, the
  machine, and the device and precision the trial ran with;
- `trial`: the trial's configuration (task, strategy, seed, budget, hyperparameters,
  options) and its stage;
- `result`: the trial's result record: dev curve (`history`), selection trace, memory,
  times, test metrics and test predictions keyed by example id (null for a failed trial,
  whose `error` says why).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from .suite import config_key, entry_name, trial_key

PACKAGES = ("torch", "transformers", "peft", "ray", "mlflow", "deepspeed")
FORMAT_VERSION = 1


def trials_dir(results_dir: str | os.PathLike[str], suite: str) -> Path:
    return Path(results_dir) / suite / "trials"


def file_name(trial: dict[str, Any]) -> str:
    return (f"{trial['task']}--{entry_name(trial)}--{config_key(trial)}"
            f"--s{trial['seed']}.json")


def git_state() -> dict[str, Any]:
    """The commit this code is at and whether tracked files differ from it."""
    here = Path(__file__).parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                                  cwd=here)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--short", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit or "unknown",
            "git_dirty": None if status is None else bool(status)}


def versions() -> dict[str, str | None]:
    out = {}
    for package in PACKAGES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def run_info(command: list[str] | None = None) -> dict[str, Any]:
    """What a trial file says about the run that made it (the driver's view)."""
    return {"command": " ".join(command if command is not None else ["python", *sys.argv]),
            **git_state(), "versions": versions(),
            "machine": {"platform": platform.platform(), "processor": platform.machine(),
                        "cpu_count": os.cpu_count(), "python": platform.python_version()}}


def write_trial_file(folder: Path, trial: dict[str, Any], status: str, run: dict[str, Any],
                     suite: dict[str, Any], result: dict[str, Any] | None = None,
                     error: str | None = None) -> Path:
    """Write (atomically) one trial's file; a re-run of the trial replaces it."""
    folder.mkdir(parents=True, exist_ok=True)
    environment = (result or {}).get("environment", {})
    config = (result or {}).get("config", {})
    record = {"format": FORMAT_VERSION, "suite": suite, "status": status,
              "trial_key": trial_key(trial), "config_key": config_key(trial), "trial": trial,
              "run": {**run, "device": environment.get("device"),
                      "precision": config.get("precision"),
                      "gpu": environment.get("gpu_name")},
              "result": result, "error": error}
    path = folder / file_name(trial)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def read_trial_files(folder: Path) -> list[dict[str, Any]]:
    """Every trial file under `folder`, in name order."""
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]
