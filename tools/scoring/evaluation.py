"""The evaluator, outside the sandbox: generated ids -> captions (the task vocabulary) -> scores (the metrics module).

    refs = split_references(dataset, "val", prepared.load_image_ids("val"))
    captions = decode_ids(torch.load(ids_file, weights_only=True), vocab, image_ids)
    cider = CiderScorer(refs).score(captions)           # per epoch: CIDEr only, one tokenizer pass
    result = evaluator.score(refs, captions)             # once, for the best epoch: every metric

A candidate never calls any of this: it only writes ids; the references stay on this side of the sandbox.
CIDEr here is pycocoevalcap's `Cider` on pycocoevalcap's PTB tokenization, exactly what `CaptionEvaluator`
computes (a test holds the two equal); the references are tokenized once per scorer, the candidates once
per call.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from pycocoevalcap.cider.cider import Cider

from capnas.tools.data.caption_dataset import CaptionDataset, DatasetError
from capnas.tools.scoring.metrics import CaptionInputError, check_inputs, ptb_tokenize
from capnas.tools.data.vocab import Vocabulary, VocabularyError


class IdsError(ValueError):
    """A generated-ids file is unreadable or does not fit the split and the vocabulary."""


def split_references(dataset: CaptionDataset, split: str, image_ids: Sequence[int]) -> dict[int, list[str]]:
    """Raw reference captions of `split`, keyed and ordered by the prepared `image_ids`."""
    items = {item.image_id: item for item in dataset.split(split)}
    missing = [i for i in image_ids if i not in items]
    if missing:
        raise DatasetError(f"{len(missing)} prepared {split} image id(s) are not in {dataset.source}'s {split} split "
                           f"(first: {missing[:5]}); the prepared cache was built from another dataset: prepare again")
    return {int(i): list(items[i].captions) for i in image_ids}


def load_ids(path: Path, n_images: int, vocab_size: int) -> torch.Tensor:
    """Read ids a job wrote (tensors only, never pickled objects) and check them: int64 [N, T], ids < vocab."""
    try:
        ids = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise IdsError(f"generated ids {path} do not exist") from e
    except Exception as e:  # a truncated or forged file: weights_only refuses anything but tensors
        raise IdsError(f"generated ids {path} cannot be read: {type(e).__name__}: {e}") from e
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype != torch.int64:
        got = f"{ids.dtype} {list(ids.shape)}" if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise IdsError(f"generated ids {path} must be int64 [N, T], got {got}")
    if ids.shape[0] != n_images:
        raise IdsError(f"generated ids {path} hold {ids.shape[0]} rows for a split of {n_images} images")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise IdsError(f"generated ids {path} hold ids outside [0, {vocab_size}) (min {int(ids.min())}, "
                       f"max {int(ids.max())})")
    return ids


def decode_ids(ids: torch.Tensor, vocab: Vocabulary, image_ids: Sequence[int]) -> dict[int, str]:
    """{image_id: caption}: each row's words up to its first EOS (PAD and BOS skipped)."""
    if len(image_ids) != ids.shape[0]:
        raise IdsError(f"{ids.shape[0]} rows of ids for {len(image_ids)} images")
    try:
        return {int(i): vocab.decode(row) for i, row in zip(image_ids, ids.tolist())}
    except VocabularyError as e:
        raise IdsError(str(e)) from e


def write_results(path: Path, captions: Mapping[int, str]) -> None:
    """COCO results format (what `capnas eval` reads): [{"image_id": ..., "caption": ...}, ...], atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps([{"image_id": i, "caption": c} for i, c in captions.items()], indent=0))
    os.replace(tmp, path)


def read_results(path: Path) -> dict[int, str]:
    return {int(e["image_id"]): str(e["caption"]) for e in json.loads(Path(path).read_text())}


class CiderScorer:
    """Corpus CIDEr-D for one split's references; cheap enough to run after every epoch."""

    def __init__(self, refs: Mapping[int, Sequence[str]]):
        if not refs:
            raise CaptionInputError("no reference captions to score against")
        check_inputs(refs, {k: "" for k in refs})
        self.ids = list(refs)
        flat = [c for k in self.ids for c in refs[k]]
        tokens = ptb_tokenize(flat)
        self.gts: dict[int, list[str]] = {}
        pos = 0
        for k in self.ids:
            self.gts[k] = tokens[pos: pos + len(refs[k])]
            pos += len(refs[k])

    def score(self, captions: Mapping[int, str]) -> float:
        """CIDEr of one caption per image of the split (every image needs one)."""
        check_inputs(self.gts, captions)
        tokens = ptb_tokenize([captions[k] for k in self.ids])
        cider, _ = Cider().compute_score(self.gts, {k: [t] for k, t in zip(self.ids, tokens)})
        return float(cider)
