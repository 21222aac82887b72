"""The coder's own tools: it checks and tries its draft in the sandboxed executor before it submits.

Three LangChain tools, bound with `bind_tools`, so any OpenAI-compatible model that calls tools can drive them:

- `check_contract(<answer>)`: the static checks and, if they pass, the sandboxed probe; returns the violations
  (codes, lines, hints) or the probe's measurements;
- `run_snippet(code, module=None)`: a short script in the sandbox, with a tiny training batch and the contract;
  returns its stdout/stderr tail and exit reason;
- `submit(<answer>)`: ends the turn with the answer.

`<answer>` is what the coder hands over: `Module` (the whole source) in `code` mode, the architecture spec in
`spec` mode. The tools only call what the graph gives them (`Executors`): where a job runs, which slot it holds
and what the journal records is the graph's business. The loop is bounded by `max_calls` tool calls; a reply
with no tool call is a one-shot answer, as before tools. The validator still validates whatever is submitted.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.messages.ai import UsageMetadata, add_usage
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field, ValidationError

from capnas.agents.parsing import extract_fenced, extract_json_object
from capnas.tools.design.archspec import ArchSpec, frozen, render, spec_model

TOOLS_NOTE = (
    "You have tools. `check_contract` validates a draft exactly as the validator will (static checks, then a "
    "sandboxed probe) and returns its violations or measurements; `run_snippet` runs a short script in the "
    "sandbox, where `images` (float [B, 3, H, W] in [0, 1]), `captions` (int64 [B, Ncap, L]) and `contract` are "
    "globals and the `module` you pass is importable as `candidate`; `submit` hands over your answer and ends "
    "your turn. You have {calls} tool calls in all, submit included."
)

Ended = Literal["submitted", "answered", "tool_budget", "stopped"]


class Module(BaseModel):
    """The code-mode answer: one complete candidate module."""

    code: str = Field(description="the complete Python module, as one file (no markdown fence)")


class Snippet(BaseModel):
    """The arguments of `run_snippet`."""

    code: str = Field(description="a short Python script to run in the sandbox; print what you want to see")
    module: str | None = Field(None, description="a draft module to place beside the script as candidate.py")


@dataclass(frozen=True)
class Executors:
    """What the tools run, supplied by the graph: `check(code)` and `snippet(code, module)` return JSON-able
    dicts (the model reads them; `sandbox_s` in them is the job's cost), `on_call` is told of every call with
    its result, `stop()` says why the run cannot afford another call (None: go on)."""

    check: Callable[[str], dict[str, Any]]
    snippet: Callable[[str, str | None], dict[str, Any]]
    on_call: Callable[[dict[str, Any]], None] = lambda record: None
    stop: Callable[[], str | None] = lambda: None


@dataclass
class ToolTurn:
    """What a tool-calling coder turn ended with."""

    ended: Ended
    answer: BaseModel | None = None  # an instance of the answer schema (code mode: `Module`)
    calls: int = 0
    reason: str = ""  # why it ended without an answer
    last_draft: str = ""  # the last code it checked or tried, for the record when it never submitted
    raw: str = ""  # the final reply's text, or the submit call's arguments
    usage: UsageMetadata = field(default_factory=lambda: UsageMetadata(input_tokens=0, output_tokens=0,
                                                                      total_tokens=0))


def build_tools(schema: type[BaseModel], to_code: Callable[[BaseModel], str], run: Executors) -> list[BaseTool]:
    """The three tools over the answer `schema`; `to_code` turns an answer into module source."""

    def check_contract(**answer: Any) -> tuple[str, dict[str, Any]]:
        code = to_code(schema(**answer))
        result = run.check(code)
        return json.dumps(result), {"result": result, "code": code}

    def run_snippet(code: str, module: str | None = None) -> tuple[str, dict[str, Any]]:
        result = run.snippet(code, module)
        return json.dumps(result), {"result": result, "code": module or code}

    def submit(**answer: Any) -> str:  # never run: the loop ends on it (bound for its schema and description)
        return "submitted"

    return [
        StructuredTool.from_function(check_contract, name="check_contract", args_schema=schema,
                                     response_format="content_and_artifact", handle_validation_error=True,
                                     description="Validate a draft against the contract exactly as the validator "
                                                 "will: its violations (code, line, message, hint), or the probe's "
                                                 "measurements when it passes."),
        StructuredTool.from_function(run_snippet, name="run_snippet", args_schema=Snippet,
                                     response_format="content_and_artifact", handle_validation_error=True,
                                     description="Run a short Python script in the sandbox (no network, limits) "
                                                 "with a tiny training batch; returns its output tail and how "
                                                 "it ended."),
        StructuredTool.from_function(submit, name="submit", args_schema=schema,
                                     description="Hand over your final answer; ends your turn."),
    ]


def _usage(total: UsageMetadata, reply: AIMessage) -> UsageMetadata:
    return add_usage(total, reply.usage_metadata) if reply.usage_metadata else total


def run_tool_loop(llm: BaseChatModel, messages: Sequence[BaseMessage], schema: type[BaseModel],
                  to_code: Callable[[BaseModel], str], run: Executors, max_calls: int,
                  text_answer: Callable[[str], BaseModel | None] | None = None) -> ToolTurn:
    """Let the model call the tools until it submits, answers in text (`text_answer` parses that, e.g. the
    ```python block of code mode), spends `max_calls`, or a run budget stops it (`run.stop()`)."""
    tools = build_tools(schema, to_code, run)
    by_name = {t.name: t for t in tools}
    bound = llm.bind_tools(tools)
    conversation = [*messages, HumanMessage(TOOLS_NOTE.format(calls=max_calls))]
    turn = ToolTurn(ended="answered")
    while True:
        reply = bound.invoke(conversation)
        turn.usage = _usage(turn.usage, reply)
        calls = reply.tool_calls or _echoed_call(str(reply.text), by_name)
        if not calls:  # a one-shot answer: what a model that does not call tools always gives
            turn.raw = str(reply.text)
            turn.answer = text_answer(turn.raw) if text_answer else None
            return turn
        # (an echoed call is replayed as the call it meant, so the tool results that follow answer a real call)
        conversation.append(reply if reply.tool_calls else AIMessage(content="", tool_calls=calls))
        for call in calls:
            if turn.calls >= max_calls:
                turn.ended, turn.reason = "tool_budget", (f"the coder used its {max_calls} tool calls without "
                                                          "submitting")
                return turn
            if (spent := run.stop()) is not None:
                turn.ended, turn.reason = "stopped", f"the coder was stopped before tool call {turn.calls + 1}: {spent}"
                return turn
            turn.calls += 1
            if call["name"] == "submit":
                try:
                    turn.answer, turn.raw = schema(**call["args"]), json.dumps(call["args"])
                except ValidationError as err:  # told, like any tool error; the call still counts
                    message = ToolMessage(f"submit refused: {err.errors(include_url=False)}",
                                          tool_call_id=call["id"], status="error")
                    run.on_call({"call": turn.calls, "tool": "submit", "args": call["args"],
                                 "result": {"error": message.content}, "sandbox_s": 0.0})
                    conversation.append(message)
                    continue
                run.on_call({"call": turn.calls, "tool": "submit", "args": call["args"], "result": {},
                             "sandbox_s": 0.0})
                turn.ended = "submitted"
                return turn
            conversation.append(_invoke(by_name, call, turn, run))


def _echoed_call(text: str, by_name: dict[str, BaseTool]) -> list[dict[str, Any]]:
    """Small models often write a call as text, `{"name": "submit", "arguments": {...}}`: that call, else []."""
    try:
        data = extract_json_object(text)
    except ValueError:
        return []
    if data.get("name") in by_name and isinstance(data.get("arguments"), dict):
        return [{"name": data["name"], "args": data["arguments"], "id": f"echoed_{uuid.uuid4().hex[:8]}",
                 "type": "tool_call"}]
    return []


def _invoke(by_name: dict[str, BaseTool], call: dict[str, Any], turn: ToolTurn, run: Executors) -> ToolMessage:
    """Run one check_contract or run_snippet call (or say the tool is unknown) and tell `on_call`."""
    tool = by_name.get(call["name"])
    if tool is None:
        message = ToolMessage(f"unknown tool {call['name']!r}; use check_contract, run_snippet or submit",
                              tool_call_id=call["id"], status="error")
    else:
        message = tool.invoke({**call, "type": "tool_call"})
    artifact = message.artifact or {}
    result = artifact.get("result") or {"error": str(message.content)[:2000]}
    if artifact.get("code"):
        turn.last_draft = artifact["code"]
    run.on_call({"call": turn.calls, "tool": call["name"], "args": call["args"], "result": result,
                 "sandbox_s": float(result.get("sandbox_s") or 0.0)})
    return message


def python_block(text: str) -> Module | None:
    """A code-mode text answer: the ```python block, else the whole text (as the one-shot coder reads it)."""
    code = extract_fenced(text, "python")
    code = code if code is not None else text
    return Module(code=code) if code.strip() else None


def write_with_tools(llm: BaseChatModel, messages: Sequence[BaseMessage], mode: str, run: Executors, max_calls: int,
                     families: tuple[str, str] | None = None, frozen_encoder: bool = False
                     ) -> tuple[dict[str, Any], str, dict]:
    """One coder attempt as a tool turn: (answer record, raw reply, usage), the record as the one-shot coder's
    (`code`, `spec`) plus `tools`: how the turn ended, its calls, and the reason when it gave no answer."""
    # Only a turn cut short keeps its last draft (for the record: it is not validated); an empty text answer
    # stays empty, as the one-shot coder's does.
    if mode == "spec":
        schema = spec_model(*families, frozen=frozen_encoder) if families else ArchSpec

        def as_spec(answer: BaseModel) -> ArchSpec:
            spec = ArchSpec(**answer.model_dump())
            return frozen(spec) if frozen_encoder else spec

        turn = run_tool_loop(llm, messages, schema, lambda a: render(as_spec(a)), run, max_calls,
                             text_answer=lambda text: _json_answer(text, schema))
        spec = as_spec(turn.answer) if turn.answer is not None else None
        code, spec_data = (render(spec), spec.model_dump(mode="json")) if spec else (_draft(turn), None)
    else:
        turn = run_tool_loop(llm, messages, Module, lambda a: a.code, run, max_calls, text_answer=python_block)
        code, spec_data = (turn.answer.code if turn.answer is not None else _draft(turn)), None
    tools = {"ended": turn.ended, "calls": turn.calls, "reason": turn.reason}
    return {"code": code, "spec": spec_data, "tools": tools}, turn.raw, dict(turn.usage)


def _draft(turn: ToolTurn) -> str:
    return turn.last_draft if turn.ended in ("tool_budget", "stopped") else ""


def _json_answer(text: str, schema: type[BaseModel]) -> BaseModel | None:
    """A spec-mode text answer: the JSON object in it, if it validates."""
    try:
        return schema.model_validate(extract_json_object(text))
    except (ValueError, ValidationError):
        return None
