"""LangGraph Server as a way in, the way a user meets it: `langgraph dev` (langgraph-cli, in-memory runtime) on
a checkout of the repository, bound to 127.0.0.1, no browser; the `langgraph_sdk` client lists the assistant,
reads its schemas, creates a thread and streams a `spec` run to the end against the scripted OpenAI-compatible
server. The key lives only in the server's environment; the context names its variable. Afterwards no file the
run left behind (the server's own store, the journal, the workspace, the served tree) holds the key.

The checkout served is a copy of this working tree in a temporary folder, so the server's store
(`.langgraph_api/`) and its file watcher stay there, and capnas stays installed (editable) from another folder
than the one served: the case where the sandbox used to mount the wrong code. Slow: two candidates are
probed and trained for real on CPU."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from capnas.graph.journal import Journal
from capnas.tools.task import Budgets, Task
from llm_server import ScriptedLLMServer, tool_call

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
LANGGRAPH = Path(sys.executable).with_name("langgraph")
KEY_VAR = "CAPNAS_TEST_SERVED_KEY"

# Round 0 of a task that names no families gets the default plan's first pair: small_cnn + lstm.
SPEC_A = {"encoder": {"name": "small_cnn"}, "decoder": {"name": "lstm", "embed_dim": 128, "hidden_size": 128,
                                                        "num_layers": 1, "attention": False},
          "lr": 0.003, "batch_size": 32, "epochs": 1}
CRITIQUE = {"feedback": "try attention", "decision": "refine", "parent_id": None}
# A refine is the parent with the critic's typed edits (no coder call): SPEC_A with attention on.
CRITIQUE_EDITS = {**CRITIQUE, "edits": [{"field": "lstm.attention", "value": True}]}


def _needs_langgraph_cli() -> None:
    pytest.importorskip("langgraph_sdk", reason="the LangGraph SDK client: pip install 'langgraph-cli[inmem]'")
    pytest.importorskip("langgraph_api", reason="langgraph dev's in-memory server: pip install 'langgraph-cli[inmem]'")
    if not LANGGRAPH.exists():
        pytest.skip(f"no {LANGGRAPH}: pip install 'langgraph-cli[inmem]'")
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("serving a checkout needs git and a git working tree (git ls-files)")


def _checkout_copy(dest: Path) -> Path:
    """The working tree's files (tracked, and untracked ones git does not ignore), as a fresh clone has them."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env(home: Path, key: str) -> dict[str, str]:
    """This process's environment for the server, minus anything that would reach a LangChain service."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGSMITH_", "LANGCHAIN_", "LANGGRAPH_"))}
    return {**env, "HOME": str(home), KEY_VAR: key,
            "LANGSMITH_TRACING": "false", "LANGGRAPH_NO_VERSION_CHECK": "true", "LANGGRAPH_CLI_NO_ANALYTICS": "1"}


@contextmanager
def _langgraph_dev(tree: Path, port: int, env: dict[str, str], log: Path) -> Iterator[str]:
    """`langgraph dev` serving `tree` on 127.0.0.1:port; stopped (its whole process group) on the way out."""
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        proc = subprocess.Popen([str(LANGGRAPH), "dev", "--host", "127.0.0.1", "--port", str(port), "--no-browser"],
                                cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, f"langgraph dev exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{url}/ok", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"langgraph dev did not answer in 180 s:\n{log.read_text()[-3000:]}"
            time.sleep(1)
        yield url
    finally:
        # SIGINT is Ctrl-C: the server writes its store (.langgraph_api) and exits.
        for sig, wait_s in ((signal.SIGINT, 30), (signal.SIGKILL, 10)):
            if proc.poll() is not None:
                break
            os.killpg(proc.pid, sig)
            try:
                proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                continue


def _files_holding(root: Path, needle: bytes) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    hits.append(str(path.relative_to(root)))
            except OSError:
                continue
    return hits


def test_a_spec_run_streams_through_langgraph_dev_and_no_key_is_left_on_disk(tmp_path: Path) -> None:
    _needs_langgraph_cli()
    from langgraph_sdk import get_sync_client

    tree = _checkout_copy(tmp_path / "checkout")
    home = tmp_path / "home"
    home.mkdir()
    key = f"sk-planted-{uuid.uuid4().hex}"
    marker = f"capnas-context-marker-{uuid.uuid4().hex}"  # not a secret: proves the grep sees the server's store
    log = tmp_path / "langgraph-dev.log"
    task = Task(dataset="shapes:200", image_size=32, max_latency_ms=10_000, max_params=50_000_000,
                budgets=Budgets(max_candidates=2, epochs=1, train_time_s=30, time_budget=15)).model_dump(mode="json")
    script = [tool_call("ArchSpec", SPEC_A, role="coder"), tool_call("Critique", CRITIQUE_EDITS, role="critic"),
              tool_call("RoundPlan", {"encoders": ["small_cnn"], "decoders": ["lstm"]}, role="planner"),
              tool_call("Critique", CRITIQUE, role="critic")]

    with ScriptedLLMServer(script) as llm, _langgraph_dev(tree, _free_port(), _server_env(home, key), log) as url:
        client = get_sync_client(url=url)
        [assistant] = client.assistants.search(graph_id="capnas")
        schemas = client.assistants.get_schemas(assistant["assistant_id"])
        assert {"run_id", "task", "requirement"} <= set(schemas["input_schema"]["properties"])
        assert {"status", "best"} <= set(schemas["output_schema"]["properties"])
        context_fields = schemas["context_schema"]["properties"]
        assert {"generation", "models", "run_dir", "executor"} <= set(context_fields)
        assert "api_key" not in json.dumps(schemas["context_schema"]).replace("api_key_env", "")

        thread = client.threads.create()
        run_id = thread["thread_id"]
        # JSON only: the LLM settings name the variable that holds the key in the server's environment.
        context = {"generation": "spec", "device": "cpu", "threads": 1, "concurrency": 1, "extra": {"marker": marker},
                   "models": {"default": {"model": "scripted", "base_url": llm.base_url, "api_key_env": KEY_VAR}}}
        parts = list(client.runs.stream(run_id, assistant["assistant_id"],
                                        input={"run_id": run_id, "task": task, "requirement": ""}, context=context,
                                        stream_mode=["updates", "custom"], stream_subgraphs=True))
        state = client.threads.get_state(run_id)["values"]

    errors = [p.data for p in parts if p.event == "error"]
    assert not errors, errors
    custom = [p.data for p in parts if p.event.startswith("custom")]
    events = {e.get("event") for e in custom}
    assert {"task", "done"} <= events, events
    assert any(p.event.startswith("custom|candidate") for p in parts)  # the branches' events, with their namespace
    assert state["status"] == "finished" and state["best"] is not None, state

    # Every LLM request carried the key from the server's environment, and the run used the default workspace.
    assert len(llm.exchanges) == len(script) and all(x.status == 200 for x in llm.exchanges)
    assert {x.headers["authorization"] for x in llm.exchanges} == {f"Bearer {key}"}
    workspace = home / ".capnas"
    cands = Journal(workspace / "journal.sqlite").candidates(run_id)
    assert [c.status for c in cands] == ["trained", "trained"] and {c.mode for c in cands} == {"spec"}
    assert json.loads((workspace / "runs" / run_id / "summary.json").read_text())["candidates"] == 2
    assert (workspace / "runs" / run_id / "leaderboard.md").is_file()

    # Nothing in the served tree reloaded the server (the workspace is outside it)...
    server_log = log.read_text()
    assert "Reloading" not in server_log and "detected changes" not in server_log, server_log[-3000:]
    # ... and the key is nowhere on disk, while the context itself is in the server's store.
    assert _files_holding(tree / ".langgraph_api", marker.encode()), "the server's store does not hold the context"
    assert _files_holding(tmp_path, key.encode()) == []
