"""Datasets for captioning: load one from a SPEC, build its vocabulary, prepare it once into a shared cache.

    dataset = load_dataset("shapes")                       # built-in synthetic set, 1200 images
    dataset = load_dataset("data/dataset_flickr8k.json")   # Karpathy or COCO json, images/ beside it
    prepared = prepare_dataset(dataset, image_size=224, max_len=20)

This module is the public face; the parts live in `caption_dataset` (the model), `caption_files`
(json readers), `shapes` (the synthetic set), `vocab` and `prepare`.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from capnas.tools.data import shapes
from capnas.tools.data.caption_dataset import SPLITS, CaptionDataset, CaptionItem, DatasetError, Split
from capnas.tools.data.caption_files import coco_split, read_caption_json
from capnas.tools.data.prepare import PreparedDataset, cache_root_default, prepare_dataset
from capnas.tools.data.vocab import BOS, EOS, PAD, UNK, Vocabulary, VocabularyError, tokenize

__all__ = [
    "BOS", "EOS", "PAD", "SPLITS", "UNK",
    "CaptionDataset", "CaptionItem", "DatasetError", "PreparedDataset", "Split", "Vocabulary", "VocabularyError",
    "cache_root_default", "coco_split", "load_dataset", "prepare_dataset", "read_caption_json",
    "shapes_dataset", "tokenize",
]  # fmt: skip

SHAPES_DEFAULT_SIZE = 1200
SHAPES_MIN_SIZE = 10
SPEC_HELP = (
    "SPEC may be 'shapes' (the built-in synthetic set, 1200 images), 'shapes:N' (N >= 10 images), "
    "or the path of an existing Karpathy dataset_*.json or COCO captions_*.json file"
)
_SHAPES_SPEC = re.compile(r"shapes(?::(\d+))?")


def load_dataset(spec: str, images: Path | None = None) -> CaptionDataset:
    """Load a dataset from SPEC; `images` is the image folder of a json dataset (default: `images/` beside it)."""
    match = _SHAPES_SPEC.fullmatch(spec.strip())
    if match:
        if images is not None:
            raise DatasetError(f"dataset {spec!r} is drawn in memory and takes no image folder (got {images})")
        return shapes_dataset(int(match.group(1)) if match.group(1) else SHAPES_DEFAULT_SIZE)
    path = Path(spec).expanduser()
    if path.suffix.lower() != ".json" or not path.is_file():
        reason = "no such file" if not path.exists() else "not a .json file"
        raise DatasetError(f"unknown dataset {spec!r} ({reason}); {SPEC_HELP}")
    return read_caption_json(path, images)


def shapes_dataset(n: int = SHAPES_DEFAULT_SIZE, seed: int = 0) -> CaptionDataset:
    """The synthetic shapes set: `n` images, split 80/10/10 by index (`index % 10`: 8 is val, 9 is test),
    so `shapes:40` holds the first 40 images of `shapes`."""
    if n < SHAPES_MIN_SIZE:
        raise DatasetError(f"dataset 'shapes:{n}' is too small: every split needs images, so N >= {SHAPES_MIN_SIZE}")
    items = [
        CaptionItem(
            image_id=i,
            filename=f"shapes-{seed}-{i:06d}.png",
            split="val" if i % 10 == 8 else "test" if i % 10 == 9 else "train",
            captions=list(shapes.make_scene(seed, i).captions),
        )
        for i in range(n)
    ]
    params = f"shapes:n={n}:seed={seed}:generator={shapes.GENERATOR_VERSION}"
    return CaptionDataset(
        name="shapes",
        source=f"shapes:{n}",
        fingerprint=hashlib.sha256(params.encode()).hexdigest(),
        shapes_seed=seed,
        items=items,
    )
