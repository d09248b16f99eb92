"""Peak memory of a trial, sampled in a background thread.

On a GPU: the device memory NVML reports for this process and its children, polled about
every 10 ms, next to torch's own allocator peak. Only our process ids are counted, so
trials sharing one GPU (fractional GPUs) never see each other's memory. Where NVML hides
process ids (many containers list host pids, or none), the figure falls back to the
device's used memory and says so: `memory_source: nvml-device`, with
`memory_shared_device` telling whether other processes were seen on the device (then the
figure includes theirs). On a CPU: the peak resident set size of this process and its
children, polled the same way.

A multi-worker trial runs one sampler per worker and merges them with
`combine_worker_peaks`; `release_accelerator_memory` gives a finished (or stopped) trial's
cached GPU memory back before the next trial starts on that GPU.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
import time
from typing import Any, Iterable

import psutil

MIB = 1024 * 1024


class _OwnProcesses:
    """This process and its descendants. Listing children scans all of /proc, so the list
    is refreshed at most every `refresh_s`; a pid NVML names that is not in the list yet
    (a child younger than the list) is checked by walking its parents, once."""

    def __init__(self, refresh_s: float = 1.0):
        self.me = psutil.Process()
        self.refresh_s = refresh_s
        self._children: list[psutil.Process] = []
        self._listed_at = -float("inf")
        self._foreign: set[int] = set()  # pids checked and found not ours, until the next listing

    def processes(self) -> list[psutil.Process]:
        now = time.monotonic()
        if now - self._listed_at >= self.refresh_s:
            try:
                self._children = self.me.children(recursive=True)
            except psutil.Error:
                self._children = []
            self._foreign.clear()
            self._listed_at = now
        return [self.me, *self._children]

    def pids(self) -> set[int]:
        return {p.pid for p in self.processes()}

    def owns(self, pid: int, known: set[int]) -> bool:
        """Whether pid is ours; `known` is the current pids() (passed in to list once per poll)."""
        if pid in known:
            return True
        if pid in self._foreign:
            return False
        try:
            process = psutil.Process(pid)
            ours = any(parent.pid == self.me.pid for parent in process.parents())
        except psutil.Error:  # gone, or a pid from another namespace (containers)
            ours = False
        if ours:
            self._children.append(process)
        else:
            self._foreign.add(pid)
        return ours


class RssSource:
    """Resident memory of this process and its children."""

    name = "rss"

    def __init__(self, refresh_s: float = 1.0):
        self.own = _OwnProcesses(refresh_s)
        self.peak = 0

    def read(self) -> int:
        total = 0
        for process in self.own.processes():
            try:
                total += process.memory_info().rss
            except psutil.Error:
                pass
        return total

    def sample(self) -> None:
        self.peak = max(self.peak, self.read())

    def summary(self) -> dict[str, Any]:
        return {"peak_memory_mb": round(self.peak / MIB, 1), "memory_source": self.name}


class NvmlSource:
    """Device memory of our processes on the given NVML devices.

    Two peaks are kept side by side at every poll: our processes' memory, and the devices'
    used memory. The summary reports the first once NVML has ever listed one of our pids
    with its memory, else the second (pids or their memory hidden), so the two never mix
    in one figure.
    """

    def __init__(self, nvml, device_indices: list[int], refresh_s: float = 1.0):
        self.nvml = nvml
        self.handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in device_indices]
        self.own = _OwnProcesses(refresh_s)
        self.peak_process = 0
        self.peak_device = 0
        self.seen_own_pid = False
        self.seen_foreign_pid = False
        self.listed_pids: set[int] = set()  # every pid NVML listed on our devices
        self.most_own = 1  # the most processes our tree had at one poll

    @property
    def name(self) -> str:
        return "nvml-process" if self.seen_own_pid else "nvml-device"

    def sample(self) -> None:
        known = self.own.pids()
        self.most_own = max(self.most_own, len(known))
        ours = device_used = 0
        for handle in self.handles:
            try:
                processes = self.nvml.nvmlDeviceGetComputeRunningProcesses(handle)
            except Exception:  # not supported (some vGPU / MIG setups): as if pids were hidden
                processes = []
            for proc in processes:
                self.listed_pids.add(proc.pid)
                if not self.own.owns(proc.pid, known):
                    self.seen_foreign_pid = True
                elif proc.usedGpuMemory is not None:  # None: the driver withholds it
                    self.seen_own_pid = True
                    ours += proc.usedGpuMemory
            device_used += self.nvml.nvmlDeviceGetMemoryInfo(handle).used
        self.peak_process = max(self.peak_process, ours)
        self.peak_device = max(self.peak_device, device_used)

    def shared_device(self) -> bool | None:
        """Whether other processes used our devices: True or False where NVML shows our
        pids; where it hides them, True when it proves others were there, else None
        (cannot tell)."""
        if self.seen_own_pid:
            return self.seen_foreign_pid
        # Pids hidden: our own processes are listed under pids we cannot match, so only
        # more listed pids than we have processes proves that someone else is there.
        return True if len(self.listed_pids) > self.most_own else None

    def gpu_names(self) -> list[str]:
        return [_text(self.nvml.nvmlDeviceGetName(h)) for h in self.handles]

    def gpu_uuids(self) -> list[str]:
        return [_text(self.nvml.nvmlDeviceGetUUID(h)) for h in self.handles]

    def summary(self) -> dict[str, Any]:
        peak = self.peak_process if self.seen_own_pid else self.peak_device
        names = sorted(set(self.gpu_names()))
        return {"peak_memory_mb": round(peak / MIB, 1), "memory_source": self.name,
                "memory_shared_device": self.shared_device(),
                "gpu_name": ", ".join(names), "gpu_count": len(self.handles),
                "gpu_uuids": self.gpu_uuids()}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bare_uuid(uuid: str) -> str:
    """NVML says 'GPU-5c4b...', torch says '5c4b...': compare the hex part only."""
    uuid = uuid.strip().lower()
    for prefix in ("gpu-", "mig-"):
        if uuid.startswith(prefix):
            return uuid[len(prefix):]
    return uuid


def torch_device_uuids() -> list[str | None]:
    """The UUID of every device torch sees, in torch's (CUDA_VISIBLE_DEVICES) order."""
    import torch

    uuids = []
    for i in range(torch.cuda.device_count()):
        uuid = getattr(torch.cuda.get_device_properties(i), "uuid", None)
        uuids.append(str(uuid) if uuid is not None else None)
    return uuids


def _visible_nvml_indices(nvml, torch_uuids: list[str | None]) -> list[int]:
    """NVML numbers every GPU of the machine and ignores CUDA_VISIBLE_DEVICES: find the
    NVML index of each device torch sees by UUID, in torch's order."""
    by_uuid = {}
    for index in range(nvml.nvmlDeviceGetCount()):
        uuid = _text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(index)))
        by_uuid[_bare_uuid(uuid)] = index
    indices = [by_uuid[_bare_uuid(u)] for u in torch_uuids if u and _bare_uuid(u) in by_uuid]
    if len(indices) == len(torch_uuids):
        return indices
    # UUIDs unavailable (old torch): trust the order, as CUDA does without a mask.
    return list(range(min(len(torch_uuids), nvml.nvmlDeviceGetCount())))


class PeakMemorySampler:
    """`with PeakMemorySampler(device) as sampler: ...`; then `sampler.result()`.

    Polls in a daemon thread: NVML calls release the GIL, and the process list behind them
    is refreshed once a second, so training is not slowed."""

    def __init__(self, device: str = "cpu", interval_s: float | None = None, source=None):
        self.device = device
        # NVML every 10 ms; RSS every 50 ms (reading /proc competes with training on 2 cores).
        self.interval_s = interval_s or (0.01 if device.startswith("cuda") else 0.05)
        self.source = source or self._make_source(device)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)

    @staticmethod
    def _make_source(device: str):
        if device.startswith("cuda"):
            try:
                import pynvml

                pynvml.nvmlInit()
                return NvmlSource(pynvml, _visible_nvml_indices(pynvml, torch_device_uuids()))
            except Exception:  # no NVML (driver-less container): RSS is still honest
                return RssSource()
        return RssSource()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        try:
            self.source.sample()
            self.samples += 1
        except Exception:  # a transient NVML / psutil error loses one sample, not the trial
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

    def result(self) -> dict[str, Any]:
        out = self.source.summary()
        if self.device.startswith("cuda"):
            import torch

            out["torch_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / MIB, 1)
        return out


def combine_worker_peaks(results: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One trial's memory from the `result()` of each of its workers.

    `peak_memory_mb` is the sum of the workers' peaks: an upper bound of the total at any
    one moment (the workers need not peak together), and exact for the usual case of
    identical data-parallel workers that peak at the same step. `peak_memory_mb_max_worker`
    is the largest single worker. GPUs are counted once by UUID, so workers sharing a GPU
    do not count it twice.
    """
    results = list(results)
    if not results:
        raise ValueError("combine_worker_peaks needs at least one worker's result")
    peaks = [r["peak_memory_mb"] for r in results]
    sources = sorted({r["memory_source"] for r in results})
    out: dict[str, Any] = {"peak_memory_mb": round(sum(peaks), 1),
                           "peak_memory_mb_max_worker": max(peaks),
                           "memory_workers": len(results),
                           "memory_source": "+".join(sources)}
    torch_peaks = [r["torch_peak_allocated_mb"] for r in results if "torch_peak_allocated_mb" in r]
    if torch_peaks:
        out["torch_peak_allocated_mb"] = round(sum(torch_peaks), 1)
        out["torch_peak_allocated_mb_max_worker"] = max(torch_peaks)
    shared = [r["memory_shared_device"] for r in results if "memory_shared_device" in r]
    if shared:  # True if any worker saw others; None (unknown) beats False
        out["memory_shared_device"] = (True if True in shared
                                       else None if None in shared else False)
    uuids = [u for r in results for u in r.get("gpu_uuids", [])]
    if uuids:
        out["gpu_uuids"] = sorted(set(uuids))
        out["gpu_count"] = len(out["gpu_uuids"])
        out["gpu_name"] = ", ".join(sorted({n for r in results
                                            for n in r.get("gpu_name", "").split(", ") if n}))
    return out


def release_accelerator_memory() -> None:
    """Give a trial's cached GPU memory back to the device (call in a `finally` when a trial
    ends or is stopped early), so the next trial on that GPU does not run out of memory.
    Garbage is collected first: cycles can hold tensors. A no-op for CUDA on a CPU."""
    gc.collect()
    torch = sys.modules.get("torch")  # never import torch (or start CUDA) just to free nothing
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.ipc_collect()  # memory other processes received through CUDA IPC


# -- tensor memory by category ----------------------------------------------------------------
CATEGORIES = ("parameters", "buffers", "gradients", "activations", "temporaries",
              "optimizer_state", "other")
# MemTracker's reference types -> our category names.
_CATEGORY_OF = {"Parameter": "parameters", "Buffer": "buffers", "Gradient": "gradients",
                "Activation": "activations", "Temp": "temporaries", "Optstate": "optimizer_state",
                "Other": "other"}


def tensor_tracker():
    """torch's MemTracker, adapted to training with frozen parameters: it hooks the gradient
    of trainable parameters only (a frozen one cannot take a hook), keeps the global peak
    only (not every module's, which costs a pass over all modules per operation), and
    records in which phase (forward, backward, optimizer) the peak occurred."""
    from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType

    total_key = "Total"

    class TrainingMemTracker(MemTracker):
        peak_phase = "none"

        def _track_module_params_and_buffers(self, module, install_grad_hooks=True):
            out = super()._track_module_params_and_buffers(module, install_grad_hooks=False)
            if install_grad_hooks:
                for param in module.parameters():
                    if not param.requires_grad or self._param_to_grad_hook_handles.get(param):
                        continue

                    def grad_hook(grad):
                        self._update_and_maybe_create_winfos(grad, _MemRefType.GRAD)

                    self._param_to_grad_hook_handles[param] = (
                        param.register_hook(grad_hook),
                        param.register_post_accumulate_grad_hook(lambda p: grad_hook(p.grad)))
            return out

        def _update_peak_stats(self, peak_state) -> None:
            for dev, snap in self._curr_mem_snap.items():
                if self._peak_mem.get(dev, 0) < snap[total_key]:
                    self._peak_mem[dev] = snap[total_key]
                    self._peak_mem_snap[dev] = dict(snap)
                    self.peak_phase = ("optimizer" if self._in_opt else
                                       "backward" if self._mod_tracker.is_bw else "forward")

        def categories(self, which: str = "peak") -> dict[str, int]:
            snap = self._peak_mem_snap if which == "peak" else self._curr_mem_snap
            out = dict.fromkeys(CATEGORIES, 0)
            for dev_snap in snap.values():
                for key, value in dev_snap.items():
                    name = getattr(key, "value", key)
                    if name in _CATEGORY_OF:
                        out[_CATEGORY_OF[name]] += value
            return out

    return TrainingMemTracker()


class TensorMemory:
    """Peak live tensor memory of a trial by category, tracked on a few steps (torch's
    MemTracker slows a step down: tracking all of them would cost the trial's speed).

    The tracked steps are the third (optimizer state exists from the second on) and the
    last (the most optimizer state a strategy that keeps it for frozen blocks holds). Layer-wise
    strategies change blocks between steps, so the peak is that of these steps, not of
    every step: `tensor_tracked_steps` says which. Not under DeepSpeed (it shards and
    flattens the tensors itself)."""

    def __init__(self, max_steps: int, enabled: bool = True):
        # the third step (state exists from the second on; the second is the untracked step
        # its overhead is measured against) and the last
        self.steps = sorted({min(2, max_steps - 1), max_steps - 1}) if enabled else []
        self.peak: dict[str, int] | None = None
        self.peak_step: int | None = None
        self.phase = None
        self.seconds = 0.0  # wall seconds of the tracked steps
        self.extra_s = 0.0  # what tracking added to them (over the untracked step before)
        self.extra_cpu_s = 0.0
        self._last = (0.0, 0.0)  # the last untracked step's (wall, CPU) seconds
        self._overhead: dict[int, tuple[float, float]] = {}

    @contextlib.contextmanager
    def track(self, step: int, model, optimizer):
        wall, cpu = time.perf_counter(), time.process_time()
        if step not in self.steps:
            yield
            self._last = (time.perf_counter() - wall, time.process_time() - cpu)
            return
        tracker = tensor_tracker()
        tracker.track_external(model, optimizer)
        with tracker:
            yield
        categories = tracker.categories("peak")
        if self.peak is None or sum(categories.values()) > sum(self.peak.values()):
            self.peak, self.peak_step, self.phase = categories, step + 1, tracker.peak_phase
        spent = (time.perf_counter() - wall, time.process_time() - cpu)
        self.seconds += spent[0]
        # the first step (warm-up) is no measure of an untracked step: no overhead known there
        self._overhead[step] = tuple(max(0.0, s - last) if any(self._last) else 0.0
                                     for s, last in zip(spent, self._last))
        self.extra_s += self._overhead[step][0]
        self.extra_cpu_s += self._overhead[step][1]

    def overhead(self, step: int) -> tuple[float, float]:
        """(wall, CPU) seconds that tracking added to this step, to leave out of its time."""
        return self._overhead.get(step, (0.0, 0.0))

    def result(self) -> dict[str, Any]:
        if self.peak is None:
            return {}
        return {"tensor_peak_mb": round(sum(self.peak.values()) / MIB, 1),
                "tensor_peak_by_category_mb": {k: round(v / MIB, 1) for k, v in self.peak.items()},
                "tensor_peak_step": self.peak_step, "tensor_peak_phase": self.phase,
                "tensor_tracked_steps": [s + 1 for s in self.steps],
                "tensor_tracked_steps_s": round(self.seconds, 2),
                "tensor_tracking_overhead_s": round(self.extra_s, 2),
                "tensor_tracking_overhead_cpu_s": round(self.extra_cpu_s, 2)}
