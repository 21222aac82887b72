"""The on-disk format of a prepared dataset, its incremental writer and its reader.

Every array is a NumPy `.npy` file (a small header naming dtype and shape, then the raw rows), so it is
written row chunk by row chunk at its offset and read back memory-mapped: neither side holds a whole split
in memory, and concurrent jobs share one copy in the page cache. Per split, separate files, so that a
directory can hold a split's images without its reference captions:

    <split>.images.npy      uint8 [N, 3, S, S]
    <split>.image_ids.npy   int64 [N]
    <split>.captions.npy    int64 [N, Ncap, L]   rows `BOS w.. EOS PAD..`

plus `meta.json` (format version, sizes, lengths, split sizes) and `vocab.json`. Optionally, frozen-encoder
features of the images, one folder per extractor (written by `capnas.tools.data.features`, read by the training
loop instead of images):

    features/<key>/<split>.features.npy    float16 [N, T, D]
    features/<key>/<split>.image_ids.npy   int64 [N]   (the images they were computed from, in order)

Format 1 (one `torch.save` pickle per file, `<split>.images.pt`) is recognised and refused with a message, never
read as something else. `capnas.tools.data.prepare` writes the cache; the sandboxed harness reads it.
This module imports only torch, numpy and the standard library, so it is safe inside the sandbox.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

FORMAT_VERSION = 2  # 1: torch.save pickles (*.pt); 2: .npy arrays written in chunks
SPLITS = ("train", "val", "test")
META_FILE = "meta.json"
VOCAB_FILE = "vocab.json"
FEATURES_DIR = "features"
_OLD_SUFFIX = ".pt"  # format 1's files


class PreparedFormatError(ValueError):
    """A prepared file is missing, malformed, of an older format, or holds arrays of the wrong type or shape."""


@dataclass(frozen=True)
class PreparedSplit:
    images: torch.Tensor  # uint8 [N, 3, S, S]
    captions: torch.Tensor  # int64 [N, Ncap, L]
    image_ids: list[int]

    def __len__(self) -> int:
        return len(self.image_ids)


def images_file(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / f"{split}.images.npy"


def image_ids_file(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / f"{split}.image_ids.npy"


def captions_file(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / f"{split}.captions.npy"


def features_file(data_dir: Path, key: str, split: str) -> Path:
    return Path(data_dir) / FEATURES_DIR / key / f"{split}.features.npy"


def features_ids_file(features_path: Path) -> Path:
    """The image ids stored beside a features file (`val.features.npy` -> `val.image_ids.npy`)."""
    return features_path.with_name(features_path.name.replace(".features.npy", ".image_ids.npy"))


# -- writing -------------------------------------------------------------------------------------------------


class RowWriter:
    """One `.npy` array of a known shape, written in place row chunk by row chunk (os.pwrite at each chunk's
    offset, never a memory map: written pages are not counted in this process's memory, and the kernel writes
    them back at its pace). `resume=True` keeps an existing file of the same dtype and shape, so a build that
    was killed continues where its last `sync` left it."""

    def __init__(self, path: Path, dtype: np.dtype | type, shape: tuple[int, ...], resume: bool = False):
        self.path, self.dtype, self.shape = Path(path), np.dtype(dtype), tuple(int(s) for s in shape)
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        kept = self._existing_offset() if resume else None
        self.resumed = kept is not None  # False: a new, empty array (nothing to resume, or it did not match)
        self.offset = kept if kept is not None else self._create()
        self.fd = os.open(self.path, os.O_RDWR)

    def write(self, start: int, rows: np.ndarray) -> None:
        """Rows `start .. start + len(rows)` (each of the array's row shape and dtype)."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.shape[1:] or not 0 <= start <= start + len(rows) <= self.shape[0]:
            raise PreparedFormatError(f"{self.path}: rows {list(rows.shape)} at {start} do not fit {list(self.shape)}")
        view, at = memoryview(rows.reshape(-1).view(np.uint8)), self.offset + start * self.row_bytes
        while view:  # pwrite may write less than asked
            n = os.pwrite(self.fd, view, at)
            view, at = view[n:], at + n

    def sync(self) -> None:
        """Rows written so far are on disk (what a resumed build may trust)."""
        os.fdatasync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            self.sync()
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "RowWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _create(self) -> int:
        """Write the header and size the file (sparse: rows cost no disk until written); the rows' offset."""
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        with open(self.path, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            offset = f.tell()
            f.truncate(offset + self.shape[0] * self.row_bytes)
        return offset

    def _existing_offset(self) -> int | None:
        """The rows' offset in an existing file of this very dtype and shape; None when there is none."""
        try:
            with open(self.path, "rb") as f:
                np.lib.format.read_magic(f)
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                offset = f.tell()
            size = self.path.stat().st_size
        except (OSError, ValueError):
            return None
        same = (tuple(shape), fortran, dtype) == (self.shape, False, self.dtype)
        return offset if same and size == offset + self.shape[0] * self.row_bytes else None


def write_array(path: Path, array: np.ndarray | torch.Tensor) -> None:
    """A whole (small) array in one go, in the same format."""
    data = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    with RowWriter(path, data.dtype, data.shape) as writer:
        writer.write(0, data)


def save_split(
    data_dir: Path, split: str, images: torch.Tensor, captions: torch.Tensor, image_ids: list[int]
) -> None:
    """A whole split at once (tests and small sets; `capnas.tools.data.prepare` writes in chunks)."""
    ids = [int(i) for i in image_ids]
    _check_images(images, images_file(data_dir, split))
    _check_captions(captions, captions_file(data_dir, split))
    _check_count(images.shape[0], captions.shape[0], ids, Path(data_dir), split)
    write_array(images_file(data_dir, split), images)
    write_array(captions_file(data_dir, split), captions)
    write_array(image_ids_file(data_dir, split), np.asarray(ids, dtype=np.int64))


def save_features(path: Path, features: torch.Tensor, image_ids: list[int]) -> None:
    _check_features(features, path)
    if features.shape[0] != len(image_ids):
        raise PreparedFormatError(f"{path}: {features.shape[0]} feature rows for {len(image_ids)} image ids")
    write_array(path, features)
    write_array(features_ids_file(path), np.asarray(image_ids, dtype=np.int64))


# -- reading -------------------------------------------------------------------------------------------------


def load_features(data_dir: Path, key: str, split: str, mmap: bool = True) -> torch.Tensor:
    """float16 `[N, T, D]` tokens of one split's images, in the same order as its images; memory-mapped."""
    path = features_file(data_dir, key, split)
    features = _load(path, mmap)
    _check_features(features, path)
    ids = _load(features_ids_file(path), mmap=True).tolist()
    if ids != load_image_ids(data_dir, split) or len(ids) != features.shape[0]:
        raise PreparedFormatError(f"{path} does not list the images of split {split!r} in their prepared order; "
                                  "delete that features folder so it is extracted again")
    return features


def load_images(data_dir: Path, split: str, mmap: bool = True) -> torch.Tensor:
    """uint8 `[N, 3, S, S]`; memory-mapped unless `mmap=False`."""
    path = images_file(data_dir, split)
    images = _load(path, mmap)
    _check_images(images, path)
    return images


def load_captions(data_dir: Path, split: str, mmap: bool = True) -> torch.Tensor:
    """int64 `[N, Ncap, L]`; memory-mapped unless `mmap=False`."""
    path = captions_file(data_dir, split)
    captions = _load(path, mmap)
    _check_captions(captions, path)
    return captions


def image_batches(data_dir: Path, split: str, batch_size: int) -> Iterator[torch.Tensor]:
    """uint8 `[B, 3, S, S]` batches of one split's images in order, each read from the file into fresh memory:
    a pass over a split holds one batch, where a memory map would keep every page it touched resident."""
    path = images_file(data_dir, split)
    n, *_ = load_images(data_dir, split).shape  # checks the file; the map is dropped at once
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        row = int(np.prod(shape[1:], dtype=np.int64))
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            yield torch.from_numpy(np.fromfile(f, dtype=dtype, count=count * row).reshape(count, *shape[1:]))


def load_image_ids(data_dir: Path, split: str) -> list[int]:
    path = image_ids_file(data_dir, split)
    ids = _load(path, mmap=True)
    if ids.dtype != torch.int64 or ids.dim() != 1:
        raise PreparedFormatError(f"{path}: image ids must be int64 [N], got {ids.dtype} {list(ids.shape)}")
    return ids.tolist()


def load_split(data_dir: Path, split: str, mmap: bool = True) -> PreparedSplit:
    """Images, captions and ids of one split (needs all three files)."""
    images, captions = load_images(data_dir, split, mmap), load_captions(data_dir, split, mmap)
    ids = load_image_ids(data_dir, split)
    _check_count(images.shape[0], captions.shape[0], ids, Path(data_dir), split)
    return PreparedSplit(images, captions, ids)


def read_meta(data_dir: Path) -> dict[str, Any]:
    path = Path(data_dir) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PreparedFormatError(f"cannot read prepared metadata {path}: {e}") from e
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        found = meta.get("format_version") if isinstance(meta, dict) else None
        raise PreparedFormatError(
            f"{path} has format_version {found!r}, this reader expects {FORMAT_VERSION}; "
            "prepare the dataset again (capnas rebuilds a cache of another format when it next prepares it)"
        )
    return meta


def _load(path: Path, mmap: bool) -> torch.Tensor:
    if not path.is_file():
        if any(path.parent.glob(f"*.images{_OLD_SUFFIX}")):
            raise PreparedFormatError(f"{path.parent} is a prepared cache of format 1 (torch.save files), which this "
                                      f"reader (format {FORMAT_VERSION}) does not read; prepare the dataset again")
        raise PreparedFormatError(f"prepared file {path} does not exist; prepare the dataset again")
    try:
        # "c" (copy-on-write) maps the file without write access, yet gives torch a writable array: no
        # warning, and a stray in-place write changes this process's copy, never the shared cache.
        array = np.load(path, mmap_mode="c" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise PreparedFormatError(f"prepared file {path} is not a readable .npy array ({e}); "
                                  "prepare the dataset again") from e
    return torch.from_numpy(array)


def _describe(x: Any) -> str:
    return f"{x.dtype} {list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


def _check_images(images: Any, path: Path) -> None:
    ok = isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.dim() == 4
    if not (ok and images.shape[1] == 3 and images.shape[2] == images.shape[3]):
        raise PreparedFormatError(f"{path}: images must be uint8 [N, 3, S, S], got {_describe(images)}")


def _check_features(features: Any, path: Path) -> None:
    if not (isinstance(features, torch.Tensor) and features.dtype == torch.float16 and features.dim() == 3):
        raise PreparedFormatError(f"{path}: features must be float16 [N, T, D], got {_describe(features)}")


def _check_captions(captions: Any, path: Path) -> None:
    if not (isinstance(captions, torch.Tensor) and captions.dtype == torch.int64 and captions.dim() == 3):
        raise PreparedFormatError(f"{path}: captions must be int64 [N, Ncap, L], got {_describe(captions)}")


def _check_count(n_images: int, n_captions: int, image_ids: list[int], data_dir: Path, split: str) -> None:
    if not n_images == n_captions == len(image_ids):
        raise PreparedFormatError(
            f"split {split!r} in {data_dir}: {n_images} images, {n_captions} caption rows and "
            f"{len(image_ids)} image ids; all three must match"
        )
