"""The run journal: one SQLite file per workspace holding everything too large for graph state.

LangGraph checkpoints every super-step, so state keeps ids, short summaries and metrics only; code, prompts,
raw LLM responses, contract reports, curves and captions live here. One row per candidate, keyed by the
normalized hash of its code within a run, so a node that spends (an LLM call, a training job) can ask
"was this already done?" after a crash and never do it twice.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sqlite3
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, get_args

# Every status the journal stores. A candidate moves generated -> valid -> trained | failed, or stops at invalid or
# duplicate (a repair sends an invalid or duplicate one back to generated). A run is running until it finishes,
# is stopped (a budget, a person), fails, or is interrupted (the process left with work unfinished: resumable).
CandidateStatus = Literal["generated", "invalid", "valid", "trained", "failed", "duplicate"]
RunStatus = Literal["running", "finished", "stopped", "failed", "interrupted"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    status      TEXT NOT NULL,             -- RunStatus: running | finished | stopped | failed | interrupted
    stop_reason TEXT,
    task        TEXT NOT NULL DEFAULT '{}', -- JSON: the typed Task the planner produced
    config      TEXT NOT NULL DEFAULT '{}'  -- JSON: the run's settings (no secrets)
);
CREATE TABLE IF NOT EXISTS candidates (
    candidate_id TEXT PRIMARY KEY,
    run_id       TEXT NOT NULL REFERENCES runs(run_id),
    parent_id    TEXT,
    round        INTEGER NOT NULL,
    mode         TEXT NOT NULL,            -- code | spec | random
    code_hash    TEXT NOT NULL,
    code         TEXT NOT NULL,
    spec         TEXT,                     -- JSON ArchSpec for spec/random candidates
    plan         TEXT,                     -- what the planner/coder intended, in a sentence
    status       TEXT NOT NULL,            -- CandidateStatus: generated | invalid | valid | trained | failed | duplicate
    repairs      INTEGER NOT NULL DEFAULT 0,
    contract     TEXT,                     -- JSON validation report (violations, params, latency)
    params       INTEGER,
    hparams      TEXT,                     -- JSON
    metrics      TEXT,                     -- JSON val metrics from the evaluator
    curve        TEXT,                     -- JSON learning curve
    samples      TEXT,                     -- JSON generated captions beside references (a few)
    exit_reason  TEXT,
    artifacts    TEXT,                     -- directory with weights and generated ids
    tokens       INTEGER NOT NULL DEFAULT 0,
    cost_usd     REAL NOT NULL DEFAULT 0,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    fidelity     TEXT,                     -- JSON rung schedule: rung reached, rungs, val metrics at each rung
    inherited    TEXT                      -- JSON weights taken from the parent: from, tensors, params
);
CREATE TABLE IF NOT EXISTS llm_calls (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        TEXT NOT NULL,
    candidate_id  TEXT,
    role          TEXT NOT NULL,
    key           TEXT,                    -- e.g. coder:r003:1; a resumed node replays the stored answer
    prompt        TEXT NOT NULL,
    response      TEXT NOT NULL,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd      REAL NOT NULL DEFAULT 0,
    created_at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id       TEXT NOT NULL,
    candidate_id TEXT,
    kind         TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_at   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS candidates_by_run ON candidates(run_id, round);
CREATE INDEX IF NOT EXISTS candidates_by_hash ON candidates(run_id, code_hash);
"""

JSON_COLUMNS = {"task", "config", "spec", "contract", "hparams", "metrics", "curve", "samples", "fidelity", "inherited"}
# Columns added after the first journals were written: a journal without them gets them when opened.
ADDED_COLUMNS = {"candidates": ("fidelity", "inherited")}


def normalized_code_hash(code: str) -> str:
    """Hash of the code with comments and formatting removed, so cosmetic edits count as the same model."""
    try:
        canonical = ast.unparse(ast.parse(code))
    except SyntaxError:
        canonical = "\n".join(line.rstrip() for line in code.strip().splitlines())
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Candidate:
    """One candidate as the journal holds it: a field per column of the candidates table, JSON columns decoded.
    Read-only: changes go through `Journal.update_candidate`, and a fresh `get_candidate` shows them."""

    # identity and lineage
    candidate_id: str
    run_id: str
    parent_id: str | None
    round: int
    mode: str  # code | spec | random
    # what was proposed
    code_hash: str  # normalized (comments and formatting removed): equal hashes are duplicates
    code: str
    spec: dict[str, Any] | None  # the ArchSpec of spec/random candidates; None for LLM-written code
    plan: str | None
    # where it stands
    status: CandidateStatus
    repairs: int  # repair attempts so far
    # validation
    contract: dict[str, Any] | None  # the validation report: ok, violations, params, latency
    params: int | None
    # training and evaluation
    hparams: dict[str, Any] | None
    metrics: dict[str, float] | None  # val metrics from the evaluator
    curve: list[dict[str, Any]] | None  # one point per epoch
    samples: list[dict[str, Any]] | None  # a few generated captions beside their references
    exit_reason: str | None  # how training ended, or "identical to <id>" for a duplicate
    artifacts: str | None  # directory with weights and generated ids
    # spending
    tokens: int
    cost_usd: float
    # bookkeeping (time.time() seconds)
    created_at: float
    updated_at: float
    # multi-fidelity search: {"rung": k, "rungs": [epochs...], "scores": [{"rung", "epochs", "metrics"}...]};
    # None when the run has no rung schedule (or the candidate never finished its first rung)
    fidelity: dict[str, Any] | None = None
    # {"from": parent id, "tensors", "of_tensors", "params", "of_params"}; None: trained from a fresh init
    inherited: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Candidate:
        """The candidate of one table row (a column without a field, or the reverse, is a TypeError here)."""
        return cls(**_decode(row))

    @property
    def rung(self) -> int | None:
        """The rung it has finished (0 for the first), or None without a schedule."""
        return self.fidelity["rung"] if self.fidelity else None

    @property
    def partial(self) -> bool:
        """Its scores are a cheap first look, not its final fidelity (see `fidelity_record`)."""
        return bool(self.fidelity and self.fidelity.get("partial"))

    @property
    def violations(self) -> list[dict[str, Any]]:
        """The contract violations of its last validation (none when never validated)."""
        return list((self.contract or {}).get("violations", []))

    def to_dict(self) -> dict[str, Any]:
        """A plain dict copy, keyed by column, for code that takes rows (the critic's table, a report record)."""
        return asdict(self)


def fidelity_record(rungs: list[int], rung: int, scores: list[dict[str, Any]], exit_reason: str) -> dict[str, Any]:
    """A candidate's `fidelity` column: the rung it has finished, the schedule, its val metrics at each rung it
    finished ({"rung", "epochs", "metrics"}), and whether those scores are partial: from a rung below the
    schedule's last while it could have trained on (it ran all its epochs; one that stopped early is final)."""
    return {"rung": rung, "rungs": list(rungs), "scores": scores,
            "partial": rung < len(rungs) - 1 and exit_reason == "epochs"}


class Journal:
    """Thin access layer over the journal file. Safe to share between threads: each call opens its own
    short-lived connection (SQLite in WAL mode lets readers and one writer proceed together)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            for table, columns in ADDED_COLUMNS.items():
                have = {r["name"] for r in db.execute(f"PRAGMA table_info({table})")}
                for column in columns:
                    if column not in have:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            with db:  # commits on success, rolls back on error
                yield db
        finally:
            db.close()

    # -- runs ---------------------------------------------------------------------------------------
    def create_run(self, task: dict, config: dict, run_id: str | None = None) -> str:
        run_id = run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        now = time.time()
        with self._connect() as db:
            db.execute(
                "INSERT INTO runs(run_id, created_at, updated_at, status, task, config) VALUES (?,?,?,?,?,?)",
                (run_id, now, now, "running", json.dumps(task), json.dumps(config)),
            )
        return run_id

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return _decode(row) if row else None

    def set_run_status(self, run_id: str, status: RunStatus, stop_reason: str | None = None) -> None:
        _check_status(status, RunStatus, "run")
        with self._connect() as db:
            db.execute(
                "UPDATE runs SET status = ?, stop_reason = COALESCE(?, stop_reason), updated_at = ? WHERE run_id = ?",
                (status, stop_reason, time.time(), run_id),
            )

    def update_run_task(self, run_id: str, task: dict) -> None:
        with self._connect() as db:
            db.execute("UPDATE runs SET task = ?, updated_at = ? WHERE run_id = ?", (json.dumps(task), time.time(), run_id))

    def list_runs(self) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY created_at DESC").fetchall()
        return [_decode(r) for r in rows]

    # -- candidates ---------------------------------------------------------------------------------
    def add_candidate(
        self,
        run_id: str,
        code: str,
        *,
        round: int,
        mode: str,
        parent_id: str | None = None,
        spec: dict | None = None,
        plan: str | None = None,
        candidate_id: str | None = None,
    ) -> Candidate:
        """Record a candidate. Code identical (after normalization) to an earlier candidate of the run is
        recorded with status 'duplicate' naming its twin, and is never validated or trained. Adding an id that
        already exists returns the stored row unchanged (a resumed node)."""
        candidate_id = candidate_id or f"c{uuid.uuid4().hex[:8]}"
        try:
            return self.get_candidate(candidate_id)
        except KeyError:
            pass
        code_hash = normalized_code_hash(code)
        twin = self.find_by_hash(run_id, code_hash)
        status, reason = ("duplicate", f"identical to {twin.candidate_id}") if twin else ("generated", None)
        now = time.time()
        with self._connect() as db:
            db.execute(
                """INSERT INTO candidates(candidate_id, run_id, parent_id, round, mode, code_hash, code, spec, plan,
                   status, exit_reason, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)""",
                (candidate_id, run_id, parent_id, round, mode, code_hash, code,
                 json.dumps(spec) if spec is not None else None, plan, status, reason, now, now),
            )
        return self.get_candidate(candidate_id)

    def replace_code(self, candidate_id: str, code: str, *, spec: dict | None, plan: str | None, repairs: int) -> Candidate:
        """A repair: new code for the same candidate, checked for duplicates like a new one."""
        cand = self.get_candidate(candidate_id)
        code_hash = normalized_code_hash(code)
        twin = self.find_by_hash(cand.run_id, code_hash, exclude=candidate_id)
        self.log_event(cand.run_id, "repair", {"previous_code": cand.code, "contract": cand.contract}, candidate_id)
        self.update_candidate(
            candidate_id, code=code, code_hash=code_hash, spec=spec, plan=plan, repairs=repairs,
            status="duplicate" if twin else "generated", exit_reason=f"identical to {twin.candidate_id}" if twin else None,
            contract=None, params=None,
        )
        return self.get_candidate(candidate_id)

    def find_by_hash(self, run_id: str, code_hash: str, exclude: str | None = None) -> Candidate | None:
        """The earliest non-duplicate candidate of the run with this normalized code hash."""
        with self._connect() as db:
            row = db.execute(
                """SELECT * FROM candidates WHERE run_id = ? AND code_hash = ? AND status != 'duplicate'
                   AND candidate_id != ? ORDER BY created_at LIMIT 1""",
                (run_id, code_hash, exclude or ""),
            ).fetchone()
        return Candidate.from_row(row) if row else None

    def get_candidate(self, candidate_id: str) -> Candidate:
        with self._connect() as db:
            row = db.execute("SELECT * FROM candidates WHERE candidate_id = ?", (candidate_id,)).fetchone()
        if row is None:
            raise KeyError(f"no candidate {candidate_id!r} in journal {self.path}")
        return Candidate.from_row(row)

    def update_candidate(self, candidate_id: str, **fields: Any) -> None:
        if not fields:
            return
        unknown = set(fields) - CANDIDATE_COLUMNS
        if unknown:
            raise ValueError(f"unknown candidate fields: {sorted(unknown)}")
        if "status" in fields:
            _check_status(fields["status"], CandidateStatus, "candidate")
        cols = ", ".join(f"{k} = ?" for k in fields)
        values = [json.dumps(v) if k in JSON_COLUMNS and v is not None else v for k, v in fields.items()]
        with self._connect() as db:
            db.execute(
                f"UPDATE candidates SET {cols}, updated_at = ? WHERE candidate_id = ?",
                (*values, time.time(), candidate_id),
            )

    def candidates(self, run_id: str) -> list[Candidate]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM candidates WHERE run_id = ? ORDER BY round, created_at", (run_id,)
            ).fetchall()
        return [Candidate.from_row(r) for r in rows]

    def leaderboard(self, run_id: str | None = None, metric: str = "cider") -> list[Candidate]:
        """Trained candidates, best first by the given val metric (runs compared side by side when
        run_id is None)."""
        with self._connect() as db:
            query = "SELECT * FROM candidates WHERE status = 'trained'"
            rows = db.execute(query + (" AND run_id = ?" if run_id else ""), (run_id,) if run_id else ()).fetchall()
        cands = [Candidate.from_row(r) for r in rows]
        return sorted(cands, key=lambda c: (c.metrics or {}).get(metric, float("-inf")), reverse=True)

    # -- llm calls and events -----------------------------------------------------------------------
    def log_llm_call(
        self,
        run_id: str,
        role: str,
        prompt: str,
        response: str,
        *,
        candidate_id: str | None = None,
        key: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
    ) -> None:
        with self._connect() as db:
            db.execute(
                """INSERT INTO llm_calls(run_id, candidate_id, role, key, prompt, response, input_tokens, output_tokens,
                   cost_usd, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)""",
                (run_id, candidate_id, role, key, prompt, response, input_tokens, output_tokens, cost_usd, time.time()),
            )

    def recorded_response(self, run_id: str, key: str) -> str | None:
        """The stored answer of an LLM call made before a crash, so a resumed node does not pay for it twice."""
        with self._connect() as db:
            row = db.execute(
                "SELECT response FROM llm_calls WHERE run_id = ? AND key = ? ORDER BY id DESC LIMIT 1", (run_id, key)
            ).fetchone()
        return row["response"] if row else None

    def usage(self, run_id: str) -> dict[str, dict[str, float]]:
        """Tokens and cost per role for a run, summed from the logged calls."""
        with self._connect() as db:
            rows = db.execute(
                """SELECT role, SUM(input_tokens) AS i, SUM(output_tokens) AS o, SUM(cost_usd) AS c, COUNT(*) AS n
                   FROM llm_calls WHERE run_id = ? GROUP BY role""",
                (run_id,),
            ).fetchall()
        return {r["role"]: {"input_tokens": r["i"], "output_tokens": r["o"], "cost_usd": r["c"], "calls": r["n"]} for r in rows}

    def log_event(self, run_id: str, kind: str, payload: dict, candidate_id: str | None = None) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT INTO events(run_id, candidate_id, kind, payload, created_at) VALUES (?,?,?,?,?)",
                (run_id, candidate_id, kind, json.dumps(payload), time.time()),
            )

    def request(self, run_id: str, action: str, **fields: Any) -> None:
        """A person's request to a live run, read by the graph between candidates: `stop`, `pause`, `resume`,
        or `budget` with new `max_candidates` / `time_budget`. Works from any process (chat, CLI)."""
        if action not in CONTROL_ACTIONS:
            raise ValueError(f"unknown run request {action!r}; use one of {', '.join(CONTROL_ACTIONS)}")
        self.log_event(run_id, "control", {"action": action, **fields})

    def requests(self, run_id: str) -> list[dict[str, Any]]:
        return [e["payload"] for e in self.events(run_id, "control")]

    def paused(self, run_id: str) -> bool:
        """The latest pause or resume request is a pause."""
        actions = [r["action"] for r in self.requests(run_id) if r["action"] in ("pause", "resume")]
        return bool(actions) and actions[-1] == "pause"

    def stop_requested(self, run_id: str) -> bool:
        return any(r["action"] == "stop" for r in self.requests(run_id))

    def events(self, run_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        with self._connect() as db:
            sql = "SELECT * FROM events WHERE run_id = ?" + (" AND kind = ?" if kind else "") + " ORDER BY id"
            rows = db.execute(sql, (run_id, kind) if kind else (run_id,)).fetchall()
        return [{**dict(r), "payload": json.loads(r["payload"])} for r in rows]


def baseline_id(run_id: str) -> str:
    """The run id of `run_id`'s `--baseline random` arm, a sibling in the same journal."""
    return f"{run_id}-random"


TEST_SCORED = "test_scored"  # the event of a run's one test-split score (`capnas.graph.final_test`)
CODER_TOOL = "coder_tool"  # the event of one call of the coder's own tools (`capnas.graph.coder_turn`)

CONTROL_ACTIONS = ("stop", "pause", "resume", "budget")

CANDIDATE_COLUMNS = {
    "parent_id", "status", "repairs", "contract", "params", "hparams", "metrics", "curve", "samples",
    "exit_reason", "artifacts", "tokens", "cost_usd", "code", "code_hash", "plan", "spec", "fidelity", "inherited",
}


def _check_status(status: str, allowed: Any, what: str) -> None:
    """A status outside its Literal is refused before it reaches the file, where nothing would check it."""
    if status not in get_args(allowed):
        raise ValueError(f"unknown {what} status {status!r}; use one of {', '.join(get_args(allowed))}")


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key in JSON_COLUMNS & out.keys():
        if out[key] is not None:
            out[key] = json.loads(out[key])
    return out
