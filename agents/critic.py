"""The critic: reads numbers from the journal (metrics, curves, contract reports), sample captions beside
their references, and failures; writes feedback for the next attempt (a textual gradient) and a decision.

It never invents numbers: `summarize` builds its whole view from journal rows, and the decision it returns is
only advice that the graph's routing bounds by the budgets."""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from capnas.agents.llm import ask_structured

CRITIC_SYSTEM = (
    "You are the critic of capnas, which searches for image-captioning networks. You read measured results "
    "only (never guess numbers) and tell the coder what to change next. Answer only by calling the tool."
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


def fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def summarize(candidates: list[dict[str, Any]], objective: str, samples_per_candidate: int = 2) -> str:
    """A plain-text table of what the journal knows, one line per candidate, plus a few captions."""
    lines = []
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
        if status in ("invalid", "failed"):
            report = c.get("contract") or {}
            codes = ", ".join(f"{v['code']}: {v['message'][:120]}" for v in report.get("violations", [])[:3])
            line += f"\n    failure: {c.get('exit_reason') or ''} {codes}"
        for s in (c.get("samples") or [])[:samples_per_candidate]:
            line += f"\n    generated: {s['caption']!r} | reference: {s['references'][0]!r}"
        lines.append(line)
    return f"Objective: maximize val {objective}.\n" + ("\n".join(lines) or "(no candidates yet)")


def critique(llm, summary: str) -> tuple[Critique, str, dict]:
    messages = [SystemMessage(CRITIC_SYSTEM), HumanMessage(f"Results so far:\n{summary}\n\nWhat next?")]
    verdict, raw, usage = ask_structured(llm, messages, Critique)
    return verdict, raw, dict(usage or {})
