"""Candidates at once: a round's branches train concurrently, one killed job fails alone, and the same jobs run
as Ray tasks on a local Ray instance. Real graph, real sandboxed children, real scorer (Java), CPU only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capnas.graph.journal import Journal

pytestmark = pytest.mark.slow

SMALL = {"dataset": "shapes:200", "image_size": 32, "max_latency_ms": 10_000, "generation": "random"}


def _pids_in(path: Path) -> list[int]:
    """Processes whose command line names `path` (a candidate's sandboxed job runs from its job dir)."""
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(path) in cmdline:
                pids.append(int(pid))
    return pids


def test_killing_one_training_job_fails_that_candidate_and_the_run_goes_on(tmp_path: Path) -> None:
    ws, run_id = tmp_path / "ws", "killone"
    victim = ws / "runs" / run_id / f"{run_id}-r000-1"
    argv = [sys.executable, "-m", "capnas", "run", "--run-id", run_id, "--run-dir", str(ws), "--json", "--no-report",
            "--concurrency", "2", "--max-candidates", "2", "--epochs", "20", "--train-time-s", "25", "--time-budget", "10",
            "--seed", "11", "--max-params", "50000000",  # seed 11 draws two small_cnn + gru candidates: both valid
            *[f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed: list[int] = []
    deadline = time.monotonic() + 300
    while not killed and proc.poll() is None and time.monotonic() < deadline:
        if (victim / "job" / "checkpoint.pt").exists() or (victim / "scores.json").exists():
            killed = _pids_in(victim)  # it has trained an epoch: kill every process of that one job
            for pid in killed:
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    out, err = proc.communicate(timeout=600)
    assert killed, f"the second job never trained an epoch to kill it at: {err[-3000:]}"
    assert proc.returncode == 0, err[-3000:]

    summary = json.loads(out)
    assert summary["status"] == "finished" and summary["candidates"] == 2
    cands = {c.candidate_id: c for c in Journal(ws / "journal.sqlite").candidates(run_id)}
    assert cands[f"{run_id}-r000-1"].status == "failed"
    assert cands[f"{run_id}-r000-1"].exit_reason.startswith("signal_")  # how it ended, in the journal
    assert cands[f"{run_id}-r000"].status == "trained" and cands[f"{run_id}-r000"].metrics["cider"] >= 0


def test_the_ray_executor_runs_the_same_jobs_as_ray_tasks(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    import ray

    from capnas import runner
    from capnas.graph.context import Context
    from capnas.tools.task import Budgets, Task

    # Families named by the task bind random draws too: two small_cnn + gru candidates, quick and valid.
    task = Task(dataset=SMALL["dataset"], image_size=32, max_latency_ms=10_000, max_params=50_000_000,
                families=["small_cnn", "gru"], budgets=Budgets(max_candidates=2, epochs=1, train_time_s=20)).model_dump()
    ctx = Context(run_dir=str(tmp_path / "ws"), generation="random", threads=1, concurrency=2, executor="ray", seed=1)
    events: list[dict] = []
    try:
        summary = runner.start(ctx, task, run_id="onray", on_event=events.append)
    finally:
        ray.shutdown()

    assert summary["status"] == "finished" and summary["candidates"] == 2
    # Both training jobs ran inside a Ray worker, not in this process.
    on_ray = [e for e in events if e.get("phase") == "ray_task"]
    assert len(on_ray) == 2 and all(e["pid"] != os.getpid() for e in on_ray)
    cands = Journal(tmp_path / "ws" / "journal.sqlite").candidates("onray")
    assert [c.status for c in cands] == ["trained", "trained"]
    assert all(c.metrics["cider"] >= 0 and c.curve for c in cands)  # scored here, in the driver, from their ids
