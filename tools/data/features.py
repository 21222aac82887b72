"""Frozen-encoder features: computed once per prepared dataset, shared read-only by every training job.

A candidate whose encoder is the frozen ImageNet EfficientNet-Lite0 computes the same tokens for an image in every
epoch of every job: the backbone has no gradients and stays in eval mode, and images are not augmented. So
`ensure_features` runs that encoder once over the train and val images (a sandboxed `features` job, on the
device the caller holds) and stores the tokens beside the prepared data, in the part jobs may read:

    <prepared>/sandbox_view/features/<key>/{train,val}.features.npy     float16 [N, T, 1280]
    <prepared>/sandbox_view/features/<key>/{train,val}.image_ids.npy    int64 [N], the images' order

A training job given the key feeds those tokens where images would go, and the frozen encoder passes them through
(`capnas.sandbox.train_loop`). The test split, `capnas caption` and exported models still run the whole network
on images, so a test score checks the shortcut end to end.

The key names the extractor and a hash of its source, so a changed snippet never reuses old tokens. Concurrent
callers take a file lock: the first extracts, the others then find the folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from capnas.sandbox import Job, Limits, SandboxResult, prepared as prepared_format, run_sandboxed
from capnas.sandbox.job import CANDIDATE_FILE
from capnas.tools.design import archspec
from capnas.tools.design.components import get_component
from capnas.tools.design.components.options import EfficientNetLite0Options, GRUOptions
from capnas.tools.data.prepare import PreparedDataset, make_readable_by_all
from capnas.tools.data.progress import OnProgress, StepProgress

SPLITS = ("train", "val")  # what training reads; the test split always goes through the images
FROZEN_ENCODERS = {"efficientnet_lite0": EfficientNetLite0Options(freeze=True)}


class FeaturesError(RuntimeError):
    """The extraction job failed; the message carries its exit reason and the end of its stderr."""


def cached_encoder(spec: archspec.ArchSpec | None) -> str | None:
    """The frozen encoder whose stored tokens can stand in for this spec's images; None when the encoder trains
    (or the code is not rendered from a spec, so nothing is known about it)."""
    if spec is None:
        return None
    options = FROZEN_ENCODERS.get(spec.encoder.name)
    return spec.encoder.name if options is not None and spec.encoder == options else None


def extractor_code(encoder: str) -> str:
    """A rendered caption-net-v1 module whose `build_encoder()` is the frozen encoder (the decoder is unused)."""
    return archspec.render(archspec.ArchSpec(encoder=FROZEN_ENCODERS[encoder], decoder=GRUOptions()))


def features_key(encoder: str) -> str:
    """e.g. 'efficientnet_lite0-3f2a9c1d0b7e': the encoder and a hash of the code that computes its tokens."""
    digest = hashlib.sha256(get_component(encoder).source().encode()).hexdigest()[:12]
    return f"{encoder}-{digest}"


def features_ready(prepared: PreparedDataset, key: str) -> bool:
    files = [prepared_format.features_file(prepared.sandbox_dir, key, s) for s in SPLITS]
    return all(f.is_file() and prepared_format.features_ids_file(f).is_file() for f in files)


def ensure_features(prepared: PreparedDataset, encoder: str, *, device: str = "cpu", threads: int | None = None,
                    memory_mb: int | None = 8192, wall_s: float = 3600.0, scratch_root: str | Path | None = None,
                    runner: Callable[..., SandboxResult] | None = None,
                    on_event: Callable[[dict[str, Any]], None] | None = None,
                    on_progress: OnProgress | None = None) -> tuple[str, dict[str, Any] | None]:
    """The key of `encoder`'s stored tokens for `prepared`, extracting them first if they are not there yet.
    Returns (key, the extraction job's result), the result None when the tokens were already stored.
    `on_event` gets the job's own events; `on_progress` the extraction's progress (`capnas.tools.data.progress`)."""
    if encoder not in FROZEN_ENCODERS:
        raise ValueError(f"no stored features for encoder {encoder!r}; frozen encoders: {sorted(FROZEN_ENCODERS)}")
    key = features_key(encoder)
    if features_ready(prepared, key):
        return key, None
    with FileLock(str(prepared.dir / f".features-{key}.lock")):
        if features_ready(prepared, key):  # another job extracted them while this one waited
            return key, None
        return key, _extract(prepared, encoder, key, device, threads, memory_mb, wall_s, scratch_root, runner,
                             _with_progress(on_event, on_progress))


def _with_progress(on_event: Callable[[dict[str, Any]], None] | None,
                   on_progress: OnProgress | None) -> Callable[[dict[str, Any]], None] | None:
    """The job's events, with its `features_step` events (images done of a split) also counted as progress."""
    if on_progress is None:
        return on_event
    steps: dict[str, StepProgress] = {}

    def handle(e: dict[str, Any]) -> None:
        if e.get("event") == "features_step":
            split = str(e.get("split"))
            if split not in steps:
                steps[split] = StepProgress("extract", int(e["of"]), on_progress, split)
                steps[split].start()
            steps[split].update(int(e["images"]))
        if on_event is not None:
            on_event(e)

    return handle


def _extract(prepared, encoder, key, device, threads, memory_mb, wall_s, scratch_root, runner, on_event):
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="capnas-features-", dir=scratch_root))
    try:
        (scratch / CANDIDATE_FILE).write_text(extractor_code(encoder), encoding="utf-8")
        job = Job(entry="features", scratch=scratch, data_dir=prepared.sandbox_dir, device=device,
                  args={"splits": list(SPLITS), "threads": threads},
                  limits=Limits(wall_s=wall_s, memory_mb=memory_mb))
        result = (runner or run_sandboxed)(job, on_event)
        if not result.ok or not isinstance(result.result, dict):
            tail = "\n".join(result.stderr_tail.strip().splitlines()[-10:])
            raise FeaturesError(f"extracting {encoder} features of {prepared.dir.name} failed "
                                f"({result.exit_reason}); candidates keep training on images:\n{tail}")
        # Built in a folder beside the final one and renamed into place: a crash never leaves half a cache.
        final = prepared_format.features_file(prepared.sandbox_dir, key, SPLITS[0]).parent
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
        for split in SPLITS:
            tokens = scratch / f"{split}.features.npy"
            for path in (tokens, prepared_format.features_ids_file(tokens)):
                shutil.move(str(path), staging / path.name)
        make_readable_by_all(staging)  # jobs run as their own uid
        os.chmod(final.parent, 0o755)
        shutil.rmtree(final, ignore_errors=True)  # what is left of a folder someone emptied by hand (we hold the lock)
        staging.rename(final)
        return {**result.result, "wall_s": round(time.monotonic() - started, 2), "key": key, "tier": result.tier,
                "layers": result.layers, "cpu_s": result.cpu_s,
                "peak_rss_mb": result.peak_rss_mb, "peak_memory_mb": result.peak_memory_mb}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
