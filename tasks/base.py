"""Task base class, registry and data-directory helpers.

Kept import-light: nothing here imports torch or `datasets` at module level.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from benchmark.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import datasets

APP_NAME = "revision-benchmark"
DATA_DIR_ENV = "BENCHMARK_DATA_DIR"
CACHE_DIR_ENV = "BENCHMARK_CACHE_DIR"
SPLITS = ("train", "validation", "test")
FETCH_COMMAND = "python -m benchmark data fetch"

_REGISTRY: dict[str, type["Task"]] = {}


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: `data_dir` if given, else $BENCHMARK_DATA_DIR, else the user cache."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME)) / "data"


def cache_dir() -> Path:
    """Where derived files (e.g. parsed workbooks) are cached: $BENCHMARK_CACHE_DIR or the user cache."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME))


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

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

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
    other = _REGISTRY.get(cls.name)
    if other is not None and (other.__module__, other.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"task name {cls.name!r} is already registered by {other.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def list_tasks() -> list[str]:
    return sorted(_REGISTRY)


def get_task(name: str) -> Task:
    cls = _REGISTRY.get(name)
    if cls is None:
        known = ", ".join(list_tasks()) or "(none)"
        raise UserError(f"unknown task {name!r}; known tasks: {known}")
    return cls()


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
