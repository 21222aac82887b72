"""`capnas chat` in a real terminal: a detached tmux session runs it against the scripted LLM server on
127.0.0.1; the test types with `tmux send-keys` and reads the screen with `tmux capture-pane`, like a person.
The run underneath is real (sandboxed validation, CPU training on a small shapes set, the journal), so these
are slow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from capnas.graph.journal import Journal
from llm_server import ScriptedLLMServer, tool_call

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]

REPO = Path(__file__).resolve().parents[1]
# Round 0 of a task that names no families gets the first pair of the default plan: small_cnn + lstm.
SPEC = {"encoder": {"name": "small_cnn"}, "decoder": {"name": "lstm", "embed_dim": 128, "hidden_size": 128,
                                                      "num_layers": 1, "attention": False},
        "lr": 0.003, "batch_size": 32, "epochs": 1}
SCRIPT = [
    tool_call("TaskDraft", {}, role="planner"),  # the reader reads "under 2M parameters" itself
    tool_call("ArchSpec", SPEC, role="coder"),
    tool_call("Critique", {"feedback": "A fair start.", "decision": "stop", "parent_id": None}, role="critic"),
]


class Tmux:
    """One private tmux server (its own socket), one session running a command."""

    def __init__(self, tmp_path: Path) -> None:
        self.socket = tmp_path / "tmux.sock"
        self.status_file = tmp_path / "exit-status"
        # Explicitly os.environ: GNU readline (loaded by pytest) setenv()s COLUMNS=80 and LINES=24 behind
        # os.environ's back, and rich would believe them over the 160x50 pane.
        self.env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}

    def __call__(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-S", str(self.socket), "-f", "/dev/null", *args],
                              capture_output=True, text=True, timeout=30, env=self.env)
        assert done.returncode == 0, f"tmux {args[0]}: {done.stderr}"
        return done.stdout

    def start(self, *argv: str) -> None:
        # bash writes the exit status to a file: tmux here does not always reap its pane's process (it stays a
        # zombie, with no #{pane_dead_status}). bash outlives a Ctrl-C its child handles (it only dies of SIGINT
        # when the child does). remain-on-exit keeps the screen readable after the command ended.
        wrapper = ["bash", "-c", '"$@"; echo $? > "$0"', str(self.status_file), *argv]
        self("start-server", ";", "set-option", "-g", "remain-on-exit", "on", ";",
             "new-session", "-d", "-s", "chat", "-x", "160", "-y", "50", "-c", str(REPO), *wrapper)

    def screen(self) -> str:
        return self("capture-pane", "-p", "-J", "-S", "-", "-t", "chat")

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            failed = any(sign in screen for sign in ("Traceback", " failed: ", "no step left"))
            if failed or time.monotonic() > deadline or self.exit_status() is not None:
                pytest.fail(f"{text!r} did not appear within {timeout:.0f} s; the screen:\n{screen[-6000:]}")
            time.sleep(0.3)

    def type(self, line: str) -> None:
        self("send-keys", "-t", "chat", "-l", line)
        self("send-keys", "-t", "chat", "Enter")

    def exit_status(self) -> int | None:
        """The command's exit status once it ended, else None."""
        text = self.status_file.read_text().strip() if self.status_file.exists() else ""
        return int(text) if text else None

    def wait_exit(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (status := self.exit_status()) is None:
            if time.monotonic() > deadline:
                pid = int(self("display-message", "-p", "-t", "chat", "#{pane_pid}"))
                pytest.fail(f"capnas chat did not exit; its threads: {_threads(pid)}\nthe screen:\n"
                            f"{self.screen()[-6000:]}")
            time.sleep(0.2)
        return status

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", str(self.socket), "kill-server"], capture_output=True, timeout=30)


def _threads(pid: int) -> str:
    """Where each thread of a process and its children waits, from /proc (state and kernel wait channel)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[-1].split()[1] == str(pid):
                children.append(int(stat.parent.name))
        except OSError:
            continue
    out = []
    for proc in [pid, *children]:
        for task in sorted(Path(f"/proc/{proc}/task").glob("*")):
            try:
                stat = (task / "stat").read_text()
                out.append(f"{proc}/{(task / 'comm').read_text().strip()}:{stat[stat.rfind(')') + 2]}:"
                           f"{(task / 'wchan').read_text().strip()}")
            except OSError:
                continue
    return ", ".join(out) or "(gone)"


def _left_in(workspace: Path, timeout_s: float = 20.0) -> list[str]:
    """Processes still working in the workspace (a sandboxed job must die with its capnas), after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(workspace) in text:
                left.append(f"{cmdline.parent.name}: {text[:200]}")
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


@pytest.fixture
def tmux(tmp_path: Path):
    t = Tmux(tmp_path)
    yield t
    t.kill()


def _chat_config(tmp_path: Path, server: ScriptedLLMServer) -> Path:
    path = tmp_path / "chat.yaml"
    path.write_text(yaml.safe_dump({
        "dataset": "shapes:200", "image_size": 32, "epochs": 2, "train_time_s": 20, "max_candidates": 1,
        "threads": 1, "max_latency_ms": 10_000, "generation": "spec", "llm_base_url": server.base_url,
        "llm_model": "scripted", "llm_timeout_s": 60, "run_dir": str(tmp_path / "ws")}))
    return path


def _capnas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "capnas", *args], capture_output=True, text=True, timeout=600)


def test_chat_confirms_an_edited_plan_shows_progress_and_quits(tmp_path: Path, tmux: Tmux) -> None:
    with ScriptedLLMServer(SCRIPT) as server:
        tmux.start(sys.executable, "-m", "capnas", "chat", "--config", str(_chat_config(tmp_path, server)))
        tmux.wait_for("describe the captioning model you need", timeout=120)
        tmux.type("a captioning model for phones, under 2M parameters")
        screen = tmux.wait_for("y to start, key=value to edit", timeout=120)
        # the planner's draft, as a table, with the words each changed value was read from
        assert "2,000,000" in screen and "under 2M parameters" in screen
        tmux.type("epochs=1 max_len=12")
        tmux.wait_for("Task (edited)", timeout=30)
        tmux.type("y")
        tmux.wait_for("(confirmed)", timeout=30)
        tmux.wait_for("round 1", timeout=60)
        tmux.wait_for("candidate r000: trained", timeout=420)
        tmux.wait_for("done: run", timeout=120)
        tmux.type("/leaderboard")
        screen = tmux.wait_for("leaderboard (by val cider)", timeout=30)
        tmux.type("/report")
        report = next(line.split(": ", 1)[1].strip() for line in tmux.wait_for("report: ", timeout=300).splitlines()
                      if line.startswith("report: "))
        tmux.type("/quit")
        assert tmux.wait_exit(timeout=30) == 0
        assert not server.unused_steps, "the run skipped scripted answers"

    listed = _capnas("runs", "--run-dir", str(tmp_path / "ws"), "--json")
    assert listed.returncode == 0, listed.stderr
    (run,) = json.loads(listed.stdout)
    assert (run["status"], run["candidates"], run["trained"]) == ("finished", 1, 1)
    assert run["tokens"] > 0
    task = Journal(tmp_path / "ws" / "journal.sqlite").get_run(run["run_id"])["task"]
    assert (task["max_params"], task["budgets"]["epochs"], task["max_len"]) == (2_000_000, 1, 12)
    assert "capnas resume" not in screen  # a finished run needs no resuming
    assert Path(report) == tmp_path / "ws" / "runs" / run["run_id"] / "report.html" and Path(report).is_file()


def test_ctrl_c_keeps_the_run_and_capnas_resume_finishes_it(tmp_path: Path, tmux: Tmux) -> None:
    with ScriptedLLMServer(SCRIPT) as server:
        tmux.start(sys.executable, "-m", "capnas", "chat", "--config", str(_chat_config(tmp_path, server)))
        tmux.wait_for("describe the captioning model you need", timeout=120)
        tmux.type("a captioning model for phones")
        tmux.wait_for("y to start, key=value to edit", timeout=120)
        tmux.type("y")
        tmux.wait_for("round 1", timeout=60)
        tmux("send-keys", "-t", "chat", "C-c")
        assert tmux.wait_exit(timeout=30) == 130
        assert _left_in(tmp_path / "ws") == [], "sandboxed jobs outlived capnas chat"
        screen = tmux.screen()
        run_id = next(line.split()[2] for line in screen.splitlines() if line.strip().startswith("capnas resume"))
        assert Journal(tmp_path / "ws" / "journal.sqlite").get_run(run_id)["status"] == "interrupted"

        resumed = _capnas("resume", run_id, "--run-dir", str(tmp_path / "ws"), "--json")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert not server.unused_steps
    summary = json.loads(resumed.stdout)
    assert (summary["status"], summary["candidates"], summary["trained"]) == ("finished", 1, 1)
