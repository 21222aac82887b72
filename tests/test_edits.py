"""Typed critic edits and mutation (#18), without training: the schema the critic's server receives enumerates
exactly each field's allowed values, every answer valid under it applies to every parent, edits outside it from a
remote model are refused with a clear message (real HTTP to the scripted server on 127.0.0.1), mutation is
seeded and stays inside the options, and the critic's table shows each child's diff and what it did."""

from __future__ import annotations

import random
from typing import Any, Literal, get_args, get_origin

import jsonschema
import pytest
from langchain_core.utils.function_calling import convert_to_openai_tool

from capnas.agents import critic
from capnas.agents.llm import build_chat_model
from capnas.agents.llm_config import LLMConfig
from capnas.tools.design import archspec
from capnas.tools.design.archspec import ArchSpec
from capnas.tools.design.components import COMPONENTS
from capnas.tools.design.edits import EditSpace, apply_edits, describe_diff, diff, flatten, mutate
from llm_server import ScriptedLLMServer, tool_call


def _declared(model, name: str) -> tuple[str, Any]:
    """A field's declared space, read from the pydantic options directly (not through `EditSpace`)."""
    info = model.model_fields[name]
    if get_origin(info.annotation) is Literal:
        return "choices", set(get_args(info.annotation))
    if info.annotation is bool:
        return "choices", {False, True}
    low = next(m.ge for m in info.metadata if hasattr(m, "ge"))
    high = next(m.le for m in info.metadata if hasattr(m, "le"))
    if info.annotation is int:
        return "choices", set(range(low, high + 1))
    return "range", (low, high)


def _sent_schema(space: EditSpace) -> tuple[dict, dict]:
    """(the Critique parameters the critic's request carried, the edit members by field name), read from a real
    request to the scripted server."""
    answer = {"feedback": "ok", "decision": "stop", "parent_id": None, "edits": []}
    with ScriptedLLMServer([tool_call("Critique", answer)]) as server:
        llm = build_chat_model(LLMConfig(model="scripted", base_url=server.base_url, api_key_env=None), "critic")
        critic.critique(llm, "Objective: maximize val cider.", space)
        [request] = server.requests
    [tool] = request["tools"]
    params = tool["function"]["parameters"]
    members = {m["properties"]["field"]["const"]: m for m in params["properties"]["edits"]["items"]["anyOf"]}
    return params, members


def _values(member: dict) -> list:
    """A member's allowed values: its `enum`, or its `const` when there is only one."""
    value = member["properties"]["value"]
    return value["enum"] if "enum" in value else [value["const"]]


def test_the_schema_sent_enumerates_exactly_each_fields_allowed_values() -> None:
    params, members = _sent_schema(EditSpace())
    expected = {"encoder": ("choices", {c.name for c in COMPONENTS.values() if c.kind == "encoder"}),
                "decoder": ("choices", {c.name for c in COMPONENTS.values() if c.kind == "decoder"})}
    for component in COMPONENTS.values():
        for option in component.options.model_fields:
            if option != "name":
                expected[f"{component.name}.{option}"] = _declared(component.options, option)
    for name in ("dropout", "lr", "weight_decay", "grad_clip", "batch_size", "epochs"):
        expected[name] = _declared(ArchSpec, name)
    assert set(members) == set(expected)
    for name, (kind, allowed) in expected.items():
        member = members[name]
        assert member["additionalProperties"] is False and set(member["required"]) == {"field", "value"}
        values = _values(member)
        if kind == "choices":
            assert set(values) == allowed and len(values) == len(allowed), name
        else:  # a float range: a ladder of round values inside it, both ends included
            low, high = allowed
            assert len(values) >= 5 and all(low <= v <= high for v in values), name
            assert min(values) == low and max(values) == high, name
    assert params["properties"]["edits"]["maxItems"] == 4
    assert "refused" not in params["properties"]  # capnas sets it, a model never can


def test_a_task_narrows_the_schema_to_its_families_and_keeps_frozen_encoders_frozen() -> None:
    _, members = _sent_schema(EditSpace(("efficientnet_lite0", "gru"), frozen_encoders=True))
    assert _values(members["encoder"]) == ["efficientnet_lite0"] and _values(members["decoder"]) == ["gru"]
    assert not any(f.split(".")[0] in ("small_cnn", "lstm", "transformer") for f in members)
    assert "efficientnet_lite0.freeze" not in members  # no edit can unfreeze what the task keeps frozen


def _draw_answer(members: dict, rng: random.Random) -> list[dict]:
    """A random edit list that the JSON schema itself admits (what a grammar-constrained model can write)."""
    edits = []
    for member in rng.sample(list(members.values()), k=rng.randint(1, 4)):
        edits.append({"field": member["properties"]["field"]["const"],
                      "value": rng.choice(_values(member))})
    return edits


@pytest.mark.parametrize("space", [EditSpace(), EditSpace(("small_cnn", "vit", "gru", "transformer")),
                                   EditSpace(("efficientnet_lite0", "lstm"), frozen_encoders=True)])
def test_every_schema_valid_answer_applies_to_every_parent(space: EditSpace) -> None:
    params, members = _sent_schema(space)
    model = critic.critique_model(space)
    validator = jsonschema.Draft202012Validator(params)
    rng = random.Random(7)
    for trial in range(150):
        edits = _draw_answer(members, rng)
        answer = {"feedback": "f", "decision": "refine", "parent_id": None, "edits": edits}
        validator.validate(answer)  # schema-valid by construction ...
        verdict = model.model_validate(answer)
        assert verdict.refused is None and len(verdict.edits) == len(edits)  # ... so never refused
        parent = archspec.sample(random.Random(trial), space.families)
        parent = archspec.frozen(parent) if space.frozen_encoders else parent
        child = apply_edits(parent, verdict.edits, space)
        assert ArchSpec.model_validate(child.model_dump()) == child and "class Net" in archspec.render(child)
        last = edits[-1]  # the last edit always holds (earlier ones may be switched away by a later family edit)
        assert flatten(child)[last["field"]] == last["value"]
        if space.frozen_encoders:
            assert getattr(child.encoder, "freeze", True) is True


def test_a_family_switch_keeps_the_shared_options() -> None:
    parent = ArchSpec(encoder={"name": "small_cnn"}, decoder={"name": "gru", "hidden_size": 1024, "embed_dim": 128})
    child = apply_edits(parent, [{"field": "lstm.attention", "value": False}])
    assert child.decoder.model_dump() == {"name": "lstm", "embed_dim": 128, "hidden_size": 1024, "num_layers": 1,
                                          "attention": False}
    child = apply_edits(parent, [{"field": "decoder", "value": "transformer"}])
    assert child.decoder == archspec.TransformerOptions(num_layers=1)  # the one option they share; defaults else
    assert describe_diff(diff(parent, child)) == ("decoder 'gru'->'transformer', transformer.d_model=256, "
                                                  "transformer.num_layers=1, transformer.heads=4")


@pytest.mark.parametrize("edits, says", [
    ([{"field": "lstm.hidden_size", "value": 300}], "edit 1: lstm.hidden_size cannot be 300; use one of 128, 256, 512, 1024"),
    ([{"field": "lr", "value": 0.001}, {"field": "decoder.width", "value": 2}], "edit 2: unknown field 'decoder.width'"),
    ([{"field": "lr", "value": 0.002}], "lr cannot be 0.002; use one of 1e-05, 3e-05, 0.0001"),
    ([{"field": "lstm.attention", "value": 1}], "lstm.attention cannot be 1; use one of False, True"),
    ([{"field": "lr"}], "is not an edit: write"),
    ([{"field": "lr", "value": 0.001}] * 5, "5 edits; at most 4"),
])
def test_edits_outside_the_schema_from_a_remote_model_are_refused_with_a_clear_message(edits, says) -> None:
    """Over real HTTP: the remote server (no grammar) sends edits the schema forbids. No crash and no re-ask: the
    edits are refused with a one-line reason, and the feedback and decision stand."""
    answer = {"feedback": "A bigger decoder should help.", "decision": "refine", "parent_id": "c1", "edits": edits}
    with ScriptedLLMServer([tool_call("Critique", answer)]) as server:
        llm = build_chat_model(LLMConfig(model="scripted", base_url=server.base_url, api_key_env=None), "critic")
        verdict, _, _ = critic.critique(llm, "Objective: maximize val cider.", EditSpace())
        assert len(server.requests) == 1
    assert verdict.edits == [] and says in verdict.refused and "\n" not in verdict.refused
    assert (verdict.feedback, verdict.decision, verdict.parent_id) == (answer["feedback"], "refine", "c1")


def test_a_model_cannot_set_the_refusal_itself() -> None:
    verdict = critic.critique_model(EditSpace()).model_validate(
        {"feedback": "f", "decision": "refine", "edits": [{"field": "lr", "value": 0.001}], "refused": "made up"})
    assert verdict.refused is None and verdict.edits[0].value == 0.001


def test_without_edits_the_critique_is_feedback_and_decision_only() -> None:
    schema = convert_to_openai_tool(critic.critique_model(None))["function"]
    assert schema["name"] == "Critique" and "edits" not in schema["parameters"]["properties"]


def test_mutation_is_seeded_changes_one_or_two_fields_and_stays_in_the_options() -> None:
    space = EditSpace()
    counts = set()
    for seed in range(200):
        parent = archspec.sample(random.Random(seed))
        child, edits = mutate(parent, random.Random(f"0:{seed}"), space)
        assert (child, edits) == mutate(parent, random.Random(f"0:{seed}"), space)  # a rerun repeats it
        assert 1 <= len(edits) <= 2 and len({e["field"] for e in edits}) == len(edits)
        assert child != parent and all(e["field"] != "epochs" for e in edits)
        for e in edits:
            assert space.problem(e) is None
            assert e["field"] in ("encoder", "decoder") or "." not in e["field"] \
                or e["field"].split(".")[0] in (parent.encoder.name, parent.decoder.name)
        counts.add(len(edits))
    assert counts == {1, 2}


def test_the_critics_table_shows_each_childs_diff_and_what_it_did_to_the_score() -> None:
    parent_spec = ArchSpec(encoder={"name": "small_cnn"}, decoder={"name": "lstm", "hidden_size": 512})
    child_spec = apply_edits(parent_spec, [{"field": "lstm.hidden_size", "value": 256}, {"field": "lr", "value": 0.0003}])
    rows = [{"candidate_id": "c0", "mode": "spec", "status": "trained", "spec": parent_spec.model_dump(mode="json"),
             "metrics": {"cider": 0.412}, "parent_id": None},
            {"candidate_id": "c1", "mode": "spec", "status": "trained", "spec": child_spec.model_dump(mode="json"),
             "metrics": {"cider": 0.455}, "parent_id": "c0"}]
    table = critic.summarize(rows, "cider")
    assert "vs parent c0: lstm.hidden_size 512->256, lr 0.001->0.0003; val cider 0.412 -> 0.455 (+0.043)" in table
    assert "training: lr=0.0003 dropout=0.3000" in table
    assert table.count("vs parent") == 1  # the root has no parent line
