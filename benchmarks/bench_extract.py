"""Token extraction in the channels-last layout against PyTorch's default one: the real sandboxed `features` job
(the one `ensure_features` starts) over the same prepared images, the two layouts alternating (A B A B ...), so a
change of the machine's load hits both.

    .venv/bin/python benchmarks/bench_extract.py                           # shapes:400 at 224 px, 1 thread, 2 rounds
    .venv/bin/python benchmarks/bench_extract.py --dataset shapes:2000 --threads 2 --rounds 3

images/s counts train + val images over the job's own extraction seconds (model load included, process start
not); "job wall s" is the whole sandboxed job. The last line compares the tokens of the two layouts (float16 on
disk): they should agree to float16 rounding, since only the memory layout differs.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LAYOUTS = (("default", False), ("channels_last", True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="shapes:400", help="shapes:N or a captions json")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="jobs per layout, alternating")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    import numpy as np

    from capnas.sandbox import Job, Limits, run_sandboxed
    from capnas.sandbox.job import CANDIDATE_FILE
    from capnas.settings import RunSettings, SettingsError
    from capnas.tools.data.datasets import task_data
    from capnas.tools.data.features import SPLITS, extractor_code

    try:
        settings = RunSettings.load(None, {"dataset": args.dataset, "image_size": args.image_size,
                                           "frozen_encoders": True, "families": ["efficientnet_lite0", "gru"]})
    except SettingsError as err:
        print(f"bench_extract: {err}", file=sys.stderr)
        return 2
    dataset, prepared = task_data(settings.task())
    images = sum(prepared.split_sizes[s] for s in SPLITS)
    rates: dict[str, list[float]] = {name: [] for name, _ in LAYOUTS}
    walls: dict[str, list[float]] = {name: [] for name, _ in LAYOUTS}
    tokens: dict[str, np.ndarray] = {}
    loads = [os.getloadavg()[0]]
    for r in range(args.rounds):
        for name, channels_last in LAYOUTS:
            scratch = Path(tempfile.mkdtemp(prefix=f"capnas-bench-extract-{name}-"))
            (scratch / CANDIDATE_FILE).write_text(extractor_code("efficientnet_lite0"), encoding="utf-8")
            job = Job(entry="features", scratch=scratch, data_dir=prepared.sandbox_dir,
                      args={"splits": list(SPLITS), "threads": args.threads, "batch_size": args.batch_size,
                            "channels_last": channels_last},
                      limits=Limits(wall_s=3600, memory_mb=8192))
            started = time.monotonic()
            result = run_sandboxed(job)
            wall = time.monotonic() - started
            loads.append(os.getloadavg()[0])
            if not result.ok:
                print(f"bench_extract: the {name} job failed ({result.exit_reason}):\n{result.stderr_tail[-2000:]}",
                      file=sys.stderr)
                return 1
            rates[name].append(images / result.result["seconds"])
            walls[name].append(wall)
            print(f"  round {r + 1} {name}: {rates[name][-1]:.1f} images/s, job {wall:.0f} s", flush=True)
            if name not in tokens:
                tokens[name] = np.load(scratch / "val.features.npy").astype(np.float32)

    stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    print(f"\nextraction layouts, {stamp}, {os.cpu_count()} cores, {args.threads} thread(s), 1-min load "
          f"{min(loads):.1f}-{max(loads):.1f}; {dataset.source} at {args.image_size} px: {images:,} train + val images, "
          f"frozen EfficientNet-Lite0, batch {args.batch_size}, {args.rounds} job(s) per layout, alternating")
    print(f"command: .venv/bin/python benchmarks/bench_extract.py {' '.join(sys.argv[1:])}\n")
    print("| layout | images/s per job | mean images/s | job wall s (mean) | vs default |")
    print("|---|---|---:|---:|---:|")
    base = statistics.mean(rates["default"])
    for name, _ in LAYOUTS:
        mean = statistics.mean(rates[name])
        print(f"| {name} | {', '.join(f'{x:.1f}' for x in rates[name])} | {mean:.1f} | "
              f"{statistics.mean(walls[name]):.0f} | {mean / base:.2f}x |")
    a, b = tokens["default"], tokens["channels_last"]
    print(f"\nval tokens, channels_last against default: max abs difference {np.abs(a - b).max():.2e} "
          f"(largest token {np.abs(a).max():.2f}), {float(np.mean(a == b)) * 100:.1f} % of values equal in float16")
    return 0


if __name__ == "__main__":
    sys.exit(main())
