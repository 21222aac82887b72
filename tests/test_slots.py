"""The slot scheduler: CPU jobs share cores, GPU jobs share memory; a job that cannot fit waits, never fails."""

from __future__ import annotations

import threading
import time

import pytest

from capnas.tools.jobs.slots import Slots, estimate_gpu_mb, job_threads


def _hold(slots: Slots, device: str, log: list, name: str, seconds: float, **kw) -> threading.Thread:
    def run() -> None:
        with slots.job(device, **kw) as got:
            log.append(("start", name, got, time.monotonic()))
            time.sleep(seconds)
            log.append(("end", name, got, time.monotonic()))

    t = threading.Thread(target=run)
    t.start()
    return t


def test_cpu_jobs_wait_for_cores() -> None:
    slots, log = Slots(cpus=2), []
    threads = [_hold(slots, "cpu", log, name, 0.3, threads=1) for name in "abc"]
    for t in threads:
        t.join()
    starts = sorted(e[3] for e in log if e[0] == "start")
    ends = sorted(e[3] for e in log if e[0] == "end")
    assert starts[1] - starts[0] < 0.2  # two fit at once
    assert starts[2] >= ends[0] - 0.01  # the third waited for a core
    assert slots.cpus_free == 2


def test_small_gpu_jobs_share_a_gpu_and_a_large_one_waits_for_room() -> None:
    slots, log = Slots(cpus=8, gpu_mb={0: 10_000}, gpu_headroom=1.0), []
    small = [_hold(slots, "cuda", log, f"s{i}", 0.3, gpu_mb=3_000) for i in range(3)]
    time.sleep(0.05)
    large = _hold(slots, "cuda", log, "large", 0.05, gpu_mb=5_000)
    for t in [*small, large]:
        t.join()
    first = {e[1]: e[3] for e in log if e[0] == "start"}
    assert max(first[f"s{i}"] for i in range(3)) - min(first[f"s{i}"] for i in range(3)) < 0.2  # 9 GB of 10: together
    assert first["large"] >= min(e[3] for e in log if e[0] == "end" and e[1].startswith("s")) - 0.01
    assert {e[2] for e in log} == {"cuda:0"} and slots.gpu_free == {0: 10_000}


def test_gpu_jobs_go_to_the_gpu_with_most_room() -> None:
    slots = Slots(cpus=4, gpu_mb={0: 8_000, 1: 16_000}, gpu_headroom=1.0)
    with slots.job("cuda", gpu_mb=10_000) as first, slots.job("cuda", gpu_mb=4_000) as second:
        assert (first, second) == ("cuda:1", "cuda:0")


def test_a_job_larger_than_the_machine_runs_alone_instead_of_waiting_forever() -> None:
    slots = Slots(cpus=2, gpu_mb={0: 1_000}, gpu_headroom=1.0)
    with slots.job("cuda", gpu_mb=50_000) as got:
        assert got == "cuda:0"
    with slots.job("cpu", threads=16):
        assert slots.cpus_free == 0


@pytest.mark.parametrize(("threads", "concurrency", "cores", "expected"), [
    (None, 1, 8, None),  # one job at a time: torch's default
    (None, 4, 8, 2),
    (None, 4, 2, 1),  # never zero
    (3, 4, 8, 3),  # asked for explicitly
])
def test_threads_per_job_share_the_cores(monkeypatch, threads, concurrency, cores, expected) -> None:
    monkeypatch.setattr("capnas.tools.jobs.slots.cpu_count", lambda: cores)
    assert job_threads(threads, concurrency) == expected


def test_gpu_estimate_grows_with_parameters_and_batch() -> None:
    assert estimate_gpu_mb(1_000_000, 32) < estimate_gpu_mb(10_000_000, 32) < estimate_gpu_mb(10_000_000, 128)
    assert estimate_gpu_mb(None, 32) > 1000
