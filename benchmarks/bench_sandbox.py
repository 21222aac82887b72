"""What the sandbox costs at start-up: a trivial script run plainly vs through `run_sandboxed` per tier.

    .venv/bin/python benchmarks/bench_sandbox.py [--repeat 5] [--tiers A B C] [--torch]

Rows: `python -c pass` in a plain subprocess (the floor), the same script through the sandbox in each tier
(launcher + harness start-up + confinement + clean-up), and with `--torch` a script that imports torch,
plainly and in the sandbox. Median and min of --repeat runs, in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def row(name: str, ms: list[float]) -> None:
    print(f"{name:<44} {statistics.median(ms):>9.0f} {min(ms):>9.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tiers", nargs="+", default=["A", "B", "C"])
    parser.add_argument("--torch", action="store_true", help="also time a script that imports torch")
    args = parser.parse_args()

    from capnas.sandbox import Job, Limits, run_sandboxed
    from capnas.sandbox.tiers import ALLOW_UNSANDBOXED_ENV, TIER_ENV, SandboxUnavailable, detect_tier

    print(f"host: {detect_tier().line()}")
    print(f"{'case':<44} {'median ms':>9} {'min ms':>9}")
    work = Path(tempfile.mkdtemp(prefix="capnas-bench-"))
    scripts = {"pass": "pass\n"}
    if args.torch:
        scripts["import torch"] = "import torch\n"
    for label, source in scripts.items():
        path = work / f"{label.replace(' ', '_')}.py"
        path.write_text(source)
        row(f"plain python ({label})",
            timed(lambda: subprocess.run([sys.executable, str(path)], check=True), args.repeat))
        for tier in args.tiers:
            os.environ[TIER_ENV] = tier
            os.environ[ALLOW_UNSANDBOXED_ENV] = "1"
            try:
                detect_tier()
            except SandboxUnavailable as e:
                print(f"tier {tier}: unavailable ({e})")
                continue

            def sandboxed() -> None:
                result = run_sandboxed(Job(entry="script", scratch=work / f"scratch-{tier}", script=path,
                                           limits=Limits(wall_s=120, memory_mb=4096)))
                assert result.exit_reason == "ok", result.stderr_tail

            sandboxed()  # warm: the first run also probes the host (bwrap, Landlock, cgroups)
            row(f"sandbox tier {tier} ({label})", timed(sandboxed, args.repeat))
    os.environ.pop(TIER_ENV, None)


if __name__ == "__main__":
    main()
