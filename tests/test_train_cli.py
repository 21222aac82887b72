"""`capnas train FILE.py --dataset SPEC`: a real (tiny) training run through the CLI, its JSON and its table;
bad input exits 2 naming what was wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capnas.cli import app
from capnas.tools.scoring.metrics import METRIC_KEYS

MODEL = Path(__file__).parent / "fixtures" / "models" / "valid" / "cnn_gru.py"
SMALL = ["--dataset", "shapes:60", "--epochs", "2", "--image-size", "32", "--max-len", "12", "--threads", "1"]
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["train", *args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """One tiny training run through `capnas train --json`, and its run dir."""
    tmp = tmp_path_factory.mktemp("train-cli")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAPNAS_CACHE", str(tmp / "cache"))
        result = invoke(str(MODEL), *SMALL, "--hp", "lr=3e-3", "--hp", "weight_decay=0", "--run-dir", str(tmp / "run"),
                        "--json")
    return result, tmp / "run"


def test_train_json_reports_val_metrics_curve_and_throughput(trained) -> None:
    result, run_dir = trained
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # exactly one JSON object on stdout; progress went to stderr
    assert doc["ok"] is True and doc["exit_reason"] == "epochs"
    assert list(doc["metrics"]) == list(METRIC_KEYS)  # the keys `capnas eval --json` prints
    assert [p["epoch"] for p in doc["curve"]] == [1, 2] and all(p["val_cider"] is not None for p in doc["curve"])
    assert doc["params"] > 0 and doc["images_per_s"] > 0
    assert doc["hparams"] == {"lr": 3e-3, "weight_decay": 0, "max_len": 12}
    assert doc["run_dir"] == str(run_dir) and (run_dir / "val_captions.json").is_file()


def test_train_prints_a_table_and_a_second_run_reuses_the_job(trained, tmp_path: Path, monkeypatch) -> None:
    first, run_dir = trained
    monkeypatch.setenv("CAPNAS_CACHE", str(run_dir.parent / "cache"))
    result = invoke(str(MODEL), *SMALL, "--hp", "lr=3e-3", "--hp", "weight_decay=0", "--run-dir", str(run_dir))
    assert result.exit_code == 0, result.output
    assert "val metrics, best epoch" in result.stdout and "CIDEr" in result.stdout and "BLEU-4" in result.stdout
    cider = json.loads(first.stdout)["metrics"]["cider"]
    assert f"{cider:.4f}" in result.stdout
    assert "training" not in result.stderr  # the stored result: no sandbox was started


def assert_input_error(result, *names: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Traceback" not in result.output
    for name in names:
        assert name in result.stderr.replace("\n", ""), f"{name!r} not in {result.stderr!r}"


def test_missing_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope.py"
    assert_input_error(invoke(str(missing), "--dataset", "shapes:20"), str(missing), "no such file")


@pytest.mark.parametrize(("hp", "named"), [
    ("lr", "--hp 'lr'"),
    ("lr=", "--hp 'lr='"),
    ("2lr=1", "--hp '2lr=1'"),
    ("momentum=0.9", "'momentum'"),  # cnn_gru.py declares lr and weight_decay only
    ("max_len=20", "--max-len"),
])
def test_bad_hp_exits_2_naming_the_entry(hp: str, named: str) -> None:
    assert_input_error(invoke(str(MODEL), "--dataset", "shapes:20", "--hp", hp), named)


def test_unknown_dataset_exits_2(tmp_path: Path) -> None:
    assert_input_error(invoke(str(MODEL), "--dataset", "flickr9k"), "flickr9k")
    assert_input_error(invoke(str(MODEL), "--dataset", str(tmp_path / "missing.json")), "missing.json")


def test_bad_device_exits_2() -> None:
    assert_input_error(invoke(str(MODEL), "--dataset", "shapes:20", "--device", "tpu"), "tpu")


def test_syntax_error_exits_2_naming_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\n\ndef supported_hyperparameters(:\n")
    assert_input_error(invoke(str(bad), "--dataset", "shapes:20"), f"{bad}:3")
