"""The LLM client layer against the scripted OpenAI-compatible server over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from llm_server import ScriptedLLMServer, answer, hang, http_error, tool_call
from pydantic import BaseModel, ConfigDict, Field

from capnas.agents.llm import (
    StructuredOutputError,
    aask_structured,
    ask_structured,
    ask_text,
    build_chat_model,
    build_role_models,
)
from capnas.agents.llm_config import NO_KEY, AgentModels, LLMConfig
from capnas.agents.parsing import extract_fenced, extract_json_object
from capnas.agents.usage import Budget, BudgetExceeded, UsageLedger

pytestmark = pytest.mark.timeout(60)

PROMPT = [SystemMessage("You are the planner."), HumanMessage("Plan a captioning model.")]


class Plan(BaseModel):
    encoder: str
    layers: int = Field(ge=1, le=8)


@pytest.fixture
def server() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer() as s:
        yield s


def model(
    server: ScriptedLLMServer, role: str = "planner", ledger: UsageLedger | None = None, **cfg: Any
) -> ChatOpenAI:
    config = LLMConfig(model="scripted", base_url=server.base_url, **{"timeout_s": 5.0, **cfg})
    return build_chat_model(config, role, ledger)  # type: ignore[arg-type]


# -- configuration and the request body ---------------------------------------------------------


def test_request_caps_tokens_both_ways_and_names_the_role(server: ScriptedLLMServer) -> None:
    server.add(answer("ok"))
    text, _ = ask_text(model(server, "critic", max_output_tokens=77, temperature=0.0), PROMPT)
    body = server.requests[0]
    assert text == "ok"
    assert body["max_tokens"] == 77 and body["max_completion_tokens"] == 77  # llama.cpp reads the first
    assert body["temperature"] == 0.0 and body["stream"] is False
    assert server.exchanges[0].role == "critic"
    assert server.exchanges[0].headers["authorization"] == f"Bearer {NO_KEY}"  # keyless server works


def test_legacy_max_tokens_can_be_turned_off(server: ScriptedLLMServer) -> None:
    server.add(answer("ok"))
    ask_text(model(server, max_output_tokens=50, send_max_tokens=False), PROMPT)
    assert "max_tokens" not in server.requests[0] and server.requests[0]["max_completion_tokens"] == 50


def test_api_key_comes_from_the_named_environment_variable(
    server: ScriptedLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAPNAS_TEST_KEY", "sk-from-env")
    server.add(answer("ok"))
    ask_text(model(server, api_key_env="CAPNAS_TEST_KEY"), PROMPT)
    assert server.exchanges[0].headers["authorization"] == "Bearer sk-from-env"


def test_missing_keys_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAPNAS_MISSING_KEY", raising=False)
    with pytest.raises(ValueError, match="CAPNAS_MISSING_KEY"):
        config = LLMConfig(model="m", base_url="http://127.0.0.1:9/v1", api_key_env="CAPNAS_MISSING_KEY")
        config.resolve_api_key()
    with pytest.raises(ValueError, match="needs a key"):
        LLMConfig(model="gpt-x").resolve_api_key()  # OpenAI's own API
    with pytest.raises(ValueError, match="api_key_env") as err:  # settings never hold a key, nor quote one
        LLMConfig(model="m", api_key="sk-secret")
    assert "sk-secret" not in str(err.value)


def test_role_overrides_merge_onto_the_default(server: ScriptedLLMServer) -> None:
    models = AgentModels(
        default=LLMConfig(model="small", base_url=server.base_url),
        roles={"coder": {"model": "big", "max_output_tokens": 4096}},
    )
    assert models.for_role("critic").model == "small"
    server.add(answer("a", role="coder"), answer("b", role="planner"))
    llms = build_role_models(models)
    assert set(llms) == {"planner", "coder", "critic", "reporter"}
    ask_text(llms["coder"], PROMPT)
    ask_text(llms["planner"], PROMPT)
    assert [(b["model"], b["max_tokens"]) for b in server.requests] == [("big", 4096), ("small", 2048)]


def test_a_seed_goes_with_every_request_and_none_sends_none(server: ScriptedLLMServer) -> None:
    models = AgentModels(default=LLMConfig(model="m", base_url=server.base_url))
    server.add(answer("a"), answer("b"), answer("c"))
    seeded = build_role_models(models, seed=7)
    ask_text(seeded["critic"], PROMPT)
    ask_text(seeded["coder"], PROMPT)
    ask_text(build_role_models(models)["critic"], PROMPT)
    assert [b.get("seed") for b in server.requests] == [7, 7, None]
    assert "seed" not in server.requests[2]  # a server that knows no seed is sent none


def test_bad_role_override_names_the_entry() -> None:
    with pytest.raises(ValueError, match=r"roles\.coder"):
        AgentModels(default=LLMConfig(model="m"), roles={"coder": {"max_output_tokens": -1}})
    with pytest.raises(ValueError, match="judge"):
        AgentModels(default=LLMConfig(model="m"), roles={"judge": {}})  # type: ignore[dict-item]


# -- retries (the openai client's own) ------------------------------------------------------------


@pytest.mark.parametrize("failure", [http_error(429), http_error(500), hang()], ids=["429", "500", "timeout"])
def test_transient_failure_is_retried_then_answered(server: ScriptedLLMServer, failure) -> None:
    server.add(failure, answer("second time lucky"))
    text, _ = ask_text(model(server, timeout_s=0.5, max_retries=2), PROMPT)
    assert text == "second time lucky"
    assert len(server.requests) == 2
    assert server.requests[0] == server.requests[1]  # the same request, sent again


def test_retries_are_bounded(server: ScriptedLLMServer) -> None:
    server.add(http_error(500), http_error(500), answer("never reached"))
    with pytest.raises(openai.InternalServerError):
        ask_text(model(server, max_retries=1), PROMPT)
    assert len(server.requests) == 2


def test_client_errors_are_not_retried(server: ScriptedLLMServer) -> None:
    server.add(http_error(400), answer("never reached"))
    with pytest.raises(openai.BadRequestError):
        ask_text(model(server, max_retries=2), PROMPT)
    assert len(server.requests) == 1


# -- structured output --------------------------------------------------------------------------


def test_forced_tool_call_is_parsed(server: ScriptedLLMServer) -> None:
    server.add(tool_call("Plan", {"encoder": "cnn", "layers": 2}))
    plan, raw, usage = ask_structured(model(server), PROMPT, Plan)
    assert plan == Plan(encoder="cnn", layers=2)
    assert json.loads(raw) == {"encoder": "cnn", "layers": 2}
    body = server.requests[0]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "Plan"}}
    assert [t["function"]["name"] for t in body["tools"]] == ["Plan"]
    assert "response_format" not in body  # llama.cpp rejects json_schema
    assert (usage["input_tokens"], usage["output_tokens"]) == server.reported_usage


@pytest.mark.parametrize(
    "content",
    [
        '{"encoder": "cnn", "layers": 3}',
        'Here you go:\n```json\n{"encoder": "cnn", "layers": 3}\n```\nAnything else?',
        'I suggest {"encoder": "cnn", "layers": 3} since {braces} in prose are common.',
        '<tool_call>{"name": "Plan", "arguments": {"encoder": "cnn", "layers": 3}}</tool_call>',
    ],
    ids=["bare", "fenced", "embedded", "envelope"],
)
def test_json_in_text_is_accepted(server: ScriptedLLMServer, content: str) -> None:
    server.add(answer(content))
    plan, raw, _ = ask_structured(model(server), PROMPT, Plan)
    assert plan == Plan(encoder="cnn", layers=3)
    assert raw == content
    assert len(server.requests) == 1


def test_malformed_json_is_reasked_with_the_problem(server: ScriptedLLMServer) -> None:
    server.add(answer('{"encoder": "cnn", "layers": '), tool_call("Plan", {"encoder": "rnn", "layers": 1}))
    plan, _, usage = ask_structured(model(server), PROMPT, Plan)
    assert plan == Plan(encoder="rnn", layers=1)
    reask = server.requests[1]["messages"]
    assert reask[:2] == server.requests[0]["messages"]  # the original conversation, then the complaint
    assert "no JSON object" in reask[-1]["content"] and '"layers": ' in reask[-1]["content"]
    assert server.requests[1]["tool_choice"]["function"]["name"] == "Plan"
    assert (usage["input_tokens"], usage["output_tokens"]) == server.reported_usage  # both attempts


def test_invalid_values_are_reasked_with_the_validation_error(server: ScriptedLLMServer) -> None:
    server.add(tool_call("Plan", {"encoder": "cnn", "layers": 99}))
    server.add(tool_call("Plan", {"encoder": "cnn", "layers": 4}))
    plan, _, _ = ask_structured(model(server), PROMPT, Plan)
    assert plan.layers == 4
    complaint = server.requests[1]["messages"][-1]["content"]
    assert "layers: Input should be less than or equal to 8" in complaint
    assert "errors.pydantic.dev" not in complaint


def test_broken_tool_arguments_are_reasked(server: ScriptedLLMServer) -> None:
    server.add(tool_call("Plan", '{"encoder": "cnn", "layers": 2'))  # unterminated arguments
    server.add(tool_call("Plan", {"encoder": "vit", "layers": 2}))
    plan, _, _ = ask_structured(model(server), PROMPT, Plan)
    assert plan.encoder == "vit" and len(server.requests) == 2


def test_reasks_are_bounded(server: ScriptedLLMServer) -> None:
    server.add(answer("no idea"), answer("still no idea"), answer("never asked"))
    with pytest.raises(StructuredOutputError, match="Plan: no JSON object") as caught:
        ask_structured(model(server), PROMPT, Plan, reasks=1)
    assert caught.value.raw == "still no idea"
    assert len(server.requests) == 2


def test_cut_off_answer_is_reasked_asking_for_brevity(server: ScriptedLLMServer) -> None:
    server.add(answer('{"encoder": "a very long', finish_reason="length"))
    server.add(answer('{"encoder": "cnn", "layers": 1}'))
    plan, _, _ = ask_structured(model(server), PROMPT, Plan)
    assert plan.layers == 1
    assert "cut off at the output-token limit" in server.requests[1]["messages"][-1]["content"]


class TitledSpec(BaseModel):
    model_config = ConfigDict(title="ArchitectureSpec")
    depth: int


def test_tool_is_forced_under_the_schema_title(server: ScriptedLLMServer) -> None:
    server.add(tool_call("ArchitectureSpec", {"depth": 3}))
    spec, _, _ = ask_structured(model(server), PROMPT, TitledSpec)
    assert spec.depth == 3
    assert server.requests[0]["tool_choice"]["function"]["name"] == "ArchitectureSpec"


def test_async_structured_ask(server: ScriptedLLMServer) -> None:
    ledger = UsageLedger()
    server.add(answer("not json"), tool_call("Plan", {"encoder": "cnn", "layers": 5}))
    plan, _, _ = asyncio.run(aask_structured(model(server, ledger=ledger), PROMPT, Plan))
    assert plan.layers == 5 and len(server.requests) == 2
    assert ledger.total().calls == 2 and ledger.total().input_tokens == server.reported_usage[0]


# -- free text ----------------------------------------------------------------------------------


def test_ask_text_extracts_the_python_block_when_asked(server: ScriptedLLMServer) -> None:
    reply = "Here is the model:\n```python\nclass Net:\n    pass\n```\nIt is small."
    server.add(answer(reply), answer(reply), answer("class Net: pass"))
    llm = model(server, "coder")
    assert ask_text(llm, PROMPT, fence="python")[0] == "class Net:\n    pass\n"
    assert ask_text(llm, PROMPT)[0] == reply
    assert ask_text(llm, PROMPT, fence="python")[0] == "class Net: pass"  # no block: the whole text


# -- usage and budget ---------------------------------------------------------------------------


def test_ledger_matches_the_servers_reported_usage_per_role(server: ScriptedLLMServer) -> None:
    ledger = UsageLedger()
    server.add(
        tool_call("Plan", {"encoder": "cnn", "layers": 2}, role="planner", usage=(1200, 300)),
        answer("```python\nx = 1\n```", role="coder", usage=(800, 2000)),
        answer("again", role="coder", usage=(100, 10)),
    )
    planner = model(server, "planner", ledger, price_in_per_mtok=1.0, price_out_per_mtok=4.0)
    coder = model(server, "coder", ledger)  # no prices: a local model costs nothing
    ask_structured(planner, PROMPT, Plan)
    ask_text(coder, PROMPT, fence="python")
    ask_text(coder, PROMPT)
    spent = {role: (u.calls, u.input_tokens, u.output_tokens) for role, u in ledger.by_role().items()}
    assert spent == {"planner": (1, 1200, 300), "coder": (2, 900, 2010)}
    assert ledger.by_role()["planner"].cost_usd == pytest.approx((1200 * 1.0 + 300 * 4.0) / 1e6)
    assert ledger.by_role()["coder"].cost_usd == 0.0
    total = ledger.total()
    assert (total.input_tokens, total.output_tokens) == server.reported_usage


def test_streamed_calls_are_counted(server: ScriptedLLMServer) -> None:
    ledger = UsageLedger()
    server.add(answer("streamed", usage=(40, 5)))
    chunks = list(model(server, "reporter", ledger).stream(PROMPT))
    assert "".join(c.text for c in chunks) == "streamed"
    assert server.requests[0]["stream_options"] == {"include_usage": True}
    assert ledger.by_role()["reporter"].total_tokens == 45


def test_budget_stops_before_the_call_that_would_start_over_it(server: ScriptedLLMServer) -> None:
    ledger = UsageLedger(Budget(max_total_tokens=1000))
    server.add(answer("first", usage=(600, 300)), answer("second", usage=(100, 50)), answer("never sent"))
    llm = model(server, "coder", ledger)
    ask_text(llm, PROMPT)  # 900 spent: under budget
    ask_text(llm, PROMPT)  # starts under budget, ends over it (1050): allowed, and kept
    with pytest.raises(BudgetExceeded, match=r"before a coder call: spent 1050/1000 tokens") as caught:
        ask_text(llm, PROMPT)
    assert len(server.requests) == 2  # the third call never reached the server
    assert caught.value.spent.total_tokens == 1050 and ledger.total().calls == 2


def test_cost_budget_stops_structured_asks_and_reasks(server: ScriptedLLMServer) -> None:
    ledger = UsageLedger(Budget(max_cost_usd=0.01))
    server.add(answer("not json", usage=(5000, 5000)), answer('{"encoder": "x", "layers": 1}'))
    llm = model(server, "planner", ledger, price_in_per_mtok=1.0, price_out_per_mtok=1.0)
    with pytest.raises(BudgetExceeded, match=r"\$0\.0100/\$0\.0100"):
        ask_structured(llm, PROMPT, Plan)  # the re-ask would start at the limit
    assert len(server.requests) == 1


def test_ledger_resumes_from_saved_totals() -> None:
    first = UsageLedger()
    first.record("critic", {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}, cost=0.5)
    resumed = UsageLedger(Budget(max_cost_usd=0.5), spent=first.by_role())
    assert resumed.total().cost_usd == 0.5
    with pytest.raises(BudgetExceeded):
        resumed.check("critic")


# -- parsing helpers ----------------------------------------------------------------------------


def test_extract_json_object_prefers_whole_then_fenced_then_first_balanced() -> None:
    assert extract_json_object(' {"a": 1} ') == {"a": 1}
    assert extract_json_object('```\n{"a": "}"}\n```') == {"a": "}"}
    assert extract_json_object('list [1, 2] then {"a": {"b": [1]}} and {"c": 2}') == {"a": {"b": [1]}}
    with pytest.raises(ValueError):
        extract_json_object('{"a": 1')  # truncated JSON is not repaired
    with pytest.raises(ValueError):
        extract_json_object("[1, 2]")


def test_extract_fenced_prefers_the_tagged_block_and_keeps_truncated_ones() -> None:
    text = "```\nplain\n```\n```py\ntagged\n```"
    assert extract_fenced(text, "python") == "tagged\n"
    assert extract_fenced("```bash\nls\n```\n```\nuntagged\n```", "python") == "untagged\n"
    assert extract_fenced("no fences", "python") is None
    assert extract_fenced("```python\ndef f():\n    return", "python") == "def f():\n    return"
