"""The on-disk format of a prepared dataset, and its reader.

Per split, two files, so that a directory can hold a split's images without its reference captions:

    <split>.images.pt     {"images": uint8 [N, 3, S, S], "image_ids": [N ints]}
    <split>.captions.pt   {"captions": int64 [N, Ncap, L], "image_ids": [N ints]}   rows `BOS w.. EOS PAD..`

plus `meta.json` (sizes, lengths, split sizes) and `vocab.json`. Optionally, frozen-encoder features of the
images, one folder per extractor (written by `capnas.tools.data.features`, read by the training loop instead of images):

    features/<key>/<split>.features.pt   {"features": float16 [N, T, D], "image_ids": [N ints]}

`capnas.tools.data.prepare` writes the rest; the
sandboxed harness reads it, memory-mapped, so concurrent jobs share one copy in the page cache.
This module imports only torch and the standard library, so it is safe inside the sandbox.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
META_FILE = "meta.json"
VOCAB_FILE = "vocab.json"
FEATURES_DIR = "features"


class PreparedFormatError(ValueError):
    """A prepared file is missing, malformed, or holds tensors of the wrong type or shape."""


@dataclass(frozen=True)
class PreparedSplit:
    images: torch.Tensor  # uint8 [N, 3, S, S]
    captions: torch.Tensor  # int64 [N, Ncap, L]
    image_ids: list[int]

    def __len__(self) -> int:
        return len(self.image_ids)


def images_file(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / f"{split}.images.pt"


def captions_file(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / f"{split}.captions.pt"


def save_split(
    data_dir: Path, split: str, images: torch.Tensor, captions: torch.Tensor, image_ids: list[int]
) -> None:
    ids = [int(i) for i in image_ids]
    _check_images(images, images_file(data_dir, split))
    _check_captions(captions, captions_file(data_dir, split))
    _check_count(images.shape[0], captions.shape[0], ids, Path(data_dir), split)
    torch.save({"images": images, "image_ids": ids}, images_file(data_dir, split))
    torch.save({"captions": captions, "image_ids": ids}, captions_file(data_dir, split))


def features_file(data_dir: Path, key: str, split: str) -> Path:
    return Path(data_dir) / FEATURES_DIR / key / f"{split}.features.pt"


def save_features(path: Path, features: torch.Tensor, image_ids: list[int]) -> None:
    _check_features(features, path)
    if features.shape[0] != len(image_ids):
        raise PreparedFormatError(f"{path}: {features.shape[0]} feature rows for {len(image_ids)} image ids")
    torch.save({"features": features, "image_ids": [int(i) for i in image_ids]}, path)


def load_features(data_dir: Path, key: str, split: str, mmap: bool = True) -> torch.Tensor:
    """float16 `[N, T, D]` tokens of one split's images, in the same order as its images; memory-mapped."""
    path = features_file(data_dir, key, split)
    features = _load(path, "features", mmap)
    _check_features(features, path)
    ids = list(_load(path, "image_ids", mmap=True))
    if ids != load_image_ids(data_dir, split):
        raise PreparedFormatError(f"{path} does not list the images of split {split!r} in their prepared order; "
                                  "delete that features folder so it is extracted again")
    return features


def load_images(data_dir: Path, split: str, mmap: bool = True) -> torch.Tensor:
    """uint8 `[N, 3, S, S]`; memory-mapped unless `mmap=False`."""
    path = images_file(data_dir, split)
    images = _load(path, "images", mmap)
    _check_images(images, path)
    return images


def load_captions(data_dir: Path, split: str, mmap: bool = True) -> torch.Tensor:
    """int64 `[N, Ncap, L]`; memory-mapped unless `mmap=False`."""
    path = captions_file(data_dir, split)
    captions = _load(path, "captions", mmap)
    _check_captions(captions, path)
    return captions


def load_image_ids(data_dir: Path, split: str) -> list[int]:
    return list(_load(images_file(data_dir, split), "image_ids", mmap=True))


def load_split(data_dir: Path, split: str, mmap: bool = True) -> PreparedSplit:
    """Images, captions and ids of one split (needs both files)."""
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
    if meta.get("format_version") != FORMAT_VERSION:
        raise PreparedFormatError(
            f"{path} has format_version {meta.get('format_version')!r}, this reader expects {FORMAT_VERSION}; "
            "prepare the dataset again"
        )
    return meta


def _load(path: Path, key: str, mmap: bool) -> Any:
    if not path.is_file():
        raise PreparedFormatError(f"prepared file {path} does not exist; prepare the dataset again")
    data: Any = torch.load(path, mmap=mmap, weights_only=True, map_location="cpu")
    if not isinstance(data, dict) or key not in data:
        raise PreparedFormatError(f"prepared file {path} holds no {key!r}; prepare the dataset again")
    return data[key]


def _check_images(images: Any, path: Path) -> None:
    ok = isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.dim() == 4
    if not (ok and images.shape[1] == 3 and images.shape[2] == images.shape[3]):
        got = f"{images.dtype} {list(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise PreparedFormatError(f"{path}: images must be uint8 [N, 3, S, S], got {got}")


def _check_features(features: Any, path: Path) -> None:
    if not (isinstance(features, torch.Tensor) and features.dtype == torch.float16 and features.dim() == 3):
        got = f"{features.dtype} {list(features.shape)}" if isinstance(features, torch.Tensor) else type(features).__name__
        raise PreparedFormatError(f"{path}: features must be float16 [N, T, D], got {got}")


def _check_captions(captions: Any, path: Path) -> None:
    if not (isinstance(captions, torch.Tensor) and captions.dtype == torch.int64 and captions.dim() == 3):
        got = f"{captions.dtype} {list(captions.shape)}" if isinstance(captions, torch.Tensor) else type(captions).__name__
        raise PreparedFormatError(f"{path}: captions must be int64 [N, Ncap, L], got {got}")


def _check_count(n_images: int, n_captions: int, image_ids: list[int], data_dir: Path, split: str) -> None:
    if not n_images == n_captions == len(image_ids):
        raise PreparedFormatError(
            f"split {split!r} in {data_dir}: {n_images} images, {n_captions} caption rows and "
            f"{len(image_ids)} image ids; all three must match"
        )
