"""The dynamic probe: run a candidate on tiny synthetic batches and check every runtime clause.

`run_probe` is what the sandbox harness calls (`capnas.sandbox.harness`, entry "probe"). It imports only
torch, the standard library and `capnas.contracts`, treats the candidate as hostile (each step catches
whatever it raises and turns it into a violation with the candidate's line), and returns a JSON-able dict.

Hyperparameters: the candidate declares names with `supported_hyperparameters()`; each gets the caller's
value from `prm`, else the contract's probe value (lr=1e-3, momentum=0.9, dropout=0.1, weight_decay=1e-4),
else the contract's default 0.5 (LEMUR's hyperparameters are floats in [0, 1]). `max_len` is always the
contract's. Batches: learn sees two batches of B=2 images with Ncap=3 references; inference runs on B=2;
latency is timed at B=1 (one warm-up, median of three runs), which also checks that any batch size works.
"""

from __future__ import annotations

import ast
import copy
import json
import math
import os
import statistics
import sys
import time
import traceback
import types
import uuid
from pathlib import Path
from typing import Any, Callable

import torch

from capnas.contracts.contract import Contract, Violation
from capnas.contracts.probe_checks import (
    check_generated,
    check_logits,
    describe,
    replace_later_references,
    synthetic_batch,
)
from capnas.contracts.static_checks import declared_hyperparameters, definition_lines, hyperparameters_read

BATCH = 2
N_CAP = 3
LEARN_BATCHES = 2
LATENCY_RUNS = 3
MESSAGE_LIMIT = 400


class _StepFailed(Exception):
    """Raised inside the probe when a step failed and the steps depending on it must be skipped."""


def run_probe(code_path: str | Path, contract: Contract | dict, device: str | torch.device = "cpu", seed: int = 0,
              prm: dict | None = None, report_steps: bool = False) -> dict[str, Any]:
    """Probe the candidate at `code_path` against `contract` (a Contract or its `model_dump()`). The model
    gets `device` as a `torch.device`, as training and generation hand it (`capnas.sandbox.train_loop`).

    With `report_steps`, each step is announced on stdout as a JSON event line
    `{"event": "probe_step", "step": ..., "method": ...}`, so whoever kills a hung probe knows where it hung."""
    probe = _Probe(Path(code_path), Contract.from_data(contract), device, seed, dict(prm or {}), report_steps)
    return probe.run()


def is_memory_error(error: BaseException) -> bool:
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


class _Probe:
    def __init__(self, path: Path, contract: Contract, device: str | torch.device, seed: int, prm: dict,
                 report_steps: bool = False) -> None:
        self.path = path
        self.report_steps = report_steps
        self.contract = contract
        self.device = torch.device(device)  # what Net(in_shape, out_shape, prm, device) gets, as in training
        self.seed = seed
        self.given_prm = prm
        self.violations: list[Violation] = []
        self.timings: dict[str, float] = {}
        self.skipped: list[str] = []
        self.lines: dict[str, int] = {}
        self.tree: ast.Module | None = None
        self.batch: tuple[torch.Tensor, torch.Tensor] | None = None  # the first learn batch, reused by teacher forcing
        self.stats: dict[str, Any] = {"params": None, "trainable_params": None, "frozen_params": None,
                                      "latency_ms": None, "loss": None, "hyperparameters": None}

    # -- plumbing ----------------------------------------------------------------------------------------

    def fail(self, code: str, message: str, line: int | None = None) -> None:
        self.violations.append(self.contract.violation(code, message[:MESSAGE_LIMIT], line))

    def step(self, name: str, code: str, fn: Callable[[], Any], line_of: str | None = None) -> Any:
        """Run one call into candidate code; on any exception record a violation and raise _StepFailed."""
        if self.report_steps:
            event = {"event": "probe_step", "step": name, "method": line_of}
            print(json.dumps(event), file=sys.__stdout__, flush=True)  # the real stdout, whatever the candidate did
        started = time.perf_counter()
        try:
            return fn()
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # noqa: BLE001 - hostile code may raise anything, SystemExit included
            line = self._candidate_line(error) or self.lines.get(line_of or "")
            last = _last_line(error)
            if is_memory_error(error):
                self.fail("BUD-004", f"{name} ran out of memory: {last}", line)
            else:
                self.fail(code, f"{name} raised {last}", line)
            raise _StepFailed from None
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - started, 4)

    def _candidate_line(self, error: BaseException) -> int | None:
        target = os.path.abspath(self.path)
        line = None
        for frame in traceback.extract_tb(error.__traceback__):
            if os.path.abspath(frame.filename) == target:
                line = frame.lineno  # the innermost frame in the candidate wins
        if line is None and isinstance(error, SyntaxError) and error.lineno:
            line = error.lineno
        return line

    # -- the probe ---------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        module_name = f"capnas_candidate_{uuid.uuid4().hex}"
        try:
            self._probe(module_name)
        except _StepFailed:
            pass
        except Exception as error:  # noqa: BLE001 - the candidate broke the probe's own bookkeeping
            self.fail("RUN-004", f"the probe could not go on: {_last_line(error)}", self._candidate_line(error))
        finally:
            sys.modules.pop(module_name, None)
        elapsed = time.perf_counter() - started
        self.timings["total"] = round(elapsed, 4)
        if elapsed > self.contract.budgets.max_probe_s:
            self.fail("BUD-003", f"the probe took {elapsed:.1f} s, over the {self.contract.budgets.max_probe_s:g} s budget")
        return {
            "ok": not self.violations,
            "violations": [v.model_dump() for v in self.violations],
            **self.stats,
            "timings": self.timings,
            "skipped": self.skipped,
            "device": str(self.device),
            "seed": self.seed,
        }

    def _probe(self, module_name: str) -> None:
        module = self.load(module_name)
        prm = self.hyperparameters(module)
        net = self.construct(module, prm)
        trained = False
        try:
            self.step("train_setup(prm)", "RUN-003", lambda: net.train_setup(dict(prm)), "train_setup")
            trained = self.learn(net)
        except _StepFailed:
            pass
        if not trained:
            self.skipped.append("TRN-004: learn failed or updated nothing")
        for check in (self.teacher_forcing, self.inference):
            try:
                check(net)
            except _StepFailed:
                pass

    def load(self, module_name: str) -> types.ModuleType:
        source = self.step("import", "RUN-001", lambda: self.path.read_text(encoding="utf-8"))
        try:
            self.tree = ast.parse(source)
        except (SyntaxError, ValueError) as error:
            self.fail("SYN-001", _last_line(error), getattr(error, "lineno", None))
            raise _StepFailed from None
        self.lines = definition_lines(self.tree)
        code = compile(self.tree, str(self.path), "exec")
        module = types.ModuleType(module_name)
        module.__file__ = str(self.path)
        sys.modules[module_name] = module  # dataclasses and typing look classes' modules up here

        self.step("import", "RUN-001", lambda: exec(code, module.__dict__))  # noqa: S102 - running it is the point
        return module

    def hyperparameters(self, module: types.ModuleType) -> dict[str, Any]:
        fn = module.__dict__.get("supported_hyperparameters")
        if not callable(fn):
            self.fail("SIG-001", "no module-level function supported_hyperparameters()")
            declared: set[str] = set()
        else:
            try:
                names = self.step("supported_hyperparameters()", "HYP-001", fn, "supported_hyperparameters")
            except _StepFailed:
                names = set()
            if type(names) not in (set, frozenset) or not all(type(n) is str for n in names):
                self.fail("HYP-001", f"supported_hyperparameters() returned {describe(names)}, not a set of str",
                          self.lines.get("supported_hyperparameters"))
                declared = {n for n in names if type(n) is str} if isinstance(names, (set, frozenset, list, tuple)) else set()
            else:
                declared = set(names)
        if self.tree is not None and declared_hyperparameters(self.tree) is None:
            unused = sorted(declared - hyperparameters_read(self.tree))
            if unused:  # when the names are a literal, the static checks already said so
                self.fail("HYP-002", f"declared but never read from prm: {', '.join(unused)}",
                          self.lines.get("supported_hyperparameters"))
        defaults = self.contract.probe_hyperparameters
        prm: dict[str, Any] = {
            name: defaults.get(name, self.contract.probe_hyperparameter_default) for name in sorted(declared)}
        prm.update(self.given_prm)
        prm["max_len"] = self.contract.max_len
        self.stats["hyperparameters"] = prm
        return prm

    def construct(self, module: types.ModuleType, prm: dict[str, Any]) -> torch.nn.Module:
        cls = module.__dict__.get("Net")
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
            self.fail("SIG-002", f"Net is {describe(cls)}, not a subclass of torch.nn.Module")
            raise _StepFailed
        in_shape, out_shape = tuple(self.contract.input_shape), (self.contract.vocab_size,)

        def build() -> torch.nn.Module:
            torch.manual_seed(self.seed)
            return cls(in_shape, out_shape, dict(prm), self.device)

        net = self.step("Net(in_shape, out_shape, prm, device)", "RUN-002", build, "__init__")
        params = list(self.step("Net.parameters()", "RUN-002", lambda: list(net.parameters()), "__init__"))
        count = sum(p.numel() for p in params)
        self.stats["params"] = count
        self.stats["trainable_params"] = sum(p.numel() for p in params if p.requires_grad)
        wanted = self.device.type
        elsewhere = sorted({str(p.device) for p in params if p.device.type != wanted})
        if elsewhere:
            self.fail("RUN-002", f"parameters on {', '.join(elsewhere)}, not on {self.device}", self.lines.get("__init__"))
        if count > self.contract.budgets.max_params:
            self.fail("BUD-001", f"{count:,} parameters, over the budget of {self.contract.budgets.max_params:,}",
                      self.lines.get("__init__"))
        return net

    def learn(self, net: torch.nn.Module) -> bool:
        """TRN-001..TRN-004. Returns whether learn updated the model."""
        generator = torch.Generator().manual_seed(self.seed)
        batches = [synthetic_batch(self.contract, BATCH, N_CAP, generator, self.device) for _ in range(LEARN_BATCHES)]
        self.batch = batches[0]
        try:
            snapshot = copy.deepcopy(net)  # the state right after train_setup, for the TRN-004 comparison
        except Exception as error:  # noqa: BLE001
            snapshot = None
            self.skipped.append(f"TRN-004: the model could not be copied ({_last_line(error)})")
        before = {name: p.detach().clone() for name, p in net.named_parameters()}

        torch.manual_seed(self.seed)
        loss = self.step("learn(train_data)", "TRN-001", lambda: net.learn(batches), "learn")
        if type(loss) not in (float, int):
            self.fail("TRN-001", f"learn returned {describe(loss)}; expected the mean loss as a Python float",
                      self.lines.get("learn"))
        elif not math.isfinite(loss):
            self.fail("TRN-002", f"learn returned a loss of {loss}", self.lines.get("learn"))
        else:
            self.stats["loss"] = float(loss)
        after = dict(net.named_parameters())
        updated = {name for name, old in before.items() if name in after and not torch.equal(old, after[name].detach())}
        self.stats["frozen_params"] = sum(old.numel() for name, old in before.items() if name not in updated)
        if not updated:
            self.fail("TRN-003", f"learn changed none of the {len(before)} parameter tensors", self.lines.get("learn"))
            return False
        if snapshot is not None:
            self.check_all_references(snapshot, batches, generator)
        return True

    def check_all_references(self, snapshot: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
                             generator: torch.Generator) -> None:
        """TRN-004: from the same state and seed, learn on the batches and on the same batches with references
        2..Ncap redrawn; identical parameters afterwards mean those references were never used. (A model
        that samples one reference per image passes unless every draw picks the first: 1 in 3^4 here, and
        then deterministically so for a given seed.)"""
        variants = [batches, [(images, replace_later_references(captions, self.contract, generator))
                              for images, captions in batches]]
        results = []
        for data in variants:
            model = copy.deepcopy(snapshot)
            torch.manual_seed(self.seed)
            self.step("learn(train_data)", "TRN-001", lambda m=model, d=data: m.learn(d), "learn")
            results.append([p.detach() for p in model.parameters()])
        if all(torch.equal(a, b) for a, b in zip(*results)):
            self.fail("TRN-004", f"learn trained on captions[:, 0] only: changing references 2..{N_CAP} changed nothing",
                      self.lines.get("learn"))

    def teacher_forcing(self, net: torch.nn.Module) -> None:
        images, captions = self.batch or synthetic_batch(
            self.contract, BATCH, N_CAP, torch.Generator().manual_seed(self.seed), self.device)

        def call() -> Any:
            net.eval()
            with torch.no_grad():
                return net(images, captions[:, 0])

        logits = self.step("forward(images, captions)", "OUT-001", call, "forward")
        for code, message in check_logits(logits, self.contract, images.size(0)):
            self.fail(code, message, self.lines.get("forward"))

    def inference(self, net: torch.nn.Module) -> None:
        images = synthetic_batch(self.contract, BATCH, 1, torch.Generator().manual_seed(self.seed + 1), self.device)[0]

        def generate(batch: torch.Tensor) -> Any:
            net.eval()
            torch.manual_seed(self.seed)
            with torch.no_grad():
                return net(batch)

        ids = self.step("forward(images)", "OUT-002", lambda: generate(images), "forward")
        findings = check_generated(ids, self.contract, images.size(0))
        for code, message in findings:
            self.fail(code, message, self.lines.get("forward"))
        if any(code in ("OUT-002", "OUT-003") for code, _ in findings):
            self.skipped.append("OUT-007, BUD-002: forward(images) returned no usable ids")
            return
        again = self.step("forward(images)", "OUT-002", lambda: generate(images), "forward")
        if not (type(again) is torch.Tensor and again.shape == ids.shape and torch.equal(again, ids)):
            self.fail("OUT-007", "two calls of forward(images) after torch.manual_seed(seed) gave different ids",
                      self.lines.get("forward"))
        self.measure_latency(images[:1], generate)

    def measure_latency(self, image: torch.Tensor, generate: Callable[[torch.Tensor], Any]) -> None:
        def timed() -> float:
            self._sync()
            started = time.perf_counter()
            generate(image)
            self._sync()
            return time.perf_counter() - started

        name = "forward(images) with a batch of 1"
        self.step(name, "OUT-002", timed, "forward")  # warm-up
        runs = [self.step(name, "OUT-002", timed, "forward") for _ in range(LATENCY_RUNS)]
        latency_ms = statistics.median(runs) * 1000.0
        self.stats["latency_ms"] = round(latency_ms, 3)
        if latency_ms > self.contract.budgets.max_latency_ms:
            self.fail("BUD-002", f"{latency_ms:.1f} ms per image, over the {self.contract.budgets.max_latency_ms:g} ms "
                                 f"budget (batch of 1, median of {LATENCY_RUNS})", self.lines.get("forward"))

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _last_line(error: BaseException) -> str:
    lines = traceback.format_exception_only(type(error), error)
    return (lines[-1].strip() if lines else type(error).__name__)[:MESSAGE_LIMIT]


