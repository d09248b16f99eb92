"""The runs a leaderboard or report is made from, whatever stores them.

A `RunRecord` is one trial's run: its identity (task, strategy, seed, configuration key),
status, flat parameters and final metrics, and, read only when asked, its full result
record (test predictions, selection trace, dev curve). Runs come from MLflow (the live
store) or from the per-trial JSON files committed under `results/<suite>/trials/`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

from ..core.errors import UserError


@dataclasses.dataclass
class RunRecord:
    status: str  # FINISHED, FAILED or KILLED
    params: dict[str, str]  # task, strategy, model, seed, hp.*, opt.*, config.*
    metrics: dict[str, float]  # final metrics (test_*, dev_best_macro_f1, ...)
    tags: dict[str, str]  # config_key, git_commit, device, error, ...
    load_result: Callable[[], dict[str, Any]] = dataclasses.field(repr=False, default=dict)
    load_dev_curve: Callable[[], list[tuple[int, float]]] | None = dataclasses.field(
        repr=False, default=None)
    _result: dict[str, Any] | None = dataclasses.field(default=None, repr=False)

    @property
    def task(self) -> str:
        return self.params.get("task", "")

    @property
    def strategy(self) -> str:
        """The suite entry: the strategy's name, or the entry's own when a suite renames it."""
        return self.params.get("entry") or self.params.get("strategy", "")

    @property
    def seed(self) -> str:
        return self.params.get("seed", "0")

    def result(self) -> dict[str, Any]:
        """The trial's full result record ({} for a run that has none), read once."""
        if self._result is None:
            self._result = self.load_result() or {}
        return self._result

    def dev_curve(self) -> list[tuple[int, float]]:
        if self.load_dev_curve is not None:
            return self.load_dev_curve()
        return [(h["step"], h["dev_macro_f1"]) for h in self.result().get("history", [])]

    def selection_trace(self) -> list[str]:
        return self.result().get("selection_trace", [])


@dataclasses.dataclass
class RunSource:
    """Where a board's runs came from, for the heading and the commit/device line."""
    kind: str  # "mlflow" or "results"
    location: str
    # A comparison (`run --only`): "results": `location` is the committed folder and `also`
    # the new entries' folder; "mlflow": the new entries' runs are in MLflow and `also` is
    # the committed folder.
    also: str | None = None
    new_entries: tuple[str, ...] = ()  # the comparison's own entries: their rows are marked

    def describe(self) -> str:
        if self.kind == "mlflow":
            if self.also:
                return (f"the new entries' runs in MLflow `{self.location}` and the committed "
                        f"trial files `{_relative_to_cwd(self.also)}`")
            return f"MLflow `{self.location}`"
        if self.also:
            return (f"the committed trial files `{_relative_to_cwd(self.location)}` and the "
                    f"new entries' `{_relative_to_cwd(self.also)}`")
        return f"trial files `{_relative_to_cwd(self.location)}`"

    def mark(self, entry: str) -> str:
        """An entry's name as boards show it: a comparison's own entries marked (new)."""
        return f"{entry} (new)" if entry in self.new_entries else entry


NEW_MARK_NOTE = ("(new) marks the entries this comparison ran; the other rows are the "
                 "committed trial files' baselines they were ranked with.")


def _relative_to_cwd(location: str) -> str:
    """A folder below the working directory as a relative path, so committed boards do not
    name the machine they were rendered on."""
    from pathlib import Path

    try:
        return str(Path(location).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return location


def from_mlflow(suite: str, tracking_uri: str) -> tuple[list[RunRecord], RunSource]:
    """Every run of the suite's MLflow experiment; one clear line when it never ran there."""
    from ..sweep.tracking import connect, runs_of

    client = connect(tracking_uri)
    experiment = client.get_experiment_by_name(suite)
    if experiment is None:
        raise UserError(f"no runs of suite {suite!r} in {tracking_uri}; run it first: "
                        f"python -m benchmark run --suite {suite}")
    records = []
    for run in runs_of(client, experiment.experiment_id):
        run_id = run.info.run_id
        records.append(RunRecord(
            status=run.info.status, params=dict(run.data.params),
            metrics=dict(run.data.metrics), tags=dict(run.data.tags),
            load_result=lambda run_id=run_id: artifact_json(client, run_id, "result.json", {}),
            load_dev_curve=lambda run_id=run_id: sorted(
                (m.step, m.value) for m in client.get_metric_history(run_id, "dev_macro_f1"))))
    return records, RunSource("mlflow", tracking_uri)


def artifact_json(client, run_id: str, name: str, missing: Any) -> Any:
    """A run's JSON artifact, or `missing` when it has none (e.g. a failed run)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        try:
            return json.loads(Path(client.download_artifacts(run_id, name, tmp)).read_text())
        except Exception:  # mlflow raises several types for a missing artifact
            return missing


def from_results(folder: str | Path) -> tuple[list[RunRecord], RunSource, dict[str, Any]]:
    """The runs in a results folder's committed trial files (`<folder>/trials/*.json`), and
    the suite's name and focus as recorded there; no MLflow store needed."""
    from ..sweep.tracking import config_params, final_metrics, result_tags, trial_params
    from ..sweep.trial_files import read_trial_files, strategy_code_tags

    folder = Path(folder)
    files = read_trial_files(folder / "trials")
    if not files:
        raise UserError(f"no trial files under {folder / 'trials'}: give a suite's results "
                        "folder, e.g. --from-results results/revisions")
    records = []
    for record in files:
        result = record.get("result") or {}
        params = trial_params(record["trial"])
        tags = {"trial_key": record["trial_key"], "config_key": record["config_key"],
                "git_commit": record["run"].get("git_commit", "?")}
        code = (record["run"].get("training_code") or {}).get("sha256")
        if code:  # the digest of benchmark/trial/, strategies/, tasks/ it trained under
            tags["training_code"] = code[:12]
        if record["trial"].get("stage"):
            tags["stage"] = str(record["trial"]["stage"])
        metrics = {}
        if result:
            params.update(config_params(result))
            tags.update(result_tags(result))
            metrics = final_metrics(result)
        if record.get("error"):
            tags["error"] = record["error"]
        if record.get("stopped_early"):  # cut by stage select's scheduler (status KILLED)
            tags["stopped_early"] = str(record["stopped_early"].get("at_step") or "?")
        tags.update(strategy_code_tags(record.get("strategy_code")))
        records.append(RunRecord(status=record["status"], params=params, metrics=metrics,
                                 tags=tags, load_result=lambda result=result: result))
    return records, RunSource("results", str(folder)), files[0].get("suite", {})


# -- comparisons (`run --only`): the new entries' folder and the committed one ---------------

COMPARISON_FILE = "comparison.json"


def comparison_of(folder: str | Path) -> dict[str, Any] | None:
    """What `run --only` recorded in a comparison's results folder (None elsewhere)."""
    path = Path(folder) / COMPARISON_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserError(f"{path} is not readable JSON: rerun the comparison's `run --only` "
                        "command, which rewrites it") from None
    return record if isinstance(record, dict) and record.get("entries") else None


def committed_folder(folder: str | Path, comparison: dict[str, Any]) -> Path:
    """The committed results folder a comparison was ranked with: as recorded (relative to
    the comparison's folder), else the base suite's folder beside it (a clone elsewhere)."""
    folder = Path(folder)
    recorded = Path(str(comparison.get("committed", "")))
    candidates = []
    if str(recorded) not in ("", "."):
        if not recorded.is_absolute():
            candidates.append(folder / recorded)
        else:
            # An absolute path from another checkout: the same folder here comes first.
            candidates.append(folder.parent / recorded.name)
            candidates.append(recorded)
    if comparison.get("suite"):
        candidates.append(folder.parent / str(comparison["suite"]))
    for candidate in candidates:
        if (candidate / "trials").is_dir():
            return candidate.resolve()
    raise UserError(f"{folder / COMPARISON_FILE} ranks its entries with the committed trial "
                    f"files in {comparison.get('committed')}, which are not there: give that "
                    "folder's trial files back (or rerun the comparison with --against DIR)")


def with_committed(folder: str | Path, records: list[RunRecord], source: RunSource
                   ) -> tuple[list[RunRecord], RunSource, dict[str, Any] | None]:
    """A comparison's new runs together with the committed runs they were ranked with, as
    `run --only` ranked them; other folders' runs unchanged. Returns (records, source,
    the comparison record or None)."""
    comparison = comparison_of(folder)
    if comparison is None:
        return records, source, None
    committed_dir = committed_folder(folder, comparison)
    committed, _, _ = from_results(committed_dir)
    entries = tuple(comparison["entries"])
    if source.kind == "mlflow":
        merged = RunSource("mlflow", source.location, also=str(committed_dir), new_entries=entries)
    else:
        merged = RunSource("results", str(committed_dir), also=source.location, new_entries=entries)
    return committed + records, merged, comparison
