"""Reading the process table from /proc: who descends from a run, how much memory and CPU they use, and
killing them. The launcher's watchdog and its final sweep use these where no cgroup is available."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    pgrp: int
    session: int
    start_ticks: int  # start time since boot: with pid, identifies a process across pid reuse
    cpu_s: float  # user + system of this process (not of its reaped children)
    rss_bytes: int
    state: str


def read_proc(pid: int) -> ProcInfo | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = raw[raw.rfind(")") + 2:].split()
    try:
        return ProcInfo(pid=pid, ppid=int(fields[1]), pgrp=int(fields[2]), session=int(fields[3]), start_ticks=int(fields[19]),
                        cpu_s=(int(fields[11]) + int(fields[12])) / _TICKS, rss_bytes=int(fields[21]) * _PAGE,
                        state=fields[0])
    except (IndexError, ValueError):
        return None


def pss_bytes(info: ProcInfo) -> int:
    """Proportional set size: shared pages (torch's libraries in DataLoader workers) are split between the
    processes that map them instead of counted once per process. Falls back to RSS."""
    try:
        with open(f"/proc/{info.pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return info.rss_bytes


def all_procs() -> dict[int, ProcInfo]:
    procs: dict[int, ProcInfo] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (info := read_proc(int(name))) is not None:
            procs[info.pid] = info
    return procs


def descendants(root: int, procs: dict[int, ProcInfo] | None = None) -> list[ProcInfo]:
    """`root` and every process below it (by parent links, as they stand now)."""
    procs = all_procs() if procs is None else procs
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            out.append(procs[pid])
        todo.extend(children.get(pid, []))
    return out


def uid_of(pid: int) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    return None


def pids_of_uid(uid: int) -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit() and uid_of(int(n)) == uid]


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def kill_every_process_of_uid(uid: int) -> None:
    """kill(-1, SIGKILL) run as `uid`: the kernel itself finds every process of that uid, including ones
    forked between two scans. Needs root (to switch uid); the helper process is not signalled itself."""
    # procps `kill` rather than this Python: the per-run uid may not be able to reach our interpreter.
    kill = shutil.which("kill", path="/usr/bin:/bin")
    argv = [kill, "-9", "--", "-1"] if kill else [sys.executable, "-S", "-c", "import os; os.kill(-1, 9)"]
    subprocess.run(argv, user=uid, group=uid, extra_groups=[], env={}, timeout=10, check=False,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def reap_orphans(pids: list[int]) -> None:
    """Collect zombies that were re-parented to this process (it is a child subreaper) and that we killed.
    Only pids we know to be the run's are waited for, never other children of the host program."""
    me = os.getpid()
    pending = [pid for pid in pids if (info := read_proc(pid)) is not None and info.ppid == me]
    deadline = time.monotonic() + 2.0
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                pending.remove(pid)
        if pending:
            time.sleep(0.01)


def new_sessions_adopted_since(start_ticks: int) -> list[int]:
    """Processes re-parented to us (we are a child subreaper) that started at or after `start_ticks` in a
    session of their own, with their descendants: what a double-forked `setsid` daemon of a run looks like.
    The host program's own subprocesses share its session (or are not orphans) and are left alone."""
    procs = all_procs()
    me, my_session = os.getpid(), os.getsid(0)
    found: list[int] = []
    for p in procs.values():
        if p.ppid == me and p.start_ticks >= start_ticks and p.session not in (my_session, 0):
            found += [d.pid for d in descendants(p.pid, procs)]
    return found
