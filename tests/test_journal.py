"""The run journal on a real SQLite file: dedup by normalized code, JSON round trips, leaderboard, usage."""

from __future__ import annotations

import ast
import dataclasses
import sqlite3
import threading
from pathlib import Path
from typing import get_args

import pytest

from capnas.graph.journal import Candidate, CandidateStatus, Journal, RunStatus, normalized_code_hash

CODE = "def f(x):\n    return x + 1\n"


def test_normalized_hash_ignores_comments_and_formatting() -> None:
    cosmetic = "# a comment\ndef f( x ):\n    return (x + 1)  # same thing\n"
    assert normalized_code_hash(cosmetic) == normalized_code_hash(CODE)
    assert normalized_code_hash("def f(x):\n    return x + 2\n") != normalized_code_hash(CODE)


def test_identical_candidate_is_recorded_as_a_duplicate_of_its_twin(tmp_path) -> None:
    j = Journal(tmp_path / "journal.sqlite")
    run = j.create_run({"dataset": "shapes"}, {"generation": "spec"})
    first = j.add_candidate(run, CODE, round=0, mode="spec", candidate_id="r000")
    again = j.add_candidate(run, "def f(x):  return x+1", round=1, mode="code", candidate_id="r001")
    assert first.status == "generated"
    assert again.status == "duplicate" and again.exit_reason == "identical to r000"
    # Adding an existing id (a resumed node) returns the stored row and inserts nothing.
    assert j.add_candidate(run, "X = 2", round=0, mode="spec", candidate_id="r000").code == CODE
    assert len(j.candidates(run)) == 2
    # A repair that lands on another candidate's code is a duplicate too; one that does not is generated.
    third = j.add_candidate(run, "Z = 3", round=2, mode="code", candidate_id="r002")
    assert j.replace_code(third.candidate_id, CODE, spec=None, plan=None, repairs=1).status == "duplicate"
    assert j.replace_code(third.candidate_id, "Z = 4", spec=None, plan=None, repairs=2).status == "generated"
    assert [e["payload"]["previous_code"] for e in j.events(run, "repair")] == ["Z = 3", CODE]
    # A different run may hold the same code.
    other = j.create_run({}, {})
    assert j.add_candidate(other, CODE, round=0, mode="spec").status == "generated"


def test_json_columns_round_trip_and_leaderboard_order(tmp_path) -> None:
    path = tmp_path / "journal.sqlite"
    j = Journal(path)
    run = j.create_run({}, {})
    scores = {"a": 0.4, "b": 1.2, "c": 0.9}
    for name, cider in scores.items():
        cand = j.add_candidate(run, f"X = {name!r}\n", round=0, mode="random")
        j.update_candidate(cand.candidate_id, status="trained", metrics={"cider": cider}, curve=[{"epoch": 1}])
    failed = j.add_candidate(run, "Y = 1\n", round=0, mode="random")
    j.update_candidate(failed.candidate_id, status="failed", exit_reason="wall_timeout")

    board = j.leaderboard(run)
    assert [c.metrics["cider"] for c in board] == [1.2, 0.9, 0.4]
    assert board[0].curve == [{"epoch": 1}]
    # The file is a plain SQLite database in WAL mode that other tools can read.
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT COUNT(*) FROM candidates WHERE status='failed'").fetchone()[0] == 1


def test_unknown_field_is_rejected(tmp_path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    run = j.create_run({}, {})
    cand = j.add_candidate(run, CODE, round=0, mode="spec")
    with pytest.raises(ValueError, match="scoer"):
        j.update_candidate(cand.candidate_id, scoer=1)


def test_usage_sums_per_role_and_concurrent_writers(tmp_path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    run = j.create_run({}, {})

    def write(role: str) -> None:
        for _ in range(20):
            j.log_llm_call(run, role, "p", "r", input_tokens=10, output_tokens=5, cost_usd=0.001)

    threads = [threading.Thread(target=write, args=(role,)) for role in ("coder", "critic", "coder")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    usage = j.usage(run)
    assert usage["coder"]["calls"] == 40 and usage["coder"]["input_tokens"] == 400
    assert usage["critic"]["output_tokens"] == 100
    assert usage["critic"]["cost_usd"] == pytest.approx(0.02)


def test_recorded_response_replays_the_last_answer_for_a_key(tmp_path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    run = j.create_run({}, {})
    assert j.recorded_response(run, "coder:r000:0") is None
    j.log_llm_call(run, "coder", "p", "first", key="coder:r000:0")
    j.log_llm_call(run, "coder", "p", "second", key="coder:r000:0")
    j.log_llm_call(run, "coder", "p", "other", key="coder:r001:0")
    assert j.recorded_response(run, "coder:r000:0") == "second"


def test_requests_to_a_live_run_are_kept_in_order(tmp_path):
    from capnas.graph.journal import Journal

    journal = Journal(tmp_path / "j.sqlite")
    run = journal.create_run({}, {})
    journal.request(run, "pause")
    journal.request(run, "budget", max_candidates=3)
    journal.request(run, "resume")
    assert [r["action"] for r in journal.requests(run)] == ["pause", "budget", "resume"]
    assert journal.requests(run)[1]["max_candidates"] == 3
    with pytest.raises(ValueError, match="unknown run request 'halt'"):
        journal.request(run, "halt")


def test_pause_and_stop_are_read_from_the_latest_requests(tmp_path):
    from capnas.graph.journal import Journal

    journal = Journal(tmp_path / "j.sqlite")
    run = journal.create_run({}, {})
    assert not journal.paused(run) and not journal.stop_requested(run)
    journal.request(run, "pause")
    assert journal.paused(run)
    journal.request(run, "resume")
    assert not journal.paused(run)
    journal.request(run, "stop")
    assert journal.stop_requested(run)


def test_a_status_outside_the_literal_is_refused_naming_the_allowed_ones(tmp_path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    run = j.create_run({}, {})
    cand = j.add_candidate(run, CODE, round=0, mode="spec")
    with pytest.raises(ValueError, match="unknown candidate status 'trainde'.*generated, invalid, valid, trained"):
        j.update_candidate(cand.candidate_id, status="trainde", metrics={"cider": 1.0})
    assert j.get_candidate(cand.candidate_id).status == "generated"  # nothing of the refused update was written
    with pytest.raises(ValueError, match="unknown run status 'done'.*running, finished, stopped, failed, interrupted"):
        j.set_run_status(run, "done")
    assert j.get_run(run)["status"] == "running"
    j.set_run_status(run, "interrupted", "interrupted")
    assert j.get_run(run)["status"] == "interrupted"


def test_a_candidate_read_back_has_typed_fields_one_per_column(tmp_path) -> None:
    j = Journal(tmp_path / "j.sqlite")
    run = j.create_run({}, {})
    cand = j.add_candidate(run, CODE, round=2, mode="spec", spec={"encoder": {"family": "cnn"}}, plan="a small cnn")
    assert (cand.spec, cand.contract, cand.metrics, cand.curve, cand.violations) == ({"encoder": {"family": "cnn"}},
                                                                                     None, None, None, [])
    j.update_candidate(cand.candidate_id, status="invalid", params=123,
                       contract={"ok": False, "violations": [{"code": "SHP-001"}]})
    assert j.get_candidate(cand.candidate_id).violations == [{"code": "SHP-001"}]
    j.update_candidate(cand.candidate_id, status="trained", metrics={"cider": 0.5}, curve=[{"epoch": 1, "loss": 2.0}],
                       samples=[{"caption": "a cat", "references": ["a cat"]}], hparams={"lr": 0.001})
    back = j.get_candidate(cand.candidate_id)
    assert isinstance(back, Candidate) and back.round == 2 and back.params == 123 and back.tokens == 0
    assert back.metrics == {"cider": 0.5} and back.curve == [{"epoch": 1, "loss": 2.0}]
    assert back.samples[0]["caption"] == "a cat" and back.hparams == {"lr": 0.001}
    with pytest.raises(dataclasses.FrozenInstanceError):
        back.status = "failed"  # type: ignore[misc]
    # One field per column, in the table's order; to_dict is a plain copy keyed the same way.
    with sqlite3.connect(j.path) as db:
        columns = [r[1] for r in db.execute("PRAGMA table_info(candidates)")]
    assert [f.name for f in dataclasses.fields(Candidate)] == columns
    row = back.to_dict()
    assert list(row) == columns and row["metrics"] == {"cider": 0.5}
    row["metrics"]["cider"] = 9.0
    assert back.metrics == {"cider": 0.5}


# -- every status the code writes is one the Literals list ------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]


def _strings(expr: ast.expr, index: int | None = None) -> set[str] | None:
    """The string literals an expression can evaluate to (both arms of a conditional; element `index` of a
    tuple), or None when it is something else (a name, a call). A status read back (`cand.status`) adds none:
    the journal already holds it."""
    if index is not None and isinstance(expr, ast.Tuple):
        return _strings(expr.elts[index])
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return {expr.value}
    if isinstance(expr, ast.Attribute) and expr.attr == "status":
        return set()
    if isinstance(expr, ast.IfExp):
        body, orelse = _strings(expr.body, index), _strings(expr.orelse, index)
        return None if body is None or orelse is None else body | orelse
    return None


def _assigned(scope: ast.AST, name: str) -> set[str] | None:
    """What `name` (or a tuple element named so) is assigned in a function: None when any assignment is not a
    literal (or there is none: a parameter)."""
    found: set[str] = set()
    seen = False
    for node in ast.walk(scope):
        if not isinstance(node, ast.Assign):
            continue
        for target in node.targets:
            names = target.elts if isinstance(target, ast.Tuple) else [target]
            for i, t in enumerate(names):
                if isinstance(t, ast.Name) and t.id == name:
                    values = _strings(node.value, i if isinstance(target, ast.Tuple) else None)
                    if values is None:
                        return None
                    found |= values
                    seen = True
    return found if seen else None


def journal_statuses(source: str, where: str) -> tuple[set[str], set[str], list[str]]:
    """(candidate statuses, run statuses, unresolved writes) that `update_candidate(status=...)`,
    `set_run_status(run, status)` and `add_candidate`'s own `status, reason = ...` write in a module."""
    tree = ast.parse(source)
    cand: set[str] = set()
    run: set[str] = set()
    unresolved: list[str] = []
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if func.name == "add_candidate":  # the journal's insert: its status is assigned, not passed
            cand |= _assigned(func, "status") or set()
        for call in ast.walk(func):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)):
                continue
            kind = call.func.attr
            if kind not in ("update_candidate", "set_run_status"):
                continue
            args = [k.value for k in call.keywords if k.arg == "status"]
            if kind == "set_run_status" and len(call.args) > 1:
                args.append(call.args[1])
            for arg in args:
                values = _strings(arg)
                if values is None and isinstance(arg, ast.Name):
                    values = _assigned(func, arg.id)
                if values is None:
                    if func.name not in ("update_candidate", "set_run_status"):  # the journal's own plumbing
                        unresolved.append(f"{where}:{call.lineno}")
                    continue
                (cand if kind == "update_candidate" else run).update(values)
    return cand, run, unresolved


def test_the_status_literals_list_every_status_the_code_writes() -> None:
    # The scan itself can fail: a made-up status, direct or through a conditional, is found.
    fake = ("def f(j, ok, cand, given):\n    s = cand.status\n    if ok:\n        s = 'valid' if ok else 'bogus'\n"
            "    j.update_candidate('c', status=s)\n    j.set_run_status('r', 'paused')\n"
            "    j.set_run_status('r', given)\n")
    assert journal_statuses(fake, "fake.py") == ({"valid", "bogus"}, {"paused"}, ["fake.py:7"])
    cand: set[str] = set()
    run: set[str] = set()
    unresolved: list[str] = []
    for folder in ("graph", "capnas", "agents", "tools"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            c, r, u = journal_statuses(path.read_text(), str(path.relative_to(ROOT)))
            cand, run, unresolved = cand | c, run | r, unresolved + u
    assert not unresolved, f"status writes the scan cannot read (use literals): {unresolved}"
    assert {"generated", "duplicate", "valid", "invalid", "trained", "failed"} <= cand, cand  # the scan saw them
    assert {"running", "finished", "interrupted"} <= run, run
    assert cand <= set(get_args(CandidateStatus)), cand - set(get_args(CandidateStatus))
    assert run <= set(get_args(RunStatus)), run - set(get_args(RunStatus))
