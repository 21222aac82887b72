"""The scripted OpenAI-compatible server itself, over real HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from llm_server import ROLE_HEADER, ScriptedLLMServer, answer, http_error, llm_server, tool_call  # noqa: F401, F811

pytestmark = pytest.mark.timeout(60)


def post(server: ScriptedLLMServer, body: dict[str, Any], headers: dict[str, str] | None = None):
    request = urllib.request.Request(
        f"{server.base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def chat(system: str, user: str = "go") -> dict[str, Any]:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return {"model": "m", "messages": messages}


def test_binds_loopback_and_lists_models() -> None:
    with ScriptedLLMServer() as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{server.base_url}/models", timeout=5) as response:
            models = json.loads(response.read())
    assert models["data"][0]["id"] == "scripted"


def test_replays_text_and_tool_calls_with_usage_and_records_bodies() -> None:
    steps = [answer("two words"), tool_call("Plan", {"layers": 2})]
    with ScriptedLLMServer(steps) as server:
        _, _, first = post(server, chat("you plan", "one two three"))
        _, _, second = post(server, chat("you plan"))
    assert first["choices"][0]["message"]["content"] == "two words"
    # usage: whitespace words of every message, and of the answer
    assert first["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    call = second["choices"][0]["message"]["tool_calls"][0]
    assert call["function"] == {"name": "Plan", "arguments": '{"layers": 2}'}
    assert second["choices"][0]["finish_reason"] == "tool_calls"
    assert [body["messages"][1]["content"] for body in server.requests] == ["one two three", "go"]
    assert server.reported_usage == (5 + 3, 2 + 2)
    assert server.unused_steps == []


def test_error_steps_carry_status_and_retry_after() -> None:
    with ScriptedLLMServer([http_error(429), http_error(500, retry_after=None)]) as server:
        status_429, headers_429, _ = post(server, chat("s"))
        status_500, headers_500, _ = post(server, chat("s"))
    assert (status_429, headers_429["Retry-After"]) == (429, "0")
    assert status_500 == 500 and "Retry-After" not in headers_500
    assert server.reported_usage == (0, 0)


def test_steps_match_by_role_header_and_system_prompt() -> None:
    steps = [
        answer("for the coder", role="coder"),
        answer("for the critic", when="You are the critic"),
        answer("for anyone"),
    ]
    with ScriptedLLMServer(steps) as server:
        # Out of script order: each request takes the first unused step that accepts it.
        _, _, critic = post(server, chat("You are the critic."), {ROLE_HEADER: "critic"})
        _, _, coder = post(server, chat("You write code."), {ROLE_HEADER: "coder"})
        _, _, planner = post(server, chat("You plan."), {ROLE_HEADER: "planner"})
    contents = [r["choices"][0]["message"]["content"] for r in (critic, coder, planner)]
    assert contents == ["for the critic", "for the coder", "for anyone"]
    assert [e.role for e in server.exchanges] == ["critic", "coder", "planner"]


def test_request_with_no_matching_step_gets_400_naming_it() -> None:
    with ScriptedLLMServer([answer("only for the coder", role="coder")]) as server:
        status, _, body = post(server, chat("s", "write the report"), {ROLE_HEADER: "reporter"})
    assert status == 400
    assert "reporter" in body["error"]["message"] and "write the report" in body["error"]["message"]
    assert len(server.unused_steps) == 1


def test_fixture_serves_steps_added_while_running(llm_server: ScriptedLLMServer) -> None:
    llm_server.add(answer("late addition"))
    _, _, reply = post(llm_server, chat("s"))
    assert reply["choices"][0]["message"]["content"] == "late addition"


def test_streams_server_sent_events_through_langchain() -> None:
    with ScriptedLLMServer([answer("streamed reply"), tool_call("Plan", {"layers": 3})]) as server:
        llm = ChatOpenAI(model="m", base_url=server.base_url, api_key="x", stream_usage=True, max_retries=0)
        chunks = list(llm.stream([SystemMessage("s"), HumanMessage("hello there")]))
        text = "".join(chunk.text for chunk in chunks)
        final = sum(chunks[1:], chunks[0])
        tool_chunks = list(llm.bind_tools([_plan_tool()], tool_choice="Plan").stream("plan"))
        tool_final = sum(tool_chunks[1:], tool_chunks[0])
    assert text == "streamed reply"
    assert server.requests[0]["stream"] is True
    assert final.usage_metadata["input_tokens"] == 3 and final.usage_metadata["output_tokens"] == 2
    assert tool_final.tool_calls[0]["name"] == "Plan" and tool_final.tool_calls[0]["args"] == {"layers": 3}


def _plan_tool() -> dict[str, Any]:
    parameters = {"type": "object", "properties": {"layers": {"type": "integer"}}, "required": ["layers"]}
    function = {"name": "Plan", "description": "a plan", "parameters": parameters}
    return {"type": "function", "function": function}
