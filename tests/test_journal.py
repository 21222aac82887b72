"""The run journal on a real SQLite file: dedup by normalized code, JSON round trips, leaderboard, usage."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from capnas.graph.journal import Journal, normalized_code_hash

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
