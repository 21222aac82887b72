"""The critic: reads numbers from the journal (metrics, curves, contract reports), sample captions beside
their references, and failures; writes feedback for the next attempt (a textual gradient) and a decision.

It never invents numbers: `summarize` builds its whole view from journal rows, and the decision it returns is
only advice that the graph's routing bounds by the budgets. A refine comes with typed `edits` to the parent's
spec (`capnas.tools.design.edits`): the schema enumerates every field and value, so a grammar-constrained
local model can only write valid ones; edits a remote model writes outside it are refused (`refused` says
why) while its feedback and decision stand."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, ClassVar, Literal

from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field, create_model, model_validator
from pydantic.json_schema import SkipJsonSchema

from capnas.agents.llm import ask_structured
from capnas.tools.design.edits import MAX_EDITS, EditSpace, describe_diff, diff, edit_type

CRITIC_SYSTEM = (
    "You are the critic of capnas, which searches for image-captioning networks. You read measured results "
    "only (never guess numbers) and tell the coder what to change next. When you refine, list the edits: "
    "concrete changes to the parent's spec, each a field and its new value. Answer only by calling the tool."
)


class Critique(BaseModel):
    # max_length bounds the string in the JSON grammar a local server constrains to: a small model otherwise
    # rambles on until the output-token cap and the answer is lost.
    feedback: str = Field(max_length=600, description="2-4 sentences for the coder: what worked, what failed, "
                                                      "what to change next")
    decision: Literal["refine", "explore", "stop"] = Field(
        description="refine: improve the best candidate; explore: try other families; stop: the search is done"
    )
    parent_id: str | None = Field(None, description="when refining, the candidate_id to start from")
    # Set by capnas, never by the model: why the answer's edits were refused (they lay outside the schema).
    refused: SkipJsonSchema[str | None] = None

    edit_space: ClassVar[EditSpace | None] = None  # the space `edits` ranges over (`critique_model`)

    @model_validator(mode="wrap")
    @classmethod
    def _refuse_bad_edits(cls, data: Any, handler: Any) -> Critique:
        """Edits outside the schema (which only a remote model, unconstrained by a grammar, can send) are refused
        with a one-line reason each, and the rest of the answer stands: the refine then mutates the parent."""
        space = cls.edit_space
        if space is None or not isinstance(data, dict) or "edits" not in data:
            return handler(data)
        data = {k: v for k, v in data.items() if k != "refused"}
        # The space judges the edits as JSON (1 is no bool there, 1e-3 is 0.001); pydantic, lax, would coerce.
        edits = data["edits"]
        if not isinstance(edits, list):
            reasons = [f"edits must be a list of {{field, value}}, not {edits!r}"[:200]]
        elif len(edits) > MAX_EDITS:
            reasons = [f"{len(edits)} edits; at most {MAX_EDITS}"]
        else:
            reasons = [f"edit {i + 1}: {p}" for i, p in enumerate(map(space.problem, edits)) if p]
        if reasons:
            return handler({**data, "edits": [], "refused": "; ".join(reasons)[:1000]})
        return handler(data)


@lru_cache(maxsize=16)
def critique_model(space: EditSpace | None) -> type[Critique]:
    """The critic's schema: `Critique` with typed edits over `space`, or without edits (None: the `critic_edits`
    switch is off). Its tool keeps the name `Critique` either way."""
    if space is None:
        return Critique
    model = create_model(
        "Critique", __base__=Critique, __doc__=Critique.__doc__,
        edits=(list[edit_type(space)], Field(  # type: ignore[valid-type]
            default_factory=list, max_length=MAX_EDITS,
            description="when refining: changes to the parent's spec, each a field (encoder, decoder, "
                        "<component>.<option> or a training field) and its new value; the child is the parent "
                        "with exactly these changes")),
    )
    model.edit_space = space
    return model


def fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def summarize(candidates: list[dict[str, Any]], objective: str, samples_per_candidate: int = 2) -> str:
    """A plain-text table of what the journal knows, one line per candidate, plus a few captions."""
    lines = []
    by_id = {c["candidate_id"]: c for c in candidates}
    for c in candidates:
        metrics = c.get("metrics") or {}
        curve = c.get("curve") or []
        losses = " ".join(fmt(p.get("loss"), 2) for p in curve)
        ciders = " ".join(fmt(p.get("val_cider"), 2) for p in curve if p.get("val_cider") is not None)
        status = c["status"]
        line = f"- {c['candidate_id']} [{c['mode']}] {c.get('plan') or ''} status={status}"
        if c.get("params"):
            line += f" params={c['params']:,}"
        if metrics:
            line += " " + " ".join(f"{k}={fmt(v)}" for k, v in metrics.items() if isinstance(v, (int, float)))
        if losses:
            line += f"\n    loss by epoch: {losses}"
        if ciders:
            line += f"\n    val cider by epoch: {ciders}"
        if c.get("spec"):
            line += "\n    training: " + " ".join(f"{k}={fmt(c['spec'].get(k), 4)}" for k in TRAINING_SHOWN)
        line += _against_parent(c, by_id.get(c.get("parent_id") or ""), objective)
        if status in ("invalid", "failed"):
            report = c.get("contract") or {}
            codes = ", ".join(f"{v['code']}: {v['message'][:120]}" for v in report.get("violations", [])[:3])
            line += f"\n    failure: {c.get('exit_reason') or ''} {codes}"
        for s in (c.get("samples") or [])[:samples_per_candidate]:
            line += f"\n    generated: {s['caption']!r} | reference: {s['references'][0]!r}"
        lines.append(line)
    return f"Objective: maximize val {objective}.\n" + ("\n".join(lines) or "(no candidates yet)")


TRAINING_SHOWN = ("lr", "dropout", "weight_decay", "grad_clip", "batch_size")


def _against_parent(child: dict[str, Any], parent: dict[str, Any] | None, objective: str) -> str:
    """'vs parent X: lstm.hidden_size 512->256; val cider 0.41 -> 0.46 (+0.05)': what the change did."""
    if not parent or not parent.get("spec") or not child.get("spec"):
        return ""
    text = f"\n    vs parent {parent['candidate_id']}: {describe_diff(diff(parent['spec'], child['spec']))}"
    before, after = (parent.get("metrics") or {}).get(objective), (child.get("metrics") or {}).get(objective)
    if isinstance(before, (int, float)) and isinstance(after, (int, float)):
        text += f"; val {objective} {before:.3f} -> {after:.3f} ({after - before:+.3f})"
    return text


def critique(llm, summary: str, space: EditSpace | None = None) -> tuple[Critique, str, dict]:
    """One critique of the journal's `summary`; with `space`, its answer carries typed edits over it."""
    messages = [SystemMessage(CRITIC_SYSTEM), HumanMessage(f"Results so far:\n{summary}\n\nWhat next?")]
    verdict, raw, usage = ask_structured(llm, messages, critique_model(space))
    return verdict, raw, dict(usage or {})
