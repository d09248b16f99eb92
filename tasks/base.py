"""Task base class, registry and data-directory helpers.

Kept import-light: nothing here imports torch or `datasets` at module level.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from benchmark.core.errors import UserError
from benchmark.core.paths import user_cache_dir
from benchmark.core.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    import datasets

DATA_DIR_ENV = "BENCHMARK_DATA_DIR"
SPLITS = ("train", "validation", "test")
FETCH_COMMAND = "python -m benchmark data fetch"

TASKS: Registry[type["Task"]] = Registry("task", package="tasks")  # one file per corpus


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: `data_dir` if given, else $BENCHMARK_DATA_DIR, else the user cache."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:  # absolute now: Ray's workers read it from other working directories
        return Path(env).expanduser().absolute()
    return user_cache_dir() / "data"  # corpora are not a derived cache: not under $BENCHMARK_CACHE_DIR


def one_line(text: object) -> str:
    """Collapse any whitespace run (newlines included) to one space."""
    return " ".join(str(text).split())


def missing_data_error(task: str, expected: str, root: Path, source: str) -> UserError:
    """The one-line error a loader raises when its files are not there."""
    return UserError(
        one_line(
            f"{task}: data files not found: expected {expected} under {root}; "
            f"they come from {source}; `{FETCH_COMMAND}` downloads them "
            f"(or set {DATA_DIR_ENV} to a directory that holds them)."
        )
    )


class Task:
    """A revision-intention classification task.

    Subclasses set the class attributes and implement `load`, which returns a
    `datasets.DatasetDict` with splits train/validation/test and columns `before`
    (str), `after` (str), `label` (ClassLabel with names=label_names) plus
    task-specific metadata columns.
    """

    name: ClassVar[str] = ""
    label_names: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    source: ClassVar[str] = ""
    task_instruction: ClassVar[str] = (
        "Identify the intention of the revision between the original sentence and the revised sentence."
    )

    # The column holding a stable id of each example (test predictions are keyed by it).
    id_column: ClassVar[str] = "id"

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def check_data(self, data_dir: str | os.PathLike[str] | None = None) -> None:
        """Raise the one-line missing-data error when the corpus is not under `data_dir`
        (cheap: file checks only; `run` calls it once per task before Ray starts)."""
        raise NotImplementedError

    def load(self, data_dir: str | os.PathLike[str] | None = None) -> "datasets.DatasetDict":
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Task {self.name!r}: {len(self.label_names)} labels>"


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: add a Task subclass to the registry under `cls.name`."""
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"register_task expects a Task subclass, got {cls!r}")
    if not cls.name or not cls.label_names:
        raise ValueError(f"{cls.__name__} must set `name` and `label_names`")
    if len(set(cls.label_names)) != len(cls.label_names):
        raise ValueError(f"{cls.__name__}: duplicate label names {cls.label_names}")
    return TASKS.register(cls.name, cls)


def list_tasks() -> list[str]:
    return TASKS.names()


def get_task(name: str) -> Task:
    return TASKS.get(name)()


def build_dataset_dict(
    splits: Mapping[str, Mapping[str, list[Any]]],
    label_names: tuple[str, ...],
    metadata: Mapping[str, str],
) -> "datasets.DatasetDict":
    """Columns per split -> DatasetDict with before/after/label + metadata features.

    `metadata` maps extra column names to a `datasets.Value` dtype ("string", "int32", ...).
    """
    import datasets

    features = datasets.Features(
        {
            "before": datasets.Value("string"),
            "after": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(label_names)),
            **{col: datasets.Value(dtype) for col, dtype in metadata.items()},
        }
    )
    return datasets.DatasetDict(
        {split: datasets.Dataset.from_dict(dict(splits[split]), features=features) for split in SPLITS}
    )
