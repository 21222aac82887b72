"""The CPU recipe for real images, measured: what `capnas run --dataset PATH.json --images DIR --frozen-encoders
--families efficientnet_lite0,...` spends before and during a search, step by step, printed as one table.

    .venv/bin/python benchmarks/bench_recipe.py --threads 1                  # full Flickr8k, 224 px (tens of minutes)
    .venv/bin/python benchmarks/bench_recipe.py --threads 1 --limit 64       # does it run? (a minute or two)
    .venv/bin/python benchmarks/bench_recipe.py --dataset my.json --images my_images/   # your own data set

Rows, in the order a run meets them:

- prepare: read the captions json, check the image folder, decode + resize every image and tokenize every caption
  (train, val and test) into the prepared cache, once per (data set, image size, max_len, min_count). Always a
  fresh build here: the cache root is a new temporary `$CAPNAS_CACHE` unless `--cache DIR` is given (then a cache
  hit is said so in the row).
- extract: the frozen ImageNet EfficientNet-Lite0 run once over train + val, sandboxed (`ensure_features`, the
  job the first frozen-EfficientNet candidate of a run starts), stored as float16 tokens [N, 49, 1280] beside the
  prepared data. Paid once per prepared data set; every later candidate, of this run or any later one, reuses it.
- one row per decoder family (lstm, gru, transformer), each with that family's default options (the middle of
  its space: lstm/gru 256-d embedding, 512 hidden, 1 layer, attention; transformer d_model 256, 2 layers, 4
  heads) on the frozen encoder, trained by `train_candidate` exactly as the trainer node trains a candidate
  (sandboxed, on the stored tokens, val generated and scored outside): train images/s and seconds of one epoch
  over the training split count `learn` only; "val gen s" is greedy captioning of the val split after the
  epoch; "wall s" is the whole call (start-up, loading tokens, training, val generation, scoring). Params
  count the frozen backbone too (the contract's budget, `--max-params`, counts both). Val CIDEr after
  `--epochs` (default 1) epochs.

Defaults are the recipe's: 224 px (what the pretrained encoder was trained at), min_count 5 (Flickr8k: about 2.5k
words), max_len 20 rather than `capnas run`'s default of 28. 20 tokens hold 18 words plus BOS/EOS: 96.5 % of
Flickr8k's train captions fit whole (28 holds 99.9 %) and the rest lose only their tail, while every recurrent
step and every position of a transformer is paid for every caption, padded or not: 19 decoder steps per caption
instead of 27. The recipe therefore passes `--max-len 20` to `capnas run` too (the cache is keyed by it).
`--threads 1` matches `capnas run --concurrency 2` on 2 cores (one thread per job) and is the robust choice on a
shared machine; without it jobs get torch's default (one thread per core). The 1-minute load average,
sampled every 10 s while a row ran (mean and range), is printed beside it: on shared cores it moves the numbers more than anything else.
`--limit N` keeps the first N images of each split (a quick check: its numbers say nothing about the full set).
`--cache ~/.cache/capnas` builds (or reuses) the prepared data and tokens where `capnas run` looks for them, so the
measurement doubles as the warm-up before a search on your own data.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

FAMILIES = ("lstm", "gru", "transformer")


def load1() -> float:
    return os.getloadavg()[0]


class LoadSampler:
    """The 1-minute load average every `every_s` seconds, in a background thread: `span(t0, t1)` is the mean,
    min and max of the samples taken between two monotonic times (the load beside each row)."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._thread.start()

    def _run(self, every_s: float) -> None:
        while True:
            self.samples.append((time.monotonic(), load1()))
            if self._stop.wait(every_s):
                return

    def span(self, t0: float, t1: float) -> str:
        inside = [v for t, v in self.samples if t0 <= t <= t1] or [load1()]
        return f"{sum(inside) / len(inside):.1f} ({min(inside):.1f}–{max(inside):.1f})"

    def stop(self) -> None:
        self._stop.set()


def disk_bytes(folder: Path) -> int:
    """Bytes on disk under `folder`, each inode once (the sandbox view holds hard links to the same files)."""
    seen, total = set(), 0
    for directory, _, files in os.walk(folder):
        for name in files:
            st = os.lstat(os.path.join(directory, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="flickr8k", help="flickr8k (read in place) or a Karpathy/COCO json")
    parser.add_argument("--images", default=None, help="image folder of a json dataset (default: images/ beside it)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--max-len", type=int, default=20, help="caption tokens, BOS and EOS included (see above)")
    parser.add_argument("--min-count", type=int, default=5)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--epochs", type=int, default=1, help="epochs per decoder family")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per job (default: torch's own)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=None, help="keep the first N images of each split")
    parser.add_argument("--cache", type=Path, default=None,
                        help="cache root to use ($CAPNAS_CACHE); default: a fresh temporary one, removed at the end")
    parser.add_argument("--keep", action="store_true", help="keep the run dirs (and the temporary cache)")
    args = parser.parse_args()

    from bench_concurrency import dataset_spec
    from bench_flickr8k import limited

    fresh = args.cache is None
    root = Path(tempfile.mkdtemp(prefix="capnas-bench-recipe-"))
    cache = args.cache or root / "cache"
    os.environ["CAPNAS_CACHE"] = str(cache)  # read by the prepared cache at call time

    import torch

    from capnas.settings import RunSettings
    from capnas.tools.data.datasets import task_data
    from capnas.tools.data.features import ensure_features
    from capnas.tools.data.prepare import prepare_dataset
    from capnas.tools.data.sources import load_dataset
    from capnas.tools.design import archspec
    from capnas.tools.design.components import get_component
    from capnas.tools.design.components.options import EfficientNetLite0Options
    from capnas.tools.jobs.training import train_candidate
    from capnas.tools.scoring.metrics import CaptionEvaluator

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA device here")
    settings = RunSettings.load(None, {
        "dataset": dataset_spec(args.dataset), "images": args.images, "image_size": args.image_size,
        "max_len": args.max_len, "min_count": args.min_count, "frozen_encoders": True,
        "families": ["efficientnet_lite0", *args.families], "device": args.device, "threads": args.threads})
    task = settings.task()
    rows: list[dict] = []
    loads = LoadSampler()

    def progress(label: str):
        last = [0.0]

        def on_event(event: dict) -> None:
            kind, now = event.get("event"), time.monotonic()
            if kind in ("epoch", "val", "stopping", "generated") or (
                    kind in ("step", "features_step") and now - last[0] > 60):
                last[0] = now
                fields = {k: v for k, v in event.items() if k not in ("event", "weights", "time")}
                print(f"  [{time.strftime('%H:%M:%S')} load {load1():.1f}] {label} {kind}: {fields}", flush=True)
        return on_event

    try:
        # 1. prepare (the planner does this once per run; later runs find the cache)
        t0 = time.monotonic()
        if args.limit:
            dataset = limited(load_dataset(task.dataset, Path(task.images) if task.images else None), args.limit)
            prepared = prepare_dataset(dataset, image_size=task.image_size, max_len=task.max_len,
                                       min_count=task.min_count)
        else:
            dataset, prepared = task_data(task)
        prepare_s = time.monotonic() - t0
        sizes = prepared.split_sizes
        n_all = sum(sizes.values())
        print(f"{dataset.source}: {sizes}, vocabulary {len(prepared.vocab)}, {task.image_size} px, max_len "
              f"{task.max_len}, min_count {task.min_count}: prepared in {prepare_s:.1f} s "
              f"({'built' if prepared.built else 'cache hit'}) in {prepared.dir}", flush=True)
        rows.append({"step": f"prepare ({'fresh build' if prepared.built else 'cache hit'})", "wall_s": prepare_s,
                     "images": n_all, "ips": prepared.decoded / prepare_s if prepared.built else None,
                     "load": loads.span(t0, time.monotonic())})

        # 2. extract the frozen encoder's tokens of train + val (the first frozen-EfficientNet job of a run)
        t0 = time.monotonic()
        key, extracted = ensure_features(prepared, "efficientnet_lite0", device=args.device, threads=args.threads,
                                         on_event=progress("extract"))
        extract_s = time.monotonic() - t0
        n_tv = sizes["train"] + sizes["val"]
        rows.append({"step": f"extract tokens, train+val ({'sandboxed' if extracted else 'already stored'})",
                     "wall_s": extract_s, "images": n_tv, "ips": n_tv / extract_s if extracted else None,
                     "load": loads.span(t0, time.monotonic())})
        print(f"tokens {extracted['shapes']['train'][1:]} per image, {extract_s:.1f} s wall (in the job: "
              f"{extracted['seconds']:.1f} s, tier {extracted['tier']})" if extracted
              else f"tokens already stored ({key}), {extract_s:.1f} s", flush=True)

        # 3. one mid-size candidate per decoder family, trained on the stored tokens
        with CaptionEvaluator() as evaluator:
            for family in args.families:
                spec = archspec.ArchSpec(encoder=EfficientNetLite0Options(freeze=True),
                                         decoder=get_component(family).options(), batch_size=args.batch_size,
                                         epochs=args.epochs)
                print(f"{family}: {spec.describe()}, batch {args.batch_size}, {args.epochs} epoch(s)", flush=True)
                t0 = time.monotonic()
                result = train_candidate(archspec.render(spec), prepared, dataset, root / "runs" / family,
                                         hparams=spec.prm(), epochs=args.epochs, batch_size=args.batch_size,
                                         patience=None, train_time_s=None, device=args.device, threads=args.threads,
                                         evaluator=evaluator, features=key, on_event=progress(family))
                wall = time.monotonic() - t0
                if not result.ok:
                    print(f"  {family} failed ({result.exit_reason}): {result.error}", flush=True)
                    rows.append({"step": f"{family} (failed: {result.exit_reason})", "wall_s": wall,
                                 "load": loads.span(t0, time.monotonic())})
                    continue
                epochs = len(result.curve)
                rows.append({"step": f"train {family}", "wall_s": wall, "images": sizes["train"],
                             "ips": result.images_per_s, "epoch_s": sum(p.train_s for p in result.curve) / epochs,
                             "gen_s": sum(p.gen_s for p in result.curve) / epochs, "params": result.params,
                             "cider": result.metrics.get("cider"), "load": loads.span(t0, time.monotonic())})
                print(f"  {family}: {result.images_per_s:.1f} images/s, epoch {rows[-1]['epoch_s']:.0f} s, "
                      f"val CIDEr {rows[-1]['cider']:.3f}, params {result.params:,}", flush=True)

        prepared_bytes = disk_bytes(prepared.dir) - disk_bytes(prepared.sandbox_dir / "features")
        tokens_bytes = disk_bytes(prepared.sandbox_dir / "features")
    finally:
        loads.stop()
        if not args.keep:  # the run dirs, and the cache when it is the temporary one (--cache lies outside root)
            shutil.rmtree(root, ignore_errors=True)

    cpu = platform.processor() or platform.machine()
    print(f"\ncapnas CPU recipe — {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, {platform.node()}, "
          f"{os.cpu_count()} cores ({cpu}), device {args.device}, threads {args.threads or 'torch default'}; "
          f"{dataset.source}: {sizes['train']} train / {sizes['val']} val / {sizes['test']} test images, "
          f"{task.image_size} px, max_len {task.max_len}, min_count {task.min_count} (vocabulary "
          f"{len(prepared.vocab)}), batch {args.batch_size}, {args.epochs} epoch(s) per family")
    print(f"command: {shlex.join(['.venv/bin/python', 'benchmarks/bench_recipe.py', *sys.argv[1:]])}\n")
    print("| step | wall s | images | images/s | epoch s (learn) | val gen s | params | val CIDEr | load 1-min mean (range) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")

    def num(value, fmt):
        return "" if value is None else format(value, fmt)

    for r in rows:
        print(f"| {r['step']} | {r['wall_s']:.1f} | {num(r.get('images'), ',')} | {num(r.get('ips'), '.1f')} | "
              f"{num(r.get('epoch_s'), '.0f')} | {num(r.get('gen_s'), '.0f')} | {num(r.get('params'), ',')} | "
              f"{num(r.get('cider'), '.3f')} | {r['load']} |")
    print(f"\ndisk: prepared cache {gib(prepared_bytes)} (uint8 images of every split, captions), "
          f"tokens {gib(tokens_bytes)} (float16, train + val)"
          + ("" if (args.keep or not fresh) else f"; the temporary cache {cache} was removed"))


if __name__ == "__main__":
    main()
