"""One cgroup per sandboxed run: a hard memory cap (the kernel OOM-kills inside it), a pids cap, the peak
memory, and a sweep that kills every process left in it. Works on cgroup v1 (memory and pids hierarchies)
and v2; the run's group is created below the cgroup this process lives in, so any limit on us still holds.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def _own_paths() -> dict[str, str]:
    """Controller (or "" for the v2 unified hierarchy) -> this process's cgroup path."""
    paths: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                paths[c] = path
    return paths


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_keyed(path: Path, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            k, _, v = line.partition(" ")
            if k == key:
                return int(v)
    return 0


@dataclass
class RunCgroup:
    """The cgroup(s) of one run. `dirs` maps a controller name ("memory", "pids"; "" on v2) to its dir."""

    version: int
    dirs: dict[str, Path]

    @property
    def _procs_dir(self) -> Path:
        return self.dirs.get("pids") or self.dirs.get("") or next(iter(self.dirs.values()))

    def attach(self, pid: int) -> None:
        for d in self.dirs.values():
            _write(d / "cgroup.procs", str(pid))

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self._procs_dir / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def memory_peak_bytes(self) -> int | None:
        if self.version == 1:
            return _read_int(self.dirs["memory"] / "memory.max_usage_in_bytes")
        return _read_int(self.dirs[""] / "memory.peak")

    def oom_kills(self) -> int:
        if self.version == 1:
            return _read_keyed(self.dirs["memory"] / "memory.oom_control", "oom_kill")
        return _read_keyed(self.dirs[""] / "memory.events", "oom_kill")

    def kill_all(self, timeout_s: float = 5.0) -> list[int]:
        """SIGKILL everything in the group until it is empty; returns the pids that were killed."""
        killed: list[int] = []
        if self.version == 2 and (self.dirs[""] / "cgroup.kill").exists():
            killed = self.pids()
            with contextlib.suppress(OSError):
                _write(self.dirs[""] / "cgroup.kill", "1")
        deadline = time.monotonic() + timeout_s
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                if pid not in killed:
                    killed.append(pid)
            time.sleep(0.01)
        return killed

    def remove(self, timeout_s: float = 2.0) -> None:
        deadline = time.monotonic() + timeout_s
        for d in self.dirs.values():
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as e:  # EBUSY while killed processes are still being reaped
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        break
                    time.sleep(0.02)


@dataclass(frozen=True)
class CgroupSupport:
    """Where this process may create per-run cgroups."""

    version: int
    parents: dict[str, Path]  # controller ("" on v2) -> the directory new groups go under

    def describe(self) -> str:
        return f"cgroup-v{self.version}"

    def create(self, name: str, memory_bytes: int | None, pids_max: int | None) -> RunCgroup:
        dirs: dict[str, Path] = {}
        try:
            for controller, parent in self.parents.items():
                d = parent / name
                d.mkdir()
                dirs[controller] = d
            group = RunCgroup(self.version, dirs)
            if self.version == 1:
                if memory_bytes is not None:
                    _write(dirs["memory"] / "memory.limit_in_bytes", str(memory_bytes))
                    with contextlib.suppress(OSError):  # absent without swap accounting
                        _write(dirs["memory"] / "memory.memsw.limit_in_bytes", str(memory_bytes))
                if pids_max is not None:
                    _write(dirs["pids"] / "pids.max", str(pids_max))
            else:
                if memory_bytes is not None:
                    _write(dirs[""] / "memory.max", str(memory_bytes))
                    with contextlib.suppress(OSError):
                        _write(dirs[""] / "memory.swap.max", "0")
                if pids_max is not None:
                    _write(dirs[""] / "pids.max", str(pids_max))
            return group
        except OSError:
            RunCgroup(self.version, dirs).remove(0)
            raise


def _probe_writable(parent: Path) -> bool:
    probe = parent / f"capnas-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError:
        return False
    with contextlib.suppress(OSError):
        probe.rmdir()
    return True


def detect_cgroups() -> tuple[CgroupSupport | None, str]:
    """The cgroup support this process has, or None and why not."""
    own = _own_paths()
    # cgroup v1 (or the v1 half of a hybrid setup): separate memory and pids hierarchies.
    if (ROOT / "memory" / "memory.limit_in_bytes").exists() and (ROOT / "pids" / "pids.max").exists() or (
        (ROOT / "memory").is_dir() and (ROOT / "pids").is_dir() and not (ROOT / "cgroup.controllers").exists()
    ):
        parents = {c: ROOT / c / own.get(c, "/").lstrip("/") for c in ("memory", "pids")}
        if all(_probe_writable(p) for p in parents.values()):
            return CgroupSupport(1, parents), ""
        return None, "cgroup v1 memory/pids hierarchies are not writable by this user (run as root)"
    if (ROOT / "cgroup.controllers").exists():
        parent = ROOT / own.get("", "/").lstrip("/")
        if not _probe_writable(parent):
            return None, (f"cgroup v2 group {parent} is not writable by this user: run as root, or start capnas "
                          "in a delegated group (systemd-run --user --scope -p Delegate=yes capnas ...)")
        if not _enable_controllers(parent):
            return None, (f"cgroup v2: cannot enable the memory and pids controllers below {parent} "
                          "(the group holds processes; start capnas in its own delegated scope)")
        return CgroupSupport(2, {"": parent}), ""
    return None, "no cgroup file system mounted at /sys/fs/cgroup"


def _enable_controllers(parent: Path) -> bool:
    """Make memory and pids available to children of `parent` (cgroup v2)."""
    wanted = {"memory", "pids"}
    try:
        if wanted <= set((parent / "cgroup.subtree_control").read_text().split()):
            return True
        if not wanted <= set((parent / "cgroup.controllers").read_text().split()):
            return False
        _write(parent / "cgroup.subtree_control", "+memory +pids")
        return True
    except OSError:
        return False
