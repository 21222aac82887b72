"""Candidates fully trained and evaluated per hour at several concurrencies, side by side in one run.

Each concurrency runs the real graph (planner, a `Send` branch per candidate, sandboxed probe and training,
scoring outside the sandbox, critic) in `random` generation, so no LLM time is mixed in, on the same candidates:
random draws are seeded by a candidate's index in the run, so concurrency 1 and 4 train the very same specs.
Every candidate trains a fixed number of epochs (no time cap; early stopping on val CIDEr as in a search).

    .venv/bin/python benchmarks/bench_concurrency.py                       # CPU: shapes, concurrency 1 and 2
    .venv/bin/python benchmarks/bench_concurrency.py --device cuda --dataset flickr8k --image-size 224 \\
        --families efficientnet_lite0 --frozen-encoders --max-params 50000000 --candidates 16 --epochs 10 \\
        --concurrency 1 2 4 8                                                                 # the GPU recipe

On CPU the jobs of a round share the cores (threads per job = cores // concurrency), so the gain is what
overlapping each job's serial parts buys: interpreter and torch start-up, the probe, val generation, scoring.
GPU utilization is sampled with nvidia-smi every 0.5 s while a row runs (blank on CPU). "training CPU s" sums
the CPU seconds of the training jobs' process trees (from each `train_result.json`): the same work on fewer
threads per job costs fewer CPU seconds, so it is not a utilization.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class GpuSampler:
    """Mean GPU utilization (%) over a block, from `nvidia-smi`; None where there is none."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True)
            if out.returncode == 0:
                values = [float(v) for v in out.stdout.split()]
                self.samples.append(sum(values) / len(values))

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def dataset_spec(name: str) -> str:
    if name != "flickr8k":
        return name
    folder = Path(os.environ.get("CAPNAS_FLICKR8K") or REPO.parent / "shared" / "datasets" / "flickr8k")
    return str(folder / "dataset_flickr8k.json")


def settings_for(args, concurrency: int, root: Path):
    """The run of one row, as `capnas run` would build it from these flags: the same settings object, so the
    cache prepared before the rows (image size, caption length, vocabulary threshold) is the one the run reads."""
    from capnas.settings import RunSettings

    return RunSettings.load(None, dict(
        dataset=dataset_spec(args.dataset), image_size=args.image_size, max_len=args.max_len, min_count=args.min_count,
        max_latency_ms=10_000, max_params=args.max_params, families=args.families,
        frozen_encoders=args.frozen_encoders, max_candidates=args.candidates, min_candidates=0, epochs=args.epochs,
        train_time_s=86_400, time_budget=24 * 60, run_dir=str(root / f"c{concurrency}"), generation="random",
        device=args.device, concurrency=concurrency, seed=args.seed))


def run_one(args, concurrency: int, root: Path) -> dict:
    from capnas import runner
    from capnas.graph.journal import Journal

    settings = settings_for(args, concurrency, root)
    ctx, task = settings.context(None), settings.task()
    started = time.monotonic()
    with GpuSampler() as gpu:
        summary = runner.start(ctx, task.model_dump(), run_id=f"c{concurrency}")
    wall = time.monotonic() - started
    cands = Journal(Path(ctx.run_dir) / "journal.sqlite").candidates(f"c{concurrency}")
    cpu_s = 0.0
    for c in cands:
        result = Path(c.artifacts or "/nonexistent") / "train_result.json"
        if result.is_file():
            cpu_s += json.loads(result.read_text()).get("sandbox", {}).get("cpu_s") or 0.0
    trained = [c for c in cands if c.status == "trained"]
    return {"concurrency": concurrency, "candidates": len(cands), "trained": len(trained), "wall_s": wall,
            "per_hour": len(trained) / wall * 3600, "cpu_s": cpu_s, "gpu_util": gpu.mean,
            "best_cider": max((c.metrics or {}).get("cider", 0.0) for c in trained) if trained else None,
            "status": summary["status"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="shapes:1000", help="shapes:N, flickr8k, or a captions json")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--candidates", type=int, default=4, help="candidates per row (the same ones in each)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=None, help="default: as capnas run (32 for shapes, 224 photos)")
    parser.add_argument("--max-len", type=int, default=16, help="caption length (the runs of the recorded table used 16)")
    parser.add_argument("--min-count", type=int, default=None, help="vocabulary threshold (default: as capnas run)")
    parser.add_argument("--max-params", type=int, default=5_000_000)
    parser.add_argument("--families", nargs="*", default=[], help="e.g. small_cnn gru: random draws stay inside them")
    parser.add_argument("--frozen-encoders", action="store_true",
                        help="pretrained encoders stay frozen: they train on tokens extracted once (the recipe)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="keep the workspaces here (default: a temp dir)")
    args = parser.parse_args()

    from capnas.tools.data.datasets import task_data
    from capnas.tools.jobs.slots import cpu_count

    # The shared prepared data is built once, before any row is timed (each run then only reads the cache), and so
    # are frozen-encoder tokens for --frozen-encoders: a row that extracted them would pay for the rows after it.
    root = args.keep or Path(tempfile.mkdtemp(prefix="capnas-bench-concurrency-"))
    _, prepared = task_data(settings_for(args, args.concurrency[0], root).task())
    extract_s = None
    if args.frozen_encoders:
        from capnas.tools.data.features import FROZEN_ENCODERS, ensure_features

        t0 = time.monotonic()
        for encoder in FROZEN_ENCODERS:
            if not args.families or encoder in args.families:
                ensure_features(prepared, encoder, device=args.device)
        extract_s = time.monotonic() - t0
    rows = [run_one(args, c, root) for c in args.concurrency]

    base = rows[0]["per_hour"] or float("nan")
    print(f"\ncandidates trained and evaluated per hour — {datetime.date.today()}, device {args.device}, "
          f"{cpu_count()} cores, dataset {args.dataset} at {args.image_size}px, {args.candidates} random candidates "
          f"(seed {args.seed}{', frozen encoders' if args.frozen_encoders else ''}), {args.epochs} epochs each\n")
    if extract_s is not None:
        print(f"frozen-encoder tokens extracted before the rows (or found stored): {extract_s:.1f} s\n")
    print("| concurrency | trained / run | wall s | per hour | vs first row | training CPU s | GPU util | best val CIDEr |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        gpu = f"{r['gpu_util']:.0f}%" if r["gpu_util"] is not None else ""
        best = f"{r['best_cider']:.3f}" if r["best_cider"] is not None else ""
        print(f"| {r['concurrency']} | {r['trained']} / {r['candidates']} | {r['wall_s']:.0f} | {r['per_hour']:.1f} | "
              f"{r['per_hour'] / base:.2f}x | {r['cpu_s']:.0f} | {gpu} | {best} |")
    print(f"\nworkspaces: {root}")


if __name__ == "__main__":
    main()
