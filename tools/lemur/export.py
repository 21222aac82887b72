"""`capnas export RUN_ID --format lemur`: a trained candidate as one LEMUR-style `Net` file.

The file is the candidate's caption-net-v1 code, unchanged, followed by a small LEMUR face: LEMUR's `prm`
has no `max_len` (its harness gives lr, momentum, ..., batch, transform, epoch_max), so `Net` reads
`prm.get('max_len', <the task's>)`; its captions arrive as [B, Ncap, L] with L the batch's longest caption,
so `learn` cuts them to max_len (EOS kept last). The name follows LEMUR's `train_new`: a prefix and the
md5 of the code. What does not carry over is said in the header and returned for the command to print.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from capnas.tools.report.run_data import ReportError, RunData

PREFIX = "CAPNAS"

LEMUR_FACE = '''

# ---- LEMUR face (capnas export --format lemur): LEMUR's harness calls Net(in_shape, out_shape, prm, device),
# train_setup(prm), learn(DataRoll) and net(images); its prm carries no max_len.
import torch as _lemur_torch

_CapnasNet = Net
_LEMUR_MAX_LEN = {max_len}


def _lemur_fit(captions, max_len):
    """LEMUR pads captions to the batch's longest one; the model was built for max_len tokens."""
    if captions.size(-1) <= max_len:
        return captions
    cut = captions[..., :max_len].clone()
    running = (cut[..., -1] != 0) & (cut[..., -1] != 2)  # cut in the middle of a caption
    cut[..., -1] = _lemur_torch.where(running, _lemur_torch.full_like(cut[..., -1], 2), cut[..., -1])
    return cut


class Net(_CapnasNet):
    def __init__(self, in_shape, out_shape, prm, device):
        prm = dict(prm)
        prm["max_len"] = int(prm.get("max_len", _LEMUR_MAX_LEN))
        super().__init__(in_shape, out_shape, prm, device)
        self._lemur_max_len = prm["max_len"]

    def train_setup(self, prm):
        prm = dict(prm)
        prm["max_len"] = int(prm.get("max_len", _LEMUR_MAX_LEN))
        return super().train_setup(prm)

    def learn(self, train_data):
        max_len = self._lemur_max_len
        return super().learn((images, _lemur_fit(captions, max_len)) for images, captions in train_data)
'''


def lemur_notes(data: RunData) -> list[str]:
    """What a LEMUR user does not get from the file, one line each."""
    p = data.prepared
    size = f"{p.image_size}x{p.image_size}" if p is not None else "the task's size"
    return [
        "weights: the file holds the architecture only; LEMUR trains it from scratch (capnas's trained "
        "weights.pt comes with `capnas export RUN_ID` in the capnas-model-v1 folder)",
        f"vocabulary: the model was trained on capnas's {len(p.vocab) if p is not None else '?'}-word vocabulary "
        f"of {data.dataset.name}; LEMUR builds its own from COCO and gives its size as out_shape (only the ids "
        "PAD 0, SOS/BOS 1, EOS 2, UNK 3 are shared)",
        f"normalization: capnas fed {size} RGB images scaled to [0, 1] with no mean/std; LEMUR's transform "
        "(prm['transform']) decides what the model sees",
    ]


def lemur_file_name(code: str) -> str:
    """LEMUR's name for generated code: a prefix and the md5 of the code, as its train_new does."""
    return f"{PREFIX}-{hashlib.md5(code.encode('utf-8')).hexdigest()}.py"


def lemur_source(code: str, max_len: int, origin: str, notes: list[str]) -> str:
    header = [f"# LEMUR Net file exported by capnas from {origin} (contract caption-net-v1).",
              "# What does not carry over:"] + [f"#   - {note}" for note in notes]
    return "\n".join(header) + "\n\n" + code.rstrip("\n") + "\n" + LEMUR_FACE.replace("{max_len}", str(int(max_len)))


def export_lemur(data: RunData, out_dir: Path, candidate_id: str | None = None) -> tuple[Path, list[str]]:
    """Write the LEMUR file of `candidate_id` (default: the best trained candidate) into `out_dir`; return
    its path and the notes on what does not carry over."""
    cand = data.candidate(candidate_id) if candidate_id else data.best
    if cand is None:
        raise ReportError(f"run {data.run_id} has no trained candidate to export")
    if cand.status != "trained":
        raise ReportError(f"candidate {cand.candidate_id} is {cand.status}, not trained: only trained models export")
    max_len = data.prepared.max_len if data.prepared is not None else int(data.config.get("max_len", 16) or 16)
    notes = lemur_notes(data)
    source = lemur_source(cand.code, max_len, f"run {data.run_id}, candidate {cand.candidate_id}", notes)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / lemur_file_name(source)
    path.write_text(source, encoding="utf-8")
    return path, notes
