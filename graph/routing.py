"""Pure routing functions: state (and the journal's verdicts, passed in) to the next node's name."""

from __future__ import annotations

from typing import Literal

from capnas.graph.state import RunState


def after_planner(state: RunState) -> Literal["coder", "reporter"]:
    return "reporter" if state.get("stop_reason") else "coder"


def after_coder(state: RunState) -> Literal["validator", "reporter"]:
    return "reporter" if state.get("stop_reason") else "validator"


def after_validation(status: str, generation: str, repairs: int, max_repairs: int) -> Literal["coder", "trainer", "critic"]:
    """Valid code trains; invalid or duplicate LLM-written code goes back to the coder with its violations while
    repair rounds remain; everything else (random-mode failures, repairs spent) goes to the critic."""
    if status == "valid":
        return "trainer"
    if status in ("invalid", "duplicate") and generation != "random" and repairs < max_repairs:
        return "coder"  # a duplicate is never trained twice: the coder is asked for something new instead
    return "critic"


def after_critic(state: RunState) -> Literal["planner", "reporter"]:
    return "reporter" if state.get("stop_reason") else "planner"
