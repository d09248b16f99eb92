"""Where the project keeps derived files, and how user paths are read."""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "revision-benchmark"
CACHE_DIR_ENV = "BENCHMARK_CACHE_DIR"


def user_cache_dir() -> Path:
    """The per-user cache directory of this project (platformdirs)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME))


def cache_root() -> Path:
    """Derived files (tokenized splits, parsed workbooks, converted models):
    $BENCHMARK_CACHE_DIR, else the per-user cache directory."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return user_cache_dir()


def absolute(path: str | os.PathLike[str] | None) -> str | None:
    """A user's path resolved against the directory the command was started in (Ray trials
    run in their own directories, so relative paths must not reach them)."""
    if path is None or str(path) == "":
        return None
    return str(Path(path).expanduser().resolve())


def looks_like_path(value: str) -> bool:
    """A suite or model given as a file system path (not a shipped name, alias or hub id)."""
    text = str(value)
    return (text.startswith((".", "/", "~")) or text.endswith((".yaml", ".yml"))
            or Path(text).expanduser().exists())
