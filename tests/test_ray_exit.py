"""`capnas run --executor ray` leaves no Ray process behind, and Ray's warnings go to the log, not the user's
stderr. The run goes under a small wrapper that is a child subreaper (prctl PR_SET_CHILD_SUBREAPER): every
process capnas started, the ones Ray re-parents away from it included, stays the wrapper's descendant, so
"what capnas started" is exactly the wrapper's descendants. Real CLI, real local Ray instance, CPU only."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

WRAPPER = """\
import ctypes, json, os, signal, subprocess, sys, time

PR_SET_CHILD_SUBREAPER = 36
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    print(json.dumps({"error": "prctl(PR_SET_CHILD_SUBREAPER) failed"})); sys.exit(0)

def reap():
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                return
        except ChildProcessError:
            return

def descendants():
    parent = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = open(f"/proc/{name}/stat").read()
            except OSError:
                continue
            rest = stat[stat.rfind(")") + 2:].split()
            if rest[0] != "Z":
                parent[int(name)] = int(rest[1])
    mine = []
    for pid in parent:
        p = pid
        while p in parent and p != os.getpid():
            p = parent[p]
        if p == os.getpid() and pid != os.getpid():
            mine.append(pid)
    return mine

done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
time.sleep(5)
reap()
alive = {pid: open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode().strip()[:200]
         for pid in descendants()}
for pid in alive:  # leave nothing behind, whatever the verdict
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
time.sleep(0.5)
reap()
print(json.dumps({"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr, "alive": alive}))
"""


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()[19]


def _pids_below(root: int) -> set[int]:
    """`root` and its live descendants, from /proc."""
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            rest = stat[stat.rfind(")") + 2:].split()
            if rest[0] != "Z":
                parent[int(entry.name)] = int(rest[1])
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in parent and pid not in found:
            found.add(pid)
            todo += [child for child, p in parent.items() if p == pid]
    return found


# Recent Ray turns token authentication on by default for a cluster it starts (the token in ~/.ray/auth_token),
# and a driver joining one must say so: stated for both sides. No usage reports leave the machine.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}


def _capnas_run(tmp_path: Path, *flags: str) -> tuple[dict, Path]:
    """`capnas run --executor ray` of one quick random candidate under the subreaper; its report and workspace."""
    ws = tmp_path / "ws"
    wrapper = tmp_path / "subreaper.py"
    wrapper.write_text(WRAPPER)
    argv = [sys.executable, "-m", "capnas", "run", "--run-id", "rayexit", "--run-dir", str(ws), "--json", "--no-report",
            "--executor", "ray", *flags, "--concurrency", "1", "--max-candidates", "1", "--epochs", "1",
            "--train-time-s", "10", "--dataset", "shapes:200", "--image-size", "32", "--max-latency-ms", "10000",
            "--generation", "random", "--families", "small_cnn,gru", "--threads", "1", "--seed", "1",
            "--max-params", "50000000"]
    done = subprocess.run([sys.executable, str(wrapper), *argv], capture_output=True, text=True, timeout=570,
                          env={**os.environ, **RAY_ENV})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if "error" in report:
        pytest.skip(report["error"])
    assert report["rc"] == 0, report["stderr"][-3000:]
    summary = json.loads(report["stdout"])
    assert summary["status"] == "finished" and summary["candidates"] == 1
    return report, ws


def test_no_ray_process_outlives_capnas_run_and_ray_warnings_go_to_the_log(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    report, ws = _capnas_run(tmp_path)
    assert report["alive"] == {}, f"alive 5 s after capnas returned: {report['alive']}"
    # Ray's driver-side warnings (ray.init from a graph worker thread always says it set no SIGTERM handler)
    # are records of the `ray` loggers in capnas.log, and nothing of Ray's reaches stderr.
    assert not re.search(r"SIGTERM handler|Token authentication|ray\._private|raylet", report["stderr"]), report["stderr"]
    assert re.search(r"^\S+ \S+ WARNING ray[.:]", (ws / "capnas.log").read_text(), re.M)


def test_a_cluster_at_ray_address_is_left_running(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.skip(f"no {ray_cli} to start a cluster with")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "ray-start.log"
    with log.open("w") as out:
        cluster = subprocess.Popen([str(ray_cli), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                                    "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats", "--block"],
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, **RAY_ENV})
    members: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():
            assert cluster.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(2)  # the raylet's agents
        members = _pids_below(cluster.pid)
        report, _ = _capnas_run(tmp_path, "--ray-address", f"127.0.0.1:{port}")
        assert report["alive"] == {}, f"alive 5 s after capnas returned: {report['alive']}"
        assert cluster.poll() is None and members <= _pids_below(cluster.pid), "capnas stopped the cluster it joined"
    finally:
        # Stop the cluster this test started, and only it: its processes, by pid and start time.
        members |= _pids_below(cluster.pid)
        started = {pid: _start_time(pid) for pid in members}
        cluster.send_signal(signal.SIGTERM)  # `ray start --block` stops its processes on SIGTERM
        try:
            cluster.wait(30)
        except subprocess.TimeoutExpired:
            pass
        for pid, start in started.items():
            if start is not None and _start_time(pid) == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        # `ray start` names its cluster in /tmp/ray/ray_current_cluster and leaves the file when stopped
        current = Path("/tmp/ray/ray_current_cluster")
        if current.is_file() and f":{port}" in current.read_text():
            current.unlink()
