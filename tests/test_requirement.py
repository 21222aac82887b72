"""The deterministic reader of requirements (`capnas.agents.requirement`) and how the planner grounds an LLM's
answer in the person's words (`capnas.agents.planner.ground`). Fast: no LLM, no server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from capnas.agents.planner import TaskDraft, draft_task, ground
from capnas.agents.requirement import find_quote, read_requirement
from capnas.tools.task import Budgets, Task

FIXTURES = Path(__file__).parent / "fixtures" / "requirements.json"


def _values(text: str) -> dict:
    return {k: r.value for k, r in read_requirement(text).values.items()}


@pytest.mark.parametrize("text, params", [
    ("under 1M parameters", 1_000_000),
    ("2.5 million parameters", 2_500_000),
    ("at most 500k params", 500_000),
    ("keep it below 4e6 parameters", 4_000_000),
    ("200 thousand parameters", 200_000),
    ("two hundred thousand parameters", 200_000),
    ("half a million parameters", 500_000),
    ("one and a half million parameters", 1_500_000),
    ("a million weights", 1_000_000),
    ("3,000,000 parameters", 3_000_000),
    ("a 2M-parameter model", 2_000_000),
    ("parameter budget of 3 million", 3_000_000),
    ("Parameters: 750 thousand max", 750_000),
])
def test_parameter_budgets_in_digits_and_words(text: str, params: int) -> None:
    assert _values(text) == {"max_params": params}


@pytest.mark.parametrize("text, expected", [
    ("latency under 20 ms", {"max_latency_ms": 20}),
    ("fifty milliseconds per image", {"max_latency_ms": 50}),
    ("0.1 seconds per image", {"max_latency_ms": 100}),
    ("one hour", {"time_budget": 60}),
    ("45 minutes", {"time_budget": 45}),
    ("half an hour", {"time_budget": 30}),
    ("an hour and a half", {"time_budget": 90}),
    ("two hours", {"time_budget": 120}),
    ("the search can take a day", {"time_budget": 1440}),
    ("20 candidates", {"max_candidates": 20}),
    ("try twelve architectures", {"max_candidates": 12}),
    ("3 epochs each", {"epochs": 3}),
    ("5 minutes per candidate", {"train_time_s": 300}),
    ("64x64 images", {"image_size": 64}),
    ("images of 96 px", {"image_size": 96}),
])
def test_latency_time_candidates_and_sizes(text: str, expected: dict) -> None:
    assert _values(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", [
    "a small model for phones", "an attention-based decoder", "a 5 MB model", "at least 1M parameters",
    "over 20 ms is fine", "a second GRU decoder", "a candidate that trains fast", "one of the pretrained ones is ok",
    "",
])
def test_words_without_a_unit_set_no_number(text: str) -> None:
    numbers = {k for k, v in _values(text).items() if not isinstance(v, (bool, str, tuple))}
    assert numbers == set()


def test_evidence_is_the_persons_own_words_comparator_included() -> None:
    found = read_requirement("I need a small model for phones, under one million parameters, in forty-five minutes")
    assert found.values["max_params"].evidence == "under one million parameters"
    assert found.values["time_budget"].evidence == "forty-five minutes"
    for reading in found.values.values():
        start, end = reading.span
        assert "I need a small model for phones, under one million parameters, in forty-five minutes"[start:end] \
            == reading.evidence


def test_a_value_out_of_bounds_is_said_not_set() -> None:
    found = read_requirement("under 500 parameters, 1024 px images")
    assert "max_params" not in found.values and "image_size" not in found.values
    assert len(found.ignored) == 2 and "max_params" in found.ignored[0] and "'under 500 parameters'" in found.ignored[0]


def _families(text: str, defaults: Task | None = None) -> set[str]:
    return set(ground(text, defaults or Task(), read_requirement(text), None).task.families)


@pytest.mark.parametrize("text, families", [
    ("with a GRU decoder", {"gru"}),
    ("a pretrained EfficientNet", {"efficientnet_lite0"}),
    ("a small CNN", {"small_cnn"}),
    ("transformer decoders", {"transformer"}),
    ("a vision transformer encoder", {"vit"}),
    ("recurrent decoders only", {"lstm", "gru"}),
    ("not transformers", {"lstm", "gru"}),
    ("a GRU rather than an LSTM", {"gru"}),
    ("use a ViT instead of a CNN", {"vit"}),
    ("a ResNet and an LSTM, nothing else", {"resnet", "lstm"}),
    ("any decoder except the transformer", {"lstm", "gru"}),
    ("a convolutional encoder trained from scratch", {"small_cnn", "resnet"}),
    ("don't use a ViT", {"small_cnn", "resnet", "efficientnet_lite0"}),
    ("an attention-based model for phones", set()),
    ("no more than 2M parameters with a GRU decoder", {"gru"}),
    ("not only a GRU but an LSTM too", {"lstm", "gru"}),
])
def test_families_by_name_synonym_and_negation(text: str, families: set[str]) -> None:
    assert _families(text) == families


def test_a_kind_the_person_did_not_mention_keeps_the_runs_setting() -> None:
    assert _families("a GRU decoder", Task(families=["resnet", "lstm"])) == {"resnet", "gru"}
    assert _families("no transformers", Task(families=["vit", "lstm", "transformer"])) == {"vit", "lstm"}


@pytest.mark.parametrize("text, objective", [
    ("optimize BLEU-4", "bleu_4"), ("judged by METEOR", "meteor"), ("objective ROUGE-L", "rouge_l"),
    ("target BLEU rather than CIDEr", "bleu_4"), ("report BLEU and METEOR, but optimize CIDEr", "cider"),
])
def test_objective_by_name(text: str, objective: str) -> None:
    assert _values(text)["objective"] == objective


def test_several_metrics_and_no_cue_set_no_objective() -> None:
    assert "objective" not in _values("we look at BLEU and METEOR")


@pytest.mark.parametrize("text, frozen", [
    ("keep the pretrained backbone frozen", True), ("freeze the encoder", True),
    ("fine-tune it rather than freezing it", False), ("please don't freeze the encoder", False),
    ("train everything end to end", False),
])
def test_frozen_encoders_and_its_negations(text: str, frozen: bool) -> None:
    assert _values(text)["frozen_encoders"] is frozen


def test_find_quote_ignores_case_punctuation_and_spacing() -> None:
    text = "Maximize the longest-common-subsequence metric."
    start, end = find_quote("longest common  subsequence", text)
    assert text[start:end] == "longest-common-subsequence"
    assert find_quote("shortest path", text) is None and find_quote("  ", text) is None


def test_the_llms_answer_counts_only_with_evidence_in_the_text() -> None:
    text = "Maximize the longest-common-subsequence metric, for phones."
    kept = ground(text, Task(), read_requirement(text),
                  TaskDraft(objective="rouge_l", objective_evidence="longest common subsequence metric"))
    assert kept.task.objective == "rouge_l"
    assert kept.changed["objective"].source == "llm" and kept.changed["objective"].evidence == \
        "longest-common-subsequence metric"
    for draft in (TaskDraft(objective="rouge_l"),  # no evidence
                  TaskDraft(objective="rouge_l", objective_evidence="the ROUGE metric"),  # not in the text
                  TaskDraft(objective="rouge_l", objective_evidence="for phones"),  # says nothing of a metric
                  TaskDraft(encoders=["small_cnn"], encoders_evidence="for phones")):
        dropped = ground(text, Task(), read_requirement(text), draft)
        assert dropped.changed == {} and dropped.task == Task() and len(dropped.ignored) == 1


def test_the_reader_wins_over_the_llm_and_exclusions_hold() -> None:
    text = "I need a small captioning model for phones, under 1M parameters, with a GRU decoder, not a transformer"
    # A small model's typical answer: every family it was shown, quoting the requirement.
    draft = TaskDraft(encoders=["resnet", "vit"], encoders_evidence="small captioning model",
                      decoders=["lstm", "gru", "transformer"], decoders_evidence="GRU decoder",
                      objective="rouge_l", objective_evidence="model for phones", frozen_encoders=True,
                      frozen_evidence="under 1M parameters")
    drafted = ground(text, Task(), read_requirement(text), draft)
    assert drafted.task.families == ["gru"] and drafted.task.max_params == 1_000_000
    assert set(drafted.changed) == {"families", "max_params"}
    assert drafted.changed["max_params"].evidence == "under 1M parameters"


def test_the_issues_chat_example_without_an_llm() -> None:
    text = "I need a small captioning model for phones, under 1M parameters, with a GRU decoder"
    drafted, raw, usage = draft_task(None, text, Task())
    assert drafted.task.model_dump() == Task(max_params=1_000_000, families=["gru"]).model_dump()
    assert drafted.evidence() == {
        "max_params": {"value": 1_000_000, "evidence": "under 1M parameters", "source": "reader"},
        "families": {"value": ["gru"], "evidence": "GRU decoder", "source": "reader"}}


def _flat(task: Task) -> dict:
    data = task.model_dump()
    budgets = data.pop("budgets")
    return {**data, **budgets}


def test_the_requirement_set_without_an_llm() -> None:
    """The deterministic half alone over the acceptance set: a floor for what any planner LLM adds to, and a
    check that nothing is changed without evidence. (The set was written before the reader was measured on it.)"""
    fixture = json.loads(FIXTURES.read_text())
    assert len(fixture["cases"]) >= 30
    right = total = 0
    for case in fixture["cases"]:
        given = case.get("defaults", {})
        base = Task(**{k: v for k, v in given.items() if k in Task.model_fields},
                    budgets=Budgets(**{k: v for k, v in given.items() if k in Budgets.model_fields}))
        drafted, _, _ = draft_task(None, case["text"], base)
        got, before = _flat(drafted.task), _flat(base)
        for key in fixture["fields"]:
            want = case["set"].get(key, before[key])
            ok = set(want) == set(got[key]) if key == "families" else want == got[key]
            right, total = right + ok, total + 1
        for key in (k for k in got if got[k] != before[k]):
            assert key in drafted.changed, (case["text"], key)
            assert all(find_quote(q, case["text"]) for q in drafted.changed[key].evidence.split("; ")), (case, key)
    assert right / total >= 0.9, f"{right}/{total}"


def test_words_the_reader_read_are_no_evidence_for_the_llm_and_every_family_is_no_constraint() -> None:
    text = "Use a ViT encoder instead of a CNN."
    draft = TaskDraft(decoders=["lstm", "gru", "transformer"], decoders_evidence="ViT encoder instead of a CNN")
    drafted = ground(text, Task(), read_requirement(text), draft)
    assert drafted.task.families == ["vit"] and "read those words already" in drafted.ignored[0]
    said = "any image model that looks at patches will do"
    everything = TaskDraft(encoders=["small_cnn", "resnet", "vit", "efficientnet_lite0"],
                           encoders_evidence="looks at patches")
    assert ground(said, Task(), read_requirement(said), everything).changed == {}
    assert ground(said, Task(), read_requirement(said), TaskDraft(encoders=["vit"], encoders_evidence="looks at patches")
                  ).changed["families"].model_dump() == {"value": ["vit"], "evidence": "looks at patches", "source": "llm"}
