"""Readers for caption datasets stored as json beside a folder of images.

Two layouts are recognised:

- Karpathy `dataset_*.json`: `{"images": [{"filename", "imgid", "split", "sentences": [{"raw"}]}]}`,
  with an optional `filepath` folder per image (COCO's `train2014/`...). Split `restval` counts as
  `train`, as in Karpathy's own training code.
- Official COCO `captions_*.json`: `{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}`.
  It carries no split, so each image goes to train/val/test by a stable hash of its id:
  the first 8 bytes of SHA-256 of the decimal id, modulo 100: below 90 train, below 95 val, else test.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from capnas.tools.data.caption_dataset import CaptionDataset, CaptionItem, DatasetError, Split

# Bump when the reading rules (split mapping, hashing) change: it is part of every fingerprint.
READER_VERSION = 2
COCO_SPLIT_PERCENT = (90, 5, 5)

_M = TypeVar("_M", bound=BaseModel)


class _KarpathySentence(BaseModel):
    raw: str


class _KarpathyImage(BaseModel):
    filename: str
    imgid: int
    split: str
    sentences: list[_KarpathySentence]
    filepath: str | None = None


class _KarpathyFile(BaseModel):
    images: list[_KarpathyImage]


class _CocoImage(BaseModel):
    id: int
    file_name: str


class _CocoAnnotation(BaseModel):
    image_id: int
    caption: str


class _CocoFile(BaseModel):
    images: list[_CocoImage]
    annotations: list[_CocoAnnotation]


_KARPATHY_SPLITS: dict[str, Split] = {"train": "train", "restval": "train", "val": "val", "test": "test"}


def read_caption_json(json_path: Path, images_dir: Path | None = None) -> CaptionDataset:
    """Read a Karpathy or COCO captions file; `images_dir` defaults to `images/` beside it."""
    json_path = Path(json_path)
    images_dir = Path(images_dir) if images_dir is not None else json_path.parent / "images"
    raw = json_path.read_bytes()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{json_path} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or "images" not in data:
        raise DatasetError(
            f"{json_path} has no top-level key 'images'; expected a Karpathy dataset_*.json "
            "({'images': [{'filename', 'imgid', 'split', 'sentences'}]}) or a COCO captions_*.json "
            "({'images': [{'id', 'file_name'}], 'annotations': [{'image_id', 'caption'}]})"
        )
    if "annotations" in data:
        items, name = _coco_items(_validate(_CocoFile, data, json_path), json_path), "coco"
    else:
        items = _karpathy_items(_validate(_KarpathyFile, data, json_path), json_path)
        name = data.get("dataset") if isinstance(data.get("dataset"), str) else json_path.stem
    _check_unique_ids(items, json_path)
    listing = _check_images_present(items, images_dir, json_path)
    fingerprint = _sha256(f"json:{READER_VERSION}:".encode(), raw, listing)
    return CaptionDataset(
        name=name, source=str(json_path), fingerprint=fingerprint, images_dir=images_dir, items=items
    )


def coco_split(image_id: int) -> Split:
    bucket = int.from_bytes(hashlib.sha256(str(image_id).encode()).digest()[:8], "big") % 100
    train, val, _ = COCO_SPLIT_PERCENT
    return "train" if bucket < train else "val" if bucket < train + val else "test"


def _validate(model: type[_M], data: Any, json_path: Path) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = [_describe(err) for err in e.errors()[:5]]
        more = f" (and {e.error_count() - 5} more)" if e.error_count() > 5 else ""
        raise DatasetError(f"{json_path} is malformed: " + "; ".join(problems) + more) from e


def _describe(err: Any) -> str:
    """`images[3]: missing key 'sentences'` or `images[0].imgid: Input should be a valid integer`."""
    loc = err["loc"]
    if err["type"] == "missing":
        return f"{_where(loc[:-1]) or 'top level'}: missing key {loc[-1]!r}"
    return f"{_where(loc)}: {err['msg']}"


def _where(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


def _karpathy_items(file: _KarpathyFile, json_path: Path) -> list[CaptionItem]:
    items = []
    for n, image in enumerate(file.images):
        entry = f"images[{n}] (imgid {image.imgid}, {image.filename})"
        split = _KARPATHY_SPLITS.get(image.split)
        if split is None:
            raise DatasetError(
                f"{json_path}: {entry} has split {image.split!r}; expected one of {', '.join(_KARPATHY_SPLITS)}"
            )
        captions = [s.raw for s in image.sentences]
        _check_captions(captions, entry, json_path)
        filename = f"{image.filepath}/{image.filename}" if image.filepath else image.filename
        items.append(CaptionItem(image_id=image.imgid, filename=filename, split=split, captions=captions))
    return items


def _coco_items(file: _CocoFile, json_path: Path) -> list[CaptionItem]:
    captions: dict[int, list[str]] = defaultdict(list)
    known = {image.id for image in file.images}
    for n, ann in enumerate(file.annotations):
        if ann.image_id not in known:
            raise DatasetError(f"{json_path}: annotations[{n}] refers to image_id {ann.image_id}, which no image has")
        captions[ann.image_id].append(ann.caption)
    items = []
    for n, image in enumerate(file.images):
        entry = f"images[{n}] (id {image.id}, {image.file_name})"
        _check_captions(captions[image.id], entry, json_path)
        items.append(
            CaptionItem(image_id=image.id, filename=image.file_name, split=coco_split(image.id), captions=captions[image.id])
        )
    return items


def _check_captions(captions: list[str], entry: str, json_path: Path) -> None:
    if not captions:
        raise DatasetError(f"{json_path}: {entry} has no captions; add some or remove the entry")
    for k, caption in enumerate(captions):
        if not caption.strip():
            raise DatasetError(f"{json_path}: {entry} has an empty caption (number {k}); fix or remove it")


def _check_unique_ids(items: list[CaptionItem], json_path: Path) -> None:
    seen: set[int] = set()
    for item in items:
        if item.image_id in seen:
            raise DatasetError(f"{json_path}: image id {item.image_id} appears twice (second: {item.filename})")
        seen.add(item.image_id)


def _check_images_present(items: list[CaptionItem], images_dir: Path, json_path: Path) -> bytes:
    """Fail on missing image files; return the listed images' names and content digests for the fingerprint.

    Content, not mtimes: a copy of the same images (a re-synced share, a fresh checkout of a data repo) is the
    same data and must hit the same prepared cache. Hashing reads every listed image once per load, about
    0.3 s for Flickr8k's 114 MB (some 3 s per GB); the prepare step that a miss costs reads them all anyway.
    """
    if not images_dir.is_dir():
        raise DatasetError(
            f"image folder {images_dir} for {json_path} does not exist; pass the folder that holds the images "
            "(images=... in Python, --images on the command line)"
        )
    files: set[str] = set()
    for root, _, names in os.walk(images_dir):
        for name in names:
            files.add(os.path.relpath(os.path.join(root, name), images_dir).replace(os.sep, "/"))
    missing = [item.filename for item in items if item.filename not in files]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetError(
            f"{len(missing)} image file(s) listed in {json_path} are missing from {images_dir}: {shown}. "
            "Pass the folder that holds them (images=... / --images) or remove their entries."
        )
    lines = []
    for name in sorted({item.filename for item in items}):
        with open(images_dir / name, "rb") as f:
            lines.append(f"{name}\t{hashlib.file_digest(f, 'sha256').hexdigest()}")
    return "\n".join(lines).encode()


def _sha256(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()
