"""The graph state: small on purpose (ids, counters, short text, metrics). LangGraph checkpoints it at every
super-step; code, logs, curves and captions live in the journal instead."""

from __future__ import annotations

import operator
from typing import Annotated, Any

# typing_extensions' TypedDict, not typing's: pydantic (which LangGraph Server uses to derive the input and output
# schemas Studio shows) refuses typing.TypedDict before Python 3.12.
from typing_extensions import TypedDict


class RunState(TypedDict, total=False):
    run_id: str
    requirement: str  # the person's words, if any
    task: dict[str, Any]  # Task.model_dump()
    started_at: float  # wall-clock start, for the time budget (kept across resumes)
    round: int  # index of the round being worked on
    round_candidates: list[str]  # ids of this round's candidates, worked on at once (one `Send` each)
    assignments: list[list[str]]  # [encoder, decoder] families the planner gave each of them
    first_index: int  # how many candidates the run had before this round
    plan: dict[str, Any]  # the planner's RoundPlan for this round
    feedback: str  # the critic's latest feedback
    decision: str  # the critic's latest decision: refine | explore | stop
    parent_id: str | None  # the candidate the next one refines
    edits: list[dict[str, Any]]  # the critic's typed edits to that parent's spec ({field, value})
    edits_reason: str | None  # why a refine has no edits to apply (graph.refine: empty, refused, unusable)
    best: dict[str, Any] | None  # {"candidate_id", "metrics"}
    stop_reason: str | None  # set once the run must end: max_candidates | time_budget | token_budget | critic
    status: str  # running | finished | stopped
    stops: Annotated[list[str], operator.add]  # reasons a candidate branch gave to end the run (joined by the critic)


class CandidateState(TypedDict, total=False):
    """One candidate's branch (coder, validator, repairs, trainer): what its `Send` carries, plus its progress."""

    run_id: str
    task: dict[str, Any]
    started_at: float
    round: int
    candidate_id: str
    slot: int  # its place in the round (0 for the first)
    index: int  # its place in the run (0 for the run's first candidate)
    families: list[str]  # [encoder, decoder] the planner assigned
    plan: dict[str, Any]
    feedback: str
    decision: str  # the critic's latest decision (a refine's first candidate applies its edits)
    parent_id: str | None
    edits: list[dict[str, Any]]
    edits_reason: str | None
    repairs: int  # repair rounds spent
    stops: list[str]  # set when this branch must end the run (token budget, search space exhausted)


class CandidateOutput(TypedDict, total=False):
    """What a branch hands back to the run: only stop reasons (everything else is in the journal)."""

    stops: list[str]
