"""One run of a suite at a time per results folder: `run` holds
`results/<suite>/run.lock` (pid, host, start time) while it runs. A second run refuses in
one line naming the first; a lock left by a process that is gone (same host, dead pid) is
taken over."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

from ..core.errors import UserError

LOCK_NAME = "run.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _holder(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def acquire(folder: Path) -> Path:
    """Take the folder's lock, or raise UserError naming the run that holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    for _ in range(3):  # a stale lock removed by a racing run: try again
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is None:  # being written this instant, or garbage: look again
                time.sleep(0.2)
                holder = _holder(path)
            stale = holder is None or (holder.get("host") == me["host"]
                                       and not _alive(int(holder.get("pid", 0))))
            if not stale:
                raise UserError(
                    f"another run of this suite is writing {folder} (pid {holder['pid']} on "
                    f"{holder['host']}, started {holder['started']}); wait for it, or remove "
                    f"{path} if that run is gone") from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # its process is gone: take the lock over
            continue
        with os.fdopen(fd, "w") as out:
            json.dump(me, out)
        return path
    raise UserError(f"could not take the lock {path}: other runs keep taking it")


@contextlib.contextmanager
def suite_lock(folder: Path):
    path = acquire(folder)
    try:
        yield path
    finally:
        if (_holder(path) or {}).get("pid") == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
