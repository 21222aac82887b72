"""The graph `langgraph.json` serves, without a server: the schemas LangGraph Server derives for Studio (input,
output, context) exist on this Python, the served context is JSON that holds no key, and its workspace is not
below the folder being served. Quick; `test_langgraph_server.py` is the same through a real `langgraph dev`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from capnas.graph.build import graph
from capnas.graph.context import ServedContext

REPO = Path(__file__).resolve().parents[1]


def test_langgraph_json_serves_the_compiled_graph() -> None:
    spec = json.loads((REPO / "langgraph.json").read_text())
    assert spec["graphs"] == {"capnas": "./graph/build.py:graph"}
    assert graph.builder.context_schema is ServedContext


def test_the_server_can_derive_input_output_and_context_schemas() -> None:
    # pydantic refuses typing.TypedDict before Python 3.12: these raised there, and Studio showed no form.
    assert {"run_id", "task", "requirement"} <= set(graph.get_input_jsonschema()["properties"])
    assert {"status", "best", "stop_reason"} <= set(graph.get_output_jsonschema()["properties"])
    context = graph.get_context_jsonschema()
    assert {"generation", "models", "run_dir", "executor", "ray_address"} <= set(context["properties"])
    llm = context["$defs"]["LLMConfig"]["properties"]
    assert "api_key_env" in llm and "api_key" not in llm  # a variable's name, never a key


def test_per_role_llm_settings_arrive_as_json_and_become_typed() -> None:
    ctx = ServedContext.model_validate({"generation": "spec", "device": "cpu", "models": {
        "default": {"model": "m", "base_url": "http://127.0.0.1:1/v1", "api_key_env": "MY_KEY",
                    "price_in_per_mtok": 0.5},
        "roles": {"coder": {"max_output_tokens": 4096}}}})
    assert ctx.models.for_role("coder").max_output_tokens == 4096
    assert ctx.models.for_role("critic").api_key_env == "MY_KEY"
    assert ctx.to_record()["models"]["default"]["api_key_env"] == "MY_KEY"
    with pytest.raises(ValidationError, match="api_key_env") as err:
        ServedContext.model_validate({"models": {"default": {"model": "m", "api_key": "sk-pasted"}}})
    assert "sk-pasted" not in str(err.value)


def test_the_served_workspace_defaults_to_outside_the_served_folder(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(REPO)  # `langgraph dev` runs in the clone it serves
    workspace = Path(ServedContext(device="cpu").run_dir)
    assert workspace == tmp_path / "home" / ".capnas"
    assert REPO not in workspace.parents
    assert ServedContext(device="cpu", run_dir="~/runs").run_dir == str(tmp_path / "home" / "runs")
