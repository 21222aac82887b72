"""One read of a run for the people-facing reports: a `RunRecord` (the journal's rows as plain data: tools never
import the journal, `capnas.commands.report_cmd.read_run` reads it), the candidates' training run dirs (best
weights, generated validation captions) and the prepared dataset (images, references, vocabulary).
Every number here was measured by a tool, none by an LLM; `capnas.tools.report.bundle` turns it into files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from capnas.sandbox import prepared as prepared_format
from capnas.tools.data.datasets import DatasetError, task_data
from capnas.tools.jobs.training import JOB_DIR, RESULT_FILE, TEST_CAPTIONS_FILE, VAL_CAPTIONS_FILE
from capnas.tools.report.compare import Arm, arm_from_record
from capnas.tools.scoring.evaluation import split_references
from capnas.tools.task import Task

# -- one read of a run, for the reports ---------------------------------------------------------------------


class UnknownRunError(LookupError):
    """No such run in the journal; the message lists the recent ones."""


class ReportError(RuntimeError):
    """A report or an export cannot be made (no trained candidate, weights missing); the message says why."""


class Row:
    """Attribute access to one journal row (a plain dict, JSON columns decoded), like the journal's Candidate."""

    __slots__ = ("row",)

    def __init__(self, row: dict[str, Any]):
        self.row = dict(row)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.row[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        return f"Row({self.row.get('candidate_id', '?')})"


@dataclass(frozen=True)
class RunRecord:
    """What the reports read from the run journal, as plain data. The caller reads the journal (the CLI through
    `capnas.commands.report_cmd.read_run`); nothing in tools imports it."""

    run: dict[str, Any]  # the runs row: run_id, status, stop_reason, task, config, created_at, ...
    candidates: list[dict[str, Any]]  # candidate rows of the run, in journal order (round, created_at)
    leaderboard: list[str]  # ids of the trained candidates, best first by the run's objective
    usage: dict[str, dict[str, float]] = field(default_factory=dict)  # role -> tokens, cost, calls
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # LLM call key -> its parsed answer
    test: dict[str, Any] | None = None  # the val-chosen best's test score ({candidate_id, metrics}), once scored
    baseline: RunRecord | None = None  # the equal-budget random arm of a `--baseline random` run
    tool_calls: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # candidate id -> its coder's tool calls


@dataclass
class CandidateArtifacts:
    """What a candidate's training job left in its run dir (`capnas.tools.jobs.training`)."""

    dir: Path | None
    weights: Path | None  # the best epoch's state_dict
    val_captions: dict[int, str]  # generated caption per validation image id
    captions_source: str | None  # the file the captions came from, or "journal samples"
    best_epoch: int | None = None
    test_metrics: dict[str, Any] | None = None  # test_metrics.json, when the model was scored on test
    test_captions: dict[int, str] = field(default_factory=dict)  # test_captions.json, written with them
    prm: dict[str, Any] | None = None  # the prm the training job built the model with (max_len included)


@dataclass
class RunData:
    """Everything the reports show about one run. The journal's rows (`RunRecord`) are the source of every
    number; the prepared dataset gives images, reference captions and the vocabulary; the training run dirs
    give weights and the generated validation captions."""

    record: RunRecord
    workspace: Path
    candidates: list[Row] = field(init=False)
    _artifacts: dict[str, CandidateArtifacts] = field(init=False, default_factory=dict)
    _split_ids: dict[str, list[int]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.workspace = Path(self.workspace)
        self.candidates = [Row(c) for c in self.record.candidates]
        known = {c.candidate_id for c in self.candidates}
        stray = [cid for cid in self.record.leaderboard if cid not in known]
        if stray:
            raise ReportError(f"leaderboard names candidates that are not in run {self.run_id}: {', '.join(stray)}")

    # -- journal --------------------------------------------------------------------------------------
    @property
    def run(self) -> dict[str, Any]:
        return self.record.run

    @property
    def run_id(self) -> str:
        return str(self.run["run_id"])

    @property
    def task(self) -> dict[str, Any]:
        return self.run.get("task") or {}

    @property
    def config(self) -> dict[str, Any]:
        return self.run.get("config") or {}

    @property
    def objective(self) -> str:
        return self.task.get("objective", "cider")

    @property
    def usage(self) -> dict[str, dict[str, float]]:
        return self.record.usage

    @cached_property
    def comparison(self) -> tuple[Arm, Arm] | None:
        """(this run, its random baseline) when the run was started with `--baseline random`."""
        if self.record.baseline is None:
            return None
        return arm_from_record(self.record), arm_from_record(self.record.baseline)

    @cached_property
    def board(self) -> list[Row]:
        """Trained candidates, best first by the objective (the journal's leaderboard order)."""
        by_id = {c.candidate_id: c for c in self.candidates}
        return [by_id[cid] for cid in self.record.leaderboard]

    @property
    def best(self) -> Row | None:
        return self.board[0] if self.board else None

    def candidate(self, candidate_id: str) -> Row:
        for c in self.candidates:
            if c.candidate_id == candidate_id:
                return c
        known = ", ".join(c.candidate_id for c in self.candidates) or "none"
        raise ReportError(f"no candidate {candidate_id!r} in run {self.run_id} (candidates: {known})")

    def rank(self, candidate_id: str) -> int | None:
        ids = self.record.leaderboard
        return ids.index(candidate_id) + 1 if candidate_id in ids else None

    def rationale(self, cand: Row) -> dict[str, str]:
        """LLM prose behind a candidate, quoted as written: the planner's plan for its round and the critic's
        feedback that preceded it. Empty for random runs and runs without an LLM."""
        out: dict[str, str] = {}
        plan = self.record.answers.get(f"planner:round{cand.round}")
        if plan and plan.get("rationale"):
            out["planner"] = str(plan["rationale"])
        previous = [c for c in self.candidates if c.round == cand.round - 1]
        if previous:
            critique = self.record.answers.get(f"critic:{previous[-1].candidate_id}")
            if critique and critique.get("feedback"):
                out["critic"] = str(critique["feedback"])
        return out

    # -- artifacts ------------------------------------------------------------------------------------
    def artifacts(self, cand: Row) -> CandidateArtifacts:
        if cand.candidate_id not in self._artifacts:
            self._artifacts[cand.candidate_id] = find_artifacts(cand, self.workspace / "runs" / self.run_id)
        return self._artifacts[cand.candidate_id]

    # -- the prepared dataset -------------------------------------------------------------------------
    @cached_property
    def _data(self) -> tuple[Any, Any, str | None]:
        """(CaptionDataset, PreparedDataset, None) or (None, None, why not). Preparing is a cache lookup when
        the run's cache still exists (else it is rebuilt from the dataset, as the run built it)."""
        try:
            dataset, prepared = task_data(Task(**self.task))
        except (DatasetError, OSError, ValueError) as e:  # (a pydantic ValidationError is a ValueError)
            return None, None, f"the run's dataset is not available here: {e}"
        return dataset, prepared, None

    @property
    def dataset(self) -> Any | None:
        return self._data[0]

    @property
    def prepared(self) -> Any | None:
        return self._data[1]

    @property
    def data_error(self) -> str | None:
        return self._data[2]

    def image_ids(self, split: str) -> list[int]:
        """The split's image ids in prepared order ([] without the prepared dataset)."""
        if split not in self._split_ids:
            self._split_ids[split] = ([int(i) for i in prepared_format.load_image_ids(self.prepared.dir, split)]
                                      if self.prepared else [])
        return self._split_ids[split]

    def references(self, split: str) -> dict[int, list[str]]:
        """Raw reference captions of a split, in prepared order."""
        if self.dataset is None:
            return {}
        return split_references(self.dataset, split, self.image_ids(split))

    def images(self, split: str) -> Any | None:
        """uint8 [N, 3, S, S] images of a split in prepared order (memory-mapped)."""
        if self.prepared is None:
            return None
        return prepared_format.load_images(self.prepared.dir, split)

    @property
    def val_image_ids(self) -> list[int]:
        return self.image_ids("val")

    @cached_property
    def val_references(self) -> dict[int, list[str]]:
        return self.references("val")

    @cached_property
    def val_images(self) -> Any | None:
        return self.images("val")


def find_artifacts(cand: Any, run_root: Path) -> CandidateArtifacts:
    """The candidate's training run dir (as the journal recorded it, else `<workspace>/runs/<run>/<id>` when the
    workspace moved), its best weights and its generated validation captions, from the files
    `capnas.tools.jobs.training` writes there (train_result.json, job/weights_epoch{k}.pt, val_captions.json)."""
    folder = None
    for option in (Path(cand.artifacts) if cand.artifacts else None, run_root / cand.candidate_id):
        if option is not None and option.is_dir():
            folder = option
            break
    weights, best_epoch, captions, source, test, prm, test_captions = None, None, {}, None, None, None, {}
    if folder is not None:
        result = _read_json(folder / RESULT_FILE)
        if isinstance(result, dict):
            best_epoch = result.get("best_epoch")
            prm = result.get("hparams") or None
            if result.get("best_weights"):
                # the recorded path, or the same file name in this run dir when the workspace moved
                for path in (Path(result["best_weights"]), folder / JOB_DIR / Path(result["best_weights"]).name):
                    if path.is_file():
                        weights = path
                        break
        elif len(found := sorted((folder / JOB_DIR).glob("weights_epoch*.pt"))) == 1:
            weights = found[0]  # a finished job keeps only its best epoch's weights
        captions = _captions(_read_json(folder / VAL_CAPTIONS_FILE))
        source = VAL_CAPTIONS_FILE if captions else None
        stored = _read_json(folder / "test_metrics.json")
        test = stored if isinstance(stored, dict) else None
        test_captions = _captions(_read_json(folder / TEST_CAPTIONS_FILE))
    if not captions and cand.samples:
        captions = {int(s["image_id"]): str(s.get("caption", s.get("generated", ""))) for s in cand.samples
                    if isinstance(s, dict) and "image_id" in s}
        source = "journal samples" if captions else None
    return CandidateArtifacts(dir=folder, weights=weights, val_captions=captions, captions_source=source,
                              best_epoch=best_epoch, test_metrics=test, prm=prm, test_captions=test_captions)


def _captions(entries: Any) -> dict[int, str]:
    """{image_id: caption} from a COCO results list ({} when it is missing or malformed)."""
    if not isinstance(entries, list):
        return {}
    try:
        return {int(e["image_id"]): str(e["caption"]) for e in entries}
    except (KeyError, TypeError, ValueError):
        return {}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def curve_points(cand: Any) -> list[dict[str, Any]]:
    """The learning curve as {epoch, loss, val_cider, train_s, images_per_s} per epoch, from the journal's
    `curve` column (the trainer scores each epoch with CIDEr only; the full metric set is the best epoch's)."""
    points = []
    for p in cand.curve or []:
        if not isinstance(p, dict) or p.get("epoch") is None:
            continue
        points.append({"epoch": p["epoch"], "loss": p.get("loss"), "val_cider": p.get("val_cider"),
                       "train_s": p.get("train_s"), "images_per_s": p.get("images_per_s"),
                       "partial": bool(p.get("partial"))})
    return points
