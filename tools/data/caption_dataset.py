"""One model for every image-caption dataset: items with raw captions, train/val/test splits, image loading.

Readers (`capnas.tools.data.caption_files` for Karpathy and COCO json, `capnas.tools.data.datasets.shapes_dataset`)
produce a `CaptionDataset`; `load_dataset` in `capnas.tools.data.datasets` picks the reader from a SPEC.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel

from capnas.tools.data import shapes

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


class DatasetError(ValueError):
    """Bad dataset input. The message names the offending file or entry and what to do."""


class CaptionItem(BaseModel, frozen=True):
    image_id: int  # Karpathy `imgid`, COCO image `id`, shapes index
    filename: str  # relative to the dataset's image folder (a made-up name for shapes)
    split: Split
    captions: list[str]  # raw text, as written in the source


class CaptionDataset(BaseModel, frozen=True):
    name: str  # e.g. "flickr8k", "coco", "shapes"
    source: str  # the json path or the shapes spec, for messages
    fingerprint: str  # content hash of what items and images come from; keys prepared caches
    images_dir: Path | None = None  # folder of image files; None for shapes
    shapes_seed: int | None = None  # set for the synthetic set, whose images are drawn in memory
    items: list[CaptionItem]

    def split(self, name: str) -> list[CaptionItem]:
        if name not in SPLITS:
            raise DatasetError(f"unknown split {name!r} in dataset {self.source}; available splits: {', '.join(SPLITS)}")
        return [item for item in self.items if item.split == name]

    def split_sizes(self) -> dict[str, int]:
        return {name: sum(item.split == name for item in self.items) for name in SPLITS}

    def load_image(self, item: CaptionItem, size: int | None = None) -> Image.Image:
        """The item's image as RGB. Shapes are drawn at `size` (default 128); files come at their own size."""
        if self.shapes_seed is not None:
            return shapes.render(shapes.make_scene(self.shapes_seed, item.image_id), size or 128)
        assert self.images_dir is not None, "a file-backed dataset has an image folder"
        path = self.images_dir / item.filename
        try:
            with Image.open(path) as image:
                if size is not None:
                    image.draft("RGB", (size, size))  # lets JPEG decode at a reduced scale: much faster
                return image.convert("RGB")
        except FileNotFoundError as e:
            raise DatasetError(
                f"image file {item.filename} (image id {item.image_id}) is missing from {self.images_dir}"
            ) from e
        except (UnidentifiedImageError, OSError) as e:
            raise DatasetError(
                f"cannot decode image {path} (image id {item.image_id} of {self.source}): {e}. "
                "Replace the file or remove its entry from the dataset."
            ) from e
