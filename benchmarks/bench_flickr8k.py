"""Flickr8k quality: each reference model trained with a fixed time budget, then val and test BLEU-4 / CIDEr /
METEOR (pycocoevalcap scale: 0.18 = 18 BLEU points), printed as one table with the budget and the device.

    .venv/bin/python benchmarks/bench_flickr8k.py --device cuda                # the real run: a GPU machine
    .venv/bin/python benchmarks/bench_flickr8k.py --device cpu --limit 100 --image-size 64 --budget-s 30 \\
        --models small_cnn_gru                                                  # does it start? (minutes on a CPU)

Flickr8k is read where it lies (`$CAPNAS_FLICKR8K`, else `../shared/datasets/flickr8k` beside the repository),
never copied; `prepare_dataset` caches the resized tensors (`$CAPNAS_CACHE`). Each model trains through
`train_candidate`, exactly as a search would train a candidate: sandboxed, its own spec's hyperparameters, batch
size and epochs, early stopping on val CIDEr, the best epoch kept. Selection uses val only; the test split is
generated and scored once, for the chosen epoch (`score_test`). Issue 5's bar on a GPU: efficientnet_lstm_attention
reaches test BLEU-4 >= 0.18 and CIDEr >= 0.45 within 15 GPU-minutes (--budget-s 900, the default).
`--limit N` keeps the first N images of each split (a quick check; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COLUMNS = ("bleu_4", "cider", "meteor")


def flickr8k_json() -> Path:
    folder = Path(os.environ.get("CAPNAS_FLICKR8K") or REPO.parent / "shared" / "datasets" / "flickr8k")
    path = folder / "dataset_flickr8k.json"
    if not path.is_file():
        raise SystemExit(f"Flickr8k not found: {path} does not exist (set CAPNAS_FLICKR8K to its folder)")
    return path


def limited(dataset, limit: int | None):
    """The first `limit` images of each split, as a dataset of its own (its own fingerprint, so its own cache)."""
    if not limit:
        return dataset
    kept, seen = [], {"train": 0, "val": 0, "test": 0}
    for item in dataset.items:
        if seen[item.split] < limit:
            kept.append(item)
            seen[item.split] += 1
    fingerprint = hashlib.sha256(f"{dataset.fingerprint}:limit={limit}".encode()).hexdigest()
    return dataset.model_copy(update={"items": kept, "fingerprint": fingerprint,
                                      "source": f"{dataset.source} (first {limit} per split)"})


def main() -> None:
    from capnas.tools.design.reference_models import REFERENCE_SPECS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(REFERENCE_SPECS), choices=list(REFERENCE_SPECS))
    parser.add_argument("--budget-s", type=float, default=900.0, help="training seconds per model (learn + val ids)")
    parser.add_argument("--epochs", type=int, default=None, help="default: each reference spec's own")
    parser.add_argument("--patience", type=int, default=3, help="epochs without a better val CIDEr (0: never stop)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--min-count", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None, help="keep the first N images of each split")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads in each job")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="run dirs go here (default: a fresh temporary folder); the same folder resumes")
    args = parser.parse_args()

    import torch

    from capnas.tools.data.datasets import load_dataset, prepare_dataset
    from capnas.tools.scoring.metrics import CaptionEvaluator
    from capnas.tools.design.reference_models import reference_source
    from capnas.tools.jobs.training import score_test, train_candidate

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA device here (use --device cpu for a quick check)")
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu ({os.cpu_count()} cores)"
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="capnas-bench-flickr8k-"))
    workdir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    dataset = limited(load_dataset(str(flickr8k_json())), args.limit)
    prepared = prepare_dataset(dataset, image_size=args.image_size, max_len=args.max_len, min_count=args.min_count)
    print(f"{dataset.source}: {prepared.split_sizes}, vocabulary {len(prepared.vocab)}, {args.image_size} px, "
          f"max_len {args.max_len} (prepared in {time.perf_counter() - t0:.0f} s, "
          f"{'built' if prepared.built else 'cached'}); run dirs in {workdir}", flush=True)

    rows = []
    with CaptionEvaluator() as evaluator:
        for name in args.models:
            spec = REFERENCE_SPECS[name]
            epochs = args.epochs or spec.epochs
            started = time.perf_counter()

            def progress(event: dict, name: str = name) -> None:
                if event.get("event") in ("epoch", "val", "early_stop"):
                    keys = ("epoch", "loss", "images_per_s", "cider", "partial")
                    fields = {k: v for k, v in event.items() if k in keys}
                    print(f"  {name} {event['event']}: {fields}", flush=True)

            print(f"{name}: {spec.describe()}, batch {spec.batch_size}, up to {epochs} epochs", flush=True)
            result = train_candidate(
                reference_source(name), prepared, dataset, workdir / name, hparams=spec.prm(), epochs=epochs,
                train_time_s=args.budget_s, device=args.device, batch_size=spec.batch_size,
                patience=args.patience or None, threads=args.threads, evaluator=evaluator, on_event=progress)
            if not result.ok:
                print(f"  {name} failed ({result.exit_reason}): {result.error}", flush=True)
                rows.append((name, result, None, time.perf_counter() - started))
                continue
            test = score_test(result, prepared, dataset, evaluator=evaluator, threads=args.threads)
            rows.append((name, result, test, time.perf_counter() - started))

    print()
    print(f"Flickr8k, {datetime.date.today().isoformat()}, device {args.device}: {device_name}, "
          f"budget {args.budget_s:.0f} s of training per model, {args.image_size} px, max_len {args.max_len}")
    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    header = (f"{'model':<28} {'params':>10} {'epochs':>7} {'best':>5} {'train s':>8} {'img/s':>7} "
              + " ".join(f"{'val ' + k:>11}" for k in COLUMNS) + " " + " ".join(f"{'test ' + k:>12}" for k in COLUMNS))
    print(header)
    for name, result, test, seconds in rows:
        train_s = sum(p.train_s + p.gen_s for p in result.curve)
        vals = " ".join(f"{result.metrics.get(k, float('nan')):>11.4f}" for k in COLUMNS)
        tests = " ".join(f"{(test.metrics.get(k, float('nan')) if test else float('nan')):>12.4f}" for k in COLUMNS)
        print(f"{name:<28} {result.params or 0:>10,} {len(result.curve):>7} {result.best_epoch or '-':>5} "
              f"{train_s:>8.0f} {result.images_per_s or 0:>7.0f} {vals} {tests}"
              + ("" if result.ok else f"  ({result.exit_reason})"))


if __name__ == "__main__":
    main()
