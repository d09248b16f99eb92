"""The parts of a trial's result record that describe where and how it ran."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any


def compact_trace(trace: list[list[int]], num_blocks: int) -> list[str]:
    """One string per step, a character per block: '1' trained, '0' frozen."""
    return ["".join("1" if i in set(chosen) else "0" for i in range(num_blocks))
            for chosen in trace]


def environment(device: str) -> dict[str, Any]:
    import torch

    env = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
           "machine": platform.machine(), "cpu_count": os.cpu_count()}
    if device.startswith("cuda"):
        env["gpu_name"] = torch.cuda.get_device_name()
        env["gpu_count"] = torch.cuda.device_count()
    ray = sys.modules.get("ray")  # only inside a Ray worker; never start Ray here
    if ray is not None and ray.is_initialized():
        env["ray_node_id"] = ray.get_runtime_context().get_node_id()
    return env
