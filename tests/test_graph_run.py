"""The whole graph, for real: `capnas run` in a child process against a scripted OpenAI-compatible server on
127.0.0.1, sandboxed validation and CPU training on a small `shapes` set, pycocoevalcap scores, the SQLite
journal and checkpointer. Slow (minutes): each candidate is probed and trained for real."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from capnas.graph.journal import Journal
from llm_server import ScriptedLLMServer, answer, hang, http_error, tool_call

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parent / "fixtures" / "models"
DATASET = "shapes:60"  # 48 train, 6 val images: what these runs assert holds at any size, and an epoch is quick
# Small and quick: 32 px images, one or two short epochs per candidate.
BASE = {"dataset": DATASET, "image_size": 32, "epochs": 2, "train_time_s": 30, "time_budget": 60,
        "threads": 1, "max_latency_ms": 10_000,  # latency is not under test, and this machine is shared
        "concurrency": 1}  # one candidate per round: the scripted LLM answers come in a fixed order


def _fenced(path: Path) -> str:
    return f"Here is the module.\n\n```python\n{path.read_text()}\n```\n"


def _capnas(*args: str, timeout: float = 900, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "capnas", *args], capture_output=True, text=True,
                          timeout=timeout, **kw)


def _config(tmp_path: Path, **settings) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**BASE, "run_dir": str(tmp_path / "ws"), **settings}))
    return path


def test_code_mode_run_repairs_retries_and_scores_honestly(tmp_path: Path) -> None:
    critique = {"feedback": "The GRU trained; try an LSTM decoder next.", "decision": "explore", "parent_id": None}
    script = [
        # the planner reads the requirement; the first answer is a rate limit the client must retry
        http_error(429, role="planner"),
        tool_call("TaskDraft", {"max_params": 2_000_000, "objective": "cider"}, role="planner"),
        # candidate 0: code that breaks the contract (imports os), then the repair that fixes it
        answer(_fenced(FIXTURES / "broken" / "import_os.py"), role="coder"),
        answer(_fenced(FIXTURES / "valid" / "cnn_gru.py"), role="coder"),
        # the critic's first answer never comes (timeout, retried), its next is malformed JSON (re-asked)
        hang(role="critic"),
        tool_call("Critique", '{"feedback": "unterminated', role="critic"),
        tool_call("Critique", critique, role="critic"),
        tool_call("RoundPlan", {"encoders": ["small_cnn"], "decoders": ["lstm"], "rationale": "try lstm"},
                  role="planner"),
        # candidate 1: valid at once
        answer(_fenced(FIXTURES / "valid" / "cnn_lstm.py"), role="coder"),
        tool_call("Critique", {**critique, "decision": "stop"}, role="critic"),
    ]
    with ScriptedLLMServer(script) as server:
        config = _config(tmp_path, generation="code", max_candidates=2, llm_base_url=server.base_url,
                         llm_model="scripted", llm_timeout_s=3, llm_max_retries=2,
                         requirement="a small captioning model, under 2M parameters")
        done = _capnas("run", "--config", str(config), "--json")
        assert done.returncode == 0, done.stderr[-3000:]
        assert not server.unused_steps, "the graph skipped scripted answers"
        statuses = [e.status for e in server.exchanges]

    summary = json.loads(done.stdout)
    assert summary["status"] == "finished"
    assert (summary["candidates"], summary["valid"], summary["trained"]) == (2, 2, 2)
    assert summary["tokens"] > 0
    assert statuses.count(429) == 1

    journal = Journal(tmp_path / "ws" / "journal.sqlite")
    run = journal.get_run(summary["run_id"])
    assert run["task"]["max_params"] == 2_000_000  # the planner's draft became the task
    first, second = journal.candidates(summary["run_id"])
    assert first.repairs == 1 and first.status == "trained"  # the repaired candidate trained
    repair = journal.events(summary["run_id"], "repair")[0]
    assert [v["code"] for v in repair["payload"]["contract"]["violations"]][:1] == ["IMP-001"]
    for cand in (first, second):
        assert cand.contract["ok"] is True and cand.params > 0
        assert set(cand.metrics) >= {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider"}
        assert cand.curve and cand.samples

    # The best model's metrics are exactly what a fresh `capnas eval` of its captions says.
    best = summary["best"]
    captions = Path(journal.get_candidate(best["candidate_id"]).artifacts) / "val_captions.json"
    fresh = _capnas("eval", str(captions), "--dataset", DATASET, "--split", "val", "--json")
    assert fresh.returncode == 0, fresh.stderr
    scores = json.loads(fresh.stdout)
    for key, value in best["metrics"].items():
        assert scores[key] == pytest.approx(value, abs=1e-9), key

    # The run ends with its report and the exported best model.
    assert Path(summary["report"]["html"]).is_file()
    assert (Path(summary["report"]["model_dir"]) / "weights.pt").is_file()

    listed = _capnas("runs", "--run-dir", str(tmp_path / "ws"), "--json")
    assert [r["run_id"] for r in json.loads(listed.stdout)] == [summary["run_id"]]


def _journal_run(workspace: Path, run_id: str) -> dict | None:
    path = workspace / "journal.sqlite"
    return Journal(path).get_run(run_id) if path.exists() else None


def _wait_for_orphans(workspace: Path, timeout_s: float = 20.0) -> list[str]:
    """Processes still working in the workspace after their `capnas` was killed (sandboxed jobs must die
    with it). Returns what is left after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(workspace) in cmdline:
                left.append(f"{pid}: {cmdline[:200]}")
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def test_killed_at_random_points_resume_always_completes(tmp_path: Path) -> None:
    """Ten SIGKILLs of the whole `capnas` process group at random moments; after each, the run is continued
    with `capnas resume`. No candidate is lost, none is generated twice, and a trained one is never trained
    again."""
    workspace, run_id, rng = tmp_path / "ws", "killed-run", random.Random(7)
    # Two candidates per round: kills land inside concurrent branches of the candidate subgraph too.
    # shapes:200 (not the quicker DATASET): the run must outlast ten kills of 2-12 s each
    config = _config(tmp_path, generation="random", max_candidates=3, epochs=2, train_time_s=20, concurrency=2,
                     dataset="shapes:200")
    trained_at_kill: list[tuple[float, set[str]]] = []
    kills = 0
    while kills < 10:
        started = _journal_run(workspace, run_id) is not None
        argv = ["resume", run_id, "--run-dir", str(workspace)] if started else \
               ["run", "--config", str(config), "--run-id", run_id, "--no-report"]
        proc = subprocess.Popen([sys.executable, "-m", "capnas", *argv, "--json"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            proc.wait(timeout=rng.uniform(2.0, 12.0))  # a run here takes minutes: every trial interrupts it
            out, err = proc.communicate()
            assert proc.returncode == 0, err.decode()[-3000:]
            break  # the run finished before this kill: the remaining trials have nothing to interrupt
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            kills += 1
        assert _wait_for_orphans(workspace) == [], "sandboxed jobs outlived their killed capnas"
        if _journal_run(workspace, run_id) is not None:
            journal = Journal(workspace / "journal.sqlite")
            trained_at_kill.append((time.time(), {c.candidate_id for c in journal.candidates(run_id)
                                                  if c.status in ("trained", "failed")}))

    final = _capnas("resume", run_id, "--run-dir", str(workspace), "--json")
    assert final.returncode == 0, final.stderr[-3000:]
    summary = json.loads(final.stdout)
    assert summary["status"] == "finished" and kills == 10, (summary, kills)

    journal = Journal(workspace / "journal.sqlite")
    cands = journal.candidates(run_id)
    # Three candidates, two per round: none lost, none twice.
    assert sorted(c.candidate_id for c in cands) == [f"{run_id}-r000", f"{run_id}-r000-1", f"{run_id}-r001"]
    assert sorted(c.round for c in cands) == [0, 0, 1]
    assert all(c.status in ("trained", "failed", "invalid", "duplicate") for c in cands), \
        [(c.candidate_id, c.status) for c in cands]
    calls = journal.events(run_id, "train_call")
    for when, finished in trained_at_kill:  # a candidate finished before a kill is never trained after it
        again = [e for e in calls if e["candidate_id"] in finished and e["created_at"] > when]
        assert again == [], again
    for c in cands:
        if c.status == "trained":
            epochs = [p["epoch"] for p in c.curve]
            assert epochs == sorted(set(epochs)), epochs  # every epoch once


# Round 0 of a task that names no families gets the first pair of the default plan: small_cnn + lstm.
SPEC_A = {"encoder": {"name": "small_cnn"}, "decoder": {"name": "lstm", "embed_dim": 128, "hidden_size": 128,
                                                        "num_layers": 1, "attention": False},
          "lr": 0.003, "batch_size": 32, "epochs": 2}
SPEC_B = {**SPEC_A, "decoder": {"name": "lstm", "embed_dim": 128, "hidden_size": 128, "num_layers": 1,
                                "attention": True}}


def test_spec_and_random_runs_with_one_budget_share_a_leaderboard(tmp_path: Path) -> None:
    critique = {"feedback": "try attention", "decision": "refine", "parent_id": None}
    script = [tool_call("ArchSpec", SPEC_A, role="coder"), tool_call("Critique", critique, role="critic"),
              tool_call("RoundPlan", {"encoders": ["small_cnn"], "decoders": ["lstm"]}, role="planner"),
              tool_call("ArchSpec", SPEC_B, role="coder"), tool_call("Critique", critique, role="critic")]
    budget = {"max_candidates": 2, "max_params": 50_000_000}
    with ScriptedLLMServer(script) as server:
        spec_run = _capnas("run", "--config", str(_config(tmp_path, generation="spec", llm_base_url=server.base_url,
                                                          llm_model="scripted", **budget)),
                           "--run-id", "guided", "--json", "--no-report")
        assert spec_run.returncode == 0, spec_run.stderr[-3000:]
    random_run = _capnas("run", "--config", str(_config(tmp_path, generation="random", seed=3, **budget)),
                         "--run-id", "baseline", "--json", "--no-report")
    assert random_run.returncode == 0, random_run.stderr[-3000:]

    summaries = [json.loads(spec_run.stdout), json.loads(random_run.stdout)]
    assert [s["candidates"] for s in summaries] == [2, 2]  # the same budget, spent the same way
    journal = Journal(tmp_path / "ws" / "journal.sqlite")
    for run_id, mode in (("guided", "spec"), ("baseline", "random")):
        cands = journal.candidates(run_id)
        assert {c.mode for c in cands} == {mode}
        assert all(c.spec and c.contract is not None for c in cands)  # both journals hold the same kind of rows

    board = _capnas("leaderboard", "--run-dir", str(tmp_path / "ws"), "--json")
    assert board.returncode == 0, board.stderr
    rows = json.loads(board.stdout)
    assert {r["mode"] for r in rows} == {"spec", "random"}
    ciders = [r["metrics"]["cider"] for r in rows]
    assert ciders == sorted(ciders, reverse=True)
    table = _capnas("leaderboard", "--run-dir", str(tmp_path / "ws"), env={**os.environ, "COLUMNS": "250"})
    assert "spec" in table.stdout and "random" in table.stdout


def test_a_budget_change_and_a_stop_request_are_obeyed_between_candidates(tmp_path: Path) -> None:
    """Requests a person sends to a live run (the chat's /budget and /stop) go through the journal; here they
    are sent before the run starts, so the first candidate boundary must obey them (a stop: before any
    candidate)."""
    journal = Journal(tmp_path / "ws" / "journal.sqlite")
    journal.request("smaller", "budget", max_candidates=1)
    journal.request("stopped", "stop")
    for run_id, reason, count in (("smaller", "max_candidates", 1), ("stopped", "stopped_by_user", 0)):
        done = _capnas("run", "--config", str(_config(tmp_path, generation="random", max_candidates=5, epochs=1)),
                       "--run-id", run_id, "--json", "--no-report")
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads(done.stdout)
        assert (summary["candidates"], summary["stop_reason"]) == (count, reason)
