"""Where sandboxed jobs run: `run_local` starts the sandbox as a child process here; `RayRunner` runs the very
same call (`run_sandboxed`) as a Ray task, on an existing cluster or a local Ray instance.

Both are `JobRunner`s: `runner(job, on_event) -> SandboxResult`. The journal, the scoring and every decision stay
in the driver; a Ray task only runs the sandbox and streams its events back through a Ray queue. The job's
scratch and data directories are paths, so on a multi-node cluster the workspace and the prepared-data cache
must be on a filesystem every node mounts at the same path (a local instance shares this machine's).

A `RayRunner` that started a local instance stops it, every process of it, when this process exits; one that
connected to a cluster at `address` only disconnects. Ray's driver-side warnings go to the log, not stderr.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from capnas.sandbox import Job, SandboxResult, run_sandboxed

EventCallback = Callable[[dict[str, Any]], None]
JobRunner = Callable[[Job, EventCallback | None], SandboxResult]


def run_local(job: Job, on_event: EventCallback | None = None) -> SandboxResult:
    return run_sandboxed(job, on_event=on_event)


def _run_on_worker(job: Job, events) -> SandboxResult:
    """The Ray task's body, on whichever node Ray chose. Ray gives a GPU task its own CUDA_VISIBLE_DEVICES; the
    sandbox clears the environment, so the job is pointed at that physical GPU by index."""
    import ray

    if job.device.startswith("cuda"):
        ids = ray.get_gpu_ids()
        if ids:
            job = job.model_copy(update={"device": f"cuda:{ids[0]}"})
    # Where it ran, for the driver's log and the journal (the harness's own events follow).
    events.put({"event": "ray_task", "node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "device": job.device})
    return run_sandboxed(job, on_event=events.put)


class RayRunner:
    """Runs sandboxed jobs as Ray tasks. `address` names an existing cluster (None: start a local instance with
    this machine's cores). A job asks Ray for its torch threads as CPUs and `gpu_share` of a GPU when it runs on
    CUDA, so Ray packs 1/gpu_share jobs on each GPU."""

    def __init__(self, address: str | None = None, gpu_share: float = 1.0, num_cpus: int | None = None):
        self.address, self.gpu_share, self.num_cpus = address, gpu_share, num_cpus
        self._lock = threading.Lock()
        self._remote = None
        self._connected = False  # whether this runner called ray.init (and so owes the ray.shutdown)
        self._processes: set[tuple[int, str]] = set()  # (pid, start time) of the local instance it started

    def _ray(self):
        import ray

        with self._lock:
            if not ray.is_initialized():
                _ray_logs_to_the_log()
                if self.address is None:  # a local instance reports nothing to Ray's usage service (unless asked)
                    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                # No address: a new local instance ("local"), never the cluster Ray would otherwise look up in
                # $RAY_ADDRESS or /tmp/ray/ray_current_cluster (a stopped `ray start` leaves that file behind,
                # and ray.init then waits on a dead cluster). --ray-address is the way to join one.
                ray.init(address=self.address or "local", num_cpus=None if self.address else self.num_cpus,
                         include_dashboard=False, log_to_driver=False, configure_logging=False)
                self._connected = True
                atexit.register(self.shutdown)  # runs before Ray's own exit hook (registered at import)
            if self._remote is None:
                self._remote = ray.remote(max_retries=0)(_run_on_worker)
            if self._connected:
                # Again at every job: the raylet starts its agents and workers after ray.init returns.
                self._processes |= _local_instance_processes()
        return ray

    def shutdown(self) -> None:
        """Disconnect, and stop every process of the local instance this runner started (nothing when it joined
        a cluster at `address`, nor when someone else had initialized Ray). Ray's own shutdown stops the raylet
        and the GCS, but the raylet's agents (DashboardAgent, RuntimeEnvAgent) only notice a minute later."""
        import ray

        with self._lock:
            if not self._connected:
                return
            self._connected = False
            self._processes |= _local_instance_processes()
            try:
                ray.shutdown(wait_for_processes=True)
            except TypeError:  # an older Ray: no waiting; _stop below still ends what is left
                ray.shutdown()
            _stop(self._processes)
            self._processes = set()
        atexit.unregister(self.shutdown)

    def __call__(self, job: Job, on_event: EventCallback | None = None) -> SandboxResult:
        ray = self._ray()
        from ray.util.queue import Queue

        events = Queue()
        threads = int(job.args.get("threads") or 1)
        gpus = self.gpu_share if job.device.startswith("cuda") else 0
        started = time.monotonic()
        ref = self._remote.options(num_cpus=threads, num_gpus=gpus).remote(job, events)
        try:
            while True:
                done, _ = ray.wait([ref], timeout=0.2)
                self._forward(events, on_event)
                if done:
                    break
            self._forward(events, on_event)
            return ray.get(ref)
        except ray.exceptions.RayError as err:  # the worker (or its node) died: this job failed, the run goes on
            return SandboxResult(exit_reason="ray_worker_lost", duration_s=round(time.monotonic() - started, 2),
                                 stderr_tail=f"{type(err).__name__}: {str(err)[:2000]}", tier="ray")
        finally:
            events.shutdown()

    @staticmethod
    def _forward(events, on_event: EventCallback | None) -> None:
        from ray.util.queue import Empty

        while True:
            try:
                batch = events.get_nowait_batch(max(1, events.qsize()))
            except Empty:
                return
            if not batch:
                return
            for event in batch:
                if on_event is not None:
                    on_event(event)


def _ray_logs_to_the_log() -> None:
    """Ray's driver-side records (e.g. 'SIGTERM handler is not set', the token-authentication notice) go to this
    process's log. Ray gives its logger a stderr handler and stops propagation; `ray.init(configure_logging=False)`
    drops the handler but keeps the stop, so its records would fall through to logging's last resort: stderr."""
    ray_logger = logging.getLogger("ray")
    ray_logger.handlers.clear()
    ray_logger.propagate = True


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (/proc/PID/stat field 22): with the pid, names one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return None if fields[0] == "Z" else fields[19]  # a zombie is gone already


def _local_instance_processes() -> set[tuple[int, str]]:
    """The processes of the Ray instance this driver started (GCS, raylet, ...) and all their descendants: the
    raylet's agents and workers. Empty when the driver only connected to a cluster (Ray started nothing here)."""
    from ray._private import worker  # where ray.init keeps the node it started; no public API says this

    node = worker._global_node
    roots = [info.process.pid for infos in (node.all_processes.values() if node else []) for info in infos
             if info.process is not None]
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rfind(")") + 2:].split()[1]), []).append(int(entry.name))
    found: set[tuple[int, str]] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        start = _start_time(pid)
        if start is not None and (pid, start) not in found:
            found.add((pid, start))
            todo += children.get(pid, [])
    return found


def _stop(processes: set[tuple[int, str]], grace_s: float = 3.0) -> None:
    """SIGTERM the processes still alive (the same pid and start time), then SIGKILL whatever outlives grace_s."""
    def alive() -> list[int]:
        return [pid for pid, start in processes if _start_time(pid) == start]

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive():
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace_s
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)


def runner_for(executor: str, ray_address: str | None = None, concurrency: int = 1) -> JobRunner:
    """The JobRunner a run's Context asks for."""
    if executor == "local":
        return run_local
    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ValueError("executor 'ray' needs Ray: pip install 'capnas[ray]' (or 'ray'), or use --executor "
                             "local") from None
        return RayRunner(ray_address, gpu_share=1.0 / max(1, concurrency))
    raise ValueError(f"unknown executor {executor!r}: use 'local' or 'ray'")
