"""Trainer throughput: training images/s of the sandboxed harness against a plain hand-written PyTorch loop,
the same reference model, data, device, batch size and threads, measured side by side in one run.

    .venv/bin/python benchmarks/bench_trainer.py [--model small_cnn_gru] [--dataset shapes:400] [--image-size 64]
        [--max-len 28] [--batch-size 32] [--epochs 3] [--rounds 2] [--device cpu|cuda] [--threads N] [--no-bf16]

Both sides run `Net.learn` (the contract puts the training step in the model) over the same prepared uint8
tensors. The plain loop is what a person would write in one process: shuffle, gather a batch, divide by 255,
move it to the device, call `learn`. The harness is `capnas.sandbox.train_loop.train` as the trainer runs it:
a sandboxed child process (Landlock, seccomp, limits), events on stdout, val ids and a checkpoint after every
epoch (not counted: images/s is learn time only, on both sides). Rounds alternate plain, harness, plain, ...
so that a machine whose load changes treats both alike. images/s is over epochs 2.. (epoch 1 holds the
warm-up: allocator, cuDNN autotuning); the ratio is harness/plain (the issue's target: >= 0.9 on a GPU).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def steady_rate(points: list[dict]) -> float:
    """images/s over every epoch but the first (all of them when there is only one)."""
    kept = points[1:] or points
    return sum(p["images"] for p in kept) / sum(p["train_s"] for p in kept)


def plain_loop(code_path: Path, prepared, args) -> list[dict]:
    """The hand-written loop, in this process."""
    import torch

    from capnas.sandbox.train_loop import build_prm

    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    spec = importlib.util.spec_from_file_location("plain_candidate", code_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    split = prepared.load_split("train", mmap=False)
    images, captions = split.images.to(dev), split.captions.to(dev)
    n, _, h, w = images.shape
    prm = build_prm(module, {}, captions.shape[-1])
    model = module.Net((args.batch_size, 3, h, w), (len(prepared.vocab),), prm, dev)
    model.train_setup(prm)
    autocast = args.bf16 and dev.type == "cuda"

    def batches(epoch: int):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed * 100_003 + epoch)).to(dev)
        for idx in order.split(args.batch_size):
            yield images[idx].float().div_(255.0), captions[idx]

    points = []
    for epoch in range(1, args.epochs + 1):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            model.learn(batches(epoch))  # returns a float: the device has finished the epoch
        points.append({"epoch": epoch, "images": n, "train_s": time.perf_counter() - t0})
    return points


def harness_run(code: str, prepared, args, work: Path) -> tuple[list[dict], float]:
    """The in-sandbox training entry, as `capnas.tools.jobs.training.train_candidate` starts it."""
    from capnas.sandbox import Job, Limits, run_sandboxed
    from capnas.sandbox.job import CANDIDATE_FILE

    scratch = Path(tempfile.mkdtemp(prefix="harness-", dir=work))
    (scratch / CANDIDATE_FILE).write_text(code)
    job = Job(entry="train", scratch=scratch, data_dir=prepared.sandbox_dir, device=args.device,
              args={"vocab_size": len(prepared.vocab), "hparams": {}, "epochs": args.epochs,
                    "batch_size": args.batch_size, "seed": args.seed, "bf16": args.bf16, "threads": args.threads,
                    "eval_every": args.epochs},
              limits=Limits(wall_s=3600, memory_mb=None if args.device != "cpu" else 8192))
    result = run_sandboxed(job)
    if not result.ok or result.result is None:
        raise SystemExit(f"the harness failed ({result.exit_reason}):\n{result.stderr_tail[-3000:]}")
    return result.result["curve"], result.duration_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small_cnn_gru", help="a reference model name")
    parser.add_argument("--dataset", default="shapes:400")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=28)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="plain/harness pairs, alternating")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads on both sides")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", help="no bf16 autocast on CUDA")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from capnas.tools.data.datasets import load_dataset, prepare_dataset
    from capnas.tools.design.reference_models import reference_path

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="capnas-bench-trainer-"))
    dataset = load_dataset(args.dataset)
    prepared = prepare_dataset(dataset, image_size=args.image_size, max_len=args.max_len, min_count=1)
    code_path = reference_path(args.model)
    code = code_path.read_text()
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"{args.model} on {args.dataset} ({prepared.split_sizes['train']} train images, {args.image_size} px, "
          f"max_len {args.max_len}), batch {args.batch_size}, {args.epochs} epochs x {args.rounds} rounds, "
          f"device {args.device} ({device_name}), threads {args.threads or torch.get_num_threads()}, "
          f"bf16 {args.bf16 and args.device != 'cpu'}")

    rates: dict[str, list[float]] = {"plain": [], "harness": []}
    for r in range(1, args.rounds + 1):
        plain = steady_rate(plain_loop(code_path, prepared, args))
        curve, sandbox_s = harness_run(code, prepared, args, work)
        harness = steady_rate(curve)
        learn_s = sum(p["train_s"] for p in curve)
        rates["plain"].append(plain)
        rates["harness"].append(harness)
        print(f"round {r}: plain {plain:.1f} images/s, harness {harness:.1f} images/s "
              f"(sandbox run {sandbox_s:.1f} s, of which learn {learn_s:.1f} s)")

    print()
    print(f"{'loop':<10} {'images/s median':>16} {'min':>9} {'max':>9}")
    for name, values in rates.items():
        print(f"{name:<10} {statistics.median(values):>16.1f} {min(values):>9.1f} {max(values):>9.1f}")
    ratio = statistics.median(rates["harness"]) / statistics.median(rates["plain"])
    print(f"ratio harness/plain: {ratio:.3f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
