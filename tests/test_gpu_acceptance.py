"""benchmarks/gpu_acceptance.sh (issue 21): the table logic, the carry's pieces, a hanging step's timeout, the
whole --dry-run on the CPU (slow), and the sandbox step on a real GPU (gpu)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import lzma
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_acceptance.sh"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_acceptance", REPO / "benchmarks" / "gpu_acceptance.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_acceptance"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


ga = _load()


# -- the table -------------------------------------------------------------------------------------------------


def full_rows(**overrides):
    rows = {key: ga.Row(key, result=f"{i}.5 of something", verdict="PASS", elapsed_s=1, share_s=10)
            for i, key in enumerate(ga.ROW_ORDER)}
    rows.update(overrides)
    return rows


def test_a_table_with_a_number_or_a_reason_in_every_row_has_no_problems() -> None:
    rows = full_rows(conc1=ga.Row("conc1").failed("exit 1: RuntimeError: boom | with a pipe"),
                     quality=ga.Row("quality", verdict="not run: the concurrency-4 run did not finish"))
    table = ga.render_table(rows, "header")
    assert ga.table_problems(table) == []
    assert table.count("\n| ") == len(ga.ROW_ORDER) + 1  # the column names, then one line per row
    assert "with a pipe" in table and "boom / with" in table  # a '|' in a reason cannot break the table


def test_rows_without_number_or_reason_are_reported_by_name() -> None:
    rows = full_rows(trainer=ga.Row("trainer", result="", verdict="PASS"), sandbox=ga.Row("sandbox", verdict="FAILED: "))
    problems = ga.table_problems(ga.render_table(rows, "h"))
    assert any(ga.ROW_TITLES["trainer"] in p for p in problems)
    assert any(ga.ROW_TITLES["sandbox"] in p for p in problems)


def test_a_row_that_never_ran_says_so() -> None:
    rows = full_rows()
    del rows["conc4"]
    table = ga.render_table(rows, "h")
    line = next(ln for ln in table.splitlines() if ga.ROW_TITLES["conc4"] in ln)
    assert "not run: " in line
    assert ga.table_problems(table) == []


def test_verdicts_against_the_issue_targets() -> None:
    assert ga.verdict_trainer(0.96, False) == "PASS"
    assert ga.verdict_trainer(0.93, False).startswith("BELOW TARGET")
    assert ga.verdict_trainer(0.5, True) == "dry-run"
    assert ga.verdict_concurrency({"per_hour": 110.0}, {"per_hour": 320.0}, False) == "PASS"
    slow = ga.verdict_concurrency({"per_hour": 150.0}, {"per_hour": 320.0}, False)
    assert slow.startswith("BELOW TARGET") and "2.13x < 2.5x" in slow
    assert "best 250 < 300" in ga.verdict_concurrency({"per_hour": 90.0}, {"per_hour": 250.0}, False)
    assert "no concurrency-1" in ga.verdict_concurrency(None, {"per_hour": 400.0}, False)
    assert ga.verdict_quality(0.23, 0.61, 8.5, False).startswith("PASS")
    bound = ga.verdict_quality(0.15, 0.40, 1.7, False)
    assert bound.startswith("lower bound") and "1.7-GPU-minute" in bound and "not 30" in bound
    assert ga.verdict_sandbox({"tier": "B", "tier_note": "no bwrap", "device": "cuda"}, False).startswith("FAILED")
    assert ga.verdict_sandbox({"tier": "A", "device": "cuda"}, False) == "PASS"


# -- parsing what the bench scripts print ----------------------------------------------------------------------

TRAINER_OUT = """small_cnn_gru on shapes:400 (320 train images, 64 px, max_len 28), batch 32, 3 epochs x 3 rounds, device cuda (NVIDIA H200), threads 1, bf16 True
round 1: plain 27.8 images/s, harness 24.5 images/s (sandbox run 45.1 s, of which learn 38.0 s)

loop        images/s median       min       max
plain                  27.8      18.6      28.2
harness                24.5      23.5      29.9
ratio harness/plain: 0.881
"""

CONCURRENCY_OUT = """frozen-encoder tokens extracted before the rows (or found stored): 3.2 s

| concurrency | trained / run | wall s | per hour | vs first row | training CPU s | GPU util | best val CIDEr |
|---:|---:|---:|---:|---:|---:|---:|---:|
| 1 | 4 / 6 | 168 | 85.6 | 1.00x | 183 |  | 0.757 |
| 4 | 8 / 8 | 90 | 320.0 | 3.74x | 50 | 71% | 0.812 |
"""


def test_parse_the_bench_scripts_output() -> None:
    t = ga.parse_trainer(TRAINER_OUT)
    assert t == {"ratio": 0.881, "plain": 27.8, "harness": 24.5, "model": "small_cnn_gru", "dataset": "shapes:400",
                 "train_images": 320, "px": 64, "device": "cuda", "device_name": "NVIDIA H200"}
    rows = ga.parse_concurrency(CONCURRENCY_OUT)
    assert [r["concurrency"] for r in rows] == [1, 4]
    assert rows[0]["gpu_util"] is None and rows[1]["gpu_util"] == 71.0
    assert rows[1] == {"concurrency": 4, "trained": 8, "candidates": 8, "wall_s": 90.0, "per_hour": 320.0,
                       "gpu_util": 71.0, "best_val_cider": 0.812}
    text = "noise\n" + ga.RESULT_TAG + '{"a": 1}\n' + ga.RESULT_TAG + '{"a": 2}\n'
    assert ga.parse_result(text) == {"a": 2}
    err = "Traceback (most recent call last):\n  File x\nRuntimeError: the sandbox failed\nexiting\n"
    assert ga.failure_reason(err, 1, False, 60) == "exit 1: RuntimeError: the sandbox failed"
    assert ga.failure_reason("", None, True, 45).startswith("timed out after its 45 s share")


# -- the carry ---------------------------------------------------------------------------------------------------


def test_the_paraphrase_table_keeps_only_entries_a_caption_can_match(tmp_path: Path) -> None:
    src = tmp_path / "para.gz"
    entries = [("0.5", "a dog", "one dog"), ("0.2", "zebra", "a dog"), ("0.1", "quasar", "pulsar"),
               ("0.3", "runs", "is running"), ("0.4", "dog", "rare")]
    with gzip.open(src, "wt", encoding="utf-8") as f:
        for p, a, b in entries:
            f.write(f"{p}\n{a}\n{b}\n")
    every = {"a", "dog", "one", "zebra", "runs", "is", "running", "rare"}
    candidate = {"a", "dog", "runs", "is", "running"}
    read, kept = ga.trim_paraphrase_table(src, tmp_path / "out.gz", every, candidate)
    assert (read, kept) == (5, 4)
    lines = gzip.open(tmp_path / "out.gz", "rt", encoding="utf-8").read().splitlines()
    assert lines == ["0.5", "a dog", "one dog", "0.2", "zebra", "a dog", "0.3", "runs", "is running",
                     "0.4", "dog", "rare"]


def test_the_vocabularies_follow_capnas_tokenizer_and_threshold() -> None:
    images = [{"split": "train", "sentences": [{"raw": "A man's dog.", "tokens": ["a", "man", "s", "dog"]}] * 5},
              {"split": "test", "sentences": [{"raw": "A cat-like thing", "tokens": ["a", "cat", "like", "thing"]}]}]
    every, candidate = ga.flickr8k_vocabularies(images, min_count=5)
    assert candidate == {"a", "mans", "dog"}
    assert {"cat", "like", "thing", "mans", "man", "'s", "cat-like", "-"} <= every


def test_make_a_resized_flickr8k_copy_and_read_it_back(tmp_path: Path) -> None:
    from PIL import Image

    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    images = []
    for i, split in enumerate(["train", "train", "val", "test"]):
        Image.new("RGB", (224, 224), (40 * i, 90, 200)).save(src / "images" / f"{i}.jpg")
        images.append({"filename": f"{i}.jpg", "imgid": i, "split": split,
                       "sentences": [{"raw": f"picture {i}", "tokens": ["picture", str(i)]}]})
    (src / "dataset_flickr8k.json").write_text(json.dumps({"dataset": "flickr8k", "images": images}))
    info = ga.make_flickr8k_copy(src, tmp_path / "copy", px=32, quality=70, limit=1, workers=1)
    assert info["images"] == 3 and info["splits"] == {"train": 1, "val": 1, "test": 1}
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["README.txt", "dataset_flickr8k.json.xz",
                                                                     "images.zip"]
    meta = json.loads(lzma.open(tmp_path / "copy" / "dataset_flickr8k.json.xz", "rt").read())
    assert meta["dataset"] == "flickr8k" and [im["filename"] for im in meta["images"]] == ["0.jpg", "2.jpg", "3.jpg"]
    seen = ga.open_data(tmp_path / "copy")  # the device side: unpacks the json and the images in place
    assert seen["splits"] == {"train": 1, "val": 1, "test": 1} and seen["image_px"] == 32
    assert json.loads((tmp_path / "copy" / "dataset_flickr8k.json").read_text()) == meta
    assert sorted(p.name for p in (tmp_path / "copy" / "images").iterdir()) == ["0.jpg", "2.jpg", "3.jpg"]
    with Image.open(tmp_path / "copy" / "images" / "0.jpg") as im:
        assert im.size == (32, 32)
    from capnas.tools.data.datasets import load_dataset

    dataset = load_dataset(str(tmp_path / "copy" / "dataset_flickr8k.json"))  # what the steps read
    assert len(dataset.items) == 3
    with pytest.raises(RuntimeError, match=str(tmp_path / "nowhere")):
        ga.open_data(tmp_path / "nowhere")


# -- one hanging step cannot eat the others' time -------------------------------------------------------------


def test_a_step_past_its_share_is_killed_with_its_children(tmp_path: Path) -> None:
    args = ga.argparse.Namespace(dry_run=True, state=tmp_path / "state", data=tmp_path, carry=tmp_path,
                                 image_size=64, epochs=1, c1_candidates=1, c4_candidates=1, part="all", out=None)
    driver = ga.Driver(args)
    child = ("import subprocess, time; p = subprocess.Popen(['sleep', '300']); print('grandchild', p.pid, flush=True); "
             "time.sleep(300)")
    t0 = time.monotonic()
    text, rc, timed_out, elapsed = driver.run_child("hang", [sys.executable, "-c", child], 1.0)
    assert timed_out and time.monotonic() - t0 < 20
    reason = ga.failure_reason(text, rc, timed_out, 1.0)
    assert reason.startswith("timed out after its 1 s share") and "grandchild" in reason
    pid = int(text.split("grandchild")[1].split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # gone, or a zombie waiting for whoever inherited it
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            break
        if state == "Z":
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the killed step's child {pid} is still running")


# -- the whole dry run -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_dry_run_prints_a_full_table(tmp_path: Path) -> None:
    if not (REPO.parent / "shared" / "datasets" / "flickr8k" / "dataset_flickr8k.json").is_file():
        pytest.skip("the dry run reads a few Flickr8k images from ../shared/datasets/flickr8k")
    env = dict(os.environ, OUT=str(tmp_path))
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, env=env, timeout=900)
    wall = time.monotonic() - t0
    print(proc.stdout[-6000:], f"\n(dry run: {wall:.0f} s)")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = proc.stdout[proc.stdout.index("GPU acceptance (issue 21)"):]
    assert ga.table_problems(table) == []
    for key in ga.ROW_ORDER:
        line = next(ln for ln in table.splitlines() if ln.startswith(f"| {ga.ROW_TITLES[key]} |"))
        assert "FAILED" not in line and "not run" not in line, line
    assert (tmp_path / "gpu_acceptance.md").read_text().strip() == table.strip()
    saved = json.loads((tmp_path / "gpu_acceptance.json").read_text())
    assert set(saved) == set(ga.ROW_ORDER)
    assert "===== conc4" in (tmp_path / "gpu_acceptance_logs.txt").read_text()


# -- on a GPU ------------------------------------------------------------------------------------------------------


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA device")
def test_the_cuda_step_runs_in_the_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from capnas.sandbox.tiers import TIER_ENV, detect_tier

    monkeypatch.setenv(TIER_ENV, detect_tier().tier)  # the step sets it; monkeypatch puts it back

    opts = dict(device="cuda", batch=8, px=32, max_len=12, vocab=100, ncap=2, warmup=2, steps=5, bf16=True,
                rounds=1, wall_s=120, tier=detect_tier().tier, require_tier=False, tmp=str(tmp_path))
    result = ga.internal_sandbox_step(opts)
    assert result["device"] == "cuda" and result["sandbox_step_ms"] > 0 and result["wall_ratio"] > 0
