"""Admission of sandboxed jobs on one machine: CPU slots (cores) and GPU slots (memory).

The candidates of a round are validated and trained at once (one graph branch each); every branch asks
`Slots.job(...)` before it starts a sandboxed job and holds its slot until the job ends. A CPU job takes as many
cores as its torch threads. A GPU job takes one core and an estimate of the GPU memory it needs on the GPU with
the most room left, so several small models share one GPU and a large one waits for room. The estimate is
deliberately simple (`estimate_gpu_mb`): when it is wrong the job fails alone with `oom_killed` or a CUDA error,
recorded like any other failed candidate.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# CUDA context, allocator slack and cuDNN workspaces: what an empty training process already holds on the GPU.
GPU_BASE_MB = 1024
# Activations per image in a batch, for the small caption nets of the search space at <= 224 px.
GPU_PER_IMAGE_MB = 24


def cpu_count() -> int:
    """Cores this process may use (its affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def job_threads(threads: int | None, concurrency: int) -> int | None:
    """torch threads per job: as asked, else the cores shared evenly by the jobs of a round (None: torch's
    default, which is one per core, when jobs run one at a time)."""
    if threads is not None or concurrency <= 1:
        return threads
    return max(1, cpu_count() // concurrency)


def estimate_gpu_mb(params: int | None, batch_size: int) -> int:
    """GPU memory of a training job: fp32 weights, gradients and two AdamW moments (16 bytes per parameter),
    activations for one batch, and the fixed cost of a CUDA process."""
    return int(GPU_BASE_MB + 16 * (params or 0) / 2**20 + GPU_PER_IMAGE_MB * batch_size)


def gpu_memory_mb() -> dict[int, int]:
    """Total memory of each visible GPU in MiB (empty without CUDA). Reads device properties only: no CUDA
    context is created in this process."""
    try:
        import torch
    except ImportError:
        return {}
    if not torch.cuda.is_available():
        return {}
    return {i: torch.cuda.get_device_properties(i).total_memory // 2**20 for i in range(torch.cuda.device_count())}


class Slots:
    """Counts of free cores and free GPU memory; `job()` waits until a job fits, then holds its share."""

    def __init__(self, cpus: int, gpu_mb: dict[int, int] | None = None, gpu_headroom: float = 0.9):
        self.cpus_total = max(1, cpus)
        self.cpus_free = self.cpus_total
        # Keep some of each GPU back: the driver, fragmentation, a neighbour's spike.
        self.gpu_total = {i: int(mb * gpu_headroom) for i, mb in (gpu_mb or {}).items()}
        self.gpu_free = dict(self.gpu_total)
        self._changed = threading.Condition()

    @classmethod
    def for_machine(cls, device: str) -> Slots:
        return cls(cpu_count(), gpu_memory_mb() if device.startswith("cuda") else {})

    @contextmanager
    def job(self, device: str, threads: int | None = None, gpu_mb: int = 0) -> Iterator[str]:
        """Hold a slot for one job; yields the device to run it on ('cpu', or 'cuda:N' for the GPU chosen).
        A request larger than the machine is granted alone (waiting would never end): the job then fails or
        succeeds on its own."""
        cores = 1 if device.startswith("cuda") else min(threads or self.cpus_total, self.cpus_total)
        with self._changed:
            _, gpu = self._changed.wait_for(lambda: self._fits(device, cores, gpu_mb))
            self.cpus_free -= cores
            if gpu is not None:
                self.gpu_free[gpu] -= gpu_mb
        try:
            yield device if gpu is None else f"cuda:{gpu}"
        finally:
            with self._changed:
                self.cpus_free += cores
                if gpu is not None:
                    self.gpu_free[gpu] += gpu_mb
                self._changed.notify_all()

    def _fits(self, device: str, cores: int, gpu_mb: int) -> tuple[bool, int | None] | None:
        """(True, the GPU index or None) when the job fits now; None while it must wait."""
        idle = self.cpus_free == self.cpus_total and self.gpu_free == self.gpu_total
        if self.cpus_free < cores and not idle:
            return None
        if not device.startswith("cuda") or not self.gpu_total:  # CPU; or no GPU seen from here (Ray places it)
            return True, None
        wanted = int(device.split(":")[1]) if ":" in device else None
        gpus = [wanted] if wanted is not None else sorted(self.gpu_free, key=self.gpu_free.get, reverse=True)
        for i in gpus:
            alone = self.gpu_free.get(i) == self.gpu_total.get(i)  # nothing else on it: grant even a large job
            if i in self.gpu_free and (self.gpu_free[i] >= gpu_mb or alone):
                return True, i
        return None
