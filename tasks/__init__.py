"""Revision-intention tasks: a registry of `Task` classes and their data loaders.

Import-light on purpose (no torch, no `datasets` at import time): loaders import
`datasets`/`openpyxl` only when called.

    from tasks import get_task, list_tasks
    ds = get_task("iterater").load()          # datasets.DatasetDict: train/validation/test
"""

from tasks.base import Task, get_task, list_tasks, register_task, resolve_data_dir
from tasks.fetch import fetch_data

# Importing the task modules registers them.
from tasks import argrewrite, argrewrite_coarse, iterater  # noqa: E402,F401  isort:skip

__all__ = ["Task", "register_task", "get_task", "list_tasks", "resolve_data_dir", "fetch_data"]
