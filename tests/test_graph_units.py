"""The graph's pure parts: routing, the compiled graph's shape, run settings and the secret-free record."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from capnas.agents.llm_config import AgentModels, LLMConfig
from capnas.graph import routing
from capnas.graph.build import build_graph
from capnas.graph.context import Context
from capnas.settings import RunSettings, SettingsError


@pytest.mark.parametrize(("status", "repairs", "expected"), [
    ("valid", 0, "trainer"),
    ("invalid", 0, "coder"),  # an LLM repairs from the violations; random generation draws again
    ("invalid", 1, "coder"),
    ("invalid", 2, "done"),  # repair rounds spent: the branch ends (the same rounds for every generation)
    ("duplicate", 0, "coder"),  # never validated or trained twice: ask for something new
    ("duplicate", 2, "done"),
])
def test_after_validation(status: str, repairs: int, expected: str) -> None:
    assert routing.after_validation(status, repairs, max_repairs=2) == expected


def test_a_stop_reason_ends_the_run_after_any_step() -> None:
    assert routing.after_critic({"stop_reason": "time_budget"}) == "reporter"
    assert routing.after_critic({}) == "planner"
    assert routing.after_planner({"stop_reason": "token_budget"}) == "reporter"
    assert routing.after_coder({}) == "validator"


def test_the_graph_has_the_five_agents_and_the_loop() -> None:
    graph = build_graph().get_graph(xray=True)  # xray: inside the candidate branch (a subgraph) too
    assert {"planner", "candidate:coder", "candidate:validator", "candidate:trainer", "promoter", "evaluator",
            "critic", "reporter"} <= set(graph.nodes)
    edges = {(e.source, e.target) for e in graph.edges}
    assert {("planner", "candidate:__start__"), ("candidate:validator", "candidate:coder"),
            ("candidate:validator", "candidate:trainer"), ("candidate:__end__", "promoter"), ("promoter", "evaluator"),
            ("evaluator", "critic"),
            ("critic", "planner"), ("critic", "reporter")} <= edges


def test_the_journal_record_never_holds_a_key() -> None:
    models = AgentModels(default=LLMConfig(model="m", base_url="http://127.0.0.1:1/v1", api_key_env="CAPNAS_KEY"),
                         roles={"coder": {"api_key_env": "CAPNAS_CODER_KEY"}})
    record = Context(models=models, threads=2).to_record()
    assert record["models"]["roles"]["coder"] == {"api_key_env": "CAPNAS_CODER_KEY"}  # the variable's name only
    restored = Context.from_record(record, models)
    assert (restored.threads, restored.generation, restored.models) == (2, "spec", models)
    # A key itself is refused wherever it is put, and the refusal does not quote it.
    for models in ({"default": {"model": "m", "api_key": "sk-secret"}},
                   {"default": {"model": "m"}, "roles": {"coder": {"api_key": "sk-secret"}}}):
        with pytest.raises(ValidationError, match="api_key_env") as err:
            Context(models=models)
        assert "sk-secret" not in str(err.value)


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("max-candidates: 4\ndataset: shapes:100\ndevice: cpu\n")
    settings = RunSettings.load(config, {"max_candidates": 9, "seed": None})
    assert (settings.max_candidates, settings.dataset) == (9, "shapes:100")
    assert settings.task().budgets.max_candidates == 9


def test_every_run_setting_is_a_run_flag_and_reaches_the_task(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from capnas.cli import app

    flags = {p.name for p in typer.main.get_command(app).commands["run"].params}
    assert set(RunSettings.model_fields) - flags == {"llm_roles", "confirm"}  # nested or chat-only: config file
    assert flags - set(RunSettings.model_fields) == {"config", "json_out", "report", "run_id"}  # about this call
    assert RunSettings.load(None, {"frozen_encoders": True}).task().frozen_encoders is True
    assert RunSettings().task().frozen_encoders is False
    bad = CliRunner().invoke(app, ["run", "--frozen-encoders", "--concurrency", "0", "--run-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "concurrency" in bad.output


def test_the_readme_configuration_table_is_the_one_made_from_the_declarations() -> None:
    from capnas.settings import markdown_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert markdown_table() in readme, "README's configuration table is out of date: paste markdown_table()"


@pytest.mark.parametrize(("text", "message"), [
    ("max_candidates: zero\n", "max_candidates"),
    ("colour: blue\n", "colour"),
    ("- a\n- b\n", "mapping"),
    ("key: [unclosed\n", "not valid YAML"),
])
def test_a_bad_config_file_is_named_with_the_key(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=message) as err:
        RunSettings.load(config, {})
    assert str(config) in str(err.value)


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="nope.yaml: no such file"):
        RunSettings.load(tmp_path / "nope.yaml", {})


def test_the_context_records_the_embedded_model_only_when_it_serves_the_run() -> None:
    local = AgentModels(default=LLMConfig(model="qwen", base_url="http://127.0.0.1:1/v1"))
    assert RunSettings(embedded_model="1.5b").context(local).extra == {"embedded_model": "1.5b"}
    configured = RunSettings(llm_base_url="http://127.0.0.1:2/v1", llm_model="m")
    assert configured.context(configured.models()).extra == {}
    assert RunSettings(generation="random").context(None).extra == {}


def test_the_planner_gives_each_candidate_of_a_round_untried_families_in_its_order() -> None:
    from capnas.agents.planner import RoundPlan, assign

    plan = RoundPlan(encoders=["small_cnn", "vit"], decoders=["gru", "lstm"])
    assert assign(plan, 3, tried=set()) == [("small_cnn", "gru"), ("small_cnn", "lstm"), ("vit", "gru")]
    assert assign(plan, 2, tried={("small_cnn", "gru")}) == [("small_cnn", "lstm"), ("vit", "gru")]
    # a refine keeps its parent's families first; once every pair is tried the ranking repeats
    everything = {("small_cnn", "gru"), ("small_cnn", "lstm"), ("vit", "gru"), ("vit", "lstm")}
    assert assign(plan, 2, tried=everything, keep=("vit", "lstm")) == [("vit", "lstm"), ("small_cnn", "lstm")]
    assert assign(plan, 1, tried=everything) == [("small_cnn", "gru")]
    # pairs the task allows but the plan left out come after the plan's own, before any repeat
    wider = RoundPlan(encoders=["small_cnn", "vit"], decoders=["gru", "lstm", "transformer"])
    assert assign(plan, 1, tried=everything, fallback=wider) == [("small_cnn", "transformer")]


def test_a_spec_with_assigned_families_cannot_name_others() -> None:
    from pydantic import ValidationError

    from capnas.tools.design.archspec import ArchSpec, spec_model

    model = spec_model("small_cnn", "gru")
    spec = ArchSpec(**model(encoder={"name": "small_cnn", "width": 16}, decoder={"name": "gru"}).model_dump())
    assert spec.describe().startswith("small_cnn(width=16")
    with pytest.raises(ValidationError):
        model(encoder={"name": "vit"}, decoder={"name": "gru"})
    schema = model.model_json_schema()
    assert "ViTOptions" not in str(schema) and "GRUOptions" in str(schema)
    assert model.__name__ == "ArchSpec"  # the tool the coder is forced to call keeps its name


def test_a_task_with_frozen_encoders_fixes_freeze_in_the_schema_and_in_random_draws() -> None:
    import random

    from pydantic import ValidationError

    from capnas.tools.design.archspec import ArchSpec, frozen, sample, spec_model

    model = spec_model("efficientnet_lite0", "lstm", frozen=True)
    assert model.model_json_schema()["$defs"]["EfficientNetLite0Options"]["properties"]["freeze"]["const"] is True
    with pytest.raises(ValidationError):
        model(encoder={"name": "efficientnet_lite0", "freeze": False}, decoder={"name": "lstm"})
    spec = ArchSpec(**model(encoder={"name": "efficientnet_lite0"}, decoder={"name": "lstm"}).model_dump())
    assert spec.encoder.freeze is True
    # Encoders without a pretrained backbone are untouched, and so is the schema.
    assert spec_model("small_cnn", "gru", frozen=True).model_json_schema() == spec_model("small_cnn", "gru").model_json_schema()
    draws = [sample(random.Random(seed), ["efficientnet_lite0"]) for seed in range(12)]
    assert {d.encoder.freeze for d in draws} == {True, False}  # the search space itself has both
    pinned = [frozen(d) for d in draws]
    assert all(d.encoder.freeze for d in pinned)
    # Everything else about a draw stays as drawn.
    assert [d.model_copy(update={"encoder": d.encoder.model_copy(update={"freeze": True})}) for d in draws] == pinned
    small = sample(random.Random(0), ["small_cnn"])
    assert frozen(small) is small


def test_a_person_asking_for_frozen_encoders_sets_the_task() -> None:
    from capnas.agents.planner import TaskDraft, ground
    from capnas.agents.requirement import read_requirement
    from capnas.tools.task import Task

    said = "keep the pretrained encoder frozen"
    assert ground(said, Task(), read_requirement(said), None).task.frozen_encoders is True
    unsaid = "a captioning model"  # left out: kept
    assert ground(unsaid, Task(frozen_encoders=True), read_requirement(unsaid), TaskDraft()).task.frozen_encoders is True


def test_a_planner_with_no_usable_answer_leaves_the_round_to_the_default_rotation(tmp_path: Path, monkeypatch) -> None:
    import time
    from types import SimpleNamespace

    from capnas.agents.llm import StructuredOutputError
    from capnas.agents.planner import RoundPlan, default_plan
    from capnas.graph import nodes
    from capnas.graph.journal import Journal
    from capnas.tools.task import Task

    def cut_off(*args, **kwargs):
        raise StructuredOutputError(RoundPlan, "the answer was cut off at the output-token limit", '{"rationale": "...')

    monkeypatch.setattr(nodes.planner, "plan_round", cut_off)
    models = AgentModels(default=LLMConfig(model="m", base_url="http://127.0.0.1:9/v1"))
    ctx = Context(run_dir=str(tmp_path), generation="spec", models=models, concurrency=2)
    task = Task(dataset="shapes:60", image_size=32)
    state = {"run_id": "fallback", "task": task.model_dump(), "started_at": time.time(), "round": 1}
    out = nodes.planner_node(state, SimpleNamespace(context=ctx, stream_writer=None))

    assert "stop_reason" not in out and out["plan"] == default_plan(task, 1).model_dump()
    assert out["round_candidates"] == ["fallback-r001", "fallback-r001-1"]
    assert out["assignments"] == [["resnet", "gru"], ["resnet", "transformer"]]
    events = Journal(tmp_path / "journal.sqlite").events("fallback")
    assert [e["kind"] for e in events] == ["planner_fallback"] and "cut off" in events[0]["payload"]["error"]


def test_asked_again_after_a_duplicate_the_coder_keeps_its_temperature(tmp_path: Path, monkeypatch) -> None:
    """With mutation off a duplicate goes back to the coder as a repair, at the role's own temperature (the old
    hotter re-ask is gone); with mutation on, a coder's answer that duplicates an earlier one is mutated instead."""
    from types import SimpleNamespace

    from capnas.graph import nodes
    from capnas.graph.journal import Journal
    from capnas.tools.design.archspec import ArchSpec, render
    from capnas.tools.task import Task

    task = Task(dataset="shapes:60", image_size=32)
    spec = ArchSpec(encoder={"name": "small_cnn"}, decoder={"name": "gru"})
    journal = Journal(tmp_path / "journal.sqlite")
    journal.create_run(task.model_dump(), {}, run_id="hot")
    journal.add_candidate("hot", render(spec), round=0, mode="spec", spec=spec.model_dump(mode="json"), candidate_id="hot-r000")
    dup = journal.add_candidate("hot", render(spec), round=1, mode="spec", spec=spec.model_dump(mode="json"),
                                candidate_id="hot-r001")
    assert dup.status == "duplicate"

    temperatures = []

    def write_spec(model, messages, families=None, frozen_encoder=False):
        temperatures.append(model.temperature)
        answer = spec if len(temperatures) == 3 else spec.model_copy(update={"lr": 3e-3 + len(temperatures) * 1e-4})
        return answer, render(answer), "{}", {"input_tokens": 10, "output_tokens": 5}

    monkeypatch.setattr(nodes.coder, "write_spec", write_spec)
    models = AgentModels(default=LLMConfig(model="m", base_url="http://127.0.0.1:9/v1"))
    runtime = SimpleNamespace(context=Context(run_dir=str(tmp_path), models=models, mutation=False), stream_writer=None)
    plan = {"encoders": ["small_cnn"], "decoders": ["gru"], "rationale": ""}
    state = {"run_id": "hot", "task": task.model_dump(), "round": 1, "plan": plan, "families": ["small_cnn", "gru"]}
    nodes.coder_node({**state, "candidate_id": "hot-r001", "repairs": 1}, runtime)  # the duplicate, asked again
    nodes.coder_node({**state, "candidate_id": "hot-r002", "repairs": 0}, runtime)  # a first answer
    assert temperatures == [models.default.temperature] * 2
    assert journal.get_candidate("hot-r001").status == "generated"  # its new answer replaced the duplicate

    runtime.context = runtime.context.model_copy(update={"mutation": True})
    nodes.coder_node({**state, "candidate_id": "hot-r003", "repairs": 0}, runtime)  # answers hot-r000's spec again
    mutated = journal.get_candidate("hot-r003")
    [event] = journal.events("hot", "mutation")
    assert mutated.status == "generated" and mutated.parent_id == "hot-r000" and len(temperatures) == 3
    assert event["candidate_id"] == "hot-r003" and event["payload"]["reason"] == "duplicate"
