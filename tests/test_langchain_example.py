"""capnas inside LangChain and LangGraph apps, for real: the example agent (examples/langchain_agent.py) run as a
child process against the scripted OpenAI-compatible server, whose tool call starts a real design job; and the
graph streamed through LangGraph's own API with an in-memory checkpointer. Slow: candidates are trained."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from capnas.graph.journal import Journal
from llm_server import ScriptedLLMServer, answer, tool_call

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "langchain_agent.py"
SMALL = {"image_size": 32, "epochs": 1, "train_time_s": 20, "threads": 1, "max_latency_ms": 10_000}
# Round 0 of a task that names no families gets the first pair of the default plan: small_cnn + lstm.
SPEC = {"encoder": {"name": "small_cnn"}, "decoder": {"name": "lstm", "embed_dim": 128, "hidden_size": 128,
                                                      "num_layers": 1, "attention": False},
        "lr": 0.003, "batch_size": 32, "epochs": 1}


def _agent_system_prompt() -> str:
    spec = importlib.util.spec_from_file_location("langchain_agent_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SYSTEM


def test_example_agent_calls_capnas_as_a_tool_and_reports_the_result(tmp_path: Path) -> None:
    agent = {"when": _agent_system_prompt()[:60]}  # the agent's own model: no capnas role header
    request = {"requirement": "a small captioning model for phones, under 2M parameters", "dataset": "shapes:200",
               "generation": "spec", "max_candidates": 1, "time_budget": 10}
    final = "I designed one: the best candidate is r000 (see its CIDEr in the run summary)."
    script = [
        tool_call("design_captioning_model", request, **agent),
        tool_call("TaskDraft", {"max_params": 2_000_000}, role="planner"),
        tool_call("ArchSpec", SPEC, role="coder"),
        tool_call("Critique", {"feedback": "Good enough.", "decision": "stop", "parent_id": None}, role="critic"),
        answer(final, **agent),
    ]
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**SMALL, "run_dir": str(tmp_path / "ws")}))
    with ScriptedLLMServer(script) as server:
        done = subprocess.run([sys.executable, str(EXAMPLE), "Please make me a captioning model for phones.",
                               "--base-url", server.base_url, "--model", "scripted", "--config", str(config)],
                              capture_output=True, text=True, timeout=900, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-4000:]
        assert not server.unused_steps, "the agent or capnas skipped scripted answers"
        last = server.requests[-1]["messages"]

    assert done.stdout.strip() == final
    (tool_result,) = [m for m in last if m["role"] == "tool"]  # the agent saw the tool's answer
    summary = json.loads(tool_result["content"])
    assert (summary["status"], summary["candidates"], summary["trained"]) == ("finished", 1, 1)

    journal = Journal(tmp_path / "ws" / "journal.sqlite")
    run = journal.get_run(summary["run_id"])
    assert run["task"]["max_params"] == 2_000_000 and run["task"]["dataset"] == "shapes:200"
    assert run["config"]["requirement"] == "a small captioning model for phones, under 2M parameters"  # the agent's words
    (cand,) = journal.candidates(summary["run_id"])
    assert cand.status == "trained" and cand.metrics["cider"] == summary["best"]["metrics"]["cider"]


def test_graph_streams_updates_and_progress_through_langgraph_apis(tmp_path: Path) -> None:
    """No runner, no CLI: the graph as any LangGraph app uses it. Random generation needs no LLM."""
    from langgraph.checkpoint.memory import InMemorySaver

    from capnas.graph.build import build_graph
    from capnas.graph.context import Context
    from capnas.tools.task import Budgets, Task

    graph = build_graph(checkpointer=InMemorySaver())
    task = Task(dataset="shapes:200", image_size=32, max_latency_ms=10_000,
                budgets=Budgets(max_candidates=1, epochs=1, train_time_s=20)).model_dump()
    context = Context(run_dir=str(tmp_path / "ws"), generation="random", threads=1, seed=7)
    config = {"configurable": {"thread_id": "streamed"}}
    updates, custom = [], []
    namespaces = set()
    for ns, mode, chunk in graph.stream({"run_id": "streamed", "task": task}, config, context=context,
                                        stream_mode=["updates", "custom"], subgraphs=True):
        (updates if mode == "updates" else custom).append(chunk)
        namespaces.add(ns[0].split(":")[0] if ns else "")

    nodes = [name for chunk in updates for name in chunk]
    assert nodes[:4] == ["planner", "coder", "validator", "trainer"] and nodes[-1] == "reporter"
    assert namespaces == {"", "candidate"}  # the candidate branch is a subgraph: its events carry its namespace
    kinds = [e["event"] for e in custom]
    assert kinds[0] == "task" and "round" in kinds and kinds[-1] == "done"
    statuses = [e["status"] for e in custom if e["event"] == "candidate"]
    assert statuses[:3] == ["generating", "generated", "validating"] and statuses[-1] in ("trained", "failed")
    train = [e for e in custom if e["event"] == "train"]
    assert {"start", "step", "epoch"} <= {e["phase"] for e in train}
    assert all(e["candidate_id"] == "streamed-r000" for e in train)
    done = custom[-1]
    assert done["status"] == "finished" and done["stop_reason"] == "max_candidates"
    assert graph.get_state(config).values["status"] == "finished"
    assert Journal(tmp_path / "ws" / "journal.sqlite").get_run("streamed")["status"] == "finished"
