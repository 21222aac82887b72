"""The layer table of a candidate: every module with its type, output shape and parameter count, measured by
building the model from its code and running one dummy batch through it with forward hooks.

Building the model runs the candidate's code, so this happens inside the sandbox (`run_sandboxed`, entry
`script`), like every other run of model code; only the JSON the script writes comes back.

    table = layer_table(code, image_size=64, vocab_size=40, max_len=16, prm={"lr": 3e-4, ...})
    table.rows[0].name, table.rows[0].output_shape, table.total_params
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

DUMMY_BATCH = 2
SCRIPT_FILE = "layer_table.py"
ARGS_FILE = "layer_args.json"
OUT_FILE = "layers.json"

# Runs inside the sandbox with the candidate beside it; imports torch and the standard library only.
LAYER_SCRIPT = '''\
import importlib.util, json, sys
import torch

args = json.load(open("layer_args.json"))
spec = importlib.util.spec_from_file_location("candidate", "candidate.py")
module = importlib.util.module_from_spec(spec)
sys.modules["candidate"] = module
spec.loader.exec_module(module)

torch.manual_seed(0)
B, S, V, L = args["batch"], args["image_size"], args["vocab_size"], args["max_len"]
model = module.Net((B, 3, S, S), (V,), args["prm"], torch.device("cpu"))
model.eval()
seen, calls, phase = {}, {}, {"name": "teacher forcing"}


def shape_of(value):
    if isinstance(value, torch.Tensor):
        return list(value.shape)
    if isinstance(value, (tuple, list)):
        return [shape_of(v) for v in value]
    if isinstance(value, dict):
        return {str(k): shape_of(v) for k, v in value.items()}
    return None


def hook(name):
    def record(mod, inputs, output):
        calls[name] = calls.get(name, 0) + 1
        if name not in seen:
            seen[name] = {"output_shape": shape_of(output), "phase": phase["name"]}
    return record


modules = [(n, m) for n, m in model.named_modules() if n]
for name, mod in modules:
    mod.register_forward_hook(hook(name))
images = torch.rand(B, 3, S, S)
captions = torch.randint(4, V, (B, L))
captions[:, 0], captions[:, -1] = 1, 2
with torch.no_grad():
    logits = model(images, captions)
    phase["name"] = "generation"
    ids = model(images)
rows = []
for name, mod in modules:
    params = sum(p.numel() for p in mod.parameters())
    trainable = sum(p.numel() for p in mod.parameters() if p.requires_grad)
    rows.append({"name": name, "type": type(mod).__name__, "depth": name.count("."), "params": params,
                 "trainable": trainable, "calls": calls.get(name, 0), **seen.get(name, {})})
out = {"rows": rows, "total_params": sum(p.numel() for p in model.parameters()),
       "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
       "input_shape": [B, 3, S, S], "captions_shape": [B, L], "logits_shape": shape_of(logits),
       "ids_shape": shape_of(ids), "hyperparameters": sorted(module.supported_hyperparameters())}
json.dump(out, open("layers.json", "w"))
'''


class LayerRow(BaseModel):
    name: str  # dotted module path, e.g. "decoder.rnn"
    type: str  # class name
    depth: int  # dots in the name: 0 for children of Net
    params: int  # parameters of this module and everything below it
    trainable: int  # of those, requires_grad
    calls: int  # forward calls over one teacher-forced pass and one generation
    output_shape: Any = None  # of the first call; a list of ints, or a nested list for tuple outputs
    phase: str | None = None  # "teacher forcing" or "generation": the pass that first called it


class LayerTable(BaseModel):
    rows: list[LayerRow] = []
    total_params: int | None = None
    trainable_params: int | None = None
    input_shape: list[int] | None = None
    captions_shape: list[int] | None = None
    logits_shape: Any = None
    ids_shape: Any = None
    error: str | None = None  # why there is no table (the sandbox ended badly, the model failed to build)

    def top(self, max_depth: int = 1) -> list[LayerRow]:
        """Rows down to `max_depth` (0: the children of Net); deeper modules count inside their parents."""
        return [r for r in self.rows if r.depth <= max_depth]


def layer_table(code: str, *, image_size: int, vocab_size: int, max_len: int, prm: dict[str, Any],
                wall_s: float = 180.0, memory_mb: int = 4096) -> LayerTable:
    """Build `Net` from `code` in the sandbox, run a dummy batch of 2 (teacher forcing, then generation) and
    return what the hooks saw. Never raises for the model's faults: `error` says what went wrong."""
    from capnas.sandbox import Job, Limits, run_sandboxed

    scratch = Path(tempfile.mkdtemp(prefix="capnas-layers-"))
    try:
        (scratch / "candidate.py").write_text(code, encoding="utf-8")
        (scratch / SCRIPT_FILE).write_text(LAYER_SCRIPT, encoding="utf-8")
        args = {"batch": DUMMY_BATCH, "image_size": image_size, "vocab_size": vocab_size, "max_len": max_len,
                "prm": {**prm, "max_len": max_len}}
        (scratch / ARGS_FILE).write_text(json.dumps(args))
        job = Job(entry="script", scratch=scratch, script=scratch / SCRIPT_FILE,
                  limits=Limits(wall_s=wall_s, memory_mb=memory_mb))
        try:
            result = run_sandboxed(job)
        except Exception as e:  # noqa: BLE001 - no sandbox on this host: the card says so instead
            return LayerTable(error=f"the sandbox could not run the layer probe: {type(e).__name__}: {e}")
        out = scratch / OUT_FILE
        exit_status = (result.result or {}).get("exit_status")
        if not result.ok or exit_status != 0 or not out.is_file():
            tail = [ln for ln in result.stderr_tail.strip().splitlines() if ln.strip()][-3:]
            return LayerTable(error=f"the layer probe ended with {result.exit_reason} (exit status {exit_status})"
                                    + (": " + " | ".join(tail) if tail else ""))
        return LayerTable.model_validate_json(out.read_text())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def shape_text(shape: Any) -> str:
    """[2, 16, 40] -> '2 × 16 × 40'; nested (tuple outputs) -> '(2 × 8, 2 × 8 × 64)'; None -> '—'."""
    if shape is None:
        return "—"
    if isinstance(shape, dict):
        return "{" + ", ".join(f"{k}: {shape_text(v)}" for k, v in shape.items()) + "}"
    if isinstance(shape, list) and all(isinstance(s, int) for s in shape):
        return " × ".join(map(str, shape)) if shape else "scalar"
    if isinstance(shape, list):
        return "(" + ", ".join(shape_text(s) for s in shape) + ")"
    return str(shape)


def model_prm(code: str, hparams: dict[str, Any] | None, max_len: int) -> tuple[dict[str, Any], dict[str, str]]:
    """The `prm` a training job hands this model (`capnas.sandbox.train_loop.build_prm`): every declared
    hyperparameter from `hparams`, else the contract's probe default, plus `max_len`. Also says where each value
    came from ("journal" or "contract default"). Declared names are read statically; when the code computes
    them, the journal's hparams are all there is."""
    import ast

    from capnas.contracts.caption_net_v1 import PROBE_HYPERPARAMETER_DEFAULT, PROBE_HYPERPARAMETERS
    from capnas.contracts.static_checks import declared_hyperparameters

    hparams = dict(hparams or {})
    try:
        declared = declared_hyperparameters(ast.parse(code))
    except SyntaxError:
        declared = None
    names = sorted(declared if declared is not None else hparams)
    prm, source = {}, {}
    for name in names:
        if name in hparams:
            prm[name], source[name] = hparams[name], "journal"
        else:
            prm[name] = PROBE_HYPERPARAMETERS.get(name, PROBE_HYPERPARAMETER_DEFAULT)
            source[name] = "contract default"
    prm["max_len"], source["max_len"] = max_len, "task"
    return prm, source
