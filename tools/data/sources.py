"""What a dataset SPEC names: the built-in synthetic set (`shapes`, `shapes:N`) or a Karpathy/COCO captions json
with its image folder, read into a `CaptionDataset`. No torch here: settings check a SPEC at the edge with it."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from capnas.tools.data import shapes
from capnas.tools.data.caption_dataset import CaptionDataset, CaptionItem, DatasetError
from capnas.tools.data.caption_files import read_caption_json

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
