"""Datasets for captioning: load one from a SPEC, build its vocabulary, prepare it once into a shared cache.

    dataset = load_dataset("shapes")                       # built-in synthetic set, 1200 images
    dataset = load_dataset("data/dataset_flickr8k.json")   # Karpathy or COCO json, images/ beside it
    prepared = prepare_dataset(dataset, image_size=224, max_len=20)

This module is the public face; the parts live in `caption_dataset` (the model), `caption_files`
(json readers), `sources` (what a SPEC names), `shapes` (the synthetic set), `vocab` and `prepare`.
"""

from __future__ import annotations

from pathlib import Path

from capnas.tools.data.caption_dataset import SPLITS, CaptionDataset, CaptionItem, DatasetError, Split
from capnas.tools.data.caption_files import coco_split, read_caption_json
from capnas.tools.data.prepare import PreparedDataset, cache_root_default, prepare_dataset
from capnas.tools.data.progress import OnProgress
from capnas.tools.data.sources import SHAPES_DEFAULT_SIZE, SPEC_HELP, load_dataset, shapes_dataset
from capnas.tools.data.vocab import BOS, EOS, PAD, UNK, Vocabulary, VocabularyError, tokenize
from capnas.tools.task import Task

__all__ = [
    "BOS", "EOS", "PAD", "SPLITS", "UNK",
    "CaptionDataset", "CaptionItem", "DatasetError", "PreparedDataset", "Split", "Vocabulary", "VocabularyError",
    "cache_root_default", "coco_split", "load_dataset", "prepare_dataset", "read_caption_json",
    "SHAPES_DEFAULT_SIZE", "SPEC_HELP", "shapes_dataset", "task_data", "tokenize",
]  # fmt: skip


def task_data(task: Task, on_progress: OnProgress | None = None) -> tuple[CaptionDataset, PreparedDataset]:
    """The dataset a task names and its prepared cache, at the task's image size, caption length and vocabulary
    threshold: what a run trains on, so a benchmark or a report that calls this reads the very same cache.
    `on_progress` receives the build's progress events when the cache is built."""
    dataset = load_dataset(task.dataset, Path(task.images) if task.images else None)
    return dataset, prepare_dataset(dataset, image_size=task.image_size, max_len=task.max_len,
                                    min_count=task.min_count, on_progress=on_progress)
