"""The `features` entry, INSIDE the sandbox: run a frozen encoder once over a split's images and save its tokens.

The parent (`capnas.tools.data.features`) writes into `candidate.py` a rendered module whose `build_encoder()` is the
frozen extractor, the very code every candidate with that encoder runs; this entry calls it in eval mode over
the prepared images and writes `<split>.features.pt` (float16 `[N, T, D]`, prepared order) into the scratch
dir. The parent then moves the files beside the prepared data, where training jobs read them instead of images.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from capnas.sandbox import prepared
from capnas.sandbox.train_loop import Emit, load_candidate, set_threads, to_float


@torch.no_grad()
def extract(scratch: Path, data_dir: Path, args: dict[str, Any], emit: Emit, device: str = "cpu") -> dict[str, Any]:
    """args: splits (default train and val), batch_size 64, threads None. Returns {split: [N, T, D]}."""
    t0 = time.perf_counter()
    dev = torch.device(device)
    set_threads(args.get("threads"))
    encoder = load_candidate(scratch / "candidate.py").build_encoder().to(dev).eval()
    batch_size = int(args.get("batch_size", 64))
    shapes: dict[str, list[int]] = {}
    for split in args.get("splits") or ["train", "val"]:
        images = prepared.load_images(data_dir, split)
        chunks = []
        for i, chunk in enumerate(images.split(batch_size)):
            chunks.append(encoder(to_float(chunk, dev)).to(torch.float16).cpu())
            emit("features_step", split=split, images=min((i + 1) * batch_size, len(images)), of=len(images))
        tokens = torch.cat(chunks)
        prepared.save_features(scratch / f"{split}.features.pt", tokens, prepared.load_image_ids(data_dir, split))
        shapes[split] = list(tokens.shape)
        print(f"features {split}: {list(tokens.shape)} ({time.perf_counter() - t0:.1f} s so far)")
    return {"shapes": shapes, "seconds": round(time.perf_counter() - t0, 2), "device": str(dev)}
