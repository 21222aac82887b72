"""`capnas chat` in pieces, fast: the task form, the key reader on a real pseudo-terminal, the dashboard, and the
whole session loop driven line by line against a stand-in for `runner.start` (the real graph run is
tests/test_chat_tmux.py). The question answerer talks to the scripted LLM server over real HTTP."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from rich.console import Console

from capnas.agents.llm_config import AgentModels, LLMConfig
from capnas.console.ask import answer_question
from capnas.console.dashboard import RunView, event_line
from capnas.console.keys import QUIT, KeyReader, LineReader
from capnas.console.session import ChatSession
from capnas.console.taskform import EditError, apply_edits, task_table
from capnas.graph.journal import Journal
from capnas.graph.services import journal_path
from capnas.runner import summarize
from capnas.settings import RunSettings
from capnas.tools.task import Task
from llm_server import ScriptedLLMServer, answer

TASK = Task().model_dump()


def _text(renderable: Any, width: int = 160) -> str:
    console = Console(record=True, width=width, force_terminal=False)
    console.print(renderable)
    return console.export_text()


# -- the task form ---------------------------------------------------------------------------------------------
def test_edits_set_task_and_budget_keys_with_units_and_lists() -> None:
    edited = apply_edits(TASK, "max_params=2M max_candidates=3 families=gru,small_cnn objective=bleu_4 "
                               "time_budget=7.5 notes='for phones'")
    assert edited["max_params"] == 2_000_000
    assert edited["budgets"]["max_candidates"] == 3 and edited["budgets"]["time_budget"] == 7.5
    assert edited["families"] == ["gru", "small_cnn"] and edited["objective"] == "bleu_4"
    assert edited["notes"] == "for phones"
    assert TASK["max_params"] == 5_000_000  # the draft it started from is untouched
    table = _text(task_table(edited))
    assert "2,000,000" in table and "max_candidates" in table and "gru, small_cnn" in table


@pytest.mark.parametrize(("line", "named"), [
    ("bogus=1", "bogus"),  # unknown key
    ("max_params=12", "max_params"),  # below the minimum
    ("objective=accuracy", "objective"),  # not a metric
    ("max_candidates=lots", "max_candidates"),
    ("max_params", "max_params"),  # no '='
])
def test_bad_edits_name_the_setting(line: str, named: str) -> None:
    with pytest.raises(EditError, match=named):
        apply_edits(TASK, line)


# -- keys on a real pseudo-terminal ----------------------------------------------------------------------------
def test_key_reader_edits_lines_on_a_pty_and_ignores_escape_sequences() -> None:
    master, slave = os.openpty()
    try:
        with open(slave, "r", closefd=False) as stream, KeyReader(stream) as keys:
            os.write(master, "hellp\x7fo wörld\x1b[A\x1bOB\r".encode())
            lines = [keys.poll(2.0)]
            assert lines == ["hello wörld"]
            os.write(master, b"half")
            assert keys.poll(0.5) is None and keys.buffer == "half"  # drawn by the live view, not yet a line
            os.write(master, b"\x15/status\n\x04")  # Ctrl-U clears; Ctrl-D on an empty line quits
            assert keys.poll(2.0) == "/status"
            assert keys.poll(2.0) == QUIT
    finally:
        os.close(master)
        os.close(slave)


# -- the dashboard ---------------------------------------------------------------------------------------------
def test_dashboard_shows_training_progress_then_the_score() -> None:
    view = RunView("run1", {**TASK, "budgets": {**TASK["budgets"], "max_candidates": 2, "epochs": 3}})
    for e in [{"event": "task", "task": view.task}, {"event": "round", "round": 0, "plan": {}},
              {"event": "candidate", "candidate_id": "run1-r000", "status": "valid", "params": 123_456,
               "plan": "small_cnn + gru"},
              {"event": "candidate", "candidate_id": "run1-r000", "status": "training"},
              {"event": "train", "candidate_id": "run1-r000", "phase": "step", "epoch": 2, "step": 5, "steps": 10}]:
        view.on_event(e)
    shown = _text(view.render())
    assert "round 1 " in shown and "of 1/2" in shown and "r000" in shown and "training" in shown and "epoch 2/3" in shown
    assert "123,456" in shown and "━" in shown  # the progress bar
    done = {"event": "candidate", "candidate_id": "run1-r000", "status": "trained", "metrics": {"cider": 0.4321}}
    view.on_event(done)
    view.refresh({"trained": 1, "candidates": 1, "tokens": 1234, "cost_usd": 0.5},
                 [{"candidate_id": "run1-r000", "cider": 0.4321, "bleu_4": 0.1, "params": 123_456, "plan": "x"}])
    shown = _text(view.render())
    assert "trained" in shown and "0.432" in shown and "leaderboard" in shown and "tokens 1,234" in shown
    assert event_line(done, view, verbose=False) == "  candidate r000: trained cider=0.432"
    step = {"event": "candidate", "candidate_id": "run1-r000", "status": "validating"}
    assert event_line(step, view, verbose=False) is None and "validating" in event_line(step, view, verbose=True)
    stored = {"event": "features", "candidate_id": "run1-r000", "key": "efficientnet_lite0-abc", "seconds": 12.34}
    assert event_line(stored, view, verbose=False) == \
        "  frozen-encoder tokens efficientnet_lite0-abc stored for every later job (12.3 s)"


# -- the whole session, against a stand-in run -----------------------------------------------------------------
class ScriptedInput:
    """The person: each line is typed once its condition on the session holds (checked on every poll)."""

    def __init__(self, steps: list[tuple[Callable[[ChatSession], bool], str]], deadline_s: float = 30) -> None:
        self.steps, self.buffer, self.session = list(steps), "", None
        self.deadline = time.monotonic() + deadline_s

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def poll(self, timeout: float) -> str | None:
        time.sleep(min(timeout, 0.02))
        assert time.monotonic() < self.deadline, f"stuck in phase {self.session.phase!r} before {self.steps[:1]}"
        if self.steps and self.steps[0][0](self.session):
            return self.steps.pop(0)[1]
        return None


def phase(name: str) -> Callable[[ChatSession], bool]:
    return lambda s: s.phase == name


class FakeRun:
    """Stands in for `runner.start`: journals a run, asks to confirm the task, and after `gate` (when given; False
    ends the run there) emits one trained candidate; records what the session answered."""

    def __init__(self, gate: Callable[[Journal, str], None] | None = None) -> None:
        self.answers: list[Any] = []
        self.gate = gate

    def __call__(self, ctx, task, requirement, run_id=None, on_event=None, on_interrupt=None) -> dict:
        self.on_interrupt = on_interrupt
        journal = Journal(journal_path(ctx.run_dir))
        journal.create_run(task, {"requirement": requirement}, run_id=run_id)
        self.answers.append(on_interrupt({"question": "confirm_task", "task": task}))
        assert self.answers[-1] != {}, "LangGraph reads Command(resume={}) as a map naming no interrupt"
        if self.answers[-1] is None:
            return summarize(ctx.run_dir, run_id)
        task = self.answers[-1].get("task") or task
        on_event({"event": "task", "task": task})
        on_event({"event": "round", "round": 0, "plan": {"encoders": ["small_cnn"], "decoders": ["gru"]}})
        if self.gate and self.gate(journal, run_id) is False:
            return summarize(ctx.run_dir, run_id)  # the stream ended at an interrupt nobody answered
        cid = f"{run_id}-r000"
        journal.add_candidate(run_id, "class Net: pass", round=0, mode="random", candidate_id=cid,
                              plan="small_cnn + gru")
        on_event({"event": "candidate", "candidate_id": cid, "status": "training"})
        on_event({"event": "train", "candidate_id": cid, "phase": "step", "epoch": 1, "step": 3, "steps": 6})
        journal.update_candidate(cid, status="trained", metrics={"cider": 0.25, "bleu_4": 0.125}, params=4321)
        on_event({"event": "candidate", "candidate_id": cid, "status": "trained", "metrics": {"cider": 0.25}})
        journal.set_run_status(run_id, "finished", "max_candidates")
        on_event({"event": "done", "status": "finished", "stop_reason": "max_candidates", "best": None})
        return summarize(ctx.run_dir, run_id)


def _session(tmp_path: Path, steps, start, **settings) -> tuple[ChatSession, Console, ScriptedInput]:
    console = Console(record=True, width=160, force_terminal=False)
    reader = ScriptedInput(steps)
    run_settings = RunSettings(run_dir=str(tmp_path / "ws"), generation="random", **settings)
    session = ChatSession(run_settings, console, reader, live=False, start=start)
    reader.session = session
    return session, console, reader


def test_session_confirms_an_edited_task_watches_the_run_and_quits(tmp_path: Path) -> None:
    fake = FakeRun()
    steps = [(phase("need"), "a captioning model for phones"), (phase("confirm"), "max_params=1M"),
             (phase("confirm"), "y"), (phase("done"), "/leaderboard"), (phase("done"), "/status"),
             (phase("done"), "/quit")]
    session, console, reader = _session(tmp_path, steps, fake)
    assert session.loop() == 0
    out = console.export_text()
    assert fake.answers[0]["task"]["max_params"] == 1_000_000  # the edit went back into the graph
    assert "1,000,000" in out and "(confirmed)" in out
    assert "candidate r000: trained cider=0.250" in out
    assert "done: run" in out and "finished (max_candidates)" in out
    assert "leaderboard (by val cider)" in out and "0.125" in out
    assert "1 trained" in out and not reader.steps
    assert not session.run_alive


def test_piped_input_waits_for_the_task_table_and_for_the_run(tmp_path: Path) -> None:
    """`capnas chat < lines`: answers typed ahead wait for the task table; the end of input waits for the run."""
    fake = FakeRun()
    console = Console(record=True, width=160, force_terminal=False)
    reader = LineReader(io.StringIO("a captioning model for phones\nmax_params=1M\ny\n"))
    session = ChatSession(RunSettings(run_dir=str(tmp_path / "ws"), generation="random"), console, reader,
                          live=False, start=fake)
    assert session.loop() == 0
    assert fake.answers[0]["task"]["max_params"] == 1_000_000
    out = console.export_text()
    assert out.index("› max_params=1M") > out.index("Task for run")  # answered after it was shown
    assert "done: run" in out and not session.run_alive


def test_session_cancel_leaves_a_stopped_run_and_asks_again(tmp_path: Path) -> None:
    fake = FakeRun()
    steps = [(phase("need"), "anything"), (phase("confirm"), "n"), (phase("need"), "/quit")]
    session, console, _ = _session(tmp_path, steps, fake)
    assert session.loop() == 0
    assert fake.answers == [None]
    runs = Journal(journal_path(tmp_path / "ws")).list_runs()
    assert [(r["status"], r["stop_reason"]) for r in runs] == [("stopped", "cancelled")]
    assert "cancelled" in console.export_text()


def test_controls_reach_the_journal_and_a_pause_is_answered(tmp_path: Path) -> None:
    """/budget and /pause are journal requests the graph reads; the pause interrupt waits for /resume."""
    seen: dict[str, Any] = {}

    def gate(journal: Journal, run_id: str) -> None:  # the graph's planner, between candidates
        deadline = time.monotonic() + 20
        while not any(r["action"] == "pause" for r in journal.requests(run_id)):
            assert time.monotonic() < deadline, "no pause request arrived"
            time.sleep(0.02)
        seen["requests"] = journal.requests(run_id)
        seen["resumed"] = fake.on_interrupt({"question": "paused", "round": 1})

    fake = FakeRun(gate)
    steps = [(phase("need"), "x"), (phase("confirm"), "y"), (phase("running"), "/budget 3 20"),
             (phase("running"), "/pause"), (phase("paused"), "/status"), (phase("paused"), "/resume"),
             (phase("done"), "/quit")]
    session, console, _ = _session(tmp_path, steps, fake)
    assert session.loop() == 0
    assert seen["requests"] == [{"action": "budget", "max_candidates": 3, "time_budget": 20.0},
                                {"action": "pause"}]
    assert seen["resumed"] == {"resume": True}  # not {}: that resumes nothing
    out = console.export_text()
    assert "paused before round 2" in out and "resumed" in out


def test_a_resume_requested_from_another_process_ends_the_pause(tmp_path: Path) -> None:
    def gate(journal: Journal, run_id: str) -> None:
        journal.request(run_id, "pause")  # as `/pause` would
        fake.on_interrupt({"question": "paused", "round": 1})

    def resume_from_outside(s: ChatSession) -> bool:  # another process, e.g. a script with the journal
        if s.phase == "paused":
            Journal(journal_path(tmp_path / "ws")).request(s.run.run_id, "resume")
        return s.phase == "done"

    fake = FakeRun(gate)
    steps = [(phase("need"), "x"), (phase("confirm"), "y"), (resume_from_outside, "/quit")]
    session, console, _ = _session(tmp_path, steps, fake)
    assert session.loop() == 0
    out = console.export_text()
    assert "paused before round 2" in out and "resumed" in out and "done: run" in out


def test_quitting_a_paused_run_lifts_the_pause_so_resume_goes_on(tmp_path: Path) -> None:
    def gate(journal: Journal, run_id: str) -> None:
        journal.request(run_id, "pause")
        seen["answer"] = fake.on_interrupt({"question": "paused", "round": 1})
        return seen["answer"] is not None

    seen: dict[str, Any] = {}
    fake = FakeRun(gate)
    steps = [(phase("need"), "x"), (phase("confirm"), "y"), (phase("paused"), "/quit")]
    session, console, _ = _session(tmp_path, steps, fake)
    assert session.loop() == 0
    session.run.join(5)
    run_id = session.run.run_id
    journal = Journal(journal_path(tmp_path / "ws"))
    assert seen["answer"] is None  # the stream ended at the pause
    assert journal.requests(run_id)[-1] == {"action": "resume"}
    assert journal.get_run(run_id)["status"] == "interrupted"
    assert f"capnas resume {run_id}" in console.export_text()


def test_ctrl_c_keeps_the_run_and_says_how_to_resume(tmp_path: Path) -> None:
    release = threading.Event()
    fake = FakeRun(gate=lambda journal, run_id: release.wait(20))

    def interrupt(s: ChatSession) -> bool:
        if s.phase == "running":
            raise KeyboardInterrupt
        return False

    steps = [(phase("need"), "x"), (phase("confirm"), "y"), (interrupt, "")]
    session, console, _ = _session(tmp_path, steps, fake)
    try:
        assert session.loop() == 130
        run_id = session.run.run_id
        out = console.export_text()
        assert f"capnas resume {run_id} --run-dir {tmp_path / 'ws'}" in out.replace("\n", " ")
        assert Journal(journal_path(tmp_path / "ws")).get_run(run_id)["status"] == "interrupted"
    finally:
        release.set()


def test_unknown_command_and_missing_llm_are_explained(tmp_path: Path) -> None:
    steps = [(phase("need"), "/frobnicate"), (phase("need"), "/help"), (phase("need"), "/quit")]
    session, console, _ = _session(tmp_path, steps, FakeRun())
    session.settings = session.settings.model_copy(update={"generation": "spec"})
    assert session.loop() == 0
    out = console.export_text()
    assert "unknown command /frobnicate" in out and "/budget N [MIN]" in out
    session.start_run("a model")  # spec mode needs an LLM, and none is configured
    assert "no LLM configured" in console.export_text() and session.run is None


# -- questions -------------------------------------------------------------------------------------------------
def test_a_question_is_answered_from_the_journal_numbers(tmp_path: Path) -> None:
    journal = Journal(journal_path(tmp_path))
    run_id = journal.create_run(TASK, {}, run_id="asked")
    journal.add_candidate(run_id, "class Net: pass", round=0, mode="spec", candidate_id="asked-r000",
                          plan="small_cnn + gru(hidden=128)")
    journal.update_candidate("asked-r000", status="trained", metrics={"cider": 0.3125}, params=98_765)
    with ScriptedLLMServer([answer("asked-r000 is best, with CIDEr 0.3125.", role="critic")]) as server:
        models = AgentModels(default=LLMConfig(model="scripted", base_url=server.base_url))
        text = answer_question(models, journal, tmp_path, run_id, "which model is best?")
        prompt = " ".join(str(m["content"]) for m in server.requests[0]["messages"])
    assert text == "asked-r000 is best, with CIDEr 0.3125."
    assert "cider=0.312" in prompt and "params=98,765" in prompt and "which model is best?" in prompt
    assert journal.usage(run_id)["chat"]["calls"] == 1  # its tokens count in the run's usage
