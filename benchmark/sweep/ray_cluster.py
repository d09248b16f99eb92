"""Starting or joining Ray, and where Ray keeps trial state."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from pathlib import Path

from ..core.errors import UserError


def _check_address(address: str) -> None:
    if address == "auto":
        return
    host, _, port = address.replace("ray://", "").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=3).close()
    except (OSError, ValueError):
        raise UserError(f"cannot reach a Ray cluster at {address}") from None


def start_ray(address: str | None, preload: bool = False):
    """Join the cluster at `address`, or start a local one; `preload`: a local cluster's
    worker processes import the trial's libraries as they start (worker_preload.py)."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Tune would swallow Ctrl-C and return normally (and a staged suite would go on to its
    # next stage); let it reach the CLI, which exits 130 and resumes on the next run.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    kwargs = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                  configure_logging=True)
    address = address or os.environ.get("RAY_ADDRESS")  # set inside `ray job submit`
    if address:
        _check_address(address)
        try:
            ray.init(address=address, **kwargs)
        except Exception as error:
            raise UserError(f"cannot join the Ray cluster at {address}: {' '.join(str(error).split())[:200]}") from None
    else:
        hook = {"worker_process_setup_hook": "benchmark.sweep.worker_preload.preload"}
        ray.init(num_cpus=os.cpu_count(), runtime_env=hook if preload else None, **kwargs)
    # ray.init installs a SIGTERM handler that aborts the driver (status -6, no clean-up);
    # `kill PID` stops a suite as Ctrl-C does instead: finished trials kept, status 130.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    return True


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def resolve_storage_path(storage_path: str | None) -> str:
    """Ray's storage path: an absolute local path (default results/ray); s3:// and gs://
    pass as they are."""
    storage = storage_path or "results/ray"
    return storage if "://" in storage else str(Path(storage).resolve())
