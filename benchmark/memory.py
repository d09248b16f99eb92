"""Peak memory of a trial, sampled in a background thread.

On a GPU: the device memory NVML reports for this process and its children, polled about
every 10 ms (falls back to the device's used memory when NVML hides process ids, as in
many containers, and says so), next to torch's own allocator peak. On a CPU: the peak
resident set size of this process and its children, polled the same way.
"""

from __future__ import annotations

import threading
import time

import psutil

MIB = 1024 * 1024


class _OwnProcesses:
    """This process and its children. Listing children scans all of /proc, so the list
    is refreshed at most once a second, not at every 10 ms poll."""

    def __init__(self, refresh_s: float = 1.0):
        self.me = psutil.Process()
        self.refresh_s = refresh_s
        self._children: list[psutil.Process] = []
        self._listed_at = 0.0

    def processes(self) -> list[psutil.Process]:
        now = time.monotonic()
        if now - self._listed_at > self.refresh_s:
            try:
                self._children = self.me.children(recursive=True)
            except psutil.Error:
                self._children = []
            self._listed_at = now
        return [self.me, *self._children]

    def pids(self) -> set[int]:
        return {p.pid for p in self.processes()}


class RssSource:
    name = "rss"

    def __init__(self):
        self.own = _OwnProcesses()

    def read(self) -> int:
        total = 0
        for process in self.own.processes():
            try:
                total += process.memory_info().rss
            except psutil.Error:
                pass
        return total


class NvmlSource:
    """Device memory of our processes on the GPUs this process can see."""

    def __init__(self, nvml, device_indices: list[int]):
        self.nvml = nvml
        self.handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in device_indices]
        self.name = "nvml-process"
        self._seen_own_pid = False
        self.own = _OwnProcesses()

    def read(self) -> int:
        pids = self.own.pids()
        total, found = 0, False
        for handle in self.handles:
            for proc in self.nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid in pids:
                    found = True
                    total += proc.usedGpuMemory or 0
        self._seen_own_pid |= found
        if self._seen_own_pid:
            return total
        # Our PIDs are hidden (containers) or not listed yet: the device's used memory.
        self.name = "nvml-device"
        return sum(self.nvml.nvmlDeviceGetMemoryInfo(h).used for h in self.handles)


def _visible_nvml_indices(nvml) -> list[int]:
    """NVML ignores CUDA_VISIBLE_DEVICES: map the visible torch devices by UUID."""
    import torch

    uuids = []
    for i in range(torch.cuda.device_count()):
        uuid = getattr(torch.cuda.get_device_properties(i), "uuid", None)
        uuids.append(str(uuid) if uuid is not None else None)
    indices = []
    for index in range(nvml.nvmlDeviceGetCount()):
        nvml_uuid = nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(index))
        nvml_uuid = nvml_uuid.decode() if isinstance(nvml_uuid, bytes) else nvml_uuid
        if any(u and nvml_uuid.endswith(u.replace("GPU-", "")) for u in uuids):
            indices.append(index)
    return indices or list(range(min(torch.cuda.device_count(), nvml.nvmlDeviceGetCount())))


class PeakMemorySampler:
    """`with PeakMemorySampler(device) as sampler: ...`; then `sampler.result()`."""

    def __init__(self, device: str = "cpu", interval_s: float | None = None, source=None):
        self.device = device
        # NVML every 10 ms; RSS every 50 ms (reading /proc competes with training on 2 cores).
        self.interval_s = interval_s or (0.01 if device.startswith("cuda") else 0.05)
        self.source = source or self._make_source(device)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)

    @staticmethod
    def _make_source(device: str):
        if device.startswith("cuda"):
            try:
                import pynvml

                pynvml.nvmlInit()
                return NvmlSource(pynvml, _visible_nvml_indices(pynvml))
            except Exception:  # no NVML (driver-less container): RSS is still honest
                return RssSource()
        return RssSource()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        try:
            self.peak = max(self.peak, self.source.read())
        except Exception:
            pass

    def __enter__(self):
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats()
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()
        return False

    def result(self) -> dict:
        out = {"peak_memory_mb": round(self.peak / MIB, 1), "memory_source": self.source.name}
        if self.device.startswith("cuda"):
            import torch

            out["torch_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / MIB, 1)
        return out
