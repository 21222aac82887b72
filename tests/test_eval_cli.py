"""`capnas eval` end to end: a real results file, a real dataset, real pycocoevalcap with Java."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
from typer.testing import CliRunner

from capnas.cli import app
from capnas.tools.data.datasets import load_dataset
from capnas.tools.scoring.metrics import METRIC_KEYS

runner = CliRunner()


def write_results(path: Path, entries: list[dict]) -> Path:
    path.write_text(json.dumps(entries))
    return path


def first_reference_results(items, by_filename_every: int = 0) -> list[dict]:
    """Each image's first reference as its caption; every n-th image named by file name instead of id."""
    return [{"image_id": it.filename if by_filename_every and i % by_filename_every == 0 else it.image_id,
             "caption": it.captions[0]} for i, it in enumerate(items)]


def assert_input_error(result, *names: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Traceback" not in result.output
    for name in names:
        assert name in result.stderr.replace("\n", ""), f"{name!r} not in {result.stderr!r}"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_flickr8k_val_first_reference_scores(flickr8k_dir: Path, tmp_path: Path) -> None:
    spec = str(flickr8k_dir / "dataset_flickr8k.json")
    items = load_dataset(spec).split("val")
    captions = write_results(tmp_path / "captions.json", first_reference_results(items, by_filename_every=7))

    result = runner.invoke(app, ["eval", str(captions), "--dataset", spec, "--split", "val", "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)  # exactly one JSON object: anything else on stdout fails to parse
    assert list(scores) == list(METRIC_KEYS)
    for n in range(1, 5):  # BLEU's own 1e-15/1e-9 smoothing keeps it 2e-13 short of 1
        assert scores[f"bleu_{n}"] == pytest.approx(1.0, abs=1e-9)
    assert scores["meteor"] == pytest.approx(1.0) and scores["rouge_l"] == pytest.approx(1.0)

    # CIDEr straight from pycocoevalcap, as its COCOEvalCap would compute it
    tok = PTBTokenizer()
    gts = tok.tokenize({it.image_id: [{"caption": c} for c in it.captions] for it in items})
    res = tok.tokenize({it.image_id: [{"caption": it.captions[0]}] for it in items})
    cider, _ = Cider().compute_score(gts, res)
    assert scores["cider"] == pytest.approx(cider, abs=1e-12)
    assert 1.0 < scores["cider"] < 10.0


@pytest.mark.timeout(300)
def test_table_output_on_shapes(tmp_path: Path) -> None:
    items = load_dataset("shapes:40").split("test")
    captions = write_results(tmp_path / "captions.json", first_reference_results(items, by_filename_every=2))
    result = runner.invoke(app, ["eval", str(captions), "--dataset", "shapes:40", "--split", "test"])
    assert result.exit_code == 0, result.output
    rows = [line.split("│") for line in result.stdout.splitlines() if line.count("│") == 3]
    lines = {row[1].strip(): row[2].strip() for row in rows}
    assert lines["BLEU-4"] == "1.0000" and lines["METEOR"] == "1.0000" and lines["ROUGE-L"] == "1.0000"
    assert float(lines["CIDEr"]) > 0
    assert "shapes test: 4 images" in result.stdout
    assert "SPICE" in lines and (lines["SPICE"] == "n/a") == ("SPICE not computed" in result.stderr)


@pytest.fixture
def shapes_val() -> list:
    return load_dataset("shapes:40").split("val")


def test_missing_results_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", str(tmp_path / "none.json"), "--dataset", "shapes:40", "--split", "val"])
    assert_input_error(result, "none.json", "no such file")


def test_results_not_a_list(tmp_path: Path) -> None:
    captions = tmp_path / "captions.json"
    captions.write_text(json.dumps({"annotations": []}))
    result = runner.invoke(app, ["eval", str(captions), "--dataset", "shapes:40", "--split", "val"])
    assert_input_error(result, str(captions), "expected a JSON list")


def test_duplicate_entry(tmp_path: Path, shapes_val) -> None:
    entries = first_reference_results(shapes_val) + [{"image_id": shapes_val[1].image_id, "caption": "again"}]
    captions = write_results(tmp_path / "captions.json", entries)
    result = runner.invoke(app, ["eval", str(captions), "--dataset", "shapes:40", "--split", "val", "--json"])
    assert_input_error(result, str(captions), f"entry {len(shapes_val)}: duplicate image_id {shapes_val[1].image_id}")


def test_unknown_image_id(tmp_path: Path, shapes_val) -> None:
    entries = first_reference_results(shapes_val) + [{"image_id": 0, "caption": "a train image"}]
    captions = write_results(tmp_path / "captions.json", entries)
    result = runner.invoke(app, ["eval", str(captions), "--dataset", "shapes:40", "--split", "val"])
    assert_input_error(result, str(captions), f"not in split 'val': 0 (entry {len(shapes_val)})")


def test_images_without_caption(tmp_path: Path, shapes_val) -> None:
    captions = write_results(tmp_path / "captions.json", first_reference_results(shapes_val[:1]))
    result = runner.invoke(app, ["eval", str(captions), "--dataset", "shapes:40", "--split", "val"])
    assert_input_error(result, str(captions), "3 of 4 images of split 'val' have no caption", shapes_val[1].filename)


def test_unknown_dataset(tmp_path: Path, shapes_val) -> None:
    captions = write_results(tmp_path / "captions.json", first_reference_results(shapes_val))
    result = runner.invoke(app, ["eval", str(captions), "--dataset", str(tmp_path / "nope.json"), "--split", "val"])
    assert_input_error(result, "nope.json")


def test_train_split_is_a_usage_error(tmp_path: Path, shapes_val) -> None:
    captions = write_results(tmp_path / "captions.json", first_reference_results(shapes_val))
    result = runner.invoke(app, ["eval", str(captions), "--dataset", "shapes:40", "--split", "train"])
    assert result.exit_code == 2 and "train" in result.output and "Traceback" not in result.output


def test_missing_java_exits_1_with_install_hint(tmp_path: Path, shapes_val, monkeypatch: pytest.MonkeyPatch) -> None:
    captions = write_results(tmp_path / "captions.json", first_reference_results(shapes_val))
    monkeypatch.setenv("PATH", str(tmp_path))
    result = runner.invoke(app, ["eval", str(captions), "--dataset", "shapes:40", "--split", "val", "--json"])
    assert result.exit_code == 1 and result.stdout == ""
    assert "`java` was not found on PATH" in result.stderr and "apt-get install default-jre-headless" in result.stderr
