"""The planner: turns a free-text requirement into a typed `Task`, and each round decides what to try next
(which encoder and decoder families, which k component snippets the coder sees)."""

from __future__ import annotations

import re
from itertools import product
from typing import Any, Literal

from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from capnas.agents.llm import ask_structured
from capnas.agents.requirement import Found, find_quote, read_requirement
from capnas.tools.design.components import decoders, encoders
from capnas.tools.task import Budgets, Metric, Task

ENCODERS = tuple(c.name for c in encoders())
DECODERS = tuple(c.name for c in decoders())


class TaskDraft(BaseModel):
    """What the planner's LLM is asked about a requirement: only what the deterministic reader
    (`capnas.agents.requirement`) cannot read, each answer with the person's words it comes from. Quantities are
    not asked for: the reader reads them. Unknown keys (an older script's `max_params`) are ignored."""

    # Evidence before each value: a model that has to quote first answers from the quote.
    encoders_evidence: str = Field("", max_length=160, description="the person's exact words about the image "
                                   "encoder, copied from the requirement; empty when they said nothing about it")
    encoders: list[Literal[ENCODERS]] = Field(default_factory=list, max_length=len(ENCODERS),  # type: ignore[valid-type]
                                              description="encoder families those words ask for")
    decoders_evidence: str = Field("", max_length=160, description="the person's exact words about the caption "
                                   "decoder; empty when they said nothing about it")
    decoders: list[Literal[DECODERS]] = Field(default_factory=list, max_length=len(DECODERS),  # type: ignore[valid-type]
                                              description="decoder families those words ask for")
    objective_evidence: str = Field("", max_length=160, description="the person's exact words about the metric "
                                    "to maximize; empty when they named none")
    objective: Metric | None = Field(None, description="the metric those words name")
    frozen_evidence: str = Field("", max_length=160, description="the person's exact words about freezing or "
                                 "fine-tuning a pretrained encoder; empty when they said nothing about it")
    frozen_encoders: bool | None = Field(None, description="true: keep it frozen; false: fine-tune it")


class Change(BaseModel):
    """One task field the planner changed from the run's setting, and the words it was read from."""

    value: Any
    evidence: str
    source: Literal["reader", "llm"] = Field(description="reader: read deterministically; llm: the LLM's answer, "
                                                         "kept because its evidence stands in the requirement")


class Drafted(BaseModel):
    """The task drafted from a requirement: every field in `changed` has its evidence (budgets flattened:
    `time_budget`, not `budgets.time_budget`); every other field is the run's setting."""

    task: Task
    changed: dict[str, Change] = Field(default_factory=dict)
    ignored: list[str] = Field(default_factory=list, description="what was read but not used, one line each")

    def evidence(self) -> dict[str, dict[str, Any]]:
        """`changed` as plain data: what `capnas plan --json`, the chat and the journal show."""
        return {key: change.model_dump(mode="json") for key, change in self.changed.items()}

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


_NO_USAGE = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}


def _task_prompt(requirement: str) -> str:
    lines = [f"A person asked for: {requirement!r}",
             "Fill a field only where their words say something about it; leave the others empty.",
             "Encoder families: " + "; ".join(f"{c.name}: {c.description}" for c in encoders()),
             "Decoder families: " + "; ".join(f"{c.name}: {c.description}" for c in decoders()),
             "Metrics: cider, bleu_4, meteor, rouge_l.",
             "Each *_evidence field: copy their exact words (a few). Never guess: words about size, speed, phones "
             "or 'small' say nothing about families or the metric, and numbers are read elsewhere."]
    return "\n".join(lines)


def draft_task(llm, requirement: str, defaults: Task) -> tuple[Drafted, str, dict]:
    """Draft a Task from the requirement: the deterministic reading, plus the LLM's answers where the reader found
    nothing and the LLM's evidence stands in the text. Returns (drafted, raw answer, usage). With no LLM
    (`llm=None`) or no usable answer, the deterministic reading alone."""
    found = read_requirement(requirement)
    if llm is None:
        return ground(requirement, defaults, found, None), "", dict(_NO_USAGE)
    messages = [SystemMessage(PLANNER_SYSTEM), HumanMessage(_task_prompt(requirement))]
    try:
        draft, raw, usage = ask_structured(llm, messages, TaskDraft)
    except ValueError as err:  # no usable answer, re-asks included: what the reader read still stands
        drafted = ground(requirement, defaults, found, None)
        drafted.ignored.append(f"the LLM gave no usable answer: {str(err).splitlines()[0][:200]}")
        return drafted, str(err), dict(_NO_USAGE)  # (the ledger has counted the tokens it spent)
    return ground(requirement, defaults, found, draft), raw, dict(usage or {})


# Words an LLM's evidence must hold for its answer to count: a quote that names or describes the thing, never one
# about size or speed ("small", "for phones") that a small model turns into a family.
_EVIDENCE_WORDS = {
    "families": re.compile(r"cnn|conv|recurr|rnn|lstm|gru|gated|memory|transformer|self-attention|patch|residual|"
                           r"resnet|vit|efficient|mobile|pre-?train|imagenet", re.I),
    "objective": re.compile(r"bleu|rouge|meteor|cider|n-?gram|precision|recall|overlap|subsequence|consensus|"
                            r"synonym|stem|tf-?idf", re.I),
    "frozen_encoders": re.compile(r"freez|frozen|fine|tun|fixed|lock|train|updat", re.I),
}
_MAX_EVIDENCE_WORDS = 12


def _evidence_ok(field: str, quote: str, requirement: str, found: Found, ignored: list[str]) -> str | None:
    """The LLM's quote as it stands in the requirement, or None (and a line in `ignored`) when it does not stand
    there, is too long to point at one thing, says nothing of the field, or overlaps words the reader read."""
    span = find_quote(quote, requirement) if quote.strip() else None
    problem = ("no evidence" if not quote.strip() else
               "its evidence is not in the requirement" if span is None else
               "its evidence is too long" if len(quote.split()) > _MAX_EVIDENCE_WORDS else
               "its evidence says nothing about it" if not _EVIDENCE_WORDS[field].search(quote) else
               "the reader read those words already" if any(a < span[1] and span[0] < b for a, b in found.spans()) else None)
    if problem:
        ignored.append(f"{field}: the LLM's answer was dropped: {problem} ({quote!r})")
        return None
    assert span is not None
    return requirement[span[0]:span[1]]


def ground(requirement: str, defaults: Task, found: Found, draft: TaskDraft | None) -> Drafted:
    """The task with every grounded value applied: the reader's first, then the LLM's where the reader found
    nothing and its evidence holds. A field without evidence keeps the run's setting."""
    data = defaults.model_dump()
    budgets = data.pop("budgets")
    flat = {**data, **budgets}
    picked: dict[str, tuple[Any, str, str]] = {k: (r.value, r.evidence, "reader") for k, r in found.values.items()}
    ignored = list(found.ignored)
    if draft is not None:
        for key, value, quote in (("objective", draft.objective, draft.objective_evidence),
                                  ("frozen_encoders", draft.frozen_encoders, draft.frozen_evidence)):
            if value is not None and key not in picked and (words := _evidence_ok(key, quote, requirement, found, ignored)):
                picked[key] = (value, words, "llm")
    families, evidence, sources = [], [], set()
    for kind, known, asked in (("encoder", ENCODERS, draft.encoders if draft else []),
                               ("decoder", DECODERS, draft.decoders if draft else [])):
        excluded = {f for r in found.excluded[kind] for f in r.value}
        quotes = [r.evidence for r in found.wanted[kind] + found.excluded[kind]]
        chosen = [f for f in known if any(f in r.value for r in found.wanted[kind])]
        source = "reader"
        if not chosen and excluded:  # only exclusions: what the run allowed, less those
            chosen = [f for f in defaults.families if f in known] or list(known)
        if not chosen and asked:
            quote = draft.encoders_evidence if kind == "encoder" else draft.decoders_evidence  # type: ignore[union-attr]
            if words := _evidence_ok("families", quote, requirement, found, ignored):
                chosen, source, quotes = [f for f in known if f in asked], "llm", quotes + [words]
                if set(chosen) == set(known):  # every family of the kind: no constraint, nothing to change
                    chosen = []
        chosen = [f for f in chosen if f not in excluded]
        if not chosen:  # nothing said of this kind (or every family excluded): the run's setting stands
            chosen = [f for f in defaults.families if f in known]
        elif quotes:
            evidence += quotes
            sources.add(source)
        families += chosen
    if evidence:
        picked["families"] = (families, "; ".join(dict.fromkeys(evidence)), "llm" if "llm" in sources else "reader")
    changed = {}
    for key, (value, words, source) in picked.items():
        same = set(value) == set(flat[key]) if key == "families" else value == flat[key]
        if not same:
            flat[key] = value
            changed[key] = Change(value=value, evidence=words, source=source)
    task = Task(**{k: flat[k] for k in data}, budgets=Budgets(**{k: flat[k] for k in budgets}))
    return Drafted(task=task, changed=changed, ignored=ignored)

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
