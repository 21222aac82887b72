"""Pure routing functions: state (and the journal's verdicts, passed in) to the next node's name."""

from __future__ import annotations

from typing import Literal

from langgraph.types import Send

from capnas.graph.state import CandidateState, RunState

# The fields of the run's state a candidate branch reads (the rest it does not need, or writes itself).
_SHARED = ("run_id", "task", "started_at", "round", "plan", "feedback", "decision", "parent_id", "edits",
           "edits_reason")


def after_planner(state: RunState) -> list[Send] | Literal["reporter"]:
    """One `Send` per candidate of the round: their branches (coder, validator, trainer) run at once and are
    joined before the critic. A stop goes straight to the reporter."""
    if state.get("stop_reason"):
        return "reporter"
    shared = {k: state[k] for k in _SHARED if k in state}
    first = state.get("first_index", 0)
    return [Send("candidate", {**shared, "candidate_id": cid, "slot": slot, "index": first + slot, "families": families,
                               "repairs": 0})
            for slot, (cid, families) in enumerate(zip(state["round_candidates"], state["assignments"]))]


def after_coder(state: CandidateState) -> Literal["validator", "__end__"]:
    return "__end__" if state.get("stops") else "validator"


def after_validation(status: str, repairs: int, max_repairs: int) -> Literal["coder", "trainer", "done"]:
    """Valid code trains; invalid or duplicate code goes back to the coder while repair rounds remain: an LLM
    repairs it from its violations, random generation draws again (so both arms get the same validation attempts
    per candidate); once the repair rounds are spent the candidate's branch ends."""
    if status == "valid":
        return "trainer"
    if status in ("invalid", "duplicate") and repairs < max_repairs:
        return "coder"  # a duplicate is never trained twice: the coder is asked for something new instead
    return "done"


def after_critic(state: RunState) -> Literal["planner", "reporter"]:
    return "reporter" if state.get("stop_reason") else "planner"
