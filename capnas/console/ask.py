"""A person's question about a run, answered by the critic's model in one call whose only context is what the
journal holds: the run summary and the critic's own per-candidate table. The call is logged in the journal
(role `chat`), so its tokens count in the run's usage like every other."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage

from capnas.agents import critic
from capnas.agents.llm_config import AgentModels
from capnas.agents.llm import ask_text, build_chat_model
from capnas.agents.usage import cost_usd
from capnas.graph.journal import Journal

ASK_SYSTEM = (
    "You answer a person's questions about a capnas run (a search for image-captioning networks). Use only the "
    "numbers given below; when they do not answer the question, say so. Answer in at most four sentences."
)


def run_context(journal: Journal, workspace: str | Path, run_id: str) -> str:
    """The run as the critic sees it: summary JSON, then one line per candidate with its numbers."""
    from capnas.runner import summarize

    run = journal.get_run(run_id) or {}
    objective = (run.get("task") or {}).get("objective", "cider")
    rows = [c.to_dict() for c in journal.candidates(run_id)]
    summary = summarize(workspace, run_id)
    return (f"Run summary: {json.dumps(summary)}\nTask: {json.dumps(run.get('task') or {})}\n"
            f"{critic.summarize(rows, objective)}")


def answer_question(models: AgentModels, journal: Journal, workspace: str | Path, run_id: str,
                    question: str) -> str:
    context = run_context(journal, workspace, run_id)
    config = models.for_role("critic")
    messages = [SystemMessage(ASK_SYSTEM), HumanMessage(f"{context}\n\nQuestion: {question}")]
    text, usage = ask_text(build_chat_model(config, "critic"), messages)
    usage_dict: dict[str, Any] = dict(usage or {})
    journal.log_llm_call(
        run_id, "chat", f"{context}\n\nQuestion: {question}", json.dumps({"raw": text}),
        input_tokens=usage_dict.get("input_tokens", 0), output_tokens=usage_dict.get("output_tokens", 0),
        cost_usd=cost_usd(usage, config.price_in_per_mtok, config.price_out_per_mtok),
    )
    return text.strip()
