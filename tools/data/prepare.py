"""Prepare a dataset once: decode and resize every image, tokenize every caption, into a shared cache.

The cache directory is keyed by a content hash of the dataset's fingerprint (json bytes and image folder
listing, or the shapes parameters), the image size, max_len, min_count and the format version, so a
second run with the same inputs reuses it and decodes nothing. It is built in a temporary directory
beside its final place and renamed into place, so a crash never leaves a half-written cache.
The layout is the one `capnas.sandbox.prepared` reads. Its `sandbox_view/` subdirectory holds what a
candidate's job may see (train images and captions, val and test images, meta, vocabulary; never the
val/test reference captions), as hard links to the same files: mount that one into the sandbox.

Cache root: `$CAPNAS_CACHE/prepared`, else `$XDG_CACHE_HOME/capnas/prepared`, else `~/.cache/capnas/prepared`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from capnas.sandbox import prepared
from capnas.tools.data.caption_dataset import SPLITS, CaptionDataset, CaptionItem, DatasetError
from capnas.tools.data.vocab import BOS, EOS, PAD, UNK, Vocabulary

CAPTIONS_PER_IMAGE = 5  # images with more keep their first 5; images with fewer repeat theirs cyclically
PIPELINE_VERSION = 1  # bump when resizing or encoding changes what a cache holds
SANDBOX_VIEW = "sandbox_view"


@dataclass(frozen=True)
class PreparedDataset:
    dir: Path
    vocab: Vocabulary
    image_size: int
    max_len: int
    min_count: int
    captions_per_image: int
    split_sizes: dict[str, int]
    built: bool  # True when this call built the cache, False when it found one
    decoded: int  # images this call decoded: 0 when the cache was reused

    @property
    def sandbox_dir(self) -> Path:
        """The part a sandboxed job may read: no reference captions of val or test."""
        return self.dir / SANDBOX_VIEW

    def load_split(self, split: str, mmap: bool = True) -> prepared.PreparedSplit:
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r} in {self.dir}; available splits: {', '.join(SPLITS)}")
        return prepared.load_split(self.dir, split, mmap=mmap)


def cache_root_default() -> Path:
    if root := os.environ.get("CAPNAS_CACHE"):
        return Path(root).expanduser() / "prepared"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "capnas" / "prepared"


def prepare_dataset(
    dataset: CaptionDataset,
    image_size: int,
    max_len: int,
    min_count: int = 5,
    cache_root: Path | None = None,
    workers: int | None = None,
) -> PreparedDataset:
    """Return the prepared cache for these inputs, building it first if it does not exist yet."""
    if image_size < 8:
        raise DatasetError(f"image_size must be >= 8 pixels, got {image_size}")
    if max_len < 3:
        raise DatasetError(f"max_len must be >= 3 tokens (BOS, one word, EOS), got {max_len}")
    root = Path(cache_root) if cache_root is not None else cache_root_default()
    final = root / f"{_safe(dataset.name)}-{_cache_key(dataset, image_size, max_len, min_count)[:24]}"
    if (final / prepared.META_FILE).is_file():
        return _open(final, built=False, decoded=0)

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        decoded = _build(dataset, tmp, image_size, max_len, min_count, workers or min(8, os.cpu_count() or 1))
        try:
            tmp.rename(final)
        except OSError:
            if not (final / prepared.META_FILE).is_file():
                raise DatasetError(f"cannot move the prepared cache into {final}; remove that directory and retry")
            shutil.rmtree(tmp)  # another process finished the same cache first: use theirs
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _open(final, built=True, decoded=decoded)


def _cache_key(dataset: CaptionDataset, image_size: int, max_len: int, min_count: int) -> str:
    parts = [
        dataset.fingerprint, image_size, max_len, min_count, CAPTIONS_PER_IMAGE,
        prepared.FORMAT_VERSION, PIPELINE_VERSION,
    ]  # fmt: skip
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40] or "dataset"


def _build(dataset: CaptionDataset, out: Path, size: int, max_len: int, min_count: int, workers: int) -> int:
    train = dataset.split("train")
    if not train:
        raise DatasetError(f"dataset {dataset.source} has no train images; the vocabulary is built from them")
    vocab = Vocabulary.build((c for item in train for c in item.captions), min_count=min_count)
    decoded = 0
    for split in SPLITS:
        items = dataset.split(split)
        images = _decode_images(dataset, items, size, workers)
        decoded += len(items)
        prepared.save_split(out, split, images, _encode_captions(items, vocab, max_len), [i.image_id for i in items])
    vocab.save(out / prepared.VOCAB_FILE)
    meta = {
        "format_version": prepared.FORMAT_VERSION,
        "dataset": dataset.name,
        "source": dataset.source,
        "fingerprint": dataset.fingerprint,
        "image_size": size,
        "max_len": max_len,
        "min_count": min_count,
        "captions_per_image": CAPTIONS_PER_IMAGE,
        "vocab_size": len(vocab),
        "special_ids": {"pad": PAD, "bos": BOS, "eos": EOS, "unk": UNK},
        "splits": {split: len(dataset.split(split)) for split in SPLITS},
    }
    (out / prepared.META_FILE).write_text(json.dumps(meta, indent=1))
    _link_sandbox_view(out)
    make_readable_by_all(out)
    return decoded


def make_readable_by_all(out: Path) -> None:
    # The sandbox runs jobs as their own uid, and mkdtemp makes 0700 directories.
    for directory, _, files in os.walk(out):
        os.chmod(directory, 0o755)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o644)


def _link_sandbox_view(out: Path) -> None:
    view = out / SANDBOX_VIEW
    view.mkdir()
    shown = [prepared.META_FILE, prepared.VOCAB_FILE, prepared.captions_file(out, "train").name]
    shown += [prepared.images_file(out, split).name for split in SPLITS]
    for name in shown:
        try:
            os.link(out / name, view / name)  # same inode: no extra disk, and it survives a bind mount
        except OSError:
            shutil.copyfile(out / name, view / name)  # file systems without hard links


def _decode_images(dataset: CaptionDataset, items: list[CaptionItem], size: int, workers: int) -> torch.Tensor:
    # Filled in place, image by image, so peak memory is one copy of the split. PIL releases the GIL
    # while decoding and resizing, so threads scale.
    out = np.empty((len(items), 3, size, size), dtype=np.uint8)

    def decode(i: int) -> None:
        image = dataset.load_image(items[i], size=size)
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
        out[i] = np.asarray(image).transpose(2, 0, 1)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(decode, range(len(items))))
    return torch.from_numpy(out)


def _encode_captions(items: list[CaptionItem], vocab: Vocabulary, max_len: int) -> torch.Tensor:
    rows = [
        [vocab.encode(item.captions[k % len(item.captions)], max_len) for k in range(CAPTIONS_PER_IMAGE)]
        for item in items
    ]
    return torch.tensor(rows, dtype=torch.int64).reshape(len(items), CAPTIONS_PER_IMAGE, max_len)


def _open(directory: Path, built: bool, decoded: int) -> PreparedDataset:
    meta = prepared.read_meta(directory)
    return PreparedDataset(
        dir=directory,
        vocab=Vocabulary.load(directory / prepared.VOCAB_FILE),
        image_size=meta["image_size"],
        max_len=meta["max_len"],
        min_count=meta["min_count"],
        captions_per_image=meta["captions_per_image"],
        split_sizes=meta["splits"],
        built=built,
        decoded=decoded,
    )
