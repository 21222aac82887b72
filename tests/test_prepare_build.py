"""The prepared cache built in chunks: a killed build leaves no cache and the next one continues it, a cache of
the older format is detected and rebuilt, and every array reads back bit for bit what was written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from capnas.sandbox import prepared
from capnas.tools.data import prepare
from capnas.tools.data.datasets import load_dataset, prepare_dataset
from capnas.tools.data.progress import StepProgress, progress_line

# A child that builds shapes:400 slowly (5 ms per image, 8 images a chunk, a checkpoint after every chunk), so
# the parent can kill it halfway.
SLOW_BUILD = """
import sys, time
from capnas.tools.data import prepare
from capnas.tools.data.caption_dataset import CaptionDataset
from capnas.tools.data.datasets import load_dataset
prepare.CHUNK_IMAGES, prepare.CHECKPOINT_S = 8, 0.0
draw = CaptionDataset.load_image
def slow(self, item, size=None):
    time.sleep(0.005)
    return draw(self, item, size)
CaptionDataset.load_image = slow
prepare.prepare_dataset(load_dataset("shapes:400"), image_size=16, max_len=28, min_count=1, cache_root=sys.argv[1],
                        workers=1)
"""


def _arrays(directory: Path) -> dict[str, torch.Tensor]:
    out = {}
    for split in prepared.SPLITS:
        data = prepared.load_split(directory, split)
        out.update({f"{split}.images": data.images, f"{split}.captions": data.captions,
                    f"{split}.ids": torch.tensor(data.image_ids)})
    return out


def _caches(root: Path) -> list[str]:
    """What a reader could take for a cache: visible directories (partial builds and locks start with a dot)."""
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def test_a_build_killed_halfway_leaves_no_cache_and_the_next_build_continues_it(tmp_path: Path) -> None:
    root = tmp_path / "prepared"
    child = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, str(root)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and child.poll() is None:  # until 40 train images are on disk
            rows = [json.loads(p.read_text()) for p in root.glob(f".*{prepare.PARTIAL_SUFFIX}/{prepare.RESUME_FILE}")]
            if rows and rows[0].get("train.images.npy", 0) >= 40:
                break
            time.sleep(0.05)
        assert child.poll() is None, f"the build ended before it was killed: {child.communicate()[1]}"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert _caches(root) == [], "a killed build left something a reader could open"

    resumed = prepare_dataset(load_dataset("shapes:400"), image_size=16, max_len=28, min_count=1, cache_root=root)
    assert resumed.built and 0 < resumed.decoded < 400, f"decoded {resumed.decoded}: the build did not continue"
    assert _caches(root) == [resumed.dir.name]
    assert not list(root.glob(f"*{prepare.PARTIAL_SUFFIX}")), "the partial build became the cache"

    fresh = prepare_dataset(load_dataset("shapes:400"), image_size=16, max_len=28, min_count=1,
                            cache_root=tmp_path / "fresh")
    assert fresh.decoded == 400 and fresh.vocab == resumed.vocab
    a, b = _arrays(resumed.dir), _arrays(fresh.dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "the resumed cache differs"


def _downgrade_to_format_1(directory: Path) -> None:
    """Rewrite a cache as the format-1 builder left it: torch.save pickles, format_version 1."""
    meta = json.loads((directory / prepared.META_FILE).read_text())
    for split in prepared.SPLITS:
        data = prepared.load_split(directory, split, mmap=False)
        torch.save({"images": data.images, "image_ids": data.image_ids}, directory / f"{split}.images.pt")
        torch.save({"captions": data.captions, "image_ids": data.image_ids}, directory / f"{split}.captions.pt")
    for path in directory.glob("*.npy"):
        path.unlink()
    (directory / prepared.META_FILE).write_text(json.dumps({**meta, "format_version": 1}))


def test_an_old_format_cache_is_detected_never_misread_and_rebuilt(tmp_path: Path) -> None:
    dataset = load_dataset("shapes:20")
    first = prepare_dataset(dataset, image_size=16, max_len=28, min_count=1, cache_root=tmp_path)
    before = _arrays(first.dir)
    _downgrade_to_format_1(first.dir)

    with pytest.raises(prepared.PreparedFormatError, match=r"has format_version 1, this reader expects 2"):
        prepared.read_meta(first.dir)
    with pytest.raises(prepared.PreparedFormatError, match=r"is a prepared cache of format 1 \(torch.save files\)"):
        prepared.load_images(first.dir, "train")

    again = prepare_dataset(dataset, image_size=16, max_len=28, min_count=1, cache_root=tmp_path)
    assert (again.dir, again.built, again.decoded) == (first.dir, True, 20)
    assert prepared.read_meta(again.dir)["format_version"] == prepared.FORMAT_VERSION
    assert not list(again.dir.glob("*.pt")), "files of the old format were left beside the new ones"
    after = _arrays(again.dir)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_rows_written_in_chunks_read_back_bit_identical(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (37, 3, 8, 8), dtype=np.uint8)
    # float16 tokens with every bit pattern class: NaNs, infinities, subnormals, negative zero
    tokens = rng.integers(-2**15, 2**15, (37, 4, 6), dtype=np.int16).view(np.float16)
    for name, data in (("images.npy", images), ("tokens.npy", tokens)):
        with prepared.RowWriter(tmp_path / name, data.dtype, data.shape) as writer:
            for start in (30, 10, 0, 20):  # out of order, the last chunk short
                writer.write(start, data[start:start + 10])
        back = np.load(tmp_path / name, mmap_mode="r")
        assert back.dtype == data.dtype and back.shape == data.shape
        assert back.tobytes() == data.tobytes()

    prepared.save_features(tmp_path / "val.features.npy", torch.from_numpy(tokens.copy()), list(range(37)))
    assert prepared._load(tmp_path / "val.features.npy", mmap=True).numpy().tobytes() == tokens.tobytes()


def test_image_batches_read_a_split_back_in_order(tmp_path: Path) -> None:
    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    prepared.save_split(tmp_path, "val", images, torch.zeros(10, 5, 6, dtype=torch.int64), list(range(10)))
    batches = list(prepared.image_batches(tmp_path, "val", 4))
    assert [len(b) for b in batches] == [4, 4, 2] and torch.equal(torch.cat(batches), images)


def test_a_writer_resumes_only_an_array_of_the_same_dtype_and_shape(tmp_path: Path) -> None:
    path = tmp_path / "a.npy"
    with prepared.RowWriter(path, np.uint8, (4, 2)) as writer:
        writer.write(0, np.full((2, 2), 7, np.uint8))
    with prepared.RowWriter(path, np.uint8, (4, 2), resume=True) as writer:
        assert writer.resumed
        writer.write(2, np.full((2, 2), 9, np.uint8))
    assert np.load(path).tolist() == [[7, 7], [7, 7], [9, 9], [9, 9]]
    with prepared.RowWriter(path, np.uint8, (5, 2), resume=True) as writer:
        assert not writer.resumed  # another shape: started afresh, nothing of the old rows is trusted
    assert np.load(path).tolist() == [[0, 0]] * 5
    with prepared.RowWriter(path, np.uint8, (5, 2)) as writer, pytest.raises(prepared.PreparedFormatError,
                                                                              match=r"rows \[2, 2\] at 4 do not fit"):
        writer.write(4, np.zeros((2, 2), np.uint8))


def test_a_build_reports_progress_of_decoding_and_tokenizing_each_split(tmp_path: Path) -> None:
    events: list[dict] = []
    prepare_dataset(load_dataset("shapes:40"), image_size=16, max_len=28, min_count=1, cache_root=tmp_path,
                    on_progress=events.append)
    ends = [(e["step"], e["split"], e["total"]) for e in events if e["done"] == e["total"]]
    assert ends == [(step, split, n) for split, n in (("train", 32), ("val", 4), ("test", 4))
                    for step in ("decode", "tokenize")]
    assert progress_line(events[-1]) == "tokenizing test captions: 4/4 done"


def test_a_progress_line_says_items_rate_and_time_left() -> None:
    events: list[dict] = []
    step = StepProgress("decode", 94_000, events.append, "train", every_s=0.0)
    step.start(2_000)  # resumed: 2,000 were there already
    step.t0 -= 10.0  # as if ten seconds had passed: 10,000 more images at 1,000/s, 82 s left
    step.update(12_000)
    assert events[0]["done"] == 2_000 and events[0]["rate"] is None
    assert progress_line(events[-1]) == "decoding train images: 12,000/94,000 (1,000/s, 1 min 22 s left)"
