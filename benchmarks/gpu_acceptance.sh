#!/usr/bin/env bash
# GPU acceptance (issue 21): one table on an H100/H200, its steps together at most 9 minutes (each step has a
# time share and a hard timeout; a failed step's row says FAILED and why, and the next step runs).
#
#   1 a CUDA training step inside sandbox tier A, and the sandbox/plain ratio of the same short run
#   2 the trainer's harness/plain images/s on CUDA with bf16 (bench_trainer.py; target >= 0.95)
#   3 Flickr8k, frozen EfficientNet-Lite0 tokens: candidates fully trained per GPU-hour at concurrency 1 and 4,
#     GPU utilisation (bench_concurrency.py; target >= 300 per GPU-hour at the best, and c4 >= 2.5x c1)
#   4 the concurrency-4 run's val-best candidate scored once on test: BLEU-4 / CIDEr within that run's share
#     (target for 30 GPU-minutes: CIDEr >= 0.60, BLEU-4 >= 0.22; a share of minutes is a lower bound)
#
# The device machine starts bare and one call carries at most 64 MiB (working tree included), so what the
# steps need travels in two folders, one per call (benchmarks/README.md, "GPU acceptance (issue 21)"):
#
#   0. HERE, on the CPU machine, once (about 5 minutes; needs the network for pip, a JDK for jlink):
#        bash benchmarks/gpu_acceptance.sh --make-carry
#      writes .gpu_carry/env (~50 MiB: wheels for CPython 3.12, a trimmed pycocoevalcap, bubblewrap) and
#      .gpu_carry/flickr8k (~50 MiB: Flickr8k as 128 px JPEGs, quality 80, Karpathy json; a Java runtime), and
#      makes git ignore .gpu_carry/ through .git/info/exclude (this checkout only) so it never travels uncarried.
#   1. device tool, call 1 (install, rows 1-2: its steps' shares add up to 195 s; the machine's start comes on top):
#        run  command: "bash benchmarks/gpu_acceptance.sh --part env"
#             carry:   [".gpu_carry/env"]          timeout_s: 300
#   2. device tool, call 2, AT ONCE after call 1 (the machine stays warm only ~30 s; rows 3-4 and the table;
#      its shares add up to 345 s, so both calls together stay within 9 minutes of steps):
#        run  command: "bash benchmarks/gpu_acceptance.sh --part flickr8k"
#             carry:   [".gpu_carry/flickr8k"]     timeout_s: 420
#      Call 2 prints the whole table (call 1's rows are kept in /tmp/capnas-gpu-acceptance) and writes
#      $OUT/gpu_acceptance.md, .json and _logs.txt. If the machine went back between the calls, call 2's rows
#      say so: run both again. Then give the machine back (give_back).
#
#   On a machine that has everything already: bash benchmarks/gpu_acceptance.sh --part all --data DIR
#   CPU check of every code path (tiny sizes; 4-5.5 min on the project's busy 2-core machine, mostly fixed
#   start-up costs; tests/test_gpu_acceptance.py runs it):
#        bash benchmarks/gpu_acceptance.sh --dry-run
#   Sizes and shares: --epochs, --c1-candidates, --c4-candidates, --image-size (see --help).
set -u
cd "$(dirname "$0")/.." || exit 2
if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then
    PY=.venv/bin/python      # this project's venv (the CPU machine)
else
    PY=python3               # the device image's Python, which holds torch
fi
export PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_acceptance.py "$@"
