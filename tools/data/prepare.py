"""Prepare a dataset once: decode and resize every image, tokenize every caption, into a shared cache.

The cache directory is keyed by a content hash of the dataset's fingerprint (json bytes and image folder
listing, or the shapes parameters), the image size, max_len, min_count and the format version, so a
second run with the same inputs reuses it and decodes nothing. Images and captions are decoded and
tokenized in chunks and written at their offsets into `.npy` arrays (`capnas.sandbox.prepared.RowWriter`), so
the builder's memory stays a few chunks whatever the data set's size (COCO's train split at 224 px is 18 GB).

It is built in `.<name>.partial` beside its final place, under a file lock, and renamed into place: a crash
never leaves a half-written cache, and concurrent builders of the same cache build it once. The partial
directory records every 10 s (`CHECKPOINT_S`) how many rows of each array are on disk, so a build that was
killed (SIGKILL, the OOM killer, Ctrl-C) continues from there the next time; one that failed on bad input is
removed (the input is what changes before the next try). A cache found at the final place in
another format (or unreadable) is rebuilt, never read.

The layout is the one `capnas.sandbox.prepared` reads. Its `sandbox_view/` subdirectory holds what a
candidate's job may see (train images and captions, val and test images, their ids, meta, vocabulary; never
the val/test reference captions), as hard links to the same files: mount that one into the sandbox.

Cache root: `$CAPNAS_CACHE/prepared`, else `$XDG_CACHE_HOME/capnas/prepared`, else `~/.cache/capnas/prepared`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image

from capnas.sandbox import prepared
from capnas.tools.data.caption_dataset import SPLITS, CaptionDataset, CaptionItem, DatasetError
from capnas.tools.data.progress import OnProgress, StepProgress
from capnas.tools.data.vocab import BOS, EOS, PAD, UNK, Vocabulary

CAPTIONS_PER_IMAGE = 5  # images with more keep their first 5; images with fewer repeat theirs cyclically
PIPELINE_VERSION = 1  # bump when resizing or encoding changes what a cache holds
SANDBOX_VIEW = "sandbox_view"
CHUNK_IMAGES = 256  # decoded, then written, at a time: 38 MB at 224 px; the builder holds about one chunk
CHUNK_CAPTIONS = 4096  # images whose captions are tokenized at a time
PARTIAL_SUFFIX = ".partial"
RESUME_FILE = "resume.json"  # in the partial directory: rows of each array known to be on disk
CHECKPOINT_S = 10.0  # between two syncs of a partial build: a kill loses at most this much work


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
    decoded: int  # images this call decoded: 0 when the cache was reused, fewer than all when it resumed a build

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
    on_progress: OnProgress | None = None,
) -> PreparedDataset:
    """Return the prepared cache for these inputs, building it first if it does not exist yet.
    `on_progress` receives the build's progress events (`capnas.tools.data.progress`)."""
    if image_size < 8:
        raise DatasetError(f"image_size must be >= 8 pixels, got {image_size}")
    if max_len < 3:
        raise DatasetError(f"max_len must be >= 3 tokens (BOS, one word, EOS), got {max_len}")
    root = Path(cache_root) if cache_root is not None else cache_root_default()
    final = root / f"{_safe(dataset.name)}-{_cache_key(dataset, image_size, max_len, min_count)[:24]}"
    if _current(final):
        return _open(final, built=False, decoded=0)

    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{final.name}.lock")):
        if _current(final):  # another process built it while this one waited
            return _open(final, built=False, decoded=0)
        partial = root / f".{final.name}{PARTIAL_SUFFIX}"
        try:
            decoded = _build(dataset, partial, image_size, max_len, min_count,
                             workers or min(8, os.cpu_count() or 1), on_progress)
        except KeyboardInterrupt:
            raise  # the partial build stays: the next call continues it
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)  # bad input: what is decoded may be what changes
            raise
        if final.exists():  # a cache of another format, or one damaged by hand: replaced, never read
            shutil.rmtree(final)
        partial.rename(final)
    return _open(final, built=True, decoded=decoded)


def _current(directory: Path) -> bool:
    """A finished cache of this format is there."""
    if not (directory / prepared.META_FILE).is_file():
        return False
    try:
        prepared.read_meta(directory)
    except prepared.PreparedFormatError:
        return False
    return True


def _cache_key(dataset: CaptionDataset, image_size: int, max_len: int, min_count: int) -> str:
    parts = [
        dataset.fingerprint, image_size, max_len, min_count, CAPTIONS_PER_IMAGE,
        prepared.FORMAT_VERSION, PIPELINE_VERSION,
    ]  # fmt: skip
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40] or "dataset"


def _build(dataset: CaptionDataset, out: Path, size: int, max_len: int, min_count: int, workers: int,
           on_progress: OnProgress | None) -> int:
    train = dataset.split("train")
    if not train:
        raise DatasetError(f"dataset {dataset.source} has no train images; the vocabulary is built from them")
    vocab = Vocabulary.build((c for item in train for c in item.captions), min_count=min_count)
    out.mkdir(parents=True, exist_ok=True)
    resume = _Resume(out)
    decoded = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for split in SPLITS:
            items = dataset.split(split)
            n = len(items)

            def images(start: int, stop: int, items=items) -> np.ndarray:
                return _decode_images(dataset, items[start:stop], size, pool)

            def captions(start: int, stop: int, items=items) -> np.ndarray:
                return _encode_captions(items[start:stop], vocab, max_len)

            decoded += _fill(prepared.images_file(out, split), np.uint8, (n, 3, size, size), CHUNK_IMAGES, images,
                             resume, StepProgress("decode", n, on_progress, split))
            _fill(prepared.captions_file(out, split), np.int64, (n, CAPTIONS_PER_IMAGE, max_len), CHUNK_CAPTIONS,
                  captions, resume, StepProgress("tokenize", n, on_progress, split))
            prepared.write_array(prepared.image_ids_file(out, split), np.asarray([i.image_id for i in items], np.int64))
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
    (out / RESUME_FILE).unlink(missing_ok=True)
    shutil.rmtree(out / SANDBOX_VIEW, ignore_errors=True)  # a killed build may have started linking it
    (out / prepared.META_FILE).write_text(json.dumps(meta, indent=1))
    _link_sandbox_view(out)
    make_readable_by_all(out)
    return decoded


class _Resume:
    """How many rows of each array of a partial build are on disk, saved atomically beside them. Rows are
    synced before they are counted, so a resumed build never trusts rows the kernel had not written."""

    def __init__(self, out: Path):
        self.path = out / RESUME_FILE
        try:
            self.rows: dict[str, int] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.rows = {}
        self.last = time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last >= CHECKPOINT_S

    def save(self, writer: prepared.RowWriter, rows: int) -> None:
        writer.sync()
        self.rows[writer.path.name] = rows
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.rows))
        os.replace(tmp, self.path)
        self.last = time.monotonic()


def _fill(path: Path, dtype: type, shape: tuple[int, ...], chunk: int, rows, resume: _Resume,
          progress: StepProgress) -> int:
    """Write the array at `path` chunk by chunk, `rows(start, stop)` making each chunk, after the rows an
    earlier, killed build left on disk. Returns the rows this call made."""
    with prepared.RowWriter(path, dtype, shape, resume=resume.rows.get(path.name, 0) > 0) as writer:
        first = resume.rows.get(path.name, 0) if writer.resumed else 0
        progress.start(first)
        for start in range(first, shape[0], chunk):
            stop = min(start + chunk, shape[0])
            writer.write(start, rows(start, stop))
            progress.update(stop)
            if resume.due():
                resume.save(writer, stop)
        resume.save(writer, shape[0])
    return shape[0] - first


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
    shown += [prepared.image_ids_file(out, split).name for split in SPLITS]
    for name in shown:
        try:
            os.link(out / name, view / name)  # same inode: no extra disk, and it survives a bind mount
        except OSError:
            shutil.copyfile(out / name, view / name)  # file systems without hard links


def _decode_images(dataset: CaptionDataset, items: list[CaptionItem], size: int,
                   pool: ThreadPoolExecutor) -> np.ndarray:
    # One chunk, filled in place image by image. PIL releases the GIL while decoding and resizing, so threads scale.
    out = np.empty((len(items), 3, size, size), dtype=np.uint8)

    def decode(i: int) -> None:
        image = dataset.load_image(items[i], size=size)
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
        out[i] = np.asarray(image).transpose(2, 0, 1)

    list(pool.map(decode, range(len(items))))
    return out


def _encode_captions(items: list[CaptionItem], vocab: Vocabulary, max_len: int) -> np.ndarray:
    rows = [
        [vocab.encode(item.captions[k % len(item.captions)], max_len) for k in range(CAPTIONS_PER_IMAGE)]
        for item in items
    ]
    return np.asarray(rows, dtype=np.int64).reshape(len(items), CAPTIONS_PER_IMAGE, max_len)


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
