"""Export a trained candidate as a folder anyone can use with torch and Pillow alone:

    model.py        the candidate's code (caption-net-v1)
    weights.pt      its best state_dict (plain tensors: loads with torch.load(..., weights_only=True))
    vocab.json      the task vocabulary (id -> word)
    config.json     image_size, max_len, hparams, vocab_size, provenance and validation metrics
    layers.json     the measured layer table (when the card measured one)
    MODEL_CARD.md   the model card
    predict.py      `caption(images) -> list[str]` and a command line (`capnas.tools.report.exported_predict`)

`capnas caption` uses `caption_folder_sandboxed`: model.py is generated code, so capnas runs it only inside
the sandbox, as it did for validation and training.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from capnas.sandbox import Job, Limits, run_sandboxed
from capnas.tools.report.model_card import build_model_card, candidate_prm
from capnas.tools.report.run_data import ReportError, RunData

EXPORT_FORMAT = "capnas-model-v1"
FILES = ("model.py", "weights.pt", "vocab.json", "config.json", "MODEL_CARD.md", "predict.py")
OUT_FILE = "captions.json"  # what predict.py writes in the sandbox's scratch


class ExportError(ReportError):
    """An exported model folder is incomplete or cannot be loaded; the message names the file."""


class ImageInputError(ExportError):
    """An image given to caption is missing or cannot be decoded; the message names it."""


def export_model(data: RunData, out_dir: Path, *, candidate_id: str | None = None, card: Any = None) -> Path:
    """Write the export folder for `candidate_id` (default: the run's best trained candidate) and return it.
    `card` is a ready ModelCard; without one the card is built here (which measures the layer table)."""
    import torch

    cand = data.candidate(candidate_id) if candidate_id else data.best
    if cand is None:
        raise ReportError(f"run {data.run_id} has no trained candidate to export")
    if cand.status != "trained":
        raise ReportError(f"candidate {cand.candidate_id} is {cand.status}, not trained: only trained models export")
    arts = data.artifacts(cand)
    if arts.weights is None:
        where = arts.dir or data.workspace / "runs" / data.run_id / cand.candidate_id
        raise ReportError(f"no best weights for {cand.candidate_id} in {where} (train_result.json names them; "
                          "a finished training job keeps job/weights_epoch<best>.pt)")
    if data.prepared is None:
        raise ReportError(f"cannot export {cand.candidate_id} without its vocabulary: {data.data_error}")
    try:
        state = torch.load(arts.weights, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - anything but plain tensors is refused by weights_only
        raise ReportError(f"weights {arts.weights} cannot be loaded as a plain state_dict: {e}") from e
    if card is None or getattr(card, "candidate_id", None) != cand.candidate_id:

        card = build_model_card(data, cand)

    out_dir = Path(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=_mkparent(out_dir)))
    try:
        (tmp / "model.py").write_text(cand.code, encoding="utf-8")
        torch.save(state, tmp / "weights.pt")
        data.prepared.vocab.save(tmp / "vocab.json")
        (tmp / "config.json").write_text(json.dumps(_config(data, cand), indent=1))
        if card.layers is not None and card.layers.error is None:
            (tmp / "layers.json").write_text(card.layers.model_dump_json(indent=1))
        (tmp / "MODEL_CARD.md").write_text(card.to_markdown(), encoding="utf-8")
        shutil.copyfile(Path(__file__).with_name("exported_predict.py"), tmp / "predict.py")
        tmp.chmod(0o755)  # mkdtemp makes it private; the folder is meant to be shared
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _mkparent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent


def _config(data: RunData, cand: Any) -> dict[str, Any]:
    p = data.prepared
    prm, _ = candidate_prm(data, cand)
    prm.pop("max_len", None)
    return {
        "format": EXPORT_FORMAT,
        "contract": "caption-net-v1",
        "image_size": p.image_size,
        "max_len": p.max_len,
        "vocab_size": len(p.vocab),
        "hparams": prm,
        "special_ids": {"pad": 0, "bos": 1, "eos": 2, "unk": 3},
        "seed": int(data.config.get("seed", 0) or 0),
        "run_id": data.run_id,
        "candidate_id": cand.candidate_id,
        "architecture": cand.plan,
        "params": cand.params,
        "dataset": {"name": data.dataset.name, "source": data.dataset.source, "split_sizes": p.split_sizes},
        "val_metrics": cand.metrics,
    }


# -- using an exported folder --------------------------------------------------------------------------


def check_folder(model_dir: Path) -> None:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ExportError(f"{model_dir} is not a folder; pass the folder `capnas report` exported (runs/<run>/model)")
    missing = [name for name in FILES if not (model_dir / name).is_file()]
    if missing:
        raise ExportError(f"{model_dir} is not an exported capnas model: missing {', '.join(missing)}")
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except ValueError as e:
        raise ExportError(f"{model_dir / 'config.json'} is not valid JSON: {e}") from e
    if config.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{model_dir / 'config.json'} has format {config.get('format')!r}, "
                          f"expected {EXPORT_FORMAT!r}")


def caption_folder_sandboxed(model_dir: Path, images: list[Path], device: str = "cpu", wall_s: float = 300.0,
                             memory_mb: int | None = 4096) -> list[str]:
    """Captions of `images` by the exported model, computed inside the sandbox: the folder and the images are
    copied into a scratch directory and predict.py runs there as a `script` job; only the captions file it
    writes comes back. Raises ExportError naming the folder or the image at fault."""
    check_folder(model_dir)
    images = [Path(p) for p in images]
    for image in images:
        if not image.is_file():
            raise ImageInputError(f"image file not found: {image}")
    scratch = Path(tempfile.mkdtemp(prefix="capnas-caption-"))
    try:
        model_copy = scratch / "model"
        shutil.copytree(model_dir, model_copy, ignore=shutil.ignore_patterns("__pycache__"))
        names = []
        for k, image in enumerate(images):
            name = f"image{k:04d}{image.suffix.lower()}"
            shutil.copyfile(image, scratch / name)
            names.append(name)
        job = Job(entry="script", scratch=scratch, script=model_copy / "predict.py", device=device,
                  args={"argv": [*names, "--device", device, "--model-dir", "model", "--out", OUT_FILE]},
                  limits=Limits(wall_s=wall_s, memory_mb=memory_mb))
        result = run_sandboxed(job)
        status = (result.result or {}).get("exit_status")
        out = scratch / OUT_FILE
        if not result.ok or not out.is_file():
            lines = [ln for ln in result.stderr_tail.strip().splitlines() if ln.strip()]
            culprit = next((images[k] for k, n in enumerate(names) for ln in lines[-3:]
                            if "cannot read image" in ln and n in ln), None)
            if culprit is not None:
                raise ImageInputError(f"cannot read image {culprit}: " + lines[-1].split(": ", 2)[-1])
            raise ExportError(f"{model_dir}: predict.py failed in the sandbox ({result.exit_reason}, exit status "
                              f"{status}): " + " | ".join(lines[-3:]))
        entries = json.loads(out.read_text())
        if len(entries) != len(images):
            raise ExportError(f"{model_dir}: predict.py returned {len(entries)} captions for {len(images)} images")
        return [str(entry["caption"]) for entry in entries]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
