"""The training loop that runs INSIDE the sandbox: one readable loop, numbers printed where measured.

It trusts nothing about the candidate beyond the contract: it builds `Net`, calls `train_setup` once and
`learn` once per epoch over batches already on the device, then generates ids for the validation images.
It never sees reference captions of the validation split (they are not mounted) and never computes a score:
the parent scores the ids it writes, and tells it to stop early through `control.json`.

Files in the scratch dir (each written atomically; `checkpoint.pt` last, it is the commit point of an epoch):
  candidate.py           the model code (written by the parent)
  weights_epoch{k}.pt    the model's state_dict after epoch k (the parent keeps the best and deletes the rest)
  val_ids_epoch{k}.pt    generated ids int64 [N_val, T] for the validation images, in prepared order
  checkpoint.pt          model, optimizer(s), RNG, curve, seconds spent: what a resumed job continues from
  control.json           written by the PARENT: {"stop": true, "reason": "..."} ends the job early
  {split}_ids.pt         written by the `generate` entry

Events on stdout (through the harness's `emit`): `start`, `step` (every `log_every` batches), `epoch`
(after the epoch's files are committed; names its ids and weights files), `stopping`.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from capnas.sandbox import prepared

Emit = Callable[..., None]

CHECKPOINT_FILE = "checkpoint.pt"
CONTROL_FILE = "control.json"
STOP_REASONS = ("epochs", "early_stop", "time_budget")


def weights_file(epoch: int) -> str:
    return f"weights_epoch{epoch}.pt"


def val_ids_file(epoch: int) -> str:
    return f"val_ids_epoch{epoch}.pt"


def split_ids_file(split: str) -> str:
    return f"{split}_ids.pt"


# -- the candidate -----------------------------------------------------------------------------------------


def load_candidate(code_path: Path):
    """Import the candidate file as a fresh module named `candidate`."""
    spec = importlib.util.spec_from_file_location("candidate", code_path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot load the candidate module from {code_path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["candidate"] = module
    spec.loader.exec_module(module)
    return module


def build_prm(module, hparams: dict[str, Any], max_len: int) -> dict[str, Any]:
    """Every hyperparameter the model declares, from `hparams` or else the contract's probe value (the same
    defaults the validator used), plus the task's `max_len`."""
    from capnas.contracts.caption_net_v1 import PROBE_HYPERPARAMETER_DEFAULT, PROBE_HYPERPARAMETERS

    declared = set(module.supported_hyperparameters())
    prm = {name: hparams.get(name, PROBE_HYPERPARAMETERS.get(name, PROBE_HYPERPARAMETER_DEFAULT))
           for name in sorted(declared)}
    prm["max_len"] = max_len
    return prm


def inherit_weights(model: torch.nn.Module, path: Path) -> dict[str, int]:
    """Copy into `model` every tensor of the state_dict at `path` (a parent's weights) whose name and shape
    match one of the model's; the rest keep their fresh init. Counts what was copied: state-dict tensors
    (buffers included) and scalar parameters, beside the model's totals."""
    parent = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no code runs on load
    own = model.state_dict()
    matched = {k: v for k, v in parent.items()
               if isinstance(v, torch.Tensor) and k in own and own[k].shape == v.shape}
    model.load_state_dict(matched, strict=False)
    names = dict(model.named_parameters())
    return {"tensors": len(matched), "of_tensors": len(own),
            "params": sum(names[k].numel() for k in matched if k in names),
            "of_params": sum(p.numel() for p in names.values())}


def optimizer_states(model: torch.nn.Module) -> dict[str, Any]:
    """state_dicts of every optimizer and LR scheduler that `train_setup` stored as an attribute of the model."""
    kinds = (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler)
    return {name: value.state_dict() for name, value in vars(model).items() if isinstance(value, kinds)}


def load_optimizer_states(model: torch.nn.Module, states: dict[str, Any]) -> None:
    for name, state in states.items():
        target = vars(model).get(name)
        if target is None:
            raise RuntimeError(f"checkpoint holds optimizer state {name!r} but train_setup made no such attribute; "
                               "the candidate changed since the checkpoint was written: start a fresh run dir")
        target.load_state_dict(state)


# -- plumbing ----------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def set_threads(threads: int | None) -> None:
    """torch's intra-op CPU threads. On a shared machine, one per core can be many times slower than one."""
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def stop_requested(scratch: Path) -> str | None:
    """The parent's reason to stop ("early_stop", ...) once it has written control.json, else None."""
    try:
        control = json.loads((scratch / CONTROL_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return str(control.get("reason") or "early_stop") if isinstance(control, dict) and control.get("stop") else None


def place(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The whole split on the device when it fits comfortably (a quarter of free memory); else it stays in
    (memory-mapped) host memory and each batch travels. On CPU the memory map is shared with other jobs."""
    if device.type != "cuda":
        return t
    free, _ = torch.cuda.mem_get_info(device)
    return t.to(device) if t.numel() * t.element_size() < free // 4 else t


def to_float(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float32 in [0, 1] on the device."""
    return images.to(device, non_blocking=True).float().div_(255.0)


def model_input(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """What `learn` and `forward` receive: images as float in [0, 1], or precomputed frozen-encoder tokens
    (float16 [B, T, D] on disk) as float32; the frozen encoder passes tokens through unchanged."""
    if batch.dtype == torch.uint8:
        return to_float(batch, device)
    return batch.to(device, non_blocking=True).float()


class Batches:
    """One epoch of shuffled mini-batches `(images float [B,3,H,W] in [0,1], captions int64 [B,Ncap,L])`
    gathered from uint8 tensors: no decoding, a gather and a divide (or frozen-encoder tokens instead of
    images). It ends early (after at least one batch) when the deadline passes or the parent asks to stop,
    and counts what it handed out."""

    def __init__(self, images: torch.Tensor, captions: torch.Tensor, batch_size: int, device: torch.device,
                 generator: torch.Generator, emit: Emit, epoch: int, deadline: float, scratch: Path,
                 log_every: int = 20):
        self.images, self.captions, self.batch_size, self.device = images, captions, batch_size, device
        self.generator, self.emit, self.epoch, self.deadline = generator, emit, epoch, deadline
        self.scratch, self.log_every = scratch, log_every
        self.seen = self.steps_done = 0
        self.cut_short: str | None = None  # "time_budget" or the parent's stop reason

    def __len__(self) -> int:
        return (len(self.images) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.images), generator=self.generator)
        start = time.perf_counter()
        for step, idx in enumerate(order.split(self.batch_size)):
            if step > 0:
                if time.perf_counter() > self.deadline:
                    self.cut_short = "time_budget"
                elif (self.scratch / CONTROL_FILE).exists():
                    self.cut_short = stop_requested(self.scratch)
                if self.cut_short:
                    return
            index = idx.to(self.images.device)
            yield model_input(self.images[index], self.device), self.captions[index].to(self.device, non_blocking=True)
            self.seen += len(idx)
            self.steps_done = step + 1
            if step % self.log_every == 0 or self.steps_done == len(self):
                self.emit("step", epoch=self.epoch, step=self.steps_done, steps=len(self),
                          images_per_s=round(self.seen / max(time.perf_counter() - start, 1e-9), 1))


@torch.no_grad()
def generate_ids(model: torch.nn.Module, images: torch.Tensor, batch_size: int, device: torch.device,
                 autocast: bool) -> torch.Tensor:
    """Greedy inference over uint8 images; int64 ids [N, T] on the CPU, right-padded with PAD (0)."""
    model.eval()
    outs = []
    for chunk in images.split(batch_size):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            ids = model(model_input(chunk, device))
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[0] != len(chunk):
            got = f"{ids.dtype} {list(ids.shape)}" if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise RuntimeError(f"forward(images) on {len(chunk)} images returned {got}; caption-net-v1 wants "
                               f"int64 ids [{len(chunk)}, T] (clause OUT-003)")
        if ids.is_floating_point() or ids.is_complex():
            raise RuntimeError(f"forward(images) returned {ids.dtype} ids; caption-net-v1 wants int64 (OUT-003)")
        outs.append(ids.long().cpu())
    model.train()
    width = max(o.shape[1] for o in outs)
    return torch.cat([torch.nn.functional.pad(o, (0, width - o.shape[1])) for o in outs])


# -- the `train` entry -------------------------------------------------------------------------------------


def train(scratch: Path, data_dir: Path, args: dict[str, Any], emit: Emit, device: str = "cpu") -> dict[str, Any]:
    """Train the candidate in `scratch/candidate.py` on the prepared data in `data_dir`.

    args: vocab_size (required), hparams {}, epochs 10, train_time_s (total over resumes; none by default),
    batch_size 32, seed 0, bf16 True (CUDA only), eval_every 1 (epochs between val generations; the last epoch
    always generates), log_every 20 (batches between `step` events), threads (torch's CPU threads; None: torch's
    default, one per core), features (a key under `features/`: train on those frozen-encoder tokens, not images),
    inherit (a read-only weights file, a parent's: matching tensors are loaded before `train_setup`).
    Resumes after the last committed epoch when `checkpoint.pt` exists; a larger `epochs` than the checkpoint was
    written under trains on from it (a promotion to the next rung). Returns the JSON-able result."""
    t0 = time.perf_counter()
    dev = torch.device(device)
    vocab_size = int(args["vocab_size"])
    epochs, batch_size, seed = int(args.get("epochs", 10)), int(args.get("batch_size", 32)), int(args.get("seed", 0))
    budget_s = float(args["train_time_s"]) if args.get("train_time_s") is not None else math.inf
    eval_every, log_every = max(1, int(args.get("eval_every", 1))), max(1, int(args.get("log_every", 20)))
    autocast = bool(args.get("bf16", True)) and dev.type == "cuda"
    set_threads(args.get("threads"))

    # With `features`, the model sees the frozen encoder's tokens computed once per dataset instead of images:
    # the same numbers its frozen encoder would compute every epoch (see capnas.tools.data.features).
    features = args.get("features")
    train_split = prepared.load_split(data_dir, "train")
    inputs = prepared.load_features(data_dir, features, "train") if features else train_split.images
    val_inputs = prepared.load_features(data_dir, features, "val") if features else prepared.load_images(data_dir, "val")
    images, captions, val_images = place(inputs, dev), place(train_split.captions, dev), place(val_inputs, dev)
    n = len(images)
    h = w = int(train_split.images.shape[-1])
    max_len = captions.shape[-1]
    shown = f"features {features} {list(images.shape[1:])}" if features else f"images {h}x{w}"
    print(f"data: {n} train {shown}, captions {list(captions.shape[1:])}, {len(val_images)} val, "
          f"on {images.device} ({time.perf_counter() - t0:.1f} s)")

    seed_everything(seed)
    module = load_candidate(scratch / "candidate.py")
    prm = build_prm(module, args.get("hparams") or {}, max_len)
    model = module.Net((batch_size, 3, h, w), (vocab_size,), prm, dev)
    ckpt_path = scratch / CHECKPOINT_FILE
    inherited = None
    if args.get("inherit") and not ckpt_path.exists():  # before train_setup, so its optimizer sees these weights
        inherited = inherit_weights(model, Path(args["inherit"]))
        print(f"inherited {inherited['tensors']}/{inherited['of_tensors']} tensors, "
              f"{inherited['params']:,}/{inherited['of_params']:,} parameters from the parent's weights")
    model.train_setup(prm)
    params = sum(p.numel() for p in model.parameters())

    done_epoch, curve, spent_s = 0, [], 0.0
    if ckpt_path.exists():  # resume: continue after the last committed epoch
        # On the CPU: RNG states must stay CPU tensors; load_state_dict moves weights and optimizer state over.
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        load_optimizer_states(model, ckpt["optimizers"])
        set_rng_state(ckpt["rng"])
        done_epoch, curve, spent_s = ckpt["epoch"], ckpt["curve"], ckpt["spent_s"]
        inherited = ckpt.get("inherited")
        print(f"resumed after epoch {done_epoch} ({spent_s:.1f} s of training spent)")
    emit("start", params=params, train_images=n, val_images=len(val_images), epochs=epochs, device=str(dev),
         prm=prm, resumed_from=done_epoch, curve=curve, bf16=autocast, inputs=features or "images",
         inherited=inherited)

    stopped = stop_requested(scratch) or ("time_budget" if spent_s >= budget_s else None)
    epoch = done_epoch
    while stopped is None and epoch < epochs:
        epoch += 1
        e0 = time.perf_counter()
        batches = Batches(images, captions, batch_size, dev, torch.Generator().manual_seed(seed * 100_003 + epoch),
                          emit, epoch, deadline=e0 + budget_s - spent_s, scratch=scratch, log_every=log_every)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            loss = float(model.learn(batches))
        train_s = time.perf_counter() - e0
        if batches.cut_short not in (None, "time_budget"):  # the parent asked to stop: drop the partial epoch
            stopped = batches.cut_short
            break
        generate = epoch % eval_every == 0 or epoch == epochs or batches.cut_short is not None
        g0 = time.perf_counter()
        if generate:
            ids = generate_ids(model, val_images, max(batch_size, 64), dev, autocast)
            save_atomic(ids, scratch / val_ids_file(epoch))
        gen_s = time.perf_counter() - g0
        save_atomic(model.state_dict(), scratch / weights_file(epoch))
        spent_s += time.perf_counter() - e0
        point = {"epoch": epoch, "loss": loss, "train_s": round(train_s, 3), "gen_s": round(gen_s, 3),
                 "images": batches.seen, "images_per_s": round(batches.seen / max(train_s, 1e-9), 1),
                 "steps": batches.steps_done, "partial": batches.steps_done < len(batches),
                 "ids": val_ids_file(epoch) if generate else None}
        curve.append(point)
        save_atomic({"model": model.state_dict(), "optimizers": optimizer_states(model), "rng": rng_state(),
                     "epoch": epoch, "curve": curve, "spent_s": spent_s, "inherited": inherited}, ckpt_path)
        print(f"epoch {epoch}/{epochs}: loss {loss:.4f}, {point['images_per_s']:.0f} images/s, train {train_s:.1f} s, "
              f"generate {gen_s:.1f} s{' (partial: time budget)' if point['partial'] else ''}")
        emit("epoch", **point, weights=weights_file(epoch))
        stopped = batches.cut_short or stop_requested(scratch) or ("time_budget" if spent_s >= budget_s else None)
    stopped = stopped or "epochs"
    emit("stopping", reason=stopped, epoch=epoch)

    seen = sum(p["images"] for p in curve)
    learn_s = sum(p["train_s"] for p in curve)
    return {"params": params, "prm": prm, "curve": curve, "stopped": stopped, "epochs_done": len(curve),
            "images_per_s": round(seen / learn_s, 1) if learn_s > 0 else None, "spent_s": round(spent_s, 2),
            "duration_s": round(time.perf_counter() - t0, 2), "device": str(dev), "bf16": autocast,
            "inputs": features or "images", "inherited": inherited}


# -- the `generate` entry ----------------------------------------------------------------------------------


def generate(scratch: Path, data_dir: Path, args: dict[str, Any], emit: Emit, device: str = "cpu") -> dict[str, Any]:
    """Ids for one split's images from saved weights (the test split: only a final model ever sees it).

    args: split, weights (a file in scratch), vocab_size, max_len, hparams {}, batch_size 64, seed 0, bf16 True,
    threads None."""
    t0 = time.perf_counter()
    dev = torch.device(device)
    set_threads(args.get("threads"))
    split = str(args["split"])
    images = place(prepared.load_images(data_dir, split), dev)
    _, _, h, w = images.shape
    seed_everything(int(args.get("seed", 0)))
    module = load_candidate(scratch / "candidate.py")
    prm = build_prm(module, args.get("hparams") or {}, int(args["max_len"]))
    model = module.Net((1, 3, h, w), (int(args["vocab_size"]),), prm, dev)
    model.load_state_dict(torch.load(scratch / str(args["weights"]), map_location=dev, weights_only=True))
    autocast = bool(args.get("bf16", True)) and dev.type == "cuda"
    ids = generate_ids(model, images, int(args.get("batch_size", 64)), dev, autocast)
    out = split_ids_file(split)
    save_atomic(ids, scratch / out)
    seconds = time.perf_counter() - t0
    print(f"generated {split}: {len(ids)} images in {seconds:.1f} s")
    emit("generated", split=split, images=len(ids), seconds=round(seconds, 2))
    return {"ids": out, "images": len(ids), "split": split, "seconds": round(seconds, 2)}
