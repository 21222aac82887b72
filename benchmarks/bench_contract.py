"""How long contract checks take: static checks per file, the probe per small model, the sandboxed round trip.

    .venv/bin/python benchmarks/bench_contract.py [--threads 1] [--repeat 5] [--sandbox]

Targets: static checks < 0.2 s per file; the full probe of a small model on CPU < 10 s, torch's own import
excluded. The first probe in a process also pays torch's lazy imports (the first optimizer pulls in
torch._dynamo), so that row is shown apart from the warm ones. `--sandbox` adds the end-to-end
`validate_file` time, which includes starting a confined interpreter and importing torch in it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "models"


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def row(name: str, seconds: list[float], note: str = "") -> str:
    return f"{name:<44} {len(seconds):>3} {statistics.median(seconds) * 1000:>10.1f} {max(seconds) * 1000:>10.1f}  {note}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sandbox", action="store_true", help="also time validate_file through the sandbox")
    args = parser.parse_args()

    from capnas.contracts import caption_net_v1, check_file

    contract = caption_net_v1(vocab_size=40, image_size=32, max_len=12, max_params=500_000, max_latency_ms=150.0)
    files = sorted(FIXTURES.glob("*/*.py")) + sorted((REPO / "tools" / "reference_models").glob("[!_]*.py"))
    print(f"{'what':<44} {'n':>3} {'median ms':>10} {'max ms':>10}")
    print("-" * 80)
    static = {p: timed(lambda p=p: check_file(p, contract), args.repeat) for p in files}
    per_file = [statistics.median(t) for t in static.values()]
    slowest = max(static, key=lambda p: statistics.median(static[p]))
    print(row(f"static checks, {len(files)} files (median of each)", per_file,
              f"slowest: {slowest.relative_to(REPO)}"))

    started = time.perf_counter()
    import torch

    torch_import = time.perf_counter() - started
    if args.threads:
        torch.set_num_threads(args.threads)
    from capnas.contracts.probe import run_probe

    print(row("import torch (excluded from the probe)", [torch_import]))
    valid = sorted((FIXTURES / "valid").glob("*.py"))
    cold = timed(lambda: run_probe(valid[0], contract), 1)
    print(row(f"probe, first in process ({valid[0].stem})", cold, "includes torch's lazy imports"))
    for path in valid:
        runs = timed(lambda p=path: run_probe(p, contract), args.repeat)
        result = run_probe(path, contract)
        print(row(f"probe {path.stem}", runs, f"ok={result['ok']} params={result['params']:,} "
                                                f"latency={result['latency_ms']:.1f} ms/image"))

    if args.sandbox:
        from capnas.tools.jobs.validation import validate_file

        for path in valid[:2]:
            runs = timed(lambda p=path: validate_file(p, contract), max(1, args.repeat // 2))
            print(row(f"validate_file (sandbox) {path.stem}", runs, "process start + import torch + probe"))
    print("-" * 80)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}, load {os.getloadavg()[0]:.1f}, "
          f"python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
