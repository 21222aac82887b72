"""The model card of the best model of a real run (`report_run`): every number read back against the journal,
the training run dir and the layer table measured in the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_run import CRITIC_FEEDBACK, PLANNER_RATIONALE, RUN_ID, BuiltRun, build_run, report_once

from capnas.graph.journal import Journal

pytestmark = pytest.mark.slow


@pytest.fixture
def built(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> BuiltRun:
    run = build_run(tmp_path_factory.getbasetemp() / "report-run")
    monkeypatch.setenv("CAPNAS_CACHE", str(run.cache))
    return run


def _card(built: BuiltRun) -> str:
    return Path(report_once(built)["model_card"]).read_text(encoding="utf-8")


def _section(card: str, title: str) -> str:
    return card.split(f"\n## {title}\n")[1].split("\n## ")[0]


def _row(text: str, first_cell: str) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{text}")


def test_card_has_every_section_in_order(built: BuiltRun) -> None:
    from capnas.tools.report.model_card import SECTIONS

    card = _card(built)
    best = Journal(built.workspace / "journal.sqlite").leaderboard(RUN_ID)[0]
    assert card.startswith(f"# Model card: {best.candidate_id} of run {RUN_ID}\n")
    titles = [line[3:] for line in card.splitlines() if line.startswith("## ")]
    assert titles == list(SECTIONS)


def test_card_overview_and_metrics_come_from_the_journal(built: BuiltRun) -> None:
    from capnas.tools.report.model_card import METRIC_NAMES, fmt_metric

    journal = Journal(built.workspace / "journal.sqlite")
    best = journal.leaderboard(RUN_ID)[0]
    card = _card(built)
    overview = _section(card, "Overview")
    assert _row(overview, "Parameters")[1] == f"{best.params:,}"
    assert _row(overview, "Validation CIDEr (objective)")[1] == fmt_metric(best.metrics["cider"])
    assert _row(overview, "Parent")[1] == f"`{best.parent_id}`"
    metrics = _section(card, "Metrics")
    assert "on the **validation** split (10 images" in metrics
    for key, value in best.metrics.items():
        assert _row(metrics, METRIC_NAMES[key])[1] == fmt_metric(value)
    result = json.loads((built.workspace / "runs" / RUN_ID / best.candidate_id / "train_result.json").read_text())
    assert f"from the captions of epoch {result['best_epoch']} " in metrics
    assert _row(metrics, "Epochs planned / run")[1] == f"{best.spec['epochs']} / {len(best.curve)}"
    assert _row(metrics, "How training ended")[1] == best.exit_reason
    for point in best.curve:
        row = _row(metrics, str(point["epoch"]))
        assert row[1] == fmt_metric(point["loss"]) and row[2] == fmt_metric(point["val_cider"])
    # the end of the run scored the val-chosen best on test once: the card shows those numbers and examples
    test = journal.events(RUN_ID, "test_scored")[-1]["payload"]
    assert test["candidate_id"] == best.candidate_id
    assert f"held-out **test** split ({test['n_images']} images)" in metrics
    assert "| Metric | Test |" in metrics
    for key, value in test["metrics"].items():
        if key in METRIC_NAMES:
            assert fmt_metric(value) in _row(metrics.split("| Metric | Test |")[1], METRIC_NAMES[key])
    generated = json.loads((built.workspace / "runs" / RUN_ID / best.candidate_id / "test_captions.json").read_text())
    first = generated[0]
    assert _row(metrics, f"#{first['image_id']}")[1] == (first["caption"] or "(empty)")
    assert "Test split: not scored" not in metrics


def test_card_layer_table_was_measured_in_the_sandbox(built: BuiltRun) -> None:
    journal = Journal(built.workspace / "journal.sqlite")
    best = journal.leaderboard(RUN_ID)[0]
    architecture = _section(_card(built), "Architecture")
    assert "inside the sandbox" in architecture
    assert f"Total parameters: {best.params:,} (trainable: {best.params:,}); this matches" in architecture
    layers = json.loads((built.workspace / "runs" / RUN_ID / "model" / "layers.json").read_text())
    assert layers["total_params"] == best.params
    top = {r["name"]: r for r in layers["rows"] if r["depth"] == 0}
    assert set(top) == {"encoder", "decoder"}
    assert top["encoder"]["params"] + top["decoder"]["params"] == best.params
    vocab = len(json.loads((built.workspace / "runs" / RUN_ID / "model" / "vocab.json").read_text())["words"])
    assert layers["logits_shape"] == [2, 11, vocab]  # batch 2, max_len 12 - 1, the vocabulary
    attention = _row(architecture, "`decoder.attention`")
    assert attention[1] == "AdditiveAttention" and attention[3] == f"{top_params(layers, 'decoder.attention'):,}"


def top_params(layers: dict, name: str) -> int:
    return next(r["params"] for r in layers["rows"] if r["name"] == name)


def test_card_hyperparameters_say_what_and_why(built: BuiltRun) -> None:
    journal = Journal(built.workspace / "journal.sqlite")
    best = journal.leaderboard(RUN_ID)[0]
    section = _section(_card(built), "Hyperparameters")
    assert set(best.hparams) == {"lr", "weight_decay", "grad_clip", "dropout", "max_len"}
    for name, value in best.hparams.items():
        row = _row(section, f"`{name}`")
        assert row[1] == f"{value:g}" and row[3] == ("task" if name == "max_len" else "journal")
    assert _row(section, "`max_len`")[1] == "12"
    assert _row(section, "`decoder.attention`")[1] == "True"
    assert PLANNER_RATIONALE in section and CRITIC_FEEDBACK in section  # quoted LLM prose, marked as such
    assert "(LLM text, quoted)" in section


def test_card_error_analysis_counts_the_saved_captions(built: BuiltRun) -> None:
    best = Journal(built.workspace / "journal.sqlite").leaderboard(RUN_ID)[0]
    entries = json.loads((built.workspace / "runs" / RUN_ID / best.candidate_id / "val_captions.json").read_text())
    captions = [e["caption"] for e in entries]
    section = _section(_card(built), "Error analysis")
    assert f"Counted over the {len(captions)} validation images" in section
    assert _row(section, "Distinct captions")[1] == f"{len(set(captions))} of {len(captions)}"
    lengths = [len(c.split()) for c in captions]
    assert _row(section, "Shortest / longest")[1] == f"{min(lengths)} / {max(lengths)}"


def test_card_says_what_changed_from_the_parent(built: BuiltRun) -> None:
    journal = Journal(built.workspace / "journal.sqlite")
    best = journal.leaderboard(RUN_ID)[0]
    parent = journal.get_candidate(best.parent_id)
    section = _section(_card(built), "Changes from parent")
    delta = best.metrics["cider"] - parent.metrics["cider"]
    assert (f"{parent.metrics['cider']:.4f} (parent `{parent.candidate_id}`) → {best.metrics['cider']:.4f} "
            f"({delta:+.4f})") in section
    assert _row(section, "`decoder.attention`")[1:] == ["False", "True"]
    assert _row(section, "`epochs`")[1:] == [str(parent.spec["epochs"]), str(best.spec["epochs"])]
    assert "`encoder.width`" not in section  # unchanged fields are not listed


def test_card_validation_section_is_the_contract_report(built: BuiltRun) -> None:
    best = Journal(built.workspace / "journal.sqlite").leaderboard(RUN_ID)[0]
    section = _section(_card(built), "Validation")
    assert _row(section, "Result")[1] == "passed"
    assert _row(section, "Parameters (probe)")[1] == f"{best.contract['params']:,}"
    assert _row(section, "Latency per image (probe, batch of 1)")[1] == f"{best.contract['latency_ms']:.2f} ms"


def test_card_of_a_root_candidate_built_without_the_layer_probe(built: BuiltRun) -> None:
    from capnas.commands.report_cmd import read_run
    from capnas.tools.report.model_card import build_model_card
    from capnas.tools.report.run_data import RunData

    data = RunData(read_run(built.workspace, RUN_ID), built.workspace)
    root = data.candidate(built.trained[0])
    card = build_model_card(data, root, layer_probe=False)
    md = card.to_markdown()
    assert "No parent: a fresh candidate of round 0." in md
    assert "Layer table not measured" in md
    assert card.layers is None
    assert "the journal holds no planner or critic rationale" in md
