"""The graph state: small on purpose (ids, counters, short text, metrics). LangGraph checkpoints it at every
super-step; code, logs, curves and captions live in the journal instead."""

from __future__ import annotations

from typing import Any, TypedDict


class RunState(TypedDict, total=False):
    run_id: str
    requirement: str  # the person's words, if any
    task: dict[str, Any]  # Task.model_dump()
    started_at: float  # wall-clock start, for the time budget (kept across resumes)
    round: int  # index of the candidate being worked on
    candidate_id: str | None
    repairs: int  # repair rounds spent on the current candidate
    plan: dict[str, Any]  # the planner's RoundPlan for this round
    feedback: str  # the critic's latest feedback
    decision: str  # the critic's latest decision: refine | explore | stop
    parent_id: str | None  # the candidate the next one refines
    best: dict[str, Any] | None  # {"candidate_id", "metrics"}
    stop_reason: str | None  # set once the run must end: max_candidates | time_budget | token_budget | critic
    status: str  # running | finished | stopped
