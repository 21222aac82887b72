"""How a refine's child is made (`capnas.graph.refine`), against a real SQLite journal and without training: the
critic's edits applied exactly, a mutation when there is nothing new (no edits, refused edits, an unusable
critique, a duplicate), each journaled, and each part switched off by its setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from capnas.agents import coder
from capnas.contracts import get_contract
from capnas.graph import refine
from capnas.graph.context import Context
from capnas.graph.journal import Journal
from capnas.graph.services import RunServices
from capnas.tools.design.archspec import ArchSpec, render
from capnas.tools.design.edits import apply_edits
from capnas.tools.task import Task

PARENT = ArchSpec(encoder={"name": "small_cnn", "width": 16}, decoder={"name": "lstm", "attention": False}, lr=0.003)


def _services(tmp_path: Path, **settings) -> RunServices:
    """A run's services with a real journal holding one trained candidate, `r-r000` (PARENT)."""
    task = Task(dataset="shapes:200", families=["small_cnn", "lstm", "gru"])
    journal = Journal(tmp_path / "journal.sqlite")
    journal.create_run(task.model_dump(), {}, run_id="r")
    journal.add_candidate("r", render(PARENT), round=0, mode="spec", spec=PARENT.model_dump(mode="json"),
                          candidate_id="r-r000")
    journal.update_candidate("r-r000", status="trained", metrics={"cider": 0.5})
    return RunServices(ctx=Context(device="cpu", **settings), run_id="r", task=task, journal=journal)


def _state(**fields) -> dict:
    return {"run_id": "r", "round": 1, "candidate_id": "r-r001", "slot": 0, "index": 1, "repairs": 0,
            "decision": "refine", "parent_id": "r-r000", **fields}


def test_edits_make_the_child_exactly(tmp_path: Path) -> None:
    svc = _services(tmp_path)
    edits = [{"field": "lstm.hidden_size", "value": 256}, {"field": "lr", "value": 0.001}]
    derived = refine.refined_child(svc, svc.ctx, _state(edits=edits, parent_id="no-such-candidate"))  # the leader
    assert derived.event == refine.EDITS_APPLIED and derived.parent_id == "r-r000"
    assert derived.spec == apply_edits(PARENT, edits).model_dump(mode="json") and derived.code == render(ArchSpec(**derived.spec))
    assert derived.payload["changed"] == [["lstm.hidden_size", 512, 256], ["lr", 0.003, 0.001]]


@pytest.mark.parametrize("state, reason", [
    (_state(edits=[]), "empty_edits"),
    (_state(edits=[], edits_reason="edits_refused"), "edits_refused"),
    (_state(edits=[{"field": "lstm.attention", "value": False}]), "duplicate"),  # the edit changes nothing
])
def test_nothing_new_becomes_a_seeded_mutation_of_the_parent(tmp_path: Path, state: dict, reason: str) -> None:
    svc = _services(tmp_path)
    derived = refine.refined_child(svc, svc.ctx, state)
    again = refine.refined_child(svc, svc.ctx, state)
    assert derived == again  # the run's seed and the candidate's index: a rerun draws the same
    assert derived.event == refine.MUTATION and derived.parent_id == "r-r000"
    payload = derived.payload
    assert payload["reason"] == reason and 1 <= len(payload["fields"]) <= 2
    assert derived.spec == apply_edits(PARENT, payload["edits"]).model_dump(mode="json") != PARENT.model_dump(mode="json")
    other = refine.refined_child(svc, svc.ctx.model_copy(update={"seed": 1}), state)
    assert other != derived  # another seed, another draw (fixed seeds: this holds for 0 and 1)


def test_only_a_refine_rounds_first_first_attempt_is_derived(tmp_path: Path) -> None:
    svc = _services(tmp_path)
    for state in (_state(decision="explore"), _state(slot=1), _state(repairs=1)):
        assert refine.refined_child(svc, svc.ctx, {**state, "edits": [{"field": "lr", "value": 0.001}]}) is None


def test_each_part_switches_off(tmp_path: Path) -> None:
    edits = [{"field": "lr", "value": 0.001}]
    svc = _services(tmp_path, critic_edits=False)
    assert refine.refined_child(svc, svc.ctx, _state(edits=edits)) is None  # the coder writes the refine
    derived = refine.refined_child(svc, svc.ctx, _state(edits=[], edits_reason="critic_unusable"))
    assert derived.event == refine.MUTATION  # an unusable critique still mutates while mutation is on
    svc = _services(tmp_path / "2", mutation=False)
    assert refine.refined_child(svc, svc.ctx, _state(edits=[])) is None
    assert refine.refined_child(svc, svc.ctx, _state(edits=edits)).event == refine.EDITS_APPLIED
    assert refine.mutation_if_duplicate(svc, svc.ctx, _state(), render(PARENT), PARENT.model_dump(mode="json")) is None


def test_a_coders_duplicate_becomes_a_mutation_of_its_twin(tmp_path: Path) -> None:
    svc = _services(tmp_path)
    state = _state(decision="explore", parent_id=None)
    derived = refine.mutation_if_duplicate(svc, svc.ctx, state, render(PARENT), PARENT.model_dump(mode="json"))
    assert derived.parent_id == "r-r000" and derived.payload["reason"] == "duplicate"
    fresh = PARENT.model_copy(update={"lr": 0.0003})
    assert refine.mutation_if_duplicate(svc, svc.ctx, state, render(fresh), fresh.model_dump(mode="json")) is None


def test_an_unusable_critique_refines_the_leader_and_refused_edits_are_journaled_once(tmp_path: Path) -> None:
    svc = _services(tmp_path)
    data = refine.unusable_critique(svc, svc.ctx, ValueError("Critique: decision: Input should be 'refine'"))
    assert data["decision"] == "refine" and refine.critic_update(svc, data, False)["edits_reason"] == "critic_unusable"
    [event] = svc.journal.events("r", refine.CRITIC_UNUSABLE)
    assert event["payload"] == {"error": "Critique: decision: Input should be 'refine'", "then": "refine"}
    off = svc.ctx.model_copy(update={"mutation": False})
    assert refine.unusable_critique(svc, off, ValueError("x"))["decision"] == "explore"

    refused = {"feedback": "f", "decision": "refine", "edits": [], "refused": "edit 1: lr cannot be 0.002; use one of ..."}
    assert refine.critic_update(svc, refused, False) == {"edits": [], "edits_reason": "edits_refused"}
    assert refine.critic_update(svc, refused, True)["edits_reason"] == "edits_refused"  # a replay journals nothing
    assert [e["payload"]["message"] for e in svc.journal.events("r", refine.EDITS_REFUSED)] == [refused["refused"]]
    explore = {"feedback": "f", "decision": "explore", "edits": [{"field": "lr", "value": 0.001}]}
    assert refine.critic_update(svc, explore, False)["edits"] == []  # edits only travel with a refine


def test_code_mode_gets_the_edits_as_required_changes_to_the_parents_module(tmp_path: Path) -> None:
    svc = _services(tmp_path)
    changes = refine.required_changes(svc, _state(edits=[{"field": "lstm.attention", "value": True}]))
    assert changes == {"parent_id": "r-r000", "code": render(PARENT), "changes": ["set lstm.attention to True"]}
    contract = get_contract("caption-net-v1", vocab_size=50, image_size=32)
    prompt = coder.coder_messages("code", contract, [], "", "", refine=changes)[1].content
    assert "# Refine r-r000" in prompt and "- set lstm.attention to True" in prompt and render(PARENT) in prompt
