"""The planner: turns a free-text requirement into a typed `Task`, and each round decides what to try next
(which encoder and decoder families, which k component snippets the coder sees)."""

from __future__ import annotations

from itertools import product
from typing import Literal

from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from capnas.agents.llm import ask_structured
from capnas.tools.design.components import decoders, encoders
from capnas.tools.task import Budgets, Task

ENCODERS = tuple(c.name for c in encoders())
DECODERS = tuple(c.name for c in decoders())


class TaskDraft(BaseModel):
    """What the planner may set from a person's words. Anything left out keeps the run's default."""

    image_size: int | None = Field(None, ge=16, le=512, description="square input size in pixels")
    max_params: int | None = Field(None, ge=1000, description="parameter budget per model, e.g. 5000000 for 'under 5M parameters'")
    max_latency_ms: float | None = Field(None, gt=0, description="inference latency budget per image in milliseconds")
    objective: Literal["cider", "bleu_4", "meteor", "rouge_l"] | None = Field(None, description="metric to maximize")
    families: list[str] = Field(default_factory=list, max_length=len(ENCODERS + DECODERS),
                                description=f"encoder/decoder families asked for, from {ENCODERS + DECODERS}")
    frozen_encoders: bool | None = Field(None, description="true when they want pretrained encoders kept frozen")
    max_candidates: int | None = Field(None, ge=1, le=1000, description="how many models to try")
    time_budget: float | None = Field(None, gt=0, description="minutes for the whole search")
    notes: str = Field("", max_length=300, description="anything else that matters, in one sentence")


class RoundPlan(BaseModel):
    """What the coder should try next."""

    # Bounded lengths become bounds in the JSON grammar a local server constrains to: a small model otherwise
    # repeats itself until the output-token cap and the answer is lost.
    encoders: list[str] = Field(max_length=len(ENCODERS), description=f"encoder families to try, best first, from {ENCODERS}")
    decoders: list[str] = Field(max_length=len(DECODERS), description=f"decoder families to try, best first, from {DECODERS}")
    rationale: str = Field("", max_length=300, description="one sentence: why these")


PLANNER_SYSTEM = (
    "You are the planner of capnas, a system that designs image-captioning neural networks. "
    "Answer only by calling the tool with the fields you can infer; leave the rest out."
)


def draft_task(llm, requirement: str, defaults: Task) -> tuple[Task, str, dict]:
    """Fill a Task from the requirement text; unspecified fields keep `defaults`."""
    messages = [
        SystemMessage(PLANNER_SYSTEM),
        HumanMessage(
            f"A person asked for: {requirement!r}\n"
            f"The dataset is {defaults.dataset!r}; images are {defaults.image_size}px.\n"
            "Extract the constraints they gave (parameter budget, latency, metric, families, budget)."
        ),
    ]
    draft, raw, usage = ask_structured(llm, messages, TaskDraft)
    return apply_draft(defaults, draft), raw, dict(usage or {})


def apply_draft(task: Task, draft: TaskDraft) -> Task:
    data = task.model_dump()
    budgets = dict(data.pop("budgets"))
    for key in ("image_size", "max_params", "max_latency_ms", "objective", "frozen_encoders"):
        if getattr(draft, key) is not None:
            data[key] = getattr(draft, key)
    known = set(ENCODERS + DECODERS)
    data["families"] = [f for f in draft.families if f in known] or data["families"]
    if draft.notes:
        data["notes"] = draft.notes
    for key in ("max_candidates", "time_budget"):
        if getattr(draft, key) is not None:
            budgets[key] = getattr(draft, key)
    return Task(**data, budgets=Budgets(**budgets))


def plan_round(llm, task: Task, leaderboard: str, feedback: str) -> tuple[RoundPlan, str, dict]:
    messages = [
        SystemMessage(PLANNER_SYSTEM),
        HumanMessage(
            f"Task: captioning on {task.dataset}, {task.image_size}px images, at most {task.max_params:,} parameters, "
            f"maximize val {task.objective}. Families requested: {task.families or 'any'}"
            f"{'; pretrained encoders stay frozen' if task.frozen_encoders else ''}.\n"
            f"Encoders: {', '.join(ENCODERS)}. Decoders: {', '.join(DECODERS)}.\n\n"
            f"Leaderboard so far:\n{leaderboard}\n\nCritic's feedback:\n{feedback or '(none yet)'}\n\n"
            "Which encoder and decoder families should the next candidate use?"
        ),
    ]
    plan, raw, usage = ask_structured(llm, messages, RoundPlan)
    return sanitize(plan, task), raw, dict(usage or {})


def default_plan(task: Task, round_index: int) -> RoundPlan:
    """The deterministic plan: the families the task asked for, else every family, rotated per round so each
    gets a turn. Used in `random` mode and when no planner model is configured."""
    encs = [f for f in task.families if f in ENCODERS] or list(ENCODERS)
    decs = [f for f in task.families if f in DECODERS] or list(DECODERS)
    return RoundPlan(
        encoders=encs[round_index % len(encs):] + encs[: round_index % len(encs)],
        decoders=decs[round_index % len(decs):] + decs[: round_index % len(decs)],
        rationale="every family in turn",
    )


def assign(plan: RoundPlan, n: int, tried: set[tuple[str, str]], keep: tuple[str, str] | None = None,
           fallback: RoundPlan | None = None) -> list[tuple[str, str]]:
    """(encoder, decoder) families for this round's `n` candidates. Pairs are ranked by the plan's order (the
    planner's first choices first), then `fallback`'s pairs (what the task allows) that the plan left out; each
    candidate takes the best-ranked pair this run has not tried yet, so a small model that names the same
    families every round still explores. `keep` (the parent a refine starts from) goes first. Once every pair
    has been tried the plan's ranking repeats: the coder then varies options within the families."""
    preferred = _ranked(plan)
    ranked = preferred + [p for p in (_ranked(fallback) if fallback else []) if p not in preferred]
    chosen = [keep] if keep else []
    for pair in ranked:
        if len(chosen) >= n:
            break
        if pair not in tried and pair not in chosen:
            chosen.append(pair)
    while len(chosen) < n:
        chosen.append(preferred[len(chosen) % len(preferred)])
    return chosen[:n]


def _ranked(plan: RoundPlan) -> list[tuple[str, str]]:
    """Every (encoder, decoder) pair of a plan, best first: by the sum of their places in its two lists."""
    pairs = sorted(product(enumerate(plan.encoders), enumerate(plan.decoders)), key=lambda p: (p[0][0] + p[1][0], p[0][0]))
    return [(e, d) for (_, e), (_, d) in pairs]


def sanitize(plan: RoundPlan, task: Task) -> RoundPlan:
    """Keep only the families the task allows (all known ones when it names none); an empty list means 'any'."""
    fallback = default_plan(task, 0)
    return RoundPlan(
        encoders=[e for e in plan.encoders if e in fallback.encoders] or fallback.encoders,
        decoders=[d for d in plan.decoders if d in fallback.decoders] or fallback.decoders,
        rationale=plan.rationale,
    )
