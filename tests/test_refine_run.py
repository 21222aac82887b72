"""Typed critic edits and mutation in a whole run (#18): `capnas run --generation spec` in a child process against
the scripted OpenAI-compatible server on 127.0.0.1, sandboxed probes and CPU training on `shapes`, and what
happened read back from the real SQLite journal. Slow: four candidates are probed and trained for real (the
switches and an unusable critique are covered without training, in test_refine_units.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from capnas.graph.journal import Journal
from capnas.tools.design.archspec import ArchSpec
from capnas.tools.design.edits import EditSpace, apply_edits, diff
from llm_server import ScriptedLLMServer, tool_call

pytestmark = pytest.mark.slow

FAMILIES = ["small_cnn", "lstm"]  # one pair: every round is the coder's SPEC_A families
SETTINGS = {"dataset": "shapes:60", "image_size": 32, "epochs": 1, "train_time_s": 20, "time_budget": 30,
            "threads": 1, "max_latency_ms": 10_000, "concurrency": 1, "max_candidates": 4, "min_candidates": 4,
            "max_params": 50_000_000, "families": FAMILIES, "generation": "spec", "seed": 3}
SPEC_A = {"encoder": {"name": "small_cnn", "width": 16, "depth": 3, "grid": 4},
          "decoder": {"name": "lstm", "embed_dim": 128, "hidden_size": 128, "num_layers": 1, "attention": False},
          "lr": 0.003, "batch_size": 32, "epochs": 1}
PLAN = {"encoders": ["small_cnn"], "decoders": ["lstm"], "rationale": "small and quick"}


def _critique(decision: str, edits: list | None = None, parent_id: str | None = None) -> dict:
    return {"feedback": "measured, not guessed", "decision": decision, "parent_id": parent_id,
            **({"edits": edits} if edits is not None else {})}


def test_edits_apply_exactly_and_nothing_new_becomes_a_journaled_mutation(tmp_path: Path) -> None:
    c = [f"r-r{i:03d}" for i in range(4)]  # the candidates' ids, one per round
    script = [
        tool_call("ArchSpec", SPEC_A, role="coder"),  # round 0: the coder writes the first candidate
        # round 1: a remote model's edits outside the schema: refused, and the refine mutates the parent instead
        tool_call("Critique", _critique("refine", [{"field": "lstm.hidden_size", "value": 300}], c[0]), role="critic"),
        tool_call("RoundPlan", PLAN, role="planner"),
        # round 2: valid edits: the child is the parent with exactly these changes (no coder call)
        tool_call("Critique", _critique("refine", [{"field": "lstm.attention", "value": True},
                                                   {"field": "lr", "value": 0.001}], c[0]), role="critic"),
        tool_call("RoundPlan", PLAN, role="planner"),
        # round 3: explore; the coder gives the first candidate again: a duplicate, mutated (no re-ask)
        tool_call("Critique", _critique("explore"), role="critic"),
        tool_call("RoundPlan", PLAN, role="planner"),
        tool_call("ArchSpec", SPEC_A, role="coder"),
        tool_call("Critique", _critique("stop"), role="critic"),
    ]
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**SETTINGS, "run_dir": str(tmp_path / "ws")}))
    with ScriptedLLMServer(script) as server:
        done = subprocess.run([sys.executable, "-m", "capnas", "run", "--config", str(config), "--llm-base-url",
                               server.base_url, "--llm-model", "scripted", "--run-id", "r", "--json", "--no-report"],
                              capture_output=True, text=True, timeout=1500, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr[-3000:]
        assert not server.unused_steps, "the graph skipped scripted answers"
        coder_calls = [e for e in server.exchanges if e.role == "coder"]
        last_critique = [e for e in server.exchanges if e.role == "critic"][-1].body["messages"][-1]["content"]
    assert len(coder_calls) == 2  # rounds 0 and 3 only: edits and mutations need no coder, duplicates no re-ask
    assert {e.body.get("seed") for e in server.exchanges} == {SETTINGS["seed"]}  # every agent samples by the run's seed

    journal = Journal(tmp_path / "ws" / "journal.sqlite")
    cands = {x.candidate_id: x for x in journal.candidates("r")}
    assert sorted(cands) == c and all(x.status == "trained" and x.metrics for x in cands.values())
    assert not [x for x in cands.values() if x.status == "duplicate"]
    space = EditSpace(tuple(FAMILIES))
    parent = ArchSpec(**cands[c[0]].spec)

    [refused] = journal.events("r", "edits_refused")
    assert "edit 1: lstm.hidden_size cannot be 300; use one of 128, 256, 512, 1024" in refused["payload"]["message"]

    mutations = {e["candidate_id"]: e["payload"] for e in journal.events("r", "mutation")}
    assert {cid: m["reason"] for cid, m in mutations.items()} == {
        c[1]: "edits_refused", c[3]: "duplicate"}
    for cid, m in mutations.items():
        child, source = cands[cid], cands[m["parent_id"]]
        assert child.parent_id == m["parent_id"]
        assert 1 <= len(m["fields"]) <= 2 and m["fields"] == [e["field"] for e in m["edits"]]
        # the child is exactly its parent with the journaled edits, and differs from it in those fields only
        assert child.spec == apply_edits(ArchSpec(**source.spec), m["edits"], space).model_dump(mode="json")
        assert {f for f, _, _ in diff(source.spec, child.spec)} == set(m["fields"])
    assert mutations[c[1]]["parent_id"] == mutations[c[3]]["parent_id"] == c[0]  # the duplicate's twin is c0

    [applied] = journal.events("r", "edits_applied")
    assert applied["candidate_id"] == c[2] and cands[c[2]].parent_id == c[0]
    expected = SPEC_A | {"lr": 0.001, "decoder": SPEC_A["decoder"] | {"attention": True}}
    assert cands[c[2]].spec == ArchSpec(**expected).model_dump(mode="json")
    assert [f for f, _, _ in diff(parent, cands[c[2]].spec)] == ["lstm.attention", "lr"]

    # the critic saw what the edited child changed and what that did to its val score
    before, after = cands[c[0]].metrics["cider"], cands[c[2]].metrics["cider"]
    assert (f"vs parent {c[0]}: lstm.attention False->True, lr 0.003->0.001; "
            f"val cider {before:.3f} -> {after:.3f} ({after - before:+.3f})") in last_critique
