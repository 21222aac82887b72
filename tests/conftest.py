"""Shared fixtures. Keep this small: a fixture belongs here only when several test modules use it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def flickr8k_dir() -> Path:
    """The shared Flickr8k copy (`<repo>/../shared/datasets/flickr8k`, or `$CAPNAS_FLICKR8K`); skips if absent."""
    folder = Path(os.environ.get("CAPNAS_FLICKR8K") or REPO.parent / "shared" / "datasets" / "flickr8k")
    if not (folder / "dataset_flickr8k.json").is_file():
        pytest.skip(f"Flickr8k not found at {folder} (set CAPNAS_FLICKR8K to its folder)")
    return folder


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private prepared-data cache; also set as $CAPNAS_CACHE so nothing lands in ~/.cache."""
    monkeypatch.setenv("CAPNAS_CACHE", str(tmp_path / "capnas-cache"))
    return tmp_path / "capnas-cache" / "prepared"


KarpathyFactory = Callable[..., Path]


@pytest.fixture
def make_karpathy(tmp_path: Path) -> KarpathyFactory:
    """Write a tiny Karpathy-layout dataset: `images/` of small PNGs and `dataset_tiny.json` beside it.

    `splits` gives each image's split; image k is a solid colour with captions "A picture number k, version j.".
    """

    def make(splits: tuple[str, ...] = ("train",) * 6 + ("val", "val", "test", "test"), captions_per_image: int = 5,
             folder: str = "tiny") -> Path:  # fmt: skip
        root = tmp_path / folder
        (root / "images").mkdir(parents=True)
        entries = []
        for k, split in enumerate(splits):
            name = f"img{k:02d}.png"
            Image.new("RGB", (40 + k, 30), (20 * k % 256, 90, 200)).save(root / "images" / name)
            sentences = [{"raw": f"A picture number {k}, version {j}.", "tokens": []} for j in range(captions_per_image)]
            entries.append({"filename": name, "imgid": k, "split": split, "sentences": sentences})
        path = root / "dataset_tiny.json"
        path.write_text(json.dumps({"dataset": "tiny", "images": entries}))
        return path

    return make
