"""The exported model folder of a real run (`report_run`): what is in it, and `capnas export` for any trained
candidate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from report_run import RUN_ID, BuiltRun, build_run, report_once

from capnas.graph.journal import Journal

pytestmark = pytest.mark.slow


@pytest.fixture
def built(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> BuiltRun:
    run = build_run(tmp_path_factory.getbasetemp() / "report-run")
    monkeypatch.setenv("CAPNAS_CACHE", str(run.cache))
    return run


def _capnas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "capnas", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=600)


def test_report_exports_the_best_model(built: BuiltRun) -> None:
    from capnas.tools.data.datasets import load_dataset, prepare_dataset
    from capnas.tools.report.export import FILES, check_folder

    model_dir = Path(report_once(built)["model_dir"])
    check_folder(model_dir)
    assert {*FILES, "layers.json"} <= {p.name for p in model_dir.iterdir()}
    journal = Journal(built.workspace / "journal.sqlite")
    best = journal.leaderboard(RUN_ID)[0]
    run_dir = built.workspace / "runs" / RUN_ID / best.candidate_id
    result = json.loads((run_dir / "train_result.json").read_text())

    assert (model_dir / "model.py").read_text() == best.code
    exported = torch.load(model_dir / "weights.pt", weights_only=True)
    trained = torch.load(result["best_weights"], weights_only=True)
    assert exported.keys() == trained.keys() and all(torch.equal(exported[k], trained[k]) for k in trained)
    prepared = prepare_dataset(load_dataset("shapes:100"), image_size=32, max_len=12, min_count=1)
    assert json.loads((model_dir / "vocab.json").read_text())["words"] == list(prepared.vocab.words)
    config = json.loads((model_dir / "config.json").read_text())
    assert config["candidate_id"] == best.candidate_id and config["run_id"] == RUN_ID
    assert config["val_metrics"] == best.metrics and config["params"] == best.params
    assert config["hparams"] == {k: v for k, v in result["hparams"].items() if k != "max_len"}
    assert (config["image_size"], config["max_len"], config["vocab_size"]) == (32, 12, len(prepared.vocab))
    assert (model_dir / "MODEL_CARD.md").read_text() == Path(report_once(built)["model_card"]).read_text()
    assert (model_dir / "predict.py").read_text() == (
        Path(__file__).resolve().parents[1] / "tools" / "report" / "exported_predict.py").read_text()
    assert oct(model_dir.stat().st_mode & 0o777) == oct(0o755)


def test_export_command_exports_any_trained_candidate(built: BuiltRun, tmp_path: Path) -> None:
    other = built.trained[0]
    out = tmp_path / "exported"
    proc = _capnas("export", RUN_ID, "--candidate", other, "--workspace", str(built.workspace), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    config = json.loads((out / "config.json").read_text())
    assert config["candidate_id"] == other
    assert (out / "MODEL_CARD.md").read_text().startswith(f"# Model card: {other} of run {RUN_ID}")


def test_export_refuses_untrained_and_unknown_candidates(built: BuiltRun, tmp_path: Path) -> None:
    proc = _capnas("export", RUN_ID, "--candidate", built.invalid, "--workspace", str(built.workspace),
                   "--out", str(tmp_path / "x"))
    assert proc.returncode == 2  # a bad --candidate is bad input
    assert f"candidate {built.invalid} is invalid, not trained" in proc.stderr
    proc = _capnas("export", RUN_ID, "--candidate", "zzz", "--workspace", str(built.workspace))
    assert proc.returncode == 2
    assert "no candidate 'zzz'" in proc.stderr and built.trained[0] in proc.stderr
    assert not (tmp_path / "x").exists()
