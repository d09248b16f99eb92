"""Revision-intention tasks: a registry of `Task` classes and their data loaders.

Import-light on purpose (no torch, no `datasets` at import time): loaders import
`datasets`/`openpyxl` only when called.

    from tasks import get_task, list_tasks
    ds = get_task("iterater").load()          # datasets.DatasetDict: train/validation/test

Each module here that defines a task registers it; the registry imports them all when
first asked, so a new corpus is one new file.
"""

from tasks.base import TASKS, Task, get_task, list_tasks, register_task, resolve_data_dir
from tasks.fetch import fetch_data

__all__ = ["TASKS", "Task", "register_task", "get_task", "list_tasks", "resolve_data_dir", "fetch_data"]
