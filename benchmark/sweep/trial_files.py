"""Per-trial result files: `results/<suite>/trials/<task>--<strategy>--<config key>--s<seed>.json`.

Written by the driver as each trial ends (beside MLflow, the live store), like peft's
`method_comparison`: committed next to the leaderboard, they let anyone audit a result
and rebuild the leaderboard and report without an MLflow store
(`python -m benchmark leaderboard --from-results results/<suite>`). Each file holds:
- `run`: the command, git commit and whether the tree was dirty, the training code's
  digest (`training_code`: sha256 of benchmark/trial/, strategies/, tasks/), package
  versions, the machine, and the device and precision the trial ran with;
- `trial`: the trial's configuration (task, strategy, seed, budget, hyperparameters,
  options) and its stage;
- `strategy_code`: the strategy's class, file and the file's sha256, whether it lies
  outside the repository (`--include-path`, a plugin) and whether it declares itself
  layer-wise;
- `result`: the trial's result record: dev curve (`history`), selection trace, memory,
  times, test metrics and test predictions keyed by example id (null for a failed trial,
  whose `error` says why in one line, and `traceback` in full when the trial raised).
"""

from __future__ import annotations

import hashlib
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
            **git_state(), "training_code": training_code(), "versions": versions(),
            "machine": {"platform": platform.platform(), "processor": platform.machine(),
                        "cpu_count": os.cpu_count(), "python": platform.python_version()}}


REPO_ROOT = Path(__file__).resolve().parents[2]
# What a trial runs: the loop, the strategies and the corpora's readers (not the sweep
# machinery, the reporting or the CLI, which do not change a trial's numbers).
TRAINING_CODE = ("benchmark/trial", "strategies", "tasks")


def training_code(root: Path = REPO_ROOT) -> dict[str, Any]:
    """The training code's digest: sha256 over the files under TRAINING_CODE (every file but
    __pycache__'s, e.g. the shipped MiniLM vocabulary too), sorted by their path from the
    repository root, content only (the sha256 of each file's bytes, one per line), so a
    commit that leaves them alone keeps it."""
    files = sorted((path for folder in TRAINING_CODE for path in (root / folder).rglob("*")
                    if path.is_file() and "__pycache__" not in path.parts
                    and path.suffix != ".pyc"),
                   key=lambda path: path.relative_to(root).as_posix())
    digest = hashlib.sha256()
    for path in files:
        digest.update(hashlib.sha256(path.read_bytes()).hexdigest().encode() + b"\n")
    return {"sha256": digest.hexdigest(), "files": len(files),
            "folders": list(TRAINING_CODE)}


def strategy_code(strategy: str) -> dict[str, Any] | None:
    """The strategy's class, file and the file's sha256 (an outside method's code is
    recorded by content, not only as a path on the command line), whether it lies outside
    the repository and whether it declares itself layer-wise; None when it is not
    registered here."""
    from ..core.errors import UserError
    from ..trial.contract import strategy_source

    try:
        return strategy_source(strategy)
    except UserError:
        return None


def strategy_code_tags(code: dict[str, Any] | None) -> dict[str, str]:
    """A trial file's `strategy_code` as run tags: whether the strategy declares itself
    layer-wise, and an outside strategy's file and sha256."""
    if not code:
        return {}
    tags = {"strategy_layerwise": str(bool(code.get("layerwise"))).lower()}
    if code.get("outside_repository"):
        tags.update({f"strategy_{k}": str(code[k]) for k in ("file", "sha256") if code.get(k)})
    return tags


def write_trial_file(folder: Path, trial: dict[str, Any], status: str, run: dict[str, Any],
                     suite: dict[str, Any], result: dict[str, Any] | None = None,
                     error: str | None = None, traceback: str | None = None,
                     stopped_early: dict[str, Any] | None = None) -> Path:
    """Write (atomically) one trial's file; a re-run of the trial replaces it. A failed
    trial's `error` is one line; `traceback` is the whole one when the trial raised. A
    trial a scheduler cut (status KILLED) says where in `stopped_early`."""
    folder.mkdir(parents=True, exist_ok=True)
    environment = (result or {}).get("environment", {})
    config = (result or {}).get("config", {})
    record = {"format": FORMAT_VERSION, "suite": suite, "status": status,
              "trial_key": trial_key(trial), "config_key": config_key(trial), "trial": trial,
              "run": {**run, "device": environment.get("device"),
                      "precision": config.get("precision"),
                      "gpu": environment.get("gpu_name")},
              "strategy_code": strategy_code(trial["strategy"]),
              "result": result, "error": error}
    if traceback:
        record["traceback"] = traceback
    if stopped_early:
        record["stopped_early"] = stopped_early
    path = folder / file_name(trial)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def read_trial_files(folder: Path) -> list[dict[str, Any]]:
    """Every trial file under `folder`, in name order."""
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]
