"""The `features` entry, INSIDE the sandbox: run a frozen encoder once over a split's images and save its tokens.

The parent (`capnas.tools.data.features`) writes into `candidate.py` a rendered module whose `build_encoder()` is the
frozen extractor, the very code every candidate with that encoder runs; this entry calls it in eval mode over
the prepared images, read batch by batch, and writes `<split>.features.npy` (float16 `[N, T, D]`, prepared
order) and the ids of its images into the scratch dir, each batch at its offset: the job holds one batch of
images and tokens, never a split's (COCO's train tokens are 12 GB). The parent then moves the files beside the prepared data, where
training jobs read them instead of images.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from capnas.sandbox import prepared
from capnas.sandbox.train_loop import Emit, load_candidate, set_threads, to_float


@torch.no_grad()
def extract(scratch: Path, data_dir: Path, args: dict[str, Any], emit: Emit, device: str = "cpu") -> dict[str, Any]:
    """args: splits (default train and val), batch_size 64, threads None, channels_last True. Returns
    {split: [N, T, D]}. Channels-last is the layout oneDNN's CPU convolutions are fastest in (benchmarks/
    bench_extract.py measures it against the default); the extractor is our own component, so no `.view` in
    generated code can trip over the layout."""
    t0 = time.perf_counter()
    dev = torch.device(device)
    set_threads(args.get("threads"))
    layout = torch.channels_last if args.get("channels_last", True) else torch.contiguous_format
    encoder = load_candidate(scratch / "candidate.py").build_encoder().to(dev, memory_format=layout).eval()
    batch_size = int(args.get("batch_size", 64))
    shapes: dict[str, list[int]] = {}
    for split in args.get("splits") or ["train", "val"]:
        n = len(prepared.load_image_ids(data_dir, split))
        path = scratch / f"{split}.features.npy"
        writer: prepared.RowWriter | None = None
        for i, chunk in enumerate(prepared.image_batches(data_dir, split, batch_size)):
            tokens = encoder(to_float(chunk, dev).contiguous(memory_format=layout)).to(torch.float16).cpu()
            if writer is None:  # the token shape is known once the encoder has run
                writer = prepared.RowWriter(path, np.float16, (n, *tokens.shape[1:]))
            writer.write(i * batch_size, tokens.numpy())
            emit("features_step", split=split, images=min((i + 1) * batch_size, n), of=n)
        if writer is None:
            raise RuntimeError(f"split {split!r} has no images to extract features from")
        writer.close()
        ids = np.asarray(prepared.load_image_ids(data_dir, split), np.int64)
        prepared.write_array(prepared.features_ids_file(path), ids)
        shapes[split] = list(writer.shape)
        print(f"features {split}: {list(writer.shape)} ({time.perf_counter() - t0:.1f} s so far)")
    return {"shapes": shapes, "seconds": round(time.perf_counter() - t0, 2), "device": str(dev)}
