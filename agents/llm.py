"""The LLM client layer: one `ChatOpenAI` per agent role, and tolerant ways to ask it things.

Any OpenAI-compatible server works (OpenAI, vLLM, Ollama, llama.cpp). Retries are the openai client's
own: `max_retries` retries 408/409/429/5xx, timeouts and connection errors with exponential backoff
(0.5 s doubling to 8 s, with jitter) and honours `Retry-After` up to two minutes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.messages.ai import UsageMetadata, add_usage
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, SecretStr, ValidationError

from capnas.agents.llm_config import ROLE_HEADER, ROLES, AgentModels, LLMConfig, Role
from capnas.agents.parsing import extract_fenced, extract_json_object
from capnas.agents.usage import UsageLedger

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)


def build_chat_model(
    config: LLMConfig, role: Role, ledger: UsageLedger | None = None, *, seed: int | None = None
) -> ChatOpenAI:
    """A `ChatOpenAI` for one role: capped output, client-side retries and timeout, and (with a ledger)
    a budget check before and usage accounting after every call. `seed` (a run's) is sent with every request:
    llama.cpp, vLLM, Ollama and OpenAI sample from it, so runs that differ only in seed differ in their
    answers too, and one seed answers the same on the same server."""
    prices = (config.price_in_per_mtok, config.price_out_per_mtok)
    callbacks = [ledger.callback(role, *prices)] if ledger else None
    return ChatOpenAI(
        model=config.model,
        base_url=config.base_url,
        api_key=SecretStr(config.resolve_api_key()),
        temperature=config.temperature,
        seed=seed,
        max_tokens=config.max_output_tokens,
        extra_body={"max_tokens": config.max_output_tokens} if config.send_max_tokens else None,
        timeout=config.timeout_s,
        max_retries=config.max_retries,
        default_headers={ROLE_HEADER: role},
        use_responses_api=False,  # Chat Completions is what every compatible server speaks
        stream_usage=True,  # usage in streamed replies too, so the ledger counts streamed calls
        callbacks=callbacks,
    )


def build_role_models(
    models: AgentModels, ledger: UsageLedger | None = None, *, seed: int | None = None
) -> dict[Role, ChatOpenAI]:
    return {role: build_chat_model(models.for_role(role), role, ledger, seed=seed) for role in ROLES}


# -- asking -------------------------------------------------------------------------------------


class StructuredOutputError(ValueError):
    """The model gave no answer that validates against the schema, re-asks included."""

    def __init__(self, schema: type[BaseModel], problem: str, raw: str) -> None:
        super().__init__(f"{tool_name(schema)}: {problem}")
        self.schema = schema
        self.problem = problem
        self.raw = raw


_ZERO_USAGE = UsageMetadata(input_tokens=0, output_tokens=0, total_tokens=0)


def _usage(total: UsageMetadata, reply: AIMessage) -> UsageMetadata:
    return add_usage(total, reply.usage_metadata) if reply.usage_metadata else total


def _validation_problem(err: ValidationError) -> str:
    """Pydantic's errors without its documentation URLs, which only cost the model tokens."""
    parts = [f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in err.errors(include_url=False)]
    return "; ".join(parts)


def _parse_reply(reply: AIMessage, schema: type[T]) -> tuple[T, str]:
    """The schema instance in a reply: a tool call's arguments, else JSON in its text.
    Raises StructuredOutputError with the raw answer and what is wrong with it."""
    name = tool_name(schema)
    data: dict[str, Any] | None = None
    problem = "no JSON object found in the answer"
    if reply.response_metadata.get("finish_reason") == "length":
        problem = "the answer was cut off at the output-token limit; answer more briefly"
    if reply.tool_calls:
        call = next((c for c in reply.tool_calls if c["name"] == name), reply.tool_calls[0])
        data = call["args"]
        raw = json.dumps(data)
    else:
        raw = (reply.invalid_tool_calls[0].get("args") or "") if reply.invalid_tool_calls else str(reply.text)
        try:
            data = extract_json_object(raw)
        except ValueError:
            pass
    if data is not None:
        # Small models often echo the call envelope as text: {"name": "Plan", "arguments": {...}}.
        if data.get("name") == name and isinstance(data.get("arguments"), dict):
            data = data["arguments"]
        try:
            return schema.model_validate(data), raw
        except ValidationError as err:
            problem = _validation_problem(err)
    raise StructuredOutputError(schema, problem, raw)


def tool_name(schema: type[BaseModel]) -> str:
    """The name the schema's tool is offered under (its JSON-schema title, as LangChain names it)."""
    return convert_to_openai_tool(schema)["function"]["name"]


def _reask(messages: Sequence[BaseMessage], err: StructuredOutputError) -> list[BaseMessage]:
    # The failed answer is quoted in a user turn rather than replayed as an assistant tool call, so
    # the conversation stays valid on servers whose chat templates handle tool messages poorly.
    note = (
        f"Your previous answer could not be used.\nAnswer: {err.raw[:4000]}\nProblem: {err.problem}\n"
        f"Answer again by calling the `{tool_name(err.schema)}` tool with arguments that match its schema."
    )
    return [*messages, HumanMessage(note)]


def ask_structured(
    llm: BaseChatModel, messages: Sequence[BaseMessage], schema: type[T], *, reasks: int = 1
) -> tuple[T, str, UsageMetadata]:
    """Ask for an instance of `schema` through a forced tool call (llama.cpp only returns tool calls
    when forced), accepting JSON in the text as a fallback, and re-asking up to `reasks` times with
    the validation error. Returns (instance, raw answer, usage summed over the attempts)."""
    bound = llm.bind_tools([schema], tool_choice=tool_name(schema))
    usage, conversation = _ZERO_USAGE, list(messages)
    for attempt in range(max(reasks, 0) + 1):
        reply = bound.invoke(conversation)
        usage = _usage(usage, reply)
        try:
            instance, raw = _parse_reply(reply, schema)
            return instance, raw, usage
        except StructuredOutputError as err:
            log.info("structured answer rejected (attempt %d): %s", attempt + 1, err)
            last, conversation = err, _reask(messages, err)
    raise last


async def aask_structured(
    llm: BaseChatModel, messages: Sequence[BaseMessage], schema: type[T], *, reasks: int = 1
) -> tuple[T, str, UsageMetadata]:
    """`ask_structured` for async nodes."""
    bound = llm.bind_tools([schema], tool_choice=tool_name(schema))
    usage, conversation = _ZERO_USAGE, list(messages)
    for attempt in range(max(reasks, 0) + 1):
        reply = await bound.ainvoke(conversation)
        usage = _usage(usage, reply)
        try:
            instance, raw = _parse_reply(reply, schema)
            return instance, raw, usage
        except StructuredOutputError as err:
            log.info("structured answer rejected (attempt %d): %s", attempt + 1, err)
            last, conversation = err, _reask(messages, err)
    raise last


def _text_of(reply: AIMessage, fence: str | None) -> str:
    if reply.response_metadata.get("finish_reason") == "length":
        log.warning("answer cut off at the output-token cap (%s chars)", len(reply.text))
    text = str(reply.text)
    if fence is not None:
        block = extract_fenced(text, fence)
        if block is not None:
            return block
    return text


def ask_text(
    llm: BaseChatModel, messages: Sequence[BaseMessage], *, fence: str | None = None
) -> tuple[str, UsageMetadata]:
    """Free text; with `fence="python"`, the body of the first ```python block when there is one."""
    reply = llm.invoke(list(messages))
    return _text_of(reply, fence), _usage(_ZERO_USAGE, reply)


async def aask_text(
    llm: BaseChatModel, messages: Sequence[BaseMessage], *, fence: str | None = None
) -> tuple[str, UsageMetadata]:
    """`ask_text` for async nodes."""
    reply = await llm.ainvoke(list(messages))
    return _text_of(reply, fence), _usage(_ZERO_USAGE, reply)
