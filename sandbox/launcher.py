"""`run_sandboxed(job)`: run one harness entry in the best sandbox this host offers and say what happened.

One run, start to end:
1. plan: validate the job, pick the tier, a per-run uid (as root), the mounts, the clean environment, the
   limits, and the walls the harness will put up around itself (`Confinement`, written into job.json);
2. start: the child is created behind a gate (a shell waiting on a pipe) so it can be put into its cgroup
   before it runs anything; then the gate opens and bwrap (tier A) or the harness (tier B/C) starts;
3. supervise: stdout lines that are JSON events go to `on_event`, the rest to the tail; a watchdog
   enforces wall time, tree CPU, tree RSS (where no cgroup caps memory) and the scratch size;
4. end: kill whatever the run left (session, cgroup, every process of the per-run uid; bwrap's pid
   namespace does the same in tier A), classify the exit, read result.json without following links,
   hand scratch back to its owner.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import json
import os
import re
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from capnas.sandbox import proctree
from capnas.sandbox.bwrap import BwrapMounts, bwrap_argv
from capnas.sandbox.cgroups import RunCgroup
from capnas.sandbox.job import (CANDIDATE_FILE, EXIT_CONFINEMENT_FAILED, JOB_FILE, RESULT_FILE, Confinement,
                                HarnessInput, Job, SandboxResult)
from capnas.sandbox.tiers import HostSupport, TierInfo, detect_tier, require_runnable

EventCallback = Callable[[dict[str, Any]], None]

MAX_RESULT_BYTES = 16 * 1024 * 1024
STDOUT_TAIL_BYTES = 32 * 1024
STDERR_TAIL_BYTES = 64 * 1024
MAX_LINE_BYTES = 1024 * 1024
POLL_S = 0.05
WATCHDOG_EVERY_S = 0.2
SCRATCH_CHECK_EVERY_S = 1.0
# Per-run uids come from a range no distribution hands out (useradd stops at 60000; systemd's dynamic
# users and container ranges sit far below 1.8e9).
RUN_UID_BASE = 1_800_000_000
RUN_UID_SPAN = 1 << 24
# Without a cgroup, RLIMIT_AS is the only hard memory wall on CPU runs; `import torch` alone reserves
# ~3 GB of address space, so it sits well above the RSS watchdog's limit and only stops runaway growth.
AS_HEADROOM_MB = 6144


# A shell that waits until the launcher writes a line to its stdin (the child is in its cgroup by then), then
# becomes the real command with stdin from /dev/null. If the launcher dies first, nothing runs.
GATE = ["/bin/sh", "-c", 'read -r _ || exit 125; exec "$@" </dev/null', "capnas-gate"]


class SandboxError(RuntimeError):
    """The sandbox itself failed (bwrap or the harness's confinement), not the job: the message holds the
    child's stderr."""


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36


@functools.cache
def _harden_parent() -> tuple[str, ...]:
    """Once per process: orphans of sandboxed runs come back to us (so we can kill and reap them) and no
    process of our uid can read our memory or /proc/self/environ (the API keys)."""
    layers = []
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0:
        layers.append("subreaper")
    if _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0:
        layers.append("parent-nondumpable")
    return tuple(layers)


# -- planning ----------------------------------------------------------------------------------------------


HARNESS_PACKAGES = ("capnas", "capnas.contracts", "capnas.sandbox")  # all the harness imports of capnas


def _package_locations() -> dict[str, str]:
    """Where this process imports each package the harness needs from (its module's own folder, once imported).
    With an editable install they live in a repository, which must not be mounted whole (it may hold .env);
    and they need not all come from one place: `langgraph dev` in a clone imports `capnas` from the clone
    and the organs through the editable install's finder, which may point at another folder."""
    found: dict[str, str] = {}
    for name in HARNESS_PACKAGES:
        spec = importlib.util.find_spec(name)  # the imported module's own spec when it is in sys.modules
        locations = list(spec.submodule_search_locations or []) if spec else []
        if len(locations) != 1:
            raise SandboxError(f"package {name} is imported from {locations or 'nowhere'}; the sandbox needs it "
                               "in one folder: reinstall capnas (pip install -e . in the clone you run)")
        found[name] = os.path.realpath(locations[0])
    return found


# The harness imports those packages from exactly those folders (mounted read-only), not from wherever the
# interpreter's own search (site-packages, an editable install's finder) would find them inside the walls.
_HARNESS_BOOT = """\
import importlib.util, runpy, sys
for name, path in {packages!r}:
    spec = importlib.util.spec_from_file_location(name, path + "/__init__.py", submodule_search_locations=[path])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    spec.loader.exec_module(module)
runpy.run_module("capnas.sandbox.harness", run_name="__main__", alter_sys=True)
"""


def _harness_argv(job_file: Path, packages: dict[str, str]) -> list[str]:
    boot = _HARNESS_BOOT.format(packages=list(packages.items()))
    return [sys.executable, "-I", "-B", "-u", "-c", boot, str(job_file)]


def _python_paths() -> list[str]:
    paths = {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix)}
    exe = os.path.realpath(sys.executable)
    if not any(exe.startswith(p + os.sep) for p in paths):
        paths.add(os.path.dirname(exe))
    return sorted(paths)


def _parse_device(device: str) -> str | None:
    """"cpu" -> None; "cuda" -> "0"; "cuda:N" -> "N". Anything else is a usage error."""
    m = re.fullmatch(r"cpu|cuda(?::(\d+))?", device)
    if m is None:
        raise ValueError(f"job.device {device!r} is not 'cpu', 'cuda' or 'cuda:N'")
    return None if device == "cpu" else (m.group(1) or "0")


def _traversable_by_others(path: str) -> bool:
    """Whether a uid with no special rights could reach `path` (every ancestor o+x, the path o+r)."""
    p = Path(path)
    try:
        for parent in p.parents:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
        return bool(os.stat(p).st_mode & stat.S_IROTH)
    except OSError:
        return False


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """lchown `root` and everything below it; never follows a link the job may have planted."""
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            with contextlib.suppress(FileNotFoundError):
                os.lchown(os.path.join(dirpath, name), uid, gid)


def _dir_size_bytes(root: Path, stop_after: int) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
        if total > stop_after:
            break
    return total


@dataclass
class _Plan:
    job: Job  # with resolved paths, as the harness sees it
    tier: TierInfo
    argv: list[str]
    env: dict[str, str]
    cwd: str
    confinement: Confinement
    run_uid: int | None
    memory_in_cgroup: bool
    layers: list[str]
    private_tmp: Path | None = None
    child_start_ticks: int | None = None
    scratch_owner: tuple[int, int] = (0, 0)


def _plan(job: Job, tier: TierInfo, run_id: str) -> _Plan:
    host: HostSupport = tier.host  # type: ignore[assignment]
    scratch = Path(os.path.realpath(job.scratch))
    scratch.mkdir(parents=True, exist_ok=True)
    updates: dict[str, Any] = {"scratch": scratch}
    if job.data_dir is not None:
        data_dir = Path(os.path.realpath(job.data_dir))
        if not data_dir.is_dir():
            raise ValueError(f"job.data_dir {job.data_dir} is not a directory: prepare the dataset first")
        updates["data_dir"] = data_dir
    inputs = [Path(os.path.realpath(f)) for f in job.inputs]
    if missing := [str(f) for f in inputs if not f.is_file()]:
        raise ValueError(f"job.inputs {', '.join(missing)}: no such file (an input is a file the job reads)")
    updates["inputs"] = inputs
    if job.entry == "script":
        if job.script is None or not Path(job.script).is_file():
            raise ValueError(f"job.script {job.script} is not a file: entry 'script' needs a Python file to run")
        script = Path(os.path.realpath(job.script))
        if scratch not in script.parents:  # only scratch is visible inside: bring the script in
            copied = scratch / script.name
            shutil.copyfile(script, copied)
            script = copied
        updates["script"] = script
    if job.entry == "probe" and not (scratch / CANDIDATE_FILE).is_file():
        raise ValueError(f"entry 'probe' needs the candidate at {scratch / CANDIDATE_FILE}")
    gpu_index = _parse_device(job.device)
    if gpu_index is not None:
        if not host.gpu_devices:
            raise ValueError(f"job.device {job.device!r} but this host has no /dev/nvidia* device")
        updates["device"] = "cuda"  # CUDA_VISIBLE_DEVICES leaves the chosen GPU as the only one, index 0
    job = job.model_copy(update=updates)
    limits = job.limits
    is_a = tier.tier == "A"
    layers: list[str] = []

    # Who the job runs as. As root: a fresh uid, so process limits and file permissions mean something.
    # Tier B has no mount namespace, so that uid must be able to reach the interpreter, the code and the
    # data through the real directory tree; where it cannot, the job stays uid 0 without any capability.
    run_uid: int | None = None
    drop_caps = False
    python_paths, packages = _python_paths(), _package_locations()
    package_dirs = list(packages.values())
    if host.is_root and tier.tier != "C":
        needed = python_paths + package_dirs + ([str(job.data_dir)] if job.data_dir else []) + [str(scratch.parent)] \
            + [str(f.parent) for f in inputs]
        if is_a or all(_traversable_by_others(p) for p in needed):
            run_uid = RUN_UID_BASE + secrets.randbelow(RUN_UID_SPAN)
        else:
            drop_caps = True
    if job.data_dir is not None and run_uid is not None:
        mode = os.stat(job.data_dir).st_mode
        if mode & 0o005 != 0o005:
            raise ValueError(f"job.data_dir {job.data_dir} is not readable by other users (mode {mode & 0o777:o}); "
                             "the sandbox runs as its own uid: chmod -R a+rX it")
    if run_uid is not None and (unreadable := [str(f) for f in inputs if os.stat(f).st_mode & 0o004 == 0]):
        raise ValueError(f"job.inputs {', '.join(unreadable)} not readable by other users; the sandbox runs as "
                         "its own uid: chmod a+r them")

    private_tmp = None
    if is_a:
        tmp = "/tmp"  # a size-capped tmpfs
    else:
        # No private tmpfs without a mount namespace: a private dir, counted against scratch_mb. Short and
        # under /tmp, because multiprocessing (DataLoader workers) binds AF_UNIX sockets there (108 bytes max).
        private_tmp = Path(tempfile.mkdtemp(prefix=f"capnas-{run_id}-", dir="/tmp"))
        tmp = str(private_tmp)
    env = {"PATH": f"{os.path.realpath(sys.prefix)}/bin:/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp,
           "LANG": "C.UTF-8", "USER": "sandbox", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
           "CUDA_VISIBLE_DEVICES": gpu_index if gpu_index is not None else ""}
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if key in os.environ:
            env[key] = os.environ[key]
    layers.append("clean-env")

    # What the harness may touch once Landlock is up (paths as seen inside; the same as outside).
    read_paths = ["/usr", "/bin", "/lib", "/lib64", "/etc/ld.so.cache", "/dev/random", "/dev/urandom",
                  *python_paths, *package_dirs]
    write_paths = [str(scratch), tmp, "/dev/null", "/dev/zero", "/dev/full", "/dev/shm"]
    if job.data_dir is not None:
        read_paths.append(str(job.data_dir))
    read_paths += [str(f) for f in inputs]
    if is_a:
        read_paths.append("/proc")  # bwrap's own procfs: only the sandbox's processes
    else:  # the host's /proc: only what torch's CPU detection reads, never other processes' files
        read_paths += ["/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/sys/devices/system/cpu"]
    if gpu_index is not None:
        read_paths += ["/sys", "/proc"]
        write_paths += [*host.gpu_devices, "/proc"]  # CUDA writes to /proc/self/task/*/comm and similar

    memory_in_cgroup = host.usable_cgroups is not None and limits.memory_mb is not None
    rlimits: dict[str, tuple[int, int]] = {"RLIMIT_CORE": (0, 0)}
    if limits.cpu_s is not None:
        cpu = max(1, int(limits.cpu_s + 0.999))
        rlimits["RLIMIT_CPU"] = (cpu, cpu + 5)  # SIGXCPU first (classified cpu_limit), SIGKILL 5 s later
    if limits.file_size_mb is not None:
        fsize = limits.file_size_mb * 1024 * 1024
        rlimits["RLIMIT_FSIZE"] = (fsize, fsize)
    if run_uid is not None:  # a fresh uid: NPROC counts exactly this run's processes and threads
        rlimits["RLIMIT_NPROC"] = (limits.pids, limits.pids)
    if limits.memory_mb is not None and not memory_in_cgroup and gpu_index is None:
        as_bytes = (limits.memory_mb + AS_HEADROOM_MB) * 1024 * 1024  # never on GPU: CUDA reserves ~18 GB
        rlimits["RLIMIT_AS"] = (as_bytes, as_bytes)

    confinement = Confinement(
        run_as_uid=run_uid, run_as_gid=run_uid, drop_caps=drop_caps,
        landlock=tier.tier != "C" and host.landlock_ok, read_paths=read_paths, write_paths=write_paths,
        seccomp=tier.tier != "C" and host.seccomp_ok, rlimits=rlimits)

    harness = _harness_argv(scratch / JOB_FILE, packages)
    if is_a:
        mounts = BwrapMounts(
            read_only=python_paths + package_dirs + ([str(job.data_dir)] if job.data_dir else []) + [str(f) for f in inputs],
            read_write=[str(scratch)], tmp_mb=limits.tmp_mb,
            gpu_devices=list(host.gpu_devices) if gpu_index is not None else [])
        assert host.bwrap is not None
        argv = [*bwrap_argv(host.bwrap, mounts, is_root=host.is_root, env=env, chdir=str(scratch)), *harness]
        layers += ["bwrap", "mount-whitelist", "net-ns", "pid-ns", "ipc-ns", "uts-ns", "tmpfs-tmp"]
        if not host.is_root:
            layers += ["user-ns", "no-capabilities"]
    else:
        argv = harness
    return _Plan(job=job, tier=tier, argv=argv, env=env, cwd=str(scratch), confinement=confinement,
                 run_uid=run_uid, memory_in_cgroup=memory_in_cgroup, layers=layers, private_tmp=private_tmp,
                 scratch_owner=(os.stat(scratch).st_uid, os.stat(scratch).st_gid))


# -- supervision -------------------------------------------------------------------------------------------


@dataclass
class _Output:
    """What the reader threads collect from the child's stdout and stderr."""

    on_event: EventCallback | None
    stdout_tail: deque[str] = field(default_factory=deque)
    stdout_bytes: int = 0
    stderr_tail: bytearray = field(default_factory=bytearray)
    harness_layers: list[str] | None = None
    harness_exit: int | None = None
    callback_error: BaseException | None = None

    def _keep_line(self, line: str) -> None:
        self.stdout_tail.append(line)
        self.stdout_bytes += len(line) + 1
        while self.stdout_bytes > STDOUT_TAIL_BYTES and len(self.stdout_tail) > 1:
            self.stdout_bytes -= len(self.stdout_tail.popleft()) + 1

    def _handle_line(self, line: str) -> None:
        event = None
        if line.startswith("{") and '"event"' in line:
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                if isinstance(parsed, dict) and isinstance(parsed.get("event"), str):
                    event = parsed
        if event is None:
            self._keep_line(line)
            return
        name = event["event"]
        if name == "confined":
            # Only the first one counts: the harness sends it before any job code runs; later ones are forged.
            if self.harness_layers is None:
                self.harness_layers = [str(x) for x in event.get("layers", [])]
            return
        if name == "exit":
            code = event.get("code")
            self.harness_exit = code if isinstance(code, int) else None
            return
        self.harness_exit = None  # output after an "exit" event means it was not the last word
        if self.on_event is not None and self.callback_error is None:
            try:
                self.on_event(event)
            except BaseException as e:  # noqa: BLE001 - re-raised by run_sandboxed once the run is cleaned up
                self.callback_error = e

    def read_stdout(self, stream) -> None:
        while chunk := stream.readline(MAX_LINE_BYTES):
            self._handle_line(chunk.decode("utf-8", "replace").rstrip("\r\n"))

    def read_stderr(self, stream) -> None:
        while chunk := stream.read1(65536):
            self.stderr_tail += chunk
            if len(self.stderr_tail) > 2 * STDERR_TAIL_BYTES:
                del self.stderr_tail[:-STDERR_TAIL_BYTES]


def _read_result(scratch: Path) -> dict[str, Any] | None:
    """result.json, if it is a regular file (not a link to a host secret) of sane size holding an object."""
    try:
        fd = os.open(scratch / RESULT_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_RESULT_BYTES:
            return None
        try:
            data = json.loads(f.read(MAX_RESULT_BYTES + 1))
        except ValueError:
            return None
    return data if isinstance(data, dict) else None


def _classify(status: int, reason: str | None, harness_exit: int | None, oom_kills: int, cpu_used: float,
              cpu_limit: float | None) -> str:
    if reason is not None:
        return reason
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
    else:
        code = os.WEXITSTATUS(status)
        # bwrap reports a killed child as 128 + signal; the harness's "exit" event marks a real exit status.
        sig = code - 128 if 128 < code < 128 + 65 and harness_exit != code else None
        if sig is None:
            if oom_kills and code != 0:
                return "oom_killed"
            return "ok" if code == 0 else f"exit_{code}"
    if oom_kills and sig == signal.SIGKILL:
        return "oom_killed"
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_limit is not None and cpu_used >= cpu_limit):
        return "cpu_limit"
    if sig == signal.SIGXFSZ:
        return "file_size_limit"
    return f"signal_{sig}"


def run_sandboxed(job: Job, on_event: EventCallback | None = None) -> SandboxResult:
    """Run `job` in the sandbox and return what happened. `on_event` is called (from a reader thread) with
    each progress event the harness emits. Raises SandboxUnavailable where no acceptable tier exists,
    ValueError for a malformed job, SandboxError where the sandbox itself could not be set up."""
    tier = detect_tier()
    require_runnable(tier)
    parent_layers = _harden_parent()
    run_id = secrets.token_hex(6)
    plan = _plan(job, tier, run_id)
    host = tier.host
    assert host is not None
    limits = plan.job.limits
    scratch = plan.job.scratch
    cgroup: RunCgroup | None = None
    proc: subprocess.Popen[bytes] | None = None
    output = _Output(on_event)
    threads: list[threading.Thread] = []
    watch = _Watch()
    status = 0
    rusage = None
    start = time.monotonic()
    try:
        spec = HarnessInput(job=plan.job, confinement=plan.confinement)
        tmp_job = scratch / f".{JOB_FILE}.tmp"
        tmp_job.write_text(spec.model_dump_json())
        os.replace(tmp_job, scratch / JOB_FILE)
        if plan.run_uid is not None:
            _chown_tree(scratch, plan.run_uid, plan.run_uid)
            if plan.private_tmp is not None:
                os.chown(plan.private_tmp, plan.run_uid, plan.run_uid)
        if (cgroups := host.usable_cgroups) is not None:
            memory = limits.memory_mb * 1024 * 1024 if limits.memory_mb is not None else None
            cgroup = cgroups.create(f"capnas-{run_id}", memory, limits.pids)
            plan.layers += [f"{cgroups.describe()}-memory", f"{cgroups.describe()}-pids"]

        proc = subprocess.Popen([*GATE, *plan.argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=plan.env, cwd=plan.cwd, start_new_session=True,
                                close_fds=True)
        assert proc.stdin is not None
        try:
            if cgroup is not None:
                cgroup.attach(proc.pid)
            proc.stdin.write(b"go\n")
        finally:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
        start = time.monotonic()
        if (info := proctree.read_proc(proc.pid)) is not None:
            plan.child_start_ticks = info.start_ticks
        assert proc.stdout is not None and proc.stderr is not None
        threads = [threading.Thread(target=output.read_stdout, args=(proc.stdout,), daemon=True),
                   threading.Thread(target=output.read_stderr, args=(proc.stderr,), daemon=True)]
        for t in threads:
            t.start()

        status, rusage, watch = _supervise(proc, plan, cgroup, start)
        # Writes faster than the watchdog's one-second rounds can end the job in between: measured once more.
        if watch.reason is None and _over_disk_cap(plan):
            watch.reason = "file_size_limit"
    finally:
        duration = time.monotonic() - start
        proctree.reap_orphans(_sweep(proc, plan, cgroup))
        for t in threads:
            t.join(timeout=5)
        oom_kills = cgroup.oom_kills() if cgroup is not None else 0
        peak_cgroup = cgroup.memory_peak_bytes() if cgroup is not None else None
        if cgroup is not None:
            cgroup.remove()
        result = _read_result(scratch) if proc is not None else None
        with contextlib.suppress(OSError):
            if plan.run_uid is not None:
                _chown_tree(scratch, *plan.scratch_owner)
        if plan.private_tmp is not None:
            shutil.rmtree(plan.private_tmp, ignore_errors=True)

    # rusage covers only processes that were waited for up the chain (bwrap's init breaks it): take the
    # larger of it and what the watchdog saw.
    cpu_used = max((rusage.ru_utime + rusage.ru_stime) if rusage is not None else 0.0, watch.cpu_s)
    exit_reason = _classify(status, watch.reason, output.harness_exit, oom_kills, cpu_used, limits.cpu_s)
    stderr_tail = bytes(output.stderr_tail[-STDERR_TAIL_BYTES:]).decode("utf-8", "replace")
    if output.harness_layers is None and exit_reason not in (
            "wall_timeout", "oom_killed", "rss_watchdog", "cpu_limit"):
        raise SandboxError(f"the sandbox did not start the job (tier {tier.tier}, exit status "
                           f"{os.waitstatus_to_exitcode(status)}"
                           f"{', confinement failed' if os.WEXITSTATUS(status) == EXIT_CONFINEMENT_FAILED else ''})"
                           f":\n{stderr_tail.strip()[-4000:]}")
    if output.callback_error is not None:
        raise output.callback_error
    peak_rss_mb = max(watch.peak_rss, (rusage.ru_maxrss * 1024) if rusage is not None else 0) / 2**20
    layers = plan.layers + (output.harness_layers or []) + ["wall-timeout", "tree-kill"] + list(parent_layers)
    if not plan.memory_in_cgroup and limits.memory_mb is not None:
        layers.append("rss-watchdog")
    return SandboxResult(
        exit_reason=exit_reason, returncode=os.waitstatus_to_exitcode(status), peak_rss_mb=round(peak_rss_mb, 1),
        duration_s=round(duration, 3), stdout_tail="\n".join(output.stdout_tail),
        stderr_tail=stderr_tail, result=result, tier=tier.tier, layers=layers,
        peak_memory_mb=round(peak_cgroup / 2**20, 1) if peak_cgroup is not None else None,
        cpu_s=round(cpu_used, 3))


@dataclass
class _Watch:
    """What the watchdog saw: the reason it killed the run (if it did), the peak of the tree's summed
    proportional RSS, CPU seconds per process."""

    reason: str | None = None
    peak_rss: int = 0
    next_tree_check: float = 0.0
    next_scratch_check: float = 0.0
    cpu_by_proc: dict[tuple[int, int], float] = field(default_factory=dict)

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu_by_proc.values())


def _supervise(proc: subprocess.Popen[bytes], plan: _Plan, cgroup: RunCgroup | None,
               start: float) -> tuple[int, Any, _Watch]:
    """Wait for the child while enforcing wall time, tree CPU, tree RSS and scratch size."""
    limits = plan.job.limits
    deadline = start + limits.wall_s
    watch = _Watch()
    memory_cap = limits.memory_mb * 2**20 if limits.memory_mb is not None else None
    # A pidfd becomes readable the moment the child exits: no polling delay on the way out.
    try:
        exit_fd: int | None = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        exit_fd = None
    try:
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen never waits for it again
                return status, rusage, watch
            _watch_once(proc, plan, cgroup, watch, deadline, memory_cap)
            wait_s = POLL_S if watch.reason is not None else max(0.0, min(WATCHDOG_EVERY_S, deadline - time.monotonic()))
            if exit_fd is not None:
                select.select([exit_fd], [], [], wait_s)
            else:
                time.sleep(POLL_S)
    finally:
        if exit_fd is not None:
            os.close(exit_fd)


def _watch_once(proc: subprocess.Popen[bytes], plan: _Plan, cgroup: RunCgroup | None, watch: _Watch,
            deadline: float, memory_cap: int | None) -> None:
    """One watchdog round: kills the run (once a reason is set, on every round) when a limit is passed."""
    limits = plan.job.limits
    now = time.monotonic()
    if watch.reason is None and now >= deadline:
        watch.reason = "wall_timeout"
    if watch.reason is None and now >= watch.next_tree_check:
        watch.next_tree_check = now + WATCHDOG_EVERY_S
        pids = cgroup.pids() if cgroup is not None else [p.pid for p in proctree.descendants(proc.pid)]
        infos = [i for p in pids if (i := proctree.read_proc(p)) is not None]
        rss = sum(proctree.pss_bytes(i) for i in infos)
        watch.peak_rss = max(watch.peak_rss, rss)
        for i in infos:
            watch.cpu_by_proc[(i.pid, i.start_ticks)] = i.cpu_s
        if memory_cap is not None and not plan.memory_in_cgroup and rss > memory_cap:
            watch.reason = "rss_watchdog"
        elif limits.cpu_s is not None and watch.cpu_s > limits.cpu_s + 1:
            watch.reason = "cpu_limit"  # RLIMIT_CPU is per process; this is the whole tree
    if watch.reason is None and limits.scratch_mb is not None and now >= watch.next_scratch_check:
        watch.next_scratch_check = now + SCRATCH_CHECK_EVERY_S
        if _over_disk_cap(plan):
            watch.reason = "file_size_limit"
    if watch.reason is not None:
        _kill_run(proc, plan, cgroup)




def _over_disk_cap(plan: _Plan) -> bool:
    """The job's scratch (and its private tmp dir, tier B) hold more than `scratch_mb`."""
    if plan.job.limits.scratch_mb is None:
        return False
    cap = plan.job.limits.scratch_mb * 2**20
    used = _dir_size_bytes(plan.job.scratch, cap)
    if plan.private_tmp is not None:
        used += _dir_size_bytes(plan.private_tmp, cap)
    return used > cap


def _kill_run(proc: subprocess.Popen[bytes] | None, plan: _Plan, cgroup: RunCgroup | None) -> list[int]:
    """SIGKILL everything that belongs to the run; returns the pids found, so that the ones re-parented to
    us (we are a subreaper) can be reaped. Members are listed before anything is killed: a dead process
    leaves its cgroup and process listings the moment it becomes a zombie."""
    if proc is None:
        return []
    procs = proctree.all_procs()
    members = {p.pid for p in proctree.descendants(proc.pid, procs)}
    # start_new_session made the child the leader of its own session and process group
    members |= {p.pid for p in procs.values() if proc.pid in (p.pgrp, p.session)}
    if cgroup is not None:
        members |= set(cgroup.pids())
    if plan.run_uid is not None:
        members |= set(proctree.pids_of_uid(plan.run_uid))
    elif cgroup is None and plan.child_start_ticks is not None:  # the weakest case: no cgroup, no own uid
        members |= set(proctree.new_sessions_adopted_since(plan.child_start_ticks))
    members.discard(os.getpid())
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proctree.kill_all(sorted(members))
    if cgroup is not None:
        members |= set(cgroup.kill_all())
    if plan.run_uid is not None:
        proctree.kill_every_process_of_uid(plan.run_uid)
    return sorted(members)


def _sweep(proc: subprocess.Popen[bytes] | None, plan: _Plan, cgroup: RunCgroup | None) -> list[int]:
    """After the child exited (or failed to start): kill what it left behind, e.g. a double-forked daemon."""
    if proc is None:
        return []
    found = _kill_run(proc, plan, cgroup)
    if proc.returncode is None:
        with contextlib.suppress(ChildProcessError):
            _, status, _ = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
    return found
