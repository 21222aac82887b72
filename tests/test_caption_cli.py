"""`capnas caption MODEL_DIR IMAGE...` on the exported best model of a real run (`report_run`): the model runs in
the sandbox and, given the validation images as PNG files, says exactly what it said during training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from report_run import RUN_ID, BuiltRun, build_run, report_once

from capnas.graph.journal import Journal


@pytest.fixture
def built(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> BuiltRun:
    run = build_run(tmp_path_factory.getbasetemp() / "report-run")
    monkeypatch.setenv("CAPNAS_CACHE", str(run.cache))
    return run


def _capnas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "capnas", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=600)


@pytest.mark.slow
def test_caption_reproduces_the_validation_captions_in_the_sandbox(built: BuiltRun, tmp_path: Path) -> None:
    from capnas.sandbox import prepared as prepared_format
    from capnas.tools.data.datasets import load_dataset, prepare_dataset

    model_dir = Path(report_once(built)["model_dir"])
    prepared = prepare_dataset(load_dataset("shapes:100"), image_size=32, max_len=12, min_count=1)
    ids = prepared_format.load_image_ids(prepared.dir, "val")
    pixels = prepared_format.load_images(prepared.dir, "val")
    files = []
    for k, image_id in enumerate(ids):
        path = tmp_path / f"val-{int(image_id)}.png"  # PNG is lossless: the pixels the model saw in training
        Image.fromarray(pixels[k].permute(1, 2, 0).numpy(), "RGB").save(path)
        files.append(path)
    best = Journal(built.workspace / "journal.sqlite").leaderboard(RUN_ID)[0]
    expected = {e["image_id"]: e["caption"] for e in json.loads(
        (built.workspace / "runs" / RUN_ID / best.candidate_id / "val_captions.json").read_text())}

    proc = _capnas("caption", str(model_dir), *map(str, files), "--json")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert [g["image"] for g in got] == [str(f) for f in files]
    assert {int(Path(g["image"]).stem.split("-")[1]): g["caption"] for g in got} == expected

    proc = _capnas("caption", str(model_dir), str(files[0]))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{files[0]}\t{expected[int(ids[0])]}\n"


@pytest.mark.slow
def test_caption_names_an_image_it_cannot_read(built: BuiltRun, tmp_path: Path) -> None:
    model_dir = Path(report_once(built)["model_dir"])
    good = tmp_path / "good.png"
    Image.new("RGB", (50, 40), (200, 30, 30)).save(good)
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    proc = _capnas("caption", str(model_dir), str(good), str(bad))
    assert proc.returncode == 2
    assert f"cannot read image {bad}" in proc.stderr
    proc = _capnas("caption", str(model_dir), str(tmp_path / "missing.jpg"))
    assert proc.returncode == 2 and f"image file not found: {tmp_path / 'missing.jpg'}" in proc.stderr


def test_caption_refuses_a_folder_that_is_not_an_exported_model(tmp_path: Path) -> None:
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "model.py").write_text("x = 1\n")
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    proc = _capnas("caption", str(folder), str(image))
    assert proc.returncode == 2
    assert f"{folder} is not an exported capnas model: missing weights.pt, vocab.json, config.json" in proc.stderr
    proc = _capnas("caption", str(tmp_path / "nowhere"), str(image))
    assert proc.returncode == 2 and f"{tmp_path / 'nowhere'} is not a folder" in proc.stderr
