"""The `snippet` entry, inside the walls: a short script the coder wrote to try its draft, run as `__main__`.

The script finds, as globals, what a candidate meets in training: `images` (float32 [B, 3, H, W] in [0, 1]) and
`captions` (int64 [B, Ncap, L]), a tiny batch of the prepared training split (read from the read-only mount, never
val or test references), and `contract` (the contract as a dict: shapes, vocabulary, special ids, budgets). The
draft it is trying, when one was given, is `candidate.py` beside it (`import candidate`). The result is the exit
status; what it prints is the job's stdout and stderr tail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from capnas.sandbox.job import Job

SNIPPET_FILE = "snippet.py"  # in scratch, beside the optional candidate.py


def tiny_batch(data_dir: Path | None, batch_size: int) -> dict[str, Any]:
    """The first `batch_size` training images (as the model's input) and their captions; empty without data."""
    if data_dir is None or batch_size <= 0:
        return {}
    from capnas.sandbox.prepared import load_captions, load_images  # torch only past the walls

    images = load_images(data_dir, "train")[:batch_size].float().div_(255.0)
    return {"images": images, "captions": load_captions(data_dir, "train")[:batch_size].clone()}


def run(job: Job, run_main: Callable[[str, dict[str, Any]], int]) -> dict[str, Any]:
    """Run `<scratch>/snippet.py` with the batch and the contract as globals; `run_main` is the harness's
    `python FILE` runner. Threads as the job asks (a snippet shares the cores with the round's other jobs)."""
    threads = job.args.get("threads")
    if threads:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    script = job.scratch / SNIPPET_FILE
    init = {"contract": job.args.get("contract"), **tiny_batch(job.data_dir, int(job.args.get("batch_size", 4)))}
    return {"exit_status": run_main(str(script), init)}
