"""The coder's own tools (issue #20), with real parts: the scripted OpenAI-compatible server on 127.0.0.1 drives
the coder's tool loop through langchain-openai, `check_contract` and `run_snippet` run real sandboxed children,
and every call lands in the real SQLite journal. The graph's coder and validator nodes are called as the
candidate branch calls them, so the validator's verdict and routing are the real ones."""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from capnas.agents.llm_config import AgentModels, LLMConfig
from capnas.graph import nodes
from capnas.graph.context import Context
from capnas.graph.journal import Journal
from capnas.tools.task import Task
from llm_server import ScriptedLLMServer, answer, tool_call
from loopback import LoopbackServer

pytestmark = pytest.mark.timeout(300)

VALID = (Path(__file__).parent / "fixtures" / "models" / "valid" / "cnn_gru.py").read_text()
BROKEN = "import os\n" + VALID  # IMP-001 on line 1: the static checks refuse it before any probe
ESCAPE = Path(__file__).parent / "escape"
TASK = Task(dataset="shapes:60", image_size=32, max_latency_ms=10_000)  # latency is not under test here


def _run(tmp_path: Path, server: ScriptedLLMServer, run_id: str, **settings):
    """A run's journal and the runtime its nodes see: code mode against the scripted server."""
    models = AgentModels(default=LLMConfig(model="scripted", base_url=server.base_url, timeout_s=30, max_retries=0))
    ctx = Context(run_dir=str(tmp_path / "ws"), models=models, concurrency=1, threads=1,
                  **{"generation": "code", **settings})
    journal = Journal(tmp_path / "ws" / "journal.sqlite")
    journal.create_run(TASK.model_dump(), ctx.to_record(), run_id=run_id)
    plan = {"encoders": ["small_cnn"], "decoders": ["gru"], "rationale": "a small GRU captioner"}
    state = {"run_id": run_id, "task": TASK.model_dump(), "round": 0, "plan": plan, "started_at": time.time(),
             "families": ["small_cnn", "gru"], "candidate_id": f"{run_id}-r000", "repairs": 0}
    return journal, SimpleNamespace(context=ctx, stream_writer=None), state


def _branch(state: dict, runtime) -> tuple[dict, str]:
    """The candidate branch up to training: coder, then the validator; returns the state and where it goes next."""
    state = {**state, **nodes.coder_node(state, runtime)}
    command = nodes.validator_node(state, runtime)
    return {**state, **command.update}, command.goto


def _tool_messages(request: dict) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


def _coder_tools(journal: Journal, run_id: str) -> list[dict]:
    return [e["payload"] for e in journal.events(run_id, "coder_tool")]


def test_the_coder_tries_checks_fixes_and_submits_without_a_repair_round(tmp_path: Path) -> None:
    snippet = "print('batch', tuple(images.shape), tuple(captions.shape), contract['vocab_size'])"
    with ScriptedLLMServer([tool_call("run_snippet", {"code": snippet}, role="coder"),
                            tool_call("check_contract", {"code": BROKEN}, role="coder"),
                            tool_call("submit", {"code": VALID}, role="coder")]) as server:
        journal, runtime, state = _run(tmp_path, server, "tools")
        state, goto = _branch(state, runtime)
        requests = server.requests

    cand = journal.get_candidate("tools-r000")
    assert (cand.status, cand.repairs, goto) == ("valid", 0, "trainer")  # valid at once, no trip back to the coder
    assert cand.code == VALID and cand.contract["ok"] is True and cand.params > 0
    assert len(requests) == 3  # the three turns of one tool loop, nothing more

    offered = {t["function"]["name"] for t in requests[0]["tools"]}
    assert offered == {"check_contract", "run_snippet", "submit"}
    # The model read back what the sandbox printed, then the violation it fixed.
    vocab = nodes.services_for(runtime.context, "tools", TASK.model_dump()).contract.vocab_size
    assert f"batch (4, 3, 32, 32) (4, 5, {TASK.max_len}) {vocab}" in _tool_messages(requests[1])[0]
    seen = json.loads(_tool_messages(requests[2])[-1])
    assert seen["ok"] is False and [(v["code"], v["line"]) for v in seen["violations"]] == [("IMP-001", 1)]

    calls = _coder_tools(journal, "tools")
    assert [(c["call"], c["tool"]) for c in calls] == [(1, "run_snippet"), (2, "check_contract"), (3, "submit")]
    assert calls[0]["result"]["exit_reason"] == "ok" and calls[0]["sandbox_s"] > 0  # a real sandboxed child
    assert calls[1]["result"]["stage"] == "static" and calls[2]["args"]["code"] == VALID

    # The report's per-candidate view lists them, read from the journal as `capnas report` reads it.
    from capnas.commands.report_cmd import read_run
    from capnas.tools.report.html_report import render_html
    from capnas.tools.report.run_data import RunData

    page = render_html(RunData(read_run(tmp_path / "ws", "tools"), tmp_path / "ws"))
    view = page[page.index('id="cand-tools-r000"'):]
    assert re.search(r"coder's tool calls: run_snippet <small>ok \d+\.\d s</small> → check_contract "
                     r"<small>IMP-001 0\.0 s</small> → submit", view), view[:2000]


def _payload(name: str, *argv: object) -> str:
    """An escape payload of tests/escape as a snippet, with the argv it expects."""
    args = ", ".join(repr(str(a)) for a in argv)
    return f"import sys\nsys.argv[1:] = [{args}]\n" + (ESCAPE / name).read_text()


@pytest.mark.slow
def test_a_snippet_that_tries_to_escape_meets_the_walls_and_the_run_goes_on(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    canary = f"sk-canary-{secrets.token_hex(12)}"
    monkeypatch.setenv("OPENAI_API_KEY", canary)  # a key the parent holds
    secret = Path.home() / f".capnas-escape-{secrets.token_hex(4)}"
    secret.write_text(canary)  # and a secret outside the sandbox
    token = f"cb{secrets.token_hex(3)}"
    listener = LoopbackServer()
    steal = _payload("read_secrets.py", secret) + "\n" + (ESCAPE / "env_key.py").read_text()
    script = [tool_call("run_snippet", {"code": steal}, role="coder"),
              tool_call("run_snippet", {"code": _payload("network.py", listener.port)}, role="coder"),
              tool_call("run_snippet", {"code": _payload("fork_bomb.py", 500, token)}, role="coder"),
              tool_call("submit", {"code": VALID}, role="coder")]
    try:
        with ScriptedLLMServer(script) as server:
            journal, runtime, state = _run(tmp_path, server, "escape")
            state, goto = _branch(state, runtime)
            requests = server.requests
    finally:
        secret.unlink()
        listener.close()

    secrets_read, network, bomb, _ = _coder_tools(journal, "escape")
    for call in (secrets_read, network, bomb):  # a clean result each time: how the job ended, and its output
        assert call["result"]["exit_reason"] == "ok", call["result"]
    escapes = [e for call in (secrets_read, network, bomb) for e in call["result"]["events"] if e["event"] == "escape"]
    files, environment, net, forks = escapes
    assert all(v.startswith("denied:") for v in files["results"].values()), files  # the secret, /etc/shadow, /root
    assert "OPENAI_API_KEY" not in environment["names"]  # the parent's key never reached the child
    assert canary not in json.dumps(_coder_tools(journal, "escape")) and canary not in json.dumps(requests)
    assert net["tcp"].startswith("denied") and net["udp"].startswith("denied") and listener.accepted == 0
    assert forks["forks"] < 500 and forks["error"], forks  # the pids wall stopped the bomb
    assert _survivors(token) == []  # and the tree kill took every child with the job
    # the walls cost the coder nothing but the calls: it submitted, and the candidate is valid
    cand = journal.get_candidate("escape-r000")
    assert (cand.status, cand.repairs, goto) == ("valid", 0, "trainer")


def _survivors(token: str, timeout_s: float = 2.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == token:
                    found.append(int(pid))
            except OSError:
                pass
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_a_coder_that_spends_its_tool_calls_without_submitting_ends_its_candidate(tmp_path: Path) -> None:
    script = [tool_call("check_contract", {"code": BROKEN}, role="coder"),
              tool_call("check_contract", {"code": BROKEN}, role="coder"),
              tool_call("check_contract", {"code": BROKEN}, role="coder"),  # the third: over the budget of 2
              answer(f"```python\n{VALID}\n```", role="coder")]  # the next candidate, one-shot
    with ScriptedLLMServer(script) as server:
        journal, runtime, state = _run(tmp_path, server, "budget", coder_tool_calls=2, max_repairs=2)
        ended, goto = _branch(state, runtime)
        assert len(server.requests) == 3
        # the run goes on: the next candidate of the run is written and validated as usual
        nxt, next_goto = _branch({**state, "candidate_id": "budget-r001", "round": 1}, runtime)

    cand = journal.get_candidate("budget-r000")
    assert cand.status == "invalid" and goto == "__end__" and ended["repairs"] == 2  # no repair round spent on it
    [violation] = cand.violations
    assert violation["code"] == "LLM-002" and violation["message"] == "the coder used its 2 tool calls without submitting"
    assert [e["payload"]["reason"] for e in journal.events("budget", "coder_no_submit")] == [violation["message"]]
    assert [c["call"] for c in _coder_tools(journal, "budget")] == [1, 2]  # the refused call was never run
    assert journal.get_candidate("budget-r001").status == "valid" and next_goto == "trainer"


def test_a_tool_loop_stops_when_the_run_time_budget_is_spent(tmp_path: Path) -> None:
    with ScriptedLLMServer([tool_call("check_contract", {"code": BROKEN}, role="coder")]) as server:
        journal, runtime, state = _run(tmp_path, server, "late")
        _, goto = _branch({**state, "started_at": time.time() - TASK.budgets.time_budget * 60 - 1}, runtime)
    cand = journal.get_candidate("late-r000")
    assert cand.status == "invalid" and goto == "__end__"
    assert cand.violations[0]["message"] == "the coder was stopped before tool call 1: the run's time budget is spent"
    assert _coder_tools(journal, "late") == []


def test_a_sandbox_that_cannot_run_a_tool_is_a_clean_result_not_a_crash(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from capnas.sandbox.tiers import ALLOW_UNSANDBOXED_ENV, TIER_ENV

    monkeypatch.setenv(TIER_ENV, "C")  # unsandboxed, and not allowed: every job is refused before it starts
    monkeypatch.delenv(ALLOW_UNSANDBOXED_ENV, raising=False)
    with ScriptedLLMServer([tool_call("check_contract", {"code": VALID}, role="coder"),
                            tool_call("run_snippet", {"code": "print(1)"}, role="coder"),
                            tool_call("submit", {"code": VALID}, role="coder")]) as server:
        journal, runtime, state = _run(tmp_path, server, "nosandbox")
        nodes.coder_node(state, runtime)
        told = [json.loads(m) for m in _tool_messages(server.requests[2])]
    check, snippet = told
    assert check["ok"] is False and "no sandbox is available on this host" in check["error"]
    assert snippet["exit_reason"] == "sandbox_error" and "no sandbox is available" in snippet["error"]
    assert journal.get_candidate("nosandbox-r000").status == "generated"  # submitted: the validator decides


def test_a_call_written_as_text_is_the_call_it_meant(tmp_path: Path) -> None:
    """Small models often write the call envelope as text instead of a tool call."""
    echoed = json.dumps({"name": "check_contract", "arguments": {"code": BROKEN}})
    with ScriptedLLMServer([answer(echoed, role="coder"),
                            answer(json.dumps({"name": "submit", "arguments": {"code": VALID}}), role="coder")]) as server:
        journal, runtime, state = _run(tmp_path, server, "echo")
        nodes.coder_node(state, runtime)
        second = server.requests[1]["messages"]
    assert [c["tool"] for c in _coder_tools(journal, "echo")] == ["check_contract", "submit"]
    # the echoed call went back as an assistant tool call, its result as the tool message answering it
    assert second[-2]["tool_calls"][0]["id"] == second[-1]["tool_call_id"] and "IMP-001" in second[-1]["content"]
    assert journal.get_candidate("echo-r000").code == VALID


def test_spec_mode_keeps_its_forced_single_call_unless_asked(tmp_path: Path) -> None:
    spec = {"encoder": {"name": "small_cnn"}, "decoder": {"name": "gru"}, "lr": 0.003, "batch_size": 32, "epochs": 1}
    with ScriptedLLMServer([tool_call("ArchSpec", spec, role="coder")]) as server:
        _, runtime, state = _run(tmp_path, server, "spec", generation="spec")
        nodes.coder_node(state, runtime)
        [request] = server.requests
    assert [t["function"]["name"] for t in request["tools"]] == ["ArchSpec"]
    assert request["tool_choice"]["function"]["name"] == "ArchSpec"  # forced
    assert not nodes._coder_has_tools(Context(generation="code", coder_tool_calls=0, device="cpu"))


def test_spec_mode_with_tools_submits_a_spec(tmp_path: Path) -> None:
    spec = {"encoder": {"name": "small_cnn"}, "decoder": {"name": "gru"}, "lr": 0.003, "batch_size": 32, "epochs": 1}
    with ScriptedLLMServer([tool_call("submit", spec, role="coder")]) as server:
        journal, runtime, state = _run(tmp_path, server, "spect", generation="spec", spec_tools=True)
        nodes.coder_node(state, runtime)
        [request] = server.requests
    assert {t["function"]["name"] for t in request["tools"]} == {"check_contract", "run_snippet", "submit"}
    assert "tool_choice" not in request  # the model chooses: a tool, or a plain answer
    cand = journal.get_candidate("spect-r000")
    assert cand.status == "generated" and cand.spec["decoder"]["name"] == "gru" and "class Net" in cand.code


@pytest.mark.slow
def test_capnas_run_with_a_tool_calling_coder_goes_on_past_a_coder_that_never_submits(tmp_path: Path) -> None:
    """The same through `capnas run` (the CLI, the compiled graph, its checkpointer): the first candidate's coder
    spends its calls and the candidate ends; the second tries, checks, fixes, submits, and is trained."""
    import subprocess
    import sys

    import yaml

    critique = {"feedback": "nothing trained yet; try again", "decision": "explore", "parent_id": None}
    script = [*[tool_call("check_contract", {"code": BROKEN}, role="coder")] * 4,  # the fourth: over the budget
              tool_call("Critique", critique, role="critic"),
              tool_call("RoundPlan", {"encoders": ["small_cnn"], "decoders": ["gru"], "rationale": "again"},
                        role="planner"),
              tool_call("run_snippet", {"code": "print(images.shape)"}, role="coder"),
              tool_call("check_contract", {"code": BROKEN}, role="coder"),
              tool_call("submit", {"code": VALID}, role="coder"),
              tool_call("Critique", {**critique, "decision": "stop"}, role="critic")]
    with ScriptedLLMServer(script) as server:
        config = tmp_path / "run.yaml"
        config.write_text(yaml.safe_dump({
            "dataset": "shapes:60", "image_size": 32, "epochs": 1, "train_time_s": 15, "time_budget": 30,
            "threads": 1, "max_latency_ms": 10_000, "concurrency": 1, "max_candidates": 2, "generation": "code",
            "coder_tool_calls": 3, "run_dir": str(tmp_path / "ws"), "llm_base_url": server.base_url,
            "llm_model": "scripted"}))
        done = subprocess.run([sys.executable, "-m", "capnas", "run", "--config", str(config), "--json",
                               "--no-report"], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert not server.unused_steps

    summary = json.loads(done.stdout)
    journal = Journal(tmp_path / "ws" / "journal.sqlite")
    first, second = journal.candidates(summary["run_id"])
    assert summary["status"] == "finished" and (summary["candidates"], summary["trained"]) == (2, 1), \
        ([(c.status, c.exit_reason, c.violations) for c in (first, second)], done.stderr[-2000:])
    assert first.status == "invalid" and [v["code"] for v in first.violations] == ["LLM-002"]
    assert second.status == "trained" and second.repairs == 0 and second.metrics
    calls = [(e["candidate_id"], e["payload"]["tool"]) for e in journal.events(summary["run_id"], "coder_tool")]
    assert calls == [(first.candidate_id, "check_contract")] * 3 + [
        (second.candidate_id, "run_snippet"), (second.candidate_id, "check_contract"), (second.candidate_id, "submit")]
    assert f"{second.candidate_id} coder tool call 1: run_snippet" in done.stderr
