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


# The CPU features that decide what precision `auto` picks and how fast it runs.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_description() -> tuple[str, list[str]]:
    """(CPU model name, the CPU_FLAGS it has, sorted), from /proc/cpuinfo where there is
    one (Linux), else the platform's processor name and no flags."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return platform.processor() or platform.machine(), []
    fields = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())  # the first CPU's entries
    flags = set(fields.get("flags", "").split())
    model = fields.get("model name") or platform.processor() or platform.machine()
    return model, sorted(flag for flag in CPU_FLAGS if flag in flags)


def environment(device: str) -> dict[str, Any]:
    import torch

    cpu_model, cpu_flags = cpu_description()
    env = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
           "machine": platform.machine(), "cpu_count": os.cpu_count(),
           "cpu_model": cpu_model, "cpu_flags": cpu_flags}
    if device.startswith("cuda"):
        env["gpu_name"] = torch.cuda.get_device_name()
        env["gpu_count"] = torch.cuda.device_count()
    ray = sys.modules.get("ray")  # only inside a Ray worker; never start Ray here
    if ray is not None and ray.is_initialized():
        env["ray_node_id"] = ray.get_runtime_context().get_node_id()
    return env

