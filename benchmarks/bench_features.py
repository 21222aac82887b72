"""Stored frozen-encoder tokens against images: one frozen EfficientNet-Lite0 candidate trained both ways, side by
side in one run, on the same prepared data, device, threads, seed and epochs.

    .venv/bin/python benchmarks/bench_features.py                        # CPU: shapes:400 at 64 px, 3 epochs
    .venv/bin/python benchmarks/bench_features.py --device cuda --dataset flickr8k --image-size 224 --epochs 10

"images" is how every job trained before the cache: the frozen backbone runs on every batch of every epoch.
"tokens" is `capnas.tools.data.features`: the backbone runs once over train and val (the "extract" row, paid once per
prepared dataset and shared by every later job of every run), then each job trains the decoder on the stored
tokens. Both rows are `train_candidate` as the trainer node calls it: sandboxed, scored outside, all metrics.
"job wall s" is the whole training call (start-up, every epoch, val generation, scoring); images/s is learn
only. The last column is val CIDEr: the two rows should agree (the same model; tokens are float16 on disk).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="shapes:400", help="shapes:N, flickr8k, or a captions json")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per job (default: all cores)")
    parser.add_argument("--decoder", default="lstm", choices=["lstm", "gru", "transformer"])
    args = parser.parse_args()

    from bench_concurrency import dataset_spec

    from capnas.tools.design import archspec
    from capnas.tools.design.components import get_component
    from capnas.tools.design.components.options import EfficientNetLite0Options
    from capnas.tools.data.datasets import load_dataset, prepare_dataset
    from capnas.tools.data.features import ensure_features
    from capnas.tools.scoring.metrics import CaptionEvaluator
    from capnas.tools.jobs.training import train_candidate

    # A private prepared-data cache, so the extraction below is a fresh one (untimed: decoding the images).
    root = Path(tempfile.mkdtemp(prefix="capnas-bench-features-"))
    dataset = load_dataset(dataset_spec(args.dataset))
    prepared = prepare_dataset(dataset, image_size=args.image_size, max_len=args.max_len, cache_root=root / "cache")
    spec = archspec.ArchSpec(encoder=EfficientNetLite0Options(freeze=True),
                             decoder=get_component(args.decoder).options(), batch_size=args.batch_size,
                             epochs=args.epochs)
    code = archspec.render(spec)
    t0 = time.monotonic()
    key, extracted = ensure_features(prepared, "efficientnet_lite0", device=args.device, threads=args.threads)
    extract_s = time.monotonic() - t0

    rows = []
    with CaptionEvaluator() as evaluator:
        for name, stored in (("images", None), ("tokens", key)):
            t0 = time.monotonic()
            result = train_candidate(code, prepared, dataset, root / name, hparams=spec.prm(), epochs=args.epochs,
                                     batch_size=args.batch_size, patience=None, train_time_s=None,
                                     device=args.device, threads=args.threads, evaluator=evaluator,
                                     features=stored)
            if not result.ok:
                sys.exit(f"{name}: training failed ({result.exit_reason}): {result.error}")
            rows.append({"name": name, "wall_s": time.monotonic() - t0, "images_per_s": result.images_per_s,
                         "train_s": sum(p.train_s for p in result.curve), "cider": result.metrics["cider"]})

    n_train, n_val = prepared.split_sizes["train"], prepared.split_sizes["val"]
    print(f"\nfrozen EfficientNet-Lite0 + {args.decoder}: images vs stored tokens — {datetime.date.today()}, device "
          f"{args.device}, threads {args.threads or 'all'}, {args.dataset} at {args.image_size}px ({n_train} train, "
          f"{n_val} val), {args.epochs} epochs, batch {args.batch_size}\n")
    print(f"extract (once per prepared dataset): {extract_s:.1f} s wall, "
          f"tokens {extracted['shapes']['train'][1:] if extracted else '?'} per image\n")
    print("| inputs | job wall s | learn s | train images/s | vs images | val CIDEr |")
    print("|---|---:|---:|---:|---:|---:|")
    base = rows[0]
    for r in rows:
        print(f"| {r['name']} | {r['wall_s']:.1f} | {r['train_s']:.1f} | {r['images_per_s']:.0f} | "
              f"{base['wall_s'] / r['wall_s']:.2f}x | {r['cider']:.3f} |")
    print(f"\nrun dirs, prepared data and tokens: {root} (delete when done)")


if __name__ == "__main__":
    main()
