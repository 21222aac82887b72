"""The prepared cache and the stored frozen-encoder tokens as the data set grows: time and peak memory.

    .venv/bin/python benchmarks/bench_prepare.py                              # shapes:N, N = 2k 8k 32k 128k, 224 px
    .venv/bin/python benchmarks/bench_prepare.py --sizes 2000 8000 --extract 2000 --image-size 224

Each row builds `shapes:N` at `--image-size` from nothing, in a child process of its own with a private
`$CAPNAS_CACHE` (deleted after the row), through `prepare_dataset` as every run calls it. "prepare s" is the
build (decode, tokenize, write, sync, rename); "dataset s" is drawing the N scenes' captions before it (the
synthetic set's own cost; a json set reads its file instead). "builder peak RSS" is the child's
`ru_maxrss`: the whole process (Python, torch, the dataset's items, the chunks in flight). For the sizes in
`--extract`, the frozen EfficientNet-Lite0 then runs once over train and val in its sandboxed `features` job
(`ensure_features`): "extract s" is that call, "extract peak RSS" the job's own (pages of the memory-mapped
images it has read count there: they are shared, reclaimable page cache). A row whose cache would not fit in the
free disk (less `--keep-free-gb`) is skipped and says so. The machine's load average is printed beside each row:
other work on a shared machine slows the rows, never their memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def child(args: argparse.Namespace) -> None:
    """One row, in this process: build the cache, optionally extract tokens, print the numbers as JSON."""
    from capnas.tools.data.datasets import load_dataset, prepare_dataset
    from capnas.tools.data.progress import progress_line

    def show(e: dict) -> None:
        print(f"  [{args.n}] {progress_line(e)}", file=sys.stderr, flush=True)

    t0 = time.monotonic()
    dataset = load_dataset(f"shapes:{args.n}")
    dataset_s = time.monotonic() - t0
    t0 = time.monotonic()
    ready = prepare_dataset(dataset, image_size=args.image_size, max_len=28, min_count=1, on_progress=show)
    row = {"n": args.n, "dataset_s": dataset_s, "prepare_s": time.monotonic() - t0, "decoded": ready.decoded,
           "cache_bytes": sum(p.stat().st_size for p in ready.dir.glob("*.npy")),
           "builder_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if args.child_extract:
        from capnas.tools.data.features import ensure_features

        t0 = time.monotonic()
        _, result = ensure_features(ready, "efficientnet_lite0", device=args.device, threads=args.threads,
                                    memory_mb=None, wall_s=6 * 3600, on_progress=show)
        row.update(extract_s=time.monotonic() - t0, extract_peak_rss_mb=(result or {}).get("peak_rss_mb"),
                   tokens_bytes=sum(p.stat().st_size for p in (ready.sandbox_dir / "features").rglob("*.npy")))
    print(json.dumps(row), flush=True)


def run_row(args: argparse.Namespace, n: int) -> dict:
    need = n * 3 * args.image_size**2 * 1.05  # the images; captions and ids are a few percent more
    scratch = Path(tempfile.mkdtemp(prefix=f"capnas-bench-prepare-{n}-", dir=args.scratch))
    free = shutil.disk_usage(scratch).free
    if free - need < args.keep_free_gb * 2**30:
        shutil.rmtree(scratch)
        return {"n": n, "skipped": f"needs {need / 2**30:.1f} GB, {free / 2**30:.1f} GB free"}
    cmd = [sys.executable, __file__, "--child", "--n", str(n), "--image-size", str(args.image_size),
           "--device", args.device] + (["--child-extract"] if n in args.extract else [])
    cmd += ["--threads", str(args.threads)] if args.threads else []
    load = os.getloadavg()[0]
    try:
        out = subprocess.run(cmd, env={**os.environ, "CAPNAS_CACHE": str(scratch)}, stdout=subprocess.PIPE,
                             text=True, check=True).stdout
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {**json.loads(out.strip().splitlines()[-1]), "load": (load + os.getloadavg()[0]) / 2}


def table(rows: list[dict], image_size: int) -> str:
    lines = [f"| N (shapes:N, {image_size} px) | dataset s | prepare s | images/s | builder peak RSS MB | cache GB | "
             "extract s | extract images/s | extract peak RSS MB | tokens GB | load avg |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['n']:,} | skipped: {r['skipped']} |" + " |" * 9)
            continue
        n_extract = round(r["n"] * 0.9)  # train and val: 8 and 1 of every 10 images
        ex = (f"{r['extract_s']:.0f} | {n_extract / r['extract_s']:.1f} | {r['extract_peak_rss_mb'] or 0:,.0f} | "
              f"{r['tokens_bytes'] / 1e9:.2f}" if "extract_s" in r else "- | - | - | -")
        lines.append(f"| {r['n']:,} | {r['dataset_s']:.1f} | {r['prepare_s']:.1f} | {r['n'] / r['prepare_s']:,.0f} | "
                     f"{r['builder_peak_rss_mb']:,.0f} | {r['cache_bytes'] / 1e9:.2f} | {ex} | {r['load']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 32000, 128000])
    parser.add_argument("--extract", type=int, nargs="*", default=[2000, 8000], help="sizes whose tokens are extracted")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the extraction job")
    parser.add_argument("--scratch", default=None, help="where the caches are built (default: the temp dir)")
    parser.add_argument("--keep-free-gb", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-extract", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    rows = []
    for n in args.sizes:
        rows.append(run_row(args, n))
        print(json.dumps(rows[-1]), flush=True)
        if args.out:
            args.out.write_text(json.dumps(rows, indent=1))
    print(table(rows, args.image_size))


if __name__ == "__main__":
    main()
