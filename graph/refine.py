"""How a refine's child comes about: the critic's typed edits applied to the parent's spec (no coder call), or, when
the LLM gives nothing new (no edits, edits refused, an unusable critique, a duplicate), a seeded mutation of the
parent (regularized evolution's operator; no re-ask). Every derived child is journaled by an event that names its
parent, the fields changed and why: `edits_applied` or `mutation`.

The round's first candidate is the refine (it keeps the parent's families, `planner.assign`); the others are the
coder's as in any round. Only specs can be edited or mutated: in `code` mode the edits reach the coder as a list
of required changes, and a duplicate goes back to the coder as before.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from capnas.graph.context import Context
from capnas.graph.journal import Candidate, normalized_code_hash
from capnas.graph.services import RunServices
from capnas.graph.state import CandidateState
from capnas.tools.design.archspec import ArchSpec, render
from capnas.tools.design.edits import EditSpace, apply_edits, diff, mutate
from capnas.tools.task import Task

# Journal event kinds.
EDITS_APPLIED = "edits_applied"
MUTATION = "mutation"
EDITS_REFUSED = "edits_refused"
CRITIC_UNUSABLE = "critic_unusable"

# Why a refine mutates: the critic's answer had no edits, edits outside the schema, or could not be read; or the
# child (edited or written by the coder) is a duplicate of an earlier candidate.
EMPTY_EDITS, REFUSED, UNUSABLE, DUPLICATE = "empty_edits", "edits_refused", "critic_unusable", "duplicate"
# Draws before giving up on finding an untried neighbour of the parent (then the coder is asked as before).
MUTATION_ATTEMPTS = 20


@dataclass(frozen=True)
class Derived:
    """A child made from a parent without the coder: its code and spec, and the journal event saying how."""

    code: str
    spec: dict[str, Any]
    parent_id: str
    event: str  # EDITS_APPLIED | MUTATION
    payload: dict[str, Any] = field(default_factory=dict)


def edit_space(task: Task) -> EditSpace:
    """The edits a task admits: its families (none named: all) and its `frozen_encoders`."""
    return EditSpace(tuple(task.families), task.frozen_encoders)


def refined_child(svc: RunServices, ctx: Context, state: CandidateState) -> Derived | None:
    """The first attempt of a refine round's first candidate, when its parent has a spec: the parent with the
    critic's edits, or a mutation of it (no edits, edits refused, an unusable critique, an edited child that
    is a duplicate). None: the coder writes it (edits switched off, mutation off, or a parent without a spec)."""
    if state.get("decision") != "refine" or state.get("slot", 0) != 0 or state.get("repairs", 0):
        return None
    parent = _parent(svc, state)
    if parent is None:
        return None
    space = edit_space(svc.task)
    edits, reason = state.get("edits") or [], state.get("edits_reason") or EMPTY_EDITS
    if edits and ctx.critic_edits:
        child = apply_edits(ArchSpec(**parent.spec), edits, space)
        code = render(child)
        if _is_new(svc, code, state["candidate_id"]):
            return Derived(code, child.model_dump(mode="json"), parent.candidate_id, EDITS_APPLIED,
                           {"parent_id": parent.candidate_id, "edits": edits, "changed": _changed(parent.spec, child)})
        reason = DUPLICATE
    elif not (ctx.critic_edits or reason == UNUSABLE):
        return None  # edits are off: the coder writes the refine (a duplicate of it still mutates)
    return mutation(svc, ctx, state, parent, reason) if ctx.mutation else None


def mutation_if_duplicate(svc: RunServices, ctx: Context, state: CandidateState, code: str,
                          spec: dict[str, Any] | None) -> Derived | None:
    """A coder's spec that duplicates an earlier candidate becomes a mutation of that candidate (with mutation on)."""
    if not (ctx.mutation and spec and code):
        return None
    twin = svc.journal.find_by_hash(svc.run_id, normalized_code_hash(code), exclude=state["candidate_id"])
    if twin is None or not twin.spec:
        return None
    return mutation(svc, ctx, state, twin, DUPLICATE)


def mutation(svc: RunServices, ctx: Context, state: CandidateState, parent: Candidate, reason: str) -> Derived | None:
    """One or two of the parent's spec fields changed at random, seeded by the run's seed and the candidate's index
    (a rerun, or a resume, draws the same); redrawn while the child is one the run has already tried."""
    space, base = edit_space(svc.task), ArchSpec(**parent.spec)
    index = state.get("index", state["round"])
    for attempt in range(MUTATION_ATTEMPTS):
        child, edits = mutate(base, random.Random(f"{ctx.seed}:{index}:mutation:{attempt}"), space)
        code = render(child)
        if _is_new(svc, code, state["candidate_id"]):
            return Derived(code, child.model_dump(mode="json"), parent.candidate_id, MUTATION,
                           {"parent_id": parent.candidate_id, "reason": reason, "fields": [e["field"] for e in edits],
                            "edits": edits, "changed": _changed(parent.spec, child), "draws": attempt + 1})
    return None


def critic_update(svc: RunServices, data: dict[str, Any], replayed: bool) -> dict[str, Any]:
    """The edits part of a critique, for the run's state; refused edits are journaled (once, not on a replay)."""
    if data.get("refused") and not replayed:
        svc.journal.log_event(svc.run_id, EDITS_REFUSED, {"message": data["refused"], "then": "mutation"})
    edits = (data.get("edits") or []) if data.get("decision") == "refine" else []
    reason = UNUSABLE if data.get("unusable") else REFUSED if data.get("refused") else None if edits else EMPTY_EDITS
    return {"edits": edits, "edits_reason": reason}


def unusable_critique(svc: RunServices, ctx: Context, err: Exception) -> dict[str, Any]:
    """The critique when the critic gave no usable answer (re-asks included): a refine of the leader by mutation
    (mutation on and a leader with a spec), else a plain explore round."""
    leader = _leader(svc)
    decision = "refine" if ctx.mutation and leader is not None else "explore"
    svc.journal.log_event(svc.run_id, CRITIC_UNUSABLE, {"error": str(err)[:500], "then": decision})
    return {"feedback": "", "decision": decision, "parent_id": None, "edits": [], "unusable": True}


def required_changes(svc: RunServices, state: CandidateState) -> dict[str, Any] | None:
    """For a `code` mode refine: the parent's module and the critic's edits as required changes, for the coder."""
    if state.get("decision") != "refine" or state.get("slot", 0) != 0 or not state.get("edits"):
        return None
    parent = _parent(svc, state, need_spec=False)
    if parent is None or not parent.code:
        return None
    changes = [f"set {e['field']} to {e['value']!r}" for e in state["edits"]]
    return {"parent_id": parent.candidate_id, "code": parent.code, "changes": changes}


def _parent(svc: RunServices, state: CandidateState, need_spec: bool = True) -> Candidate | None:
    """The candidate a refine starts from: the one the critic named, if trained, else the leader."""
    named = state.get("parent_id")
    if named:
        try:
            cand = svc.journal.get_candidate(named)
        except KeyError:
            cand = None
        if cand is not None and cand.run_id == svc.run_id and cand.status == "trained" and (cand.spec or not need_spec):
            return cand
    return _leader(svc, need_spec)


def _leader(svc: RunServices, need_spec: bool = True) -> Candidate | None:
    board = svc.journal.leaderboard(svc.run_id, svc.task.objective)
    return board[0] if board and (board[0].spec or not need_spec) else None


def _is_new(svc: RunServices, code: str, candidate_id: str) -> bool:
    return svc.journal.find_by_hash(svc.run_id, normalized_code_hash(code), exclude=candidate_id) is None


def _changed(parent: dict[str, Any], child: ArchSpec) -> list[list[Any]]:
    return [list(change) for change in diff(parent, child)]
