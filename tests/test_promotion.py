"""Promotion through a rung schedule in a run: who is due (a pure rule over the journal's rows, here a real
SQLite journal), the journal's rung and partial scores, the settings, and a whole `capnas run` killed in the
middle of a promotion and continued with `capnas resume` (slow: real sandboxed jobs on tiny shapes data)."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from capnas.graph.journal import SCHEMA, Journal, fidelity_record
from capnas.graph.promotion import promotions
from capnas.settings import RunSettings, SettingsError
from capnas.tools.report.summary import fidelity_text, inherited_text, write_run_summary
from capnas.tools.task import Budgets

RUNGS = [1, 3, 8]


def _journal(tmp_path: Path, scores: dict[str, float], exit_reason: str = "epochs") -> tuple[Journal, str]:
    """A run whose candidates (named by their key in `scores`) have finished rung 0 with those val CIDErs."""
    journal = Journal(tmp_path / "journal.sqlite")
    run = journal.create_run({}, {})
    for name, cider in scores.items():
        journal.add_candidate(run, f"x = {cider!r}", round=0, mode="random", candidate_id=name)
        _finish_rung(journal, name, 0, cider, exit_reason)
    return journal, run


def _finish_rung(journal: Journal, cid: str, rung: int, cider: float, exit_reason: str = "epochs") -> None:
    old = journal.get_candidate(cid).fidelity
    kept = [s for s in old["scores"] if s["rung"] != rung] if old else []
    scores = kept + [{"rung": rung, "epochs": RUNGS[rung], "metrics": {"cider": cider}}]
    journal.update_candidate(cid, status="trained", exit_reason=exit_reason, metrics={"cider": cider},
                             fidelity=fidelity_record(RUNGS, rung, scores, exit_reason))


def test_the_best_half_of_a_rung_goes_on_ranked_by_their_score_at_that_rung(tmp_path: Path) -> None:
    journal, run = _journal(tmp_path, {"a": 0.1, "b": 0.4, "c": 0.3, "d": 0.2})
    assert promotions(journal.candidates(run), RUNGS, 0.5, "cider") == [("b", 1), ("c", 1)]
    # b finished rung 1 (worse there than at rung 0 would not matter: rung 0's ranking uses rung-0 scores)
    _finish_rung(journal, "b", 1, 0.35)
    assert promotions(journal.candidates(run), RUNGS, 0.5, "cider") == [("c", 1)]
    _finish_rung(journal, "c", 1, 0.9)
    # Rung 1 holds b and c: the better of them at rung 1 goes to rung 2; rung 0 owes nobody
    assert promotions(journal.candidates(run), RUNGS, 0.5, "cider") == [("c", 2)]
    _finish_rung(journal, "c", 2, 1.2)
    assert promotions(journal.candidates(run), RUNGS, 0.5, "cider") == []
    assert journal.get_candidate("c").partial is False and journal.get_candidate("c").rung == 2
    assert journal.get_candidate("b").partial is True and journal.get_candidate("a").partial is True


def test_a_candidate_that_stopped_early_keeps_its_place_but_goes_no_further(tmp_path: Path) -> None:
    journal, run = _journal(tmp_path, {"a": 0.1, "b": 0.4, "c": 0.3, "d": 0.2})
    _finish_rung(journal, "b", 0, 0.4, exit_reason="early_stop")
    assert promotions(journal.candidates(run), RUNGS, 0.5, "cider") == [("c", 1)]
    assert journal.get_candidate("b").partial is False  # final at its rung: it stopped itself
    journal.update_candidate("c", status="failed")
    assert promotions(journal.candidates(run), RUNGS, 0.5, "cider") == []
    # With too few at a rung for the fraction (floor(3 * 0.25) = 0) nobody is promoted yet
    journal, run = _journal(tmp_path / "few", {"a": 0.1, "b": 0.4, "c": 0.3})
    assert promotions(journal.candidates(run), RUNGS, 0.25, "cider") == []


def test_leaderboards_mark_partial_scores_and_the_card_says_what_was_inherited(tmp_path: Path) -> None:
    journal, run = _journal(tmp_path, {"a": 0.1, "b": 0.4})
    _finish_rung(journal, "b", 1, 0.6)
    _finish_rung(journal, "b", 2, 0.7)
    journal.update_candidate("b", curve=[{"epoch": e} for e in range(1, 9)],
                             inherited={"from": "a", "tensors": 12, "of_tensors": 14, "params": 40_100,
                                        "of_params": 52_000})
    journal.update_candidate("a", curve=[{"epoch": 1}])
    write_run_summary(journal, run, "cider", tmp_path / "out")
    rows = (tmp_path / "out" / "leaderboard.md").read_text().splitlines()
    b_row, a_row = (next(r for r in rows if r.startswith(f"| {i} | {c} |")) for i, c in ((1, "b"), (2, "a")))
    assert b_row.endswith("| 8 |") and a_row.endswith("| 1 (partial) |")
    assert any(r.startswith("(partial): scores after a rung below the schedule's last") for r in rows)
    assert fidelity_text(journal.get_candidate("a")) == "rung 1 of 3 (1 epochs), partial"
    assert fidelity_text(journal.get_candidate("b")) == "rung 3 of 3 (8 epochs)"
    assert inherited_text(journal.get_candidate("b")) == "inherited 12/14 tensors, 40,100/52,000 parameters from a"
    assert inherited_text(journal.get_candidate("a")) == ""


def test_a_journal_written_before_rungs_gets_the_new_columns_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old_schema = re.sub(r",\s*fidelity[^\n]*\n\s*inherited[^\n]*\n", "\n", SCHEMA)  # the table as first written
    assert "fidelity" not in old_schema
    with sqlite3.connect(path) as db:
        db.executescript(old_schema)
        db.execute("INSERT INTO runs(run_id, created_at, updated_at, status) VALUES ('r', 0, 0, 'finished')")
        db.execute("""INSERT INTO candidates(candidate_id, run_id, round, mode, code_hash, code, status, created_at,
                      updated_at) VALUES ('c', 'r', 0, 'random', 'h', 'x = 1', 'trained', 0, 0)""")
    cand = Journal(path).get_candidate("c")
    assert cand.fidelity is None and cand.inherited is None and cand.rung is None and not cand.partial


def test_rungs_are_a_setting_checked_at_the_edge() -> None:
    settings = RunSettings.load(None, {"rungs": "1,3,8", "promote": 0.25})
    assert settings.task().budgets.rungs == [1, 3, 8] and settings.task().budgets.promote == 0.25
    assert Budgets().rungs == [] and RunSettings.load(None, {}).inherit_weights is True
    with pytest.raises(SettingsError, match=r"--rungs .*each rung is a number of epochs between 1 and 500, more than "
                                            r"the rung before"):
        RunSettings.load(None, {"rungs": "3,1"})
    with pytest.raises(SettingsError, match="--promote 0: must be greater than 0 and at most 1"):
        RunSettings.load(None, {"promote": 0})


# -- a whole run, killed in a promotion ----------------------------------------------------------------------


def _spec_epochs(path: Path) -> int | None:
    try:
        return json.loads(path.read_text())["epochs"]
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_run_killed_in_a_promotion_resumes_it_without_training_an_epoch_twice(tmp_path: Path) -> None:
    workspace, run_id = tmp_path / "ws", "rungs-run"
    config = tmp_path / "run.yaml"
    # Two random candidates in one round, both train rung 0 (1 epoch); the better one is promoted to rung 1.
    config.write_text(yaml.safe_dump({
        "dataset": "shapes:60", "image_size": 32, "generation": "random", "max_candidates": 2, "concurrency": 2,
        "families": ["small_cnn", "gru", "lstm"],  # small and quick: both draws are valid under the default budgets
        "rungs": [1, 2], "promote": 0.5, "train_time_s": 30, "time_budget": 30, "threads": 1,
        "max_latency_ms": 10_000, "run_dir": str(workspace)}))
    proc = subprocess.Popen([sys.executable, "-m", "capnas", "run", "--config", str(config), "--run-id", run_id,
                             "--no-report", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    runs = workspace / "runs" / run_id
    deadline = time.monotonic() + 600
    try:  # kill the whole process group once a candidate's job has been reopened for rung 1
        while not any(_spec_epochs(p) == 2 for p in runs.glob("*/spec.json")):
            assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
            assert time.monotonic() < deadline, "no promotion within 10 minutes"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    resumed = subprocess.run([sys.executable, "-m", "capnas", "resume", run_id, "--run-dir", str(workspace), "--json"],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout)["status"] == "finished"

    journal = Journal(workspace / "journal.sqlite")
    cands = {c.candidate_id: c for c in journal.candidates(run_id)}
    assert len(cands) == 2 and all(c.status == "trained" for c in cands.values()), cands
    top, other = sorted(cands.values(), key=lambda c: -c.rung)
    assert top.rung == 1 and not top.partial and top.exit_reason == "epochs"
    assert [p["epoch"] for p in top.curve] == [1, 2]  # epoch 1 from rung 0, epoch 2 once, after the kill too
    assert [s["rung"] for s in top.fidelity["scores"]] == [0, 1]
    assert top.fidelity["scores"][0]["metrics"]["cider"] >= other.fidelity["scores"][0]["metrics"]["cider"]
    assert other.rung == 0 and other.partial and [p["epoch"] for p in other.curve] == [1]
    promoted = journal.events(run_id, "promoted")
    assert [(e["candidate_id"], e["payload"]["epochs_trained"]) for e in promoted] == [(top.candidate_id, [1, 2])]
    # Every train call of the promoted candidate asked for rung 0 first, then rung 1 (before and after the kill)
    asked = [e["payload"]["epochs"] for e in journal.events(run_id, "train_call") if e["candidate_id"] == top.candidate_id]
    assert asked[0] == 1 and set(asked[1:]) == {2}, asked
