"""Inherited weights (#18): how many epochs a refined child needs to reach its parent's val CIDEr when it starts
from the parent's weights, and when it starts from a fresh init, on Flickr8k's frozen EfficientNet-Lite0 tokens
(the CPU recipe's data: 224 px, max_len 20, min_count 5).

    .venv/bin/python benchmarks/bench_inherit.py                       # parent 1 epoch, children up to 2
    .venv/bin/python benchmarks/bench_inherit.py --parent-epochs 2 --child-epochs 3 --out rows.json

The parent is one spec (default: the transformer decoder's defaults on the frozen backbone), trained through
`train_candidate` exactly as a search trains a candidate (sandboxed, its spec's hyperparameters, no early stop, no
time cap). Each child is the parent with typed edits applied by `apply_edits`, the function a refine uses: one that
changes a training field only (every tensor matches) and one that adds a decoder layer (the new layer's tensors
start fresh). Each child trains twice on the same seed and data order: `inherit=` the parent's best weights (what
a search does with `inherit_weights` on), and from a fresh init. The table gives each child's val CIDEr after
each epoch and the first epoch at which it reaches the parent's best val CIDEr ("not within N" when it does not).
Every number is the evaluator's (pycocoevalcap on val); test is not scored here. The first run prepares the data
and extracts the tokens into the prepared cache (`$CAPNAS_CACHE`, else `~/.cache/capnas`; about 15 min on 2
cores), later runs and `capnas run` on the same data reuse them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

# (name, edits): a training field only, and an architecture edit that keeps most tensors
CHILDREN = (("lr 0.001 -> 0.0003", [{"field": "lr", "value": 0.0003}]),
            ("transformer.num_layers 2 -> 3", [{"field": "transformer.num_layers", "value": 3}]))


def reached(curve: list[float], target: float) -> int | None:
    """The first epoch (1-based) whose val score is at least `target`, or None."""
    return next((i + 1 for i, x in enumerate(curve) if x >= target), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=None, help="captions json (default: $CAPNAS_FLICKR8K or the shared "
                                                        "Flickr8k copy)")
    parser.add_argument("--decoder", default="transformer", help="the parent's decoder family (its defaults)")
    parser.add_argument("--parent-epochs", type=int, default=1)
    parser.add_argument("--child-epochs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per job (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as json here")
    args = parser.parse_args()

    from bench_search import flickr8k_json

    from capnas.settings import RunSettings, SettingsError
    from capnas.tools.data.datasets import task_data
    from capnas.tools.data.features import ensure_features
    from capnas.tools.data.progress import progress_line
    from capnas.tools.design import archspec
    from capnas.tools.design.components import get_component
    from capnas.tools.design.components.options import EfficientNetLite0Options
    from capnas.tools.design.edits import EditSpace, apply_edits, diff
    from capnas.tools.jobs.training import train_candidate
    from capnas.tools.scoring.metrics import CaptionEvaluator

    dataset_path = args.dataset or flickr8k_json()
    try:
        settings = RunSettings.load(None, {"dataset": dataset_path, "image_size": 224, "max_len": 20, "min_count": 5,
                                           "frozen_encoders": True, "families": ["efficientnet_lite0", args.decoder],
                                           "device": args.device})
    except SettingsError as err:
        print(f"bench_inherit: {err}", file=sys.stderr)
        return 2
    task = settings.task()
    t0 = time.monotonic()
    show = lambda e: print("  " + progress_line(e), flush=True)  # noqa: E731
    dataset, prepared = task_data(task, on_progress=show)
    key, extracted = ensure_features(prepared, "efficientnet_lite0", device=args.device, threads=args.threads,
                                     on_progress=show)
    setup_s = time.monotonic() - t0
    print(f"{dataset.source}: {prepared.split_sizes}, tokens {key} "
          f"({'extracted' if extracted else 'already stored'}), {setup_s:.0f} s", flush=True)

    space = EditSpace(("efficientnet_lite0", args.decoder), frozen_encoders=True)
    parent_spec = archspec.ArchSpec(encoder=EfficientNetLite0Options(freeze=True),
                                    decoder=get_component(args.decoder).options())
    root = Path(tempfile.mkdtemp(prefix="capnas-bench-inherit-"))
    loads: list[float] = []

    def train(name: str, spec, epochs: int, inherit=None):
        """(result, val CIDEr per epoch), or (None, the reason) when the training or its scoring failed."""
        loads.append(os.getloadavg()[0])
        started = time.monotonic()
        try:
            result = train_candidate(archspec.render(spec), prepared, dataset, root / name, hparams=spec.prm(),
                                     epochs=epochs, batch_size=spec.batch_size, seed=args.seed, patience=None,
                                     train_time_s=None, device=args.device, threads=args.threads,
                                     evaluator=evaluator, features=key, inherit=inherit)
        except Exception as err:  # e.g. METEOR timing out on a starved machine: this row fails, the others run
            result, error = None, f"{type(err).__name__}: {err}"
        else:
            error = None if result.ok else f"{result.exit_reason}: {result.error}"
        loads.append(os.getloadavg()[0])
        if error is not None:
            print(f"  {name}: FAILED after {time.monotonic() - started:.0f} s ({error.splitlines()[0][:300]})",
                  flush=True)
            return None, error
        curve = [p.val_cider if p.val_cider is not None else 0.0 for p in result.curve]
        print(f"  {name}: val CIDEr by epoch {[round(x, 3) for x in curve]}, {time.monotonic() - started:.0f} s"
              + (f", inherited {result.inherited}" if result.inherited else ""), flush=True)
        return result, curve

    stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    command = shlex.join([".venv/bin/python", "benchmarks/bench_inherit.py", *sys.argv[1:]])
    rows: list[dict] = []
    parent_curve: list[float] = []

    def keep() -> None:
        """The rows so far into --out, after every training, so a crash later loses none of them."""
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"when": stamp, "command": command,
                                            "parent": parent_spec.model_dump(mode="json"),
                                            "parent_val_cider": parent_curve, "rows": rows, "load_1min": loads,
                                            "cores": os.cpu_count(), "device": args.device}, indent=1) + "\n")

    with CaptionEvaluator() as evaluator:
        print(f"parent: {parent_spec.describe()}, {args.parent_epochs} epoch(s)", flush=True)
        parent, curve_or_error = train("parent", parent_spec, args.parent_epochs)
        if parent is None:
            print(f"bench_inherit: the parent failed, so no child can be measured: {curve_or_error}", file=sys.stderr)
            return 1
        parent_curve = curve_or_error
        target = max(parent_curve)
        keep()
        for name, edits in CHILDREN:
            child_spec = apply_edits(parent_spec, edits, space)
            changed = ", ".join(f"{f} {a}->{b}" for f, a, b in diff(parent_spec, child_spec))
            print(f"child {name}: {changed}", flush=True)
            for start in ("inherited", "fresh"):
                result, curve_or_error = train(f"{name}-{start}".replace(" ", "_").replace(">", ""), child_spec,
                                               args.child_epochs, parent.best_weights if start == "inherited" else None)
                if result is None:
                    rows.append({"child": name, "start": start, "error": curve_or_error, "target": target})
                else:
                    curve = curve_or_error
                    rows.append({"child": name, "start": start, "val_cider": curve, "target": target,
                                 "epochs_to_parent": reached(curve, target), "inherited": result.inherited,
                                 "train_s": [p.train_s for p in result.curve], "params": result.params})
                keep()

    print(f"\ninherited weights, {stamp}, {platform.node()}, {os.cpu_count()} cores, device {args.device}, threads "
          f"{args.threads or 'torch default'}, 1-min load {min(loads):.1f}-{max(loads):.1f}; {dataset.source}: "
          f"{prepared.split_sizes['train']} train / {prepared.split_sizes['val']} val images, frozen EfficientNet-Lite0 "
          f"tokens; parent {parent_spec.describe()}, {args.parent_epochs} epoch(s), best val CIDEr {target:.3f}")
    print(f"command: {command}\n")
    print(f"| child (edits) | starts from | inherited tensors | val CIDEr after each epoch | epochs to reach the "
          f"parent's {target:.3f} |")
    print("|---|---|---|---|---:|")
    for r in rows:
        start = "parent weights" if r["start"] == "inherited" else "fresh init"
        if "error" in r:
            print(f"| {r['child']} | {start} | | failed: {r['error'].splitlines()[0][:120]} | |")
            continue
        inh = r["inherited"]
        inh_text = f"{inh['tensors']} of {inh['of_tensors']} ({inh['params']:,} of {inh['of_params']:,} params)" \
            if inh else "none"
        got = r["epochs_to_parent"]
        print(f"| {r['child']} | {start} | {inh_text} | {', '.join(f'{x:.3f}' for x in r['val_cider'])} | "
              f"{got if got is not None else f'not within {args.child_epochs}'} |")
    failed = [r for r in rows if "error" in r]
    if failed:
        print(f"\n{len(failed)} of {len(rows)} trainings failed (above); rerun to measure them", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
