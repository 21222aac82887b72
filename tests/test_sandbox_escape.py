"""The escape suite: the 15 cases of shared/design/SANDBOX.md, each a hostile payload (tests/escape/) run in a
real sandboxed child, once per tier this host can give (A and B). Each case asserts the structured result
and what the payload reported, and, where it matters, the state of the host afterwards (no survivors, no
files written, no connection accepted, no signal received).

A tier that cannot give a guarantee on some host is marked xfail with the reason, per case, in `LIMITATIONS`.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sysconfig
import time
from pathlib import Path
from typing import Any

import pytest

from capnas.sandbox import Job, Limits, SandboxResult, run_sandboxed
from capnas.sandbox.tiers import TIER_ENV, SandboxUnavailable, detect_tier
from loopback import LoopbackServer

ESCAPE = Path(__file__).parent / "escape"
pytestmark = pytest.mark.timeout(120)

# (tier, case) -> why that tier cannot give the guarantee on this kind of host. Empty where every case holds.
LIMITATIONS: dict[tuple[str, str], str] = {}


@pytest.fixture(params=["A", "B"])
def tier(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(TIER_ENV, request.param)
    try:
        detect_tier()
    except SandboxUnavailable as e:
        pytest.skip(f"tier {request.param} is not available here: {e}")
    return request.param


def expect(tier: str, case: str) -> None:
    if (tier, case) in LIMITATIONS:
        pytest.xfail(LIMITATIONS[(tier, case)])


def limits(**overrides: Any) -> Limits:
    base = dict(wall_s=30.0, memory_mb=1024, pids=64, file_size_mb=64, tmp_mb=32, scratch_mb=256)
    return Limits(**{**base, **overrides})


def run_payload(tmp_path: Path, payload: str, *argv: object, data_dir: Path | None = None,
                **limit_overrides: Any) -> tuple[SandboxResult, list[dict[str, Any]]]:
    reports: list[dict[str, Any]] = []
    job = Job(entry="script", scratch=tmp_path / "scratch", script=ESCAPE / payload, data_dir=data_dir,
              args={"argv": [str(a) for a in argv]}, limits=limits(**limit_overrides))
    result = run_sandboxed(job, on_event=lambda e: reports.append(e) if e.get("event") == "escape" else None)
    return result, reports


def processes_named(token: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == token:
                found.append(int(pid))
        except OSError:
            pass
    return found


def wait_gone(token: str, timeout_s: float = 2.0) -> list[int]:
    """Killed processes can take a moment to leave the table; anything still there after that survived."""
    deadline = time.monotonic() + timeout_s
    while (left := processes_named(token)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


# 1 ---------------------------------------------------------------------------------------------------------
def test_01_cannot_read_host_secrets(tier: str, tmp_path: Path) -> None:
    expect(tier, "secrets")
    canary = f"canary-{secrets.token_hex(8)}"
    secret = Path.home() / f".capnas-escape-{secrets.token_hex(4)}"
    secret.write_text(canary)
    try:
        result, reports = run_payload(tmp_path, "read_secrets.py", secret)
    finally:
        secret.unlink()
    assert result.exit_reason == "ok", result.stderr_tail
    outcomes = reports[0]["results"]
    assert canary not in str(reports)
    assert all(v.startswith("denied:") for v in outcomes.values()), outcomes


# 2 ---------------------------------------------------------------------------------------------------------
def test_02_parent_api_key_never_reaches_the_child(tier: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expect(tier, "env")
    key = f"sk-canary-{secrets.token_hex(12)}"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("CAPNAS_LLM_API_KEY", key)
    result, reports = run_payload(tmp_path, "env_key.py")
    assert result.exit_reason == "ok", result.stderr_tail
    names = set(reports[0]["names"])
    assert key not in reports[0]["values"]
    assert names <= {"PATH", "HOME", "TMPDIR", "LANG", "USER", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE",
                     "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "PWD"}, names


# 3 ---------------------------------------------------------------------------------------------------------
def test_03_cannot_find_the_key_in_other_processes_environ(tier: str, tmp_path: Path) -> None:
    expect(tier, "proc-environ")
    key = f"sk-canary-{secrets.token_hex(12)}"
    # /proc/PID/environ shows a process's initial environment: a helper started with the key holds it there.
    holder = subprocess.Popen(["sleep", "60"], env={"OPENAI_API_KEY": key, "PATH": "/usr/bin:/bin"})
    try:
        deadline = time.monotonic() + 5  # until the helper has exec'd: the bait is really there
        while key.encode() not in Path(f"/proc/{holder.pid}/environ").read_bytes():
            assert time.monotonic() < deadline, "the helper never showed the key in its environ"
            time.sleep(0.01)
        result, reports = run_payload(tmp_path, "proc_environ.py", key)
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_reason == "ok", result.stderr_tail
    assert reports[-1]["hits"] == [], reports


# 4, 5 ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("payload", ["network.py", "network_ctypes.py"])
def test_04_05_no_network_not_even_loopback(tier: str, tmp_path: Path, payload: str) -> None:
    expect(tier, payload)
    server = LoopbackServer()
    try:
        # the server works: a connection from the host is accepted
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
        result, reports = run_payload(tmp_path, payload, server.port)
        time.sleep(0.3)
    finally:
        server.close()
    assert result.exit_reason == "ok", result.stderr_tail
    assert server.accepted == 1, "the sandbox reached the parent's loopback server"
    assert reports[0]["tcp"].startswith("denied:"), reports
    assert reports[0]["udp"].startswith("denied:"), reports


# 6 ---------------------------------------------------------------------------------------------------------
def test_06_fork_bomb_is_capped_and_cleaned_up(tier: str, tmp_path: Path) -> None:
    expect(tier, "fork-bomb")
    token = "cx" + secrets.token_hex(5)
    result, reports = run_payload(tmp_path, "fork_bomb.py", 2000, token, pids=32)
    assert result.exit_reason == "ok", result.stderr_tail
    assert reports[0]["error"] is not None, "fork never failed: the pids limit did not hold"
    assert reports[0]["forks"] < 32, reports
    assert wait_gone(token) == [], "fork-bomb children survived the run"


# 7 ---------------------------------------------------------------------------------------------------------
def test_07_memory_is_capped(tier: str, tmp_path: Path) -> None:
    expect(tier, "memory")
    result, reports = run_payload(tmp_path, "memory.py", 50 * 1024, 64, memory_mb=512)
    assert result.exit_reason == "oom_killed", (result.exit_reason, result.stderr_tail)
    allocated = max(r.get("allocated_mb", 0) for r in reports)
    assert allocated <= 512, allocated
    assert not any(r.get("done") for r in reports)


def test_07b_memory_without_cgroups_rss_watchdog(tier: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Hosts without writable cgroups fall back to the RSS watchdog (and RLIMIT_AS well above it)."""
    expect(tier, "memory-watchdog")
    monkeypatch.setenv("CAPNAS_SANDBOX_CGROUPS", "0")
    result, reports = run_payload(tmp_path, "memory.py", 4096, 64, memory_mb=512)
    assert result.exit_reason in ("rss_watchdog", "exit_1"), (result.exit_reason, result.stderr_tail)
    if result.exit_reason == "exit_1":  # RLIMIT_AS struck first: Python raised MemoryError
        assert "MemoryError" in result.stderr_tail
    assert "rss-watchdog" in result.layers
    assert max(r.get("allocated_mb", 0) for r in reports) < 4096


# 8 ---------------------------------------------------------------------------------------------------------
def test_08a_file_size_is_capped(tier: str, tmp_path: Path) -> None:
    expect(tier, "file-size")
    result, reports = run_payload(tmp_path, "big_file.py", "big.bin", 10 * 1024, file_size_mb=16)
    assert result.exit_reason == "file_size_limit", (result.exit_reason, result.stderr_tail)
    assert (tmp_path / "scratch" / "big.bin").stat().st_size <= 16 * 2**20


def test_08b_tmp_is_capped_and_host_tmp_untouched(tier: str, tmp_path: Path) -> None:
    expect(tier, "fill-tmp")
    before = set(os.listdir("/tmp"))
    result, reports = run_payload(tmp_path, "fill_tmp.py", 1024, 8, tmp_mb=32, scratch_mb=64, file_size_mb=16)
    assert not {n for n in set(os.listdir("/tmp")) - before if n.startswith("fill-")}, "wrote into host /tmp"
    by_dir = {r["dir"]: r for r in reports}
    if tier == "A":  # /tmp is the sandbox's own tmpfs of tmp_mb
        assert result.exit_reason == "ok", result.stderr_tail
        assert by_dir["tmp"]["written_mb"] <= 32 and by_dir["tmp"]["error"].startswith("OSError:28"), by_dir
    else:  # no mount namespace: /tmp is the host's and denied; TMPDIR lives in scratch, capped by scratch_mb
        assert by_dir["tmp"]["error"] is not None and by_dir["tmp"]["written_mb"] == 0, by_dir
        assert result.exit_reason == "file_size_limit", (result.exit_reason, result.stderr_tail)


# 9 ---------------------------------------------------------------------------------------------------------
def test_09a_busy_loop_hits_the_cpu_limit(tier: str, tmp_path: Path) -> None:
    expect(tier, "busy-loop")
    result, _ = run_payload(tmp_path, "busy_loop.py", 60, cpu_s=1, wall_s=30)
    assert result.exit_reason == "cpu_limit", (result.exit_reason, result.stderr_tail)
    assert result.duration_s < 15


def test_09b_sleeping_loop_hits_the_wall_limit(tier: str, tmp_path: Path) -> None:
    expect(tier, "sleep-loop")
    result, _ = run_payload(tmp_path, "sleep_loop.py", 60, wall_s=1.5)
    assert result.exit_reason == "wall_timeout", (result.exit_reason, result.stderr_tail)
    assert 1.5 <= result.duration_s < 10


# 10 --------------------------------------------------------------------------------------------------------
def test_10_double_forked_daemon_does_not_survive(tier: str, tmp_path: Path) -> None:
    expect(tier, "daemon")
    token = "cx" + secrets.token_hex(5)
    result, reports = run_payload(tmp_path, "daemon.py", token)
    assert result.exit_reason == "ok", result.stderr_tail
    assert reports and reports[0]["daemon_pid"], "the payload did not get its daemon up"
    assert wait_gone(token) == [], "the setsid daemon outlived the run"


# 11 --------------------------------------------------------------------------------------------------------
def test_11_cannot_signal_the_parent(tier: str, tmp_path: Path) -> None:
    expect(tier, "signal")
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    try:
        result, reports = run_payload(tmp_path, "signal_parent.py", os.getpid())
        time.sleep(0.2)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert result.exit_reason == "ok", result.stderr_tail
    assert received == [], "the sandbox delivered SIGUSR1 to its parent"
    assert reports[0]["usr1_parent"].startswith("denied:") and reports[0]["probe_parent"].startswith("denied:")


# 12 --------------------------------------------------------------------------------------------------------
def test_12_cannot_write_outside_scratch(tier: str, tmp_path: Path) -> None:
    expect(tier, "write-outside")
    data = tmp_path / "prepared"
    data.mkdir()
    (data / "images.bin").write_bytes(b"\0" * 16)
    name = f"capnas-escape-{secrets.token_hex(4)}"
    targets = [data / "images.bin", data / name, Path(sysconfig.get_paths()["purelib"]) / f"{name}.pth",
               Path("/tmp") / name, tmp_path / name]
    try:
        result, reports = run_payload(tmp_path, "write_outside.py", *targets, data_dir=data)
        assert result.exit_reason == "ok", result.stderr_tail
        outcomes = reports[0]["results"]
        if tier == "A":  # /tmp inside is the sandbox's own tmpfs: writing there is allowed and lands nowhere
            outcomes.pop(str(targets[3]))
        assert all(v.startswith("denied:") for v in outcomes.values()), reports[0]
        assert (data / "images.bin").read_bytes() == b"\0" * 16
        assert not any(t.exists() for t in targets[1:]), [t for t in targets[1:] if t.exists()]
    finally:
        for t in targets[1:]:
            t.unlink(missing_ok=True)


# 13 --------------------------------------------------------------------------------------------------------
def test_13_dangerous_syscalls_are_refused(tier: str, tmp_path: Path) -> None:
    expect(tier, "syscalls")
    result, reports = run_payload(tmp_path, "syscalls.py")
    assert result.exit_reason == "ok", result.stderr_tail
    outcomes = {k: v for k, v in reports[0].items() if k != "event"}
    # seccomp answers EPERM before the kernel looks at the arguments
    assert all(v.endswith(":1") for v in outcomes.values()), outcomes


# 14 --------------------------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_14_gpu_step(tier: str, tmp_path: Path) -> None:
    if not any(n.startswith("nvidia") for n in os.listdir("/dev")):
        pytest.skip("no /dev/nvidia* on this host")
    expect(tier, "gpu")
    reports: list[dict[str, Any]] = []
    job = Job(entry="script", scratch=tmp_path / "scratch", script=ESCAPE / "gpu_step.py", device="cuda",
              limits=limits(memory_mb=8192, wall_s=180))
    result = run_sandboxed(job, on_event=reports.append)
    assert result.exit_reason == "ok", result.stderr_tail
    assert reports and reports[0]["event"] == "escape" and reports[0]["loss"] >= 0


# 15 --------------------------------------------------------------------------------------------------------
def test_15_torch_dataloader_with_workers_still_works(tier: str, tmp_path: Path) -> None:
    expect(tier, "torch")
    events: list[dict[str, Any]] = []
    job = Job(entry="script", scratch=tmp_path / "scratch", script=ESCAPE / "torch_dataloader.py",
              args={"argv": ["2"]}, limits=limits(memory_mb=3072, wall_s=110))
    result = run_sandboxed(job, on_event=events.append)
    assert result.exit_reason == "ok", result.stderr_tail
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [0, 1, 2]
    assert (tmp_path / "scratch" / "model.pt").stat().st_size > 0
    assert "Error" not in result.stderr_tail, result.stderr_tail

