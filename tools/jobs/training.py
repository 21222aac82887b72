"""Training jobs: train a candidate in the sandbox, score every epoch's val ids outside it, keep the best epoch.

    result = train_candidate(code, prepared, dataset, run_dir, hparams={"lr": 1e-3}, epochs=10, train_time_s=120)
    result.ok, result.metrics["cider"], result.curve, result.best_epoch, result.best_weights
    final = score_test(result, prepared, dataset)        # the test split: a final model only, never selection

Who does what. The harness (`capnas.sandbox.train_loop`, inside the sandbox, with no val/test references)
trains, writes ids for the val images after each epoch and commits a checkpoint. This side scores each
epoch's ids (CIDEr only, `CiderScorer`), keeps the best epoch's weights and deletes the others, and writes
`control.json` to stop the harness early once val CIDEr has not improved for `patience` epochs. Once the job
has ended, the best epoch's captions get every metric (`CaptionEvaluator`).

The run dir is the job's whole state, so a call is idempotent and resumable:

    run_dir/spec.json           what the job is (code hash, data, settings); a later call must match it
    run_dir/job/                the sandbox's scratch: candidate.py, checkpoint.pt, weights_epoch{k}.pt,
                                val_ids_epoch{k}.pt, control.json
    run_dir/scores.json         val CIDEr of every scored epoch (written after each one)
    run_dir/val_captions.json   the best epoch's captions, COCO results format (what `capnas eval` reads)
    run_dir/train_result.json   the TrainResult, once the job has finished
    run_dir/test_captions.json, test_metrics.json   written by `score_test`
    run_dir/inherited_weights.pt  a read-only copy of the parent's weights the job started from (`inherit`)

A job whose harness was killed (signal) returns `finished=False`; calling `train_candidate` again with the same
run dir continues after the last committed epoch (at most the epoch in flight is lost). A finished job returns
its stored result without training, unless `reopen` gave it more epochs (a promotion to the next rung of a
multi-fidelity schedule): then it trains on from the checkpoint that `keep_checkpoint` kept, and no epoch is
trained twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from capnas.sandbox import Job, Limits, SandboxResult, prepared as prepared_format, run_sandboxed
from capnas.sandbox.job import CANDIDATE_FILE
from capnas.sandbox.train_loop import (CHECKPOINT_FILE, CONTROL_FILE, STOP_REASONS, split_ids_file, val_ids_file,
                                       weights_file)
from capnas.tools.data.caption_dataset import CaptionDataset
from capnas.tools.scoring.evaluation import (CiderScorer, IdsError, decode_ids, load_ids, read_results, split_references,
                                     write_results)
from capnas.tools.scoring.metrics import CaptionEvaluator, check_java
from capnas.tools.data.prepare import PreparedDataset

EventCallback = Callable[[dict[str, Any]], None]

JOB_DIR = "job"
SPEC_FILE = "spec.json"
SCORES_FILE = "scores.json"
RESULT_FILE = "train_result.json"
VAL_CAPTIONS_FILE = "val_captions.json"
TEST_CAPTIONS_FILE = "test_captions.json"  # written once, by score_test
INHERIT_FILE = "inherited_weights.pt"  # the parent's weights, copied once when the job first runs
STARTUP_S = 120.0  # interpreter, torch, data onto the device, model construction: on top of the time budget
N_SAMPLES = 5


class EpochPoint(BaseModel):
    epoch: int
    loss: float | None = Field(description="mean training loss `learn` returned (None when it was not finite)")
    val_cider: float | None = Field(None, description="val CIDEr of this epoch's ids; None when no ids were made")
    train_s: float
    gen_s: float = 0.0
    images_per_s: float
    partial: bool = Field(False, description="the time budget ended this epoch before its last batch")


class SampleCaption(BaseModel):
    image_id: int
    caption: str
    references: list[str]


class TrainResult(BaseModel):
    """What one training job produced. Metrics are val metrics of the best epoch; the test split is not here."""

    ok: bool = Field(description="finished by epochs, early stop or time budget, with at least one scored epoch")
    finished: bool = Field(description="False when the harness was interrupted: call train_candidate again to resume")
    exit_reason: str = Field(description="epochs | early_stop | time_budget, or how the job failed (exit_1, "
                                         "oom_killed, wall_timeout, bad_ids, signal_9, ...)")
    curve: list[EpochPoint]
    best_epoch: int | None
    metrics: dict[str, float] = Field(description="val bleu_1..bleu_4, meteor, rouge_l, cider of the best epoch")
    unavailable: dict[str, str] = Field(default_factory=dict, description="metric -> why it was not computed")
    params: int | None
    images_per_s: float | None = Field(description="training images per second over all epochs (learn only)")
    hparams: dict[str, Any] = Field(description="the prm the model was built with, max_len included")
    device: str
    run_dir: Path
    best_weights: Path | None
    val_ids: Path | None
    val_captions: Path | None
    samples: list[SampleCaption] = Field(default_factory=list, description="best-epoch captions beside references")
    error: str | None = Field(None, description="why the job failed: the end of the harness's stderr")
    inherited: dict[str, int] | None = Field(None, description="tensors and parameters loaded from the parent's "
                                             "weights (of the model's totals); None: a fresh init")
    duration_s: float = Field(description="wall time of the call that finished (or interrupted) the job")
    sandbox: dict[str, Any] = Field(default_factory=dict)


class SplitMetrics(BaseModel):
    split: str
    metrics: dict[str, float]
    unavailable: dict[str, str] = Field(default_factory=dict)
    n_images: int
    captions: Path
    best_epoch: int


def train_candidate(
    code: str,
    prepared: PreparedDataset,
    dataset: CaptionDataset,
    run_dir: str | Path,
    *,
    hparams: Mapping[str, Any] | None = None,
    epochs: int = 10,
    train_time_s: float | None = 120.0,
    device: str = "cpu",
    batch_size: int = 32,
    seed: int = 0,
    patience: int | None = 3,
    eval_every: int = 1,
    bf16: bool = True,
    threads: int | None = None,
    memory_mb: int | None = 8192,
    evaluator: CaptionEvaluator | None = None,
    on_event: EventCallback | None = None,
    runner: Callable[..., SandboxResult] | None = None,
    features: str | None = None,
    inherit: str | Path | None = None,
    keep_checkpoint: bool = False,
) -> TrainResult:
    """Train candidate `code` on `prepared` (its sandbox view is all the job sees) and score it on val.

    `dataset` is the dataset `prepared` was built from: its raw val captions are the references, here, outside
    the sandbox. `hparams` fill the hyperparameters the model declares (the rest get the contract's probe
    values); `train_time_s` bounds the training (learn plus val generation, summed over resumes; None: no
    bound); `patience` epochs without a better val CIDEr stop it early (None: never); `eval_every` epochs between
    val generations (the last epoch always generates). `threads` sets torch's CPU threads in the job (None:
    torch's default). `evaluator` is reused for the final metrics when given (its METEOR process is slow to start).
    `runner` runs the sandboxed job (default: a child process here; see `capnas.tools.jobs.executors` for Ray).
    `features` is the key of stored frozen-encoder tokens (`capnas.tools.data.features.ensure_features`) to train on
    instead of images, for a candidate whose encoder is that frozen encoder. `inherit` is a parent's weights file:
    the job starts from every tensor whose name and shape match (a copy is taken into the run dir when the job
    first runs, mounted read-only; a resumed call uses that copy). `keep_checkpoint` keeps the last checkpoint of
    a job that ran all its epochs, so that `reopen` can promote it to more.
    `on_event` receives the harness's events (start, step, epoch, stopping) and this side's (val, early_stop,
    evaluating), from a background thread.

    Raises ValueError when `run_dir` holds a different job, SandboxUnavailable/SandboxError when the sandbox
    cannot run, MetricsError when the scorer cannot (Java missing). A failing candidate is not an exception:
    it comes back as `ok=False` with the exit reason and the error."""
    started = time.monotonic()
    run_dir = Path(run_dir).resolve()
    # What the job is. The time budget is not part of it: a resumed call may bring what is left of a run's time
    # (the training time already spent counts against it), and so may the device, threads and memory, and stored
    # features or not (the frozen encoder's tokens either way, up to float16 rounding).
    spec = {"code_sha256": hashlib.sha256(code.encode()).hexdigest(), "prepared": prepared.dir.name,
            "hparams": dict(sorted((hparams or {}).items())), "epochs": epochs, "batch_size": batch_size,
            "seed": seed, "patience": patience, "eval_every": eval_every}
    if inherit is not None:
        spec["inherit"] = True
    if (stored := _claim_run_dir(run_dir, spec)) is not None:
        return stored
    inputs = [_inherited_copy(run_dir, Path(inherit))] if inherit is not None else []
    check_java()  # fail before training, not after the first epoch
    job_dir = run_dir / JOB_DIR
    job_dir.mkdir(exist_ok=True)
    if not (job_dir / CANDIDATE_FILE).exists():
        (job_dir / CANDIDATE_FILE).write_text(code, encoding="utf-8")

    val_image_ids = prepared_format.load_image_ids(prepared.dir, "val")
    refs = split_references(dataset, "val", val_image_ids)
    book = _ScoreBook(run_dir, CiderScorer(refs), val_image_ids, prepared, patience, on_event)
    events = _EventLog(book, on_event)
    job = Job(entry="train", scratch=job_dir, data_dir=prepared.sandbox_dir, device=device, inputs=inputs,
              args={"vocab_size": len(prepared.vocab), "hparams": dict(hparams or {}), "epochs": epochs,
                    "train_time_s": train_time_s, "batch_size": batch_size, "seed": seed, "bf16": bf16,
                    "eval_every": eval_every, "threads": threads, "features": features,
                    "inherit": str(inputs[0]) if inputs else None},
              limits=Limits(wall_s=STARTUP_S + (1.25 * train_time_s if train_time_s else 7 * 86400.0),
                            memory_mb=memory_mb))
    book.start()
    try:
        sandbox = (runner or run_sandboxed)(job, on_event=events)
    finally:
        book.finish()
    book.raise_if_failed()

    harness = sandbox.result if sandbox.ok and isinstance(sandbox.result, dict) else None
    points = harness["curve"] if harness else events.committed_curve()
    book.score_pending(points)  # epochs whose event this side missed (a crash between commit and event)
    if book.stop_reason and book.stop_reason != "early_stop":
        exit_reason = book.stop_reason  # e.g. bad_ids: the harness stopped because this side told it to
    elif harness:
        exit_reason = str(harness["stopped"])
    else:
        exit_reason = sandbox.exit_reason
    finished = not exit_reason.startswith("signal_")  # killed from outside: resumable; anything else is final
    result = TrainResult(
        ok=finished and exit_reason in STOP_REASONS and book.best_epoch is not None,
        finished=finished, exit_reason=exit_reason, curve=book.curve(points), best_epoch=book.best_epoch,
        metrics={}, params=(harness or events.start).get("params"),
        images_per_s=harness.get("images_per_s") if harness else None,
        hparams=(harness or events.start).get("prm") or {}, device=device, run_dir=run_dir,
        inherited=(harness or events.start).get("inherited"),
        best_weights=None, val_ids=None, val_captions=None, error=_failure(sandbox, book),
        duration_s=round(time.monotonic() - started, 2),
        sandbox={"exit_reason": sandbox.exit_reason, "tier": sandbox.tier, "duration_s": sandbox.duration_s,
                 "peak_rss_mb": sandbox.peak_rss_mb, "peak_memory_mb": sandbox.peak_memory_mb,
                 "cpu_s": sandbox.cpu_s})
    if not finished:
        return result
    return _finish(result, book, refs, evaluator, on_event, keep_checkpoint)


def score_test(result: TrainResult, prepared: PreparedDataset, dataset: CaptionDataset, *,
               device: str | None = None, evaluator: CaptionEvaluator | None = None,
               memory_mb: int | None = 8192, wall_s: float = 1800.0, threads: int | None = None,
               on_event: EventCallback | None = None) -> SplitMetrics:
    """Every metric on the TEST split for the best epoch of a finished job: for a final model only (a number that
    feeds selection must come from val). Generates the test ids in the sandbox from the best weights, then scores
    them here. Idempotent: a second call returns the stored metrics."""
    run_dir = Path(result.run_dir)
    stored = run_dir / "test_metrics.json"
    if stored.exists():
        return SplitMetrics.model_validate_json(stored.read_text())
    if not result.finished:
        raise ValueError(f"the job in {run_dir} was interrupted ({result.exit_reason}) and has not finished: call "
                         "train_candidate again with the same run dir to resume it, then score the test split")
    if result.best_weights is None or result.best_epoch is None:
        raise ValueError(f"the job in {run_dir} has no best epoch ({result.exit_reason}); only a finished job "
                         "with a scored epoch can be scored on test")
    job = Job(entry="generate", scratch=run_dir / JOB_DIR, data_dir=prepared.sandbox_dir,
              device=device or result.device, limits=Limits(wall_s=wall_s, memory_mb=memory_mb),
              args={"split": "test", "weights": result.best_weights.name, "vocab_size": len(prepared.vocab),
                    "max_len": prepared.max_len, "hparams": result.hparams, "threads": threads})
    sandbox = run_sandboxed(job, on_event=on_event)
    if not sandbox.ok:
        raise RuntimeError(f"generating test ids for {run_dir} failed ({sandbox.exit_reason}): "
                           f"{_tail(sandbox.stderr_tail)}")
    image_ids = prepared_format.load_image_ids(prepared.dir, "test")
    ids = load_ids(run_dir / JOB_DIR / split_ids_file("test"), len(image_ids), len(prepared.vocab))
    captions = decode_ids(ids, prepared.vocab, image_ids)
    path = run_dir / TEST_CAPTIONS_FILE
    write_results(path, captions)
    scored = _full_metrics(split_references(dataset, "test", image_ids), captions, evaluator)
    out = SplitMetrics(split="test", metrics=scored.scores, unavailable=scored.unavailable,
                       n_images=scored.n_images, captions=path, best_epoch=result.best_epoch)
    _write_json_atomic(stored, out.model_dump(mode="json"))
    return out


# -- the run dir -------------------------------------------------------------------------------------------


def _claim_run_dir(run_dir: Path, spec: dict[str, Any]) -> TrainResult | None:
    """The stored result of a finished job; None after checking (or writing) the job's spec."""
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_path = run_dir / SPEC_FILE
    if spec_path.exists():
        old = json.loads(spec_path.read_text())
        differs = [k for k in spec if old.get(k) != spec[k]]
        if differs:
            what = "; ".join(f"{k}: {old.get(k)!r} there, {spec[k]!r} now" for k in differs)
            raise ValueError(f"run dir {run_dir} holds another training job ({what}); use a fresh run dir, or the "
                             "same code, data and settings to resume it")
    else:
        _write_json_atomic(spec_path, spec)
    if (run_dir / RESULT_FILE).exists():
        return TrainResult.model_validate_json((run_dir / RESULT_FILE).read_text())
    return None


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def _tail(text: str, lines: int = 15) -> str:
    kept = [ln for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return "\n".join(kept)[-3000:]


def _failure(sandbox: SandboxResult, book: _ScoreBook) -> str | None:
    if book.stop_error:
        return book.stop_error
    if sandbox.ok:
        return None
    tail = _tail(sandbox.stderr_tail)
    return f"the training job ended with {sandbox.exit_reason}" + (f":\n{tail}" if tail else "")


# -- scoring each epoch, outside the sandbox ---------------------------------------------------------------


class _ScoreBook:
    """Val CIDEr per epoch, the best epoch, early stopping and weight pruning. Epochs are scored on a worker
    thread, so the harness's events keep flowing (and it keeps training) while Java tokenizes."""

    def __init__(self, run_dir: Path, scorer: CiderScorer, image_ids: list[int], prepared: PreparedDataset,
                 patience: int | None, on_event: EventCallback | None):
        self.run_dir, self.job_dir, self.scorer, self.image_ids = run_dir, run_dir / JOB_DIR, scorer, image_ids
        self.vocab, self.patience, self.notify = prepared.vocab, patience, on_event
        path = run_dir / SCORES_FILE
        state = json.loads(path.read_text()) if path.exists() else {}
        self.cider: dict[int, float] = {int(k): v for k, v in state.get("cider", {}).items()}
        self.stop_reason: str | None = state.get("stop_reason")
        self.stop_error: str | None = state.get("stop_error")
        self.failure: BaseException | None = None
        self.lock = threading.RLock()
        self.todo: queue.Queue[tuple[int, str | None] | None] = queue.Queue()
        self.worker = threading.Thread(target=self._work, name="capnas-val-scorer", daemon=True)

    @property
    def best_epoch(self) -> int | None:
        with self.lock:
            return max(self.cider, key=lambda k: (self.cider[k], -k)) if self.cider else None

    def start(self) -> None:
        self.worker.start()

    def finish(self) -> None:
        self.todo.put(None)
        self.worker.join()

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise self.failure

    def submit(self, epoch: int, ids_file: str | None) -> None:
        self.todo.put((epoch, ids_file))

    def _work(self) -> None:
        while (item := self.todo.get()) is not None:
            if self.failure is None:
                try:
                    self.score(*item)
                except BaseException as e:  # noqa: BLE001 - re-raised on the caller's thread after the run
                    self.failure = e
                    self._stop("metrics_failed", f"scoring val ids failed: {e}")

    def score_pending(self, points: list[dict[str, Any]]) -> None:
        for p in points:
            self.score(int(p["epoch"]), p.get("ids"))

    def score(self, epoch: int, ids_file: str | None) -> None:
        """CIDEr of one epoch's ids (once), then prune weights and decide about early stopping."""
        with self.lock:
            if epoch in self.cider or ids_file is None or self.stop_reason not in (None, "early_stop"):
                self._prune(epoch)
                return
        t0 = time.perf_counter()
        try:
            ids = load_ids(self.job_dir / ids_file, len(self.image_ids), len(self.vocab))
        except IdsError as e:
            self._stop("bad_ids", f"epoch {epoch}: {e}")
            return
        cider = self.scorer.score(decode_ids(ids, self.vocab, self.image_ids))
        with self.lock:
            self.cider[epoch] = cider
            best = self.best_epoch
            assert best is not None
            self._save()
            self._prune(epoch)
            self._emit({"event": "val", "epoch": epoch, "cider": round(cider, 4), "best_epoch": best,
                        "best_cider": round(self.cider[best], 4), "seconds": round(time.perf_counter() - t0, 2)})
            if self.patience is not None and epoch - best >= self.patience and self.stop_reason is None:
                self._emit({"event": "early_stop", "epoch": epoch, "best_epoch": best, "patience": self.patience})
                self._stop("early_stop", None)

    def _prune(self, epoch: int) -> None:
        """Delete the weights of every epoch up to `epoch` that is not the best (later ones may still win)."""
        best = self.best_epoch
        for path in self.job_dir.glob("weights_epoch*.pt"):
            k = int(path.stem.removeprefix("weights_epoch"))
            if k <= epoch and k != best:
                path.unlink(missing_ok=True)

    def _stop(self, reason: str, error: str | None) -> None:
        with self.lock:
            if self.stop_reason is None:
                self.stop_reason, self.stop_error = reason, error
                _write_json_atomic(self.job_dir / CONTROL_FILE, {"stop": True, "reason": reason})
                self._save()

    def _save(self) -> None:
        _write_json_atomic(self.run_dir / SCORES_FILE, {"cider": self.cider, "best_epoch": self.best_epoch,
                                                        "stop_reason": self.stop_reason, "stop_error": self.stop_error})

    def _emit(self, event: dict[str, Any]) -> None:
        if self.notify is not None:
            self.notify(event)

    def curve(self, points: list[dict[str, Any]]) -> list[EpochPoint]:
        def finite(x: Any) -> float | None:
            return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None

        return [EpochPoint(epoch=p["epoch"], loss=finite(p.get("loss")), val_cider=self.cider.get(int(p["epoch"])),
                           train_s=p["train_s"], gen_s=p.get("gen_s", 0.0), images_per_s=p["images_per_s"],
                           partial=bool(p.get("partial"))) for p in points]


class _EventLog:
    """The launcher's event callback: forwards every event, hands committed epochs to the score book and
    remembers them (the harness's own result is missing when it was killed)."""

    def __init__(self, book: _ScoreBook, on_event: EventCallback | None):
        self.book, self.on_event = book, on_event
        self.start: dict[str, Any] = {}
        self.points: dict[int, dict[str, Any]] = {}

    def __call__(self, event: dict[str, Any]) -> None:
        name = event.get("event")
        if name == "start":
            self.start = event
            for p in event.get("curve") or []:  # resumed: epochs committed before, perhaps never scored
                self.points[int(p["epoch"])] = p
                self.book.submit(int(p["epoch"]), p.get("ids"))
        elif name == "epoch":
            self.points[int(event["epoch"])] = event
            self.book.submit(int(event["epoch"]), event.get("ids"))
        if self.on_event is not None:
            self.on_event(event)

    def committed_curve(self) -> list[dict[str, Any]]:
        return [self.points[k] for k in sorted(self.points)]


# -- the end of a job --------------------------------------------------------------------------------------


def _full_metrics(refs: Mapping[int, list[str]], captions: Mapping[int, str], evaluator: CaptionEvaluator | None):
    if evaluator is not None:
        return evaluator.score(refs, captions)
    with CaptionEvaluator() as own:
        return own.score(refs, captions)


def _finish(result: TrainResult, book: _ScoreBook, refs: dict[int, list[str]], evaluator: CaptionEvaluator | None,
            on_event: EventCallback | None, keep_checkpoint: bool = False) -> TrainResult:
    """Every metric for the best epoch's val captions; store the result; drop what a finished job no longer needs."""
    run_dir, job_dir = result.run_dir, result.run_dir / JOB_DIR
    best = result.best_epoch
    if best is not None:
        ids_path = job_dir / val_ids_file(best)
        captions = decode_ids(load_ids(ids_path, len(book.image_ids), len(book.vocab)), book.vocab, book.image_ids)
        captions_path = run_dir / VAL_CAPTIONS_FILE
        write_results(captions_path, captions)
        if on_event is not None:
            on_event({"event": "evaluating", "split": "val", "epoch": best, "images": len(captions)})
        scored = _full_metrics(refs, read_results(captions_path), evaluator)
        result = result.model_copy(update={
            "metrics": scored.scores, "unavailable": scored.unavailable, "val_ids": ids_path,
            "val_captions": captions_path, "best_weights": job_dir / weights_file(best),
            "samples": [SampleCaption(image_id=i, caption=captions[i], references=refs[i])
                        for i in book.image_ids[:N_SAMPLES]]})
    _write_json_atomic(run_dir / RESULT_FILE, result.model_dump(mode="json"))
    if not (keep_checkpoint and result.exit_reason == "epochs"):  # only a job that ran all its epochs goes on
        (job_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
    for path in job_dir.glob("weights_epoch*.pt"):
        if best is None or path.name != weights_file(best):
            path.unlink(missing_ok=True)
    for leftover in job_dir.glob(".*.tmp"):  # a write the kill interrupted
        leftover.unlink(missing_ok=True)
    return result


def stored_result(run_dir: str | Path) -> TrainResult | None:
    """The result of the finished job in `run_dir`, or None (not finished, or reopened for more epochs)."""
    path = Path(run_dir) / RESULT_FILE
    return TrainResult.model_validate_json(path.read_text()) if path.exists() else None


def reopen(run_dir: str | Path, epochs: int) -> None:
    """Give a finished job more epochs: the next `train_candidate` call with `epochs` continues from its kept
    checkpoint (model, optimizers, schedulers, RNG and epoch counter) instead of returning the stored result.
    Idempotent, and safe to repeat after a crash at any point (the stored result goes before the spec changes).
    Raises ValueError when the job cannot go on: it has not finished, it ended for another reason than its
    epochs (an early stop, the time budget, a failure), or it was trained without `keep_checkpoint`."""
    run_dir = Path(run_dir).resolve()
    spec_path, result_path, ckpt = run_dir / SPEC_FILE, run_dir / RESULT_FILE, run_dir / JOB_DIR / CHECKPOINT_FILE
    if not spec_path.exists():
        raise ValueError(f"{run_dir} holds no training job to reopen; train it first")
    spec = json.loads(spec_path.read_text())
    if spec["epochs"] >= epochs:
        if spec["epochs"] == epochs:
            return  # reopened already (a resumed promotion)
        raise ValueError(f"the job in {run_dir} already runs {spec['epochs']} epochs; reopen it for more, not {epochs}")
    if result_path.exists():
        done = TrainResult.model_validate_json(result_path.read_text())
        if done.exit_reason != "epochs":
            raise ValueError(f"the job in {run_dir} ended by {done.exit_reason}, not by running its epochs: it cannot "
                             "train on")
        if not ckpt.exists():
            raise ValueError(f"the job in {run_dir} kept no checkpoint (train it with keep_checkpoint=True to "
                             "promote it later)")
        result_path.unlink()
    elif not ckpt.exists():
        raise ValueError(f"the job in {run_dir} has no checkpoint to continue from; train it first")
    _write_json_atomic(spec_path, {**spec, "epochs": epochs})


def _inherited_copy(run_dir: Path, source: Path) -> Path:
    """The run dir's read-only copy of the parent's weights, taken on the first call (a parent promoted later
    prunes its old best epoch, so a resumed job must not read the parent's files)."""
    dest = run_dir / INHERIT_FILE
    if not dest.exists():
        if not source.is_file():
            raise ValueError(f"the parent's weights {source} do not exist: train the parent first, or pass inherit=None")
        tmp = dest.with_name(f".{dest.name}.tmp")
        shutil.copyfile(source, tmp)
        tmp.chmod(0o444)  # the sandbox mounts it read-only too; readable by the sandbox's own uid
        os.replace(tmp, dest)
    return dest


def remove_run(run_dir: str | Path) -> None:
    """Delete a job's run dir (weights, ids, captions, result)."""
    shutil.rmtree(run_dir, ignore_errors=True)
