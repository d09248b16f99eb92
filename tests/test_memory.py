"""Peak memory sampling. There is no GPU here, so NVML is a fake module object with the
calls the sampler makes; the processes it lists are real (this test process, a real child,
pids that are not ours)."""

import gc
import os
import subprocess
import sys
import time
import weakref
from types import SimpleNamespace

import psutil
import pytest

from benchmark.trial.memory import (MIB, NvmlSource, PeakMemorySampler, RssSource, _visible_nvml_indices,
                              combine_worker_peaks, release_accelerator_memory)

GIB = 1024 * MIB
# Above Linux's largest pid_max (2**22): never a live process, like a host pid NVML
# reports inside a container.
UNMATCHABLE_PID = 2 ** 22 + 1234


class FakeNvml:
    """The pynvml calls the sampler makes, over a list of devices. A device's `processes`
    is a list of (pid, bytes) or a callable returning one, for memory that changes."""

    def __init__(self, devices):
        self.devices = devices

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index):
        return self.devices[index]

    def nvmlDeviceGetUUID(self, handle):
        return handle["uuid"].encode()  # older pynvml returns bytes

    def nvmlDeviceGetName(self, handle):
        return handle.get("name", "NVIDIA H200")

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        processes = handle["processes"]
        processes = processes() if callable(processes) else processes
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in processes]

    def nvmlDeviceGetMemoryInfo(self, handle):
        processes = handle["processes"]
        processes = processes() if callable(processes) else processes
        used = handle.get("used", sum(m or 0 for _, m in processes))
        return SimpleNamespace(used=used, total=141 * GIB, free=141 * GIB - used)


def device(processes, uuid="GPU-0f3c1e2a-1111-2222-3333-444455556666", **extra):
    return {"uuid": uuid, "processes": processes, **extra}


def test_own_process_and_child_counted_foreign_process_on_the_same_gpu_not():
    foreign = 1  # init: alive, and not a descendant of this test
    listing = []
    nvml = FakeNvml([device(lambda: listing)])
    # The process list is taken now and cached for an hour: the child started below is
    # younger than the list, so it must be recognised by walking its parents.
    source = NvmlSource(nvml, [0], refresh_s=3600)
    source.sample()
    child = subprocess.Popen(["sleep", "60"])
    try:
        assert child.pid not in source.own.pids()
        listing[:] = [(os.getpid(), 1 * GIB), (child.pid, GIB // 2), (foreign, 4 * GIB)]
        source.sample()
    finally:
        child.kill()
        child.wait()
    summary = source.summary()
    assert summary["memory_source"] == "nvml-process"
    assert summary["peak_memory_mb"] == 1536.0  # ours and our child's, not the 4 GiB neighbour
    assert summary["memory_shared_device"] is True  # noted, but not counted
    assert summary["gpu_name"] == "NVIDIA H200" and summary["gpu_count"] == 1


def test_a_gpu_used_only_by_us_is_not_flagged_as_shared():
    nvml = FakeNvml([device([(os.getpid(), 2 * GIB)], used=3 * GIB)])
    source = NvmlSource(nvml, [0])
    source.sample()
    summary = source.summary()
    assert summary["memory_source"] == "nvml-process"
    assert summary["peak_memory_mb"] == 2048.0  # per-process, not the device's 3 GiB
    assert summary["memory_shared_device"] is False


def test_hidden_pids_fall_back_to_device_memory_and_say_so():
    # NVML lists no process at all: device-level used memory, sharing unknown.
    source = NvmlSource(FakeNvml([device([], used=5 * GIB)]), [0])
    source.sample()
    assert source.summary()["memory_source"] == "nvml-device"
    assert source.summary()["peak_memory_mb"] == 5120.0
    assert source.summary()["memory_shared_device"] is None

    # Host pids we cannot match, one of them surely ours: one listed pid proves nothing.
    source = NvmlSource(FakeNvml([device([(UNMATCHABLE_PID, 2 * GIB)], used=2 * GIB)]), [0])
    source.sample()
    assert source.summary()["memory_source"] == "nvml-device"
    assert source.summary()["memory_shared_device"] is None

    # Our pid listed, but its memory withheld (usedGpuMemory None): the device figure.
    source = NvmlSource(FakeNvml([device([(os.getpid(), None)], used=3 * GIB)]), [0])
    source.sample()
    assert source.summary()["memory_source"] == "nvml-device"
    assert source.summary()["peak_memory_mb"] == 3072.0

    # A driver that cannot list processes at all: the device figure, not a lost sample.
    class NoProcessList(FakeNvml):
        def nvmlDeviceGetComputeRunningProcesses(self, handle):
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")

    source = NvmlSource(NoProcessList([device([], used=4 * GIB)]), [0])
    source.sample()
    assert (source.summary()["memory_source"], source.summary()["peak_memory_mb"]) == ("nvml-device", 4096.0)

    # More unmatched pids than we have processes: someone else shares the GPU, and the
    # device-level figure includes them.
    listed = [(UNMATCHABLE_PID + i, GIB) for i in range(len(psutil.Process().children(recursive=True)) + 2)]
    source = NvmlSource(FakeNvml([device(listed)]), [0])
    source.sample()
    summary = source.summary()
    assert summary["memory_source"] == "nvml-device"
    assert summary["peak_memory_mb"] == 1024.0 * len(listed)
    assert summary["memory_shared_device"] is True


def test_device_level_samples_taken_before_our_pid_appears_do_not_leak_into_the_peak():
    # A neighbour holds 10 GiB; our process shows up in the list only from the second poll.
    polls = iter([[(1, 10 * GIB)], [(1, 10 * GIB), (os.getpid(), 3 * GIB)],
                  [(1, 10 * GIB), (os.getpid(), 2 * GIB)]])
    current = []
    source = NvmlSource(FakeNvml([device(lambda: current)]), [0])
    for listing in polls:
        current[:] = listing
        source.sample()
    assert source.summary()["memory_source"] == "nvml-process"
    assert source.summary()["peak_memory_mb"] == 3072.0


def test_uuid_mapping_follows_cuda_visible_devices_order():
    uuids = ["GPU-aaaaaaaa-0000-0000-0000-000000000000", "GPU-bbbbbbbb-0000-0000-0000-000000000000",
             "GPU-cccccccc-0000-0000-0000-000000000000", "GPU-dddddddd-0000-0000-0000-000000000000"]
    nvml = FakeNvml([device([], uuid=u) for u in uuids])
    # CUDA_VISIBLE_DEVICES=2,0: torch's cuda:0 is NVML's 2; torch reports UUIDs bare.
    assert _visible_nvml_indices(nvml, [uuids[2][4:], uuids[0][4:]]) == [2, 0]
    assert _visible_nvml_indices(nvml, [uuids[3].upper()]) == [3]
    # No UUIDs from torch: the first devices, in order.
    assert _visible_nvml_indices(nvml, [None, None]) == [0, 1]

    # The source then reads the mapped device, not NVML's device 0.
    nvml.devices[2]["processes"] = [(os.getpid(), GIB)]
    nvml.devices[0]["processes"] = [(os.getpid(), 7 * GIB)]
    source = NvmlSource(nvml, _visible_nvml_indices(nvml, [uuids[2][4:]]))
    source.sample()
    assert source.summary()["peak_memory_mb"] == 1024.0
    assert source.summary()["gpu_uuids"] == [uuids[2]]


def test_sampler_polls_about_every_10_ms_and_keeps_the_maximum_of_a_changing_series():
    assert PeakMemorySampler("cuda", source=RssSource()).interval_s == 0.01
    # Our memory climbs to 6 GiB for 60 ms, then drops back: only a fast poll sees it.
    start = time.monotonic()

    def ours():
        elapsed = time.monotonic() - start
        used = 6 * GIB if 0.15 <= elapsed < 0.21 else (1 + int(elapsed * 10) % 3) * GIB
        return [(os.getpid(), used), (1, 20 * GIB)]

    source = NvmlSource(FakeNvml([device(ours)]), [0])
    with PeakMemorySampler("cpu", interval_s=0.01, source=source) as sampler:
        time.sleep(0.4)
    assert sampler.samples >= 15  # 40 at 10 ms; lenient for a busy 2-core machine
    result = sampler.result()
    assert result["peak_memory_mb"] == 6144.0
    assert result["memory_source"] == "nvml-process" and result["memory_shared_device"] is True


def test_combine_worker_peaks_sums_workers_and_counts_each_gpu_once():
    a = {"peak_memory_mb": 1000.0, "memory_source": "nvml-process", "memory_shared_device": False,
         "torch_peak_allocated_mb": 800.0, "gpu_name": "NVIDIA H200", "gpu_count": 1,
         "gpu_uuids": ["GPU-a"]}
    b = {**a, "peak_memory_mb": 1500.5, "torch_peak_allocated_mb": 900.0, "gpu_uuids": ["GPU-b"]}
    combined = combine_worker_peaks([a, b])
    assert combined["peak_memory_mb"] == 2500.5
    assert combined["peak_memory_mb_max_worker"] == 1500.5
    assert combined["memory_workers"] == 2
    assert combined["torch_peak_allocated_mb"] == 1700.0
    assert combined["torch_peak_allocated_mb_max_worker"] == 900.0
    assert combined["gpu_count"] == 2 and combined["gpu_name"] == "NVIDIA H200"
    assert combined["memory_source"] == "nvml-process"
    assert combined["memory_shared_device"] is False

    # Two workers on one (fractional) GPU, one of them with hidden pids.
    c = {**b, "gpu_uuids": ["GPU-a"], "memory_source": "nvml-device", "memory_shared_device": None}
    combined = combine_worker_peaks([a, c])
    assert combined["gpu_count"] == 1
    assert combined["memory_source"] == "nvml-device+nvml-process"
    assert combined["memory_shared_device"] is None
    assert combine_worker_peaks([a, {**c, "memory_shared_device": True}])["memory_shared_device"] is True

    cpu = combine_worker_peaks([{"peak_memory_mb": 300.0, "memory_source": "rss"}] * 3)
    assert cpu == {"peak_memory_mb": 900.0, "peak_memory_mb_max_worker": 300.0,
                   "memory_workers": 3, "memory_source": "rss"}
    with pytest.raises(ValueError):
        combine_worker_peaks([])


def test_rss_counts_a_child_process_memory():
    allocate = ("import sys, time; block = bytearray(300 * 1024 * 1024); "
                "block[::4096] = b'x' * len(block[::4096]); print('ready', flush=True); time.sleep(60)")
    own_before = psutil.Process().memory_info().rss
    child = subprocess.Popen([sys.executable, "-c", allocate], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        source = RssSource(refresh_s=0)
        source.sample()
        summary = source.summary()
    finally:
        child.kill()
        child.wait()
    assert summary["memory_source"] == "rss"
    assert summary["peak_memory_mb"] * MIB >= own_before + 250 * MIB


def test_release_accelerator_memory_collects_garbage_cycles():
    class Holder:
        pass

    gc.disable()  # only the call under test may collect
    try:
        holder = Holder()
        holder.self = holder
        alive = weakref.ref(holder)
        del holder
        assert alive() is not None
        release_accelerator_memory()  # on a CPU: collect, and no CUDA call
        assert alive() is None
    finally:
        gc.enable()
