"""The chat loop. One thread reads the person's lines and draws; the run goes in a `RunThread`.

Phases: need (waiting for a requirement) -> drafting (the planner reads it) -> confirm (the task table: y, key=value,
n) -> running <-> paused -> done (questions, /report, /new). Slash commands work in every phase (`slash.py`).
Leaving with a run unfinished (/quit, Ctrl-C) marks it interrupted and says how to resume it: its checkpoints
and journal are on disk after every step, so nothing finished is lost."""

from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import nullcontext
from typing import Any, Callable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.text import Text

from capnas import runner
from capnas.agents.llm_config import AgentModels
from capnas.console import slash
from capnas.console.dashboard import RunView, event_line
from capnas.console.keys import END
from capnas.console.runthread import RunThread, StartFn
from capnas.console.taskform import EditError, apply_edits, edited, task_table
from capnas.graph.journal import Journal
from capnas.graph.services import journal_path
from capnas.settings import RunSettings
from capnas.tools.report.summary import leaderboard_rows

YES, NO = ("y", "yes", "ok", "go", "start"), ("n", "no", "cancel")
HINTS = {
    "need": "describe the captioning model you need (/help for commands)",
    "drafting": "the planner is reading your requirement…",
    "confirm": "y to start, key=value to edit (e.g. max_params=2M max_candidates=3), n to cancel",
    "running": "ask a question about the run, or /pause /budget N /stop /leaderboard /help",
    "paused": "paused: /resume to continue, /stop to end, or ask a question",
    "done": "ask a question about the run, /report, /new for another run, /quit",
}


class ChatSession:
    def __init__(self, settings: RunSettings, console: Console, reader: Any, *, live: bool,
                 llm: tuple[AgentModels | None, str] | None = None, start: StartFn | None = None,
                 echo: bool = True) -> None:
        """`llm`: the models the runs use and a line naming them (what `runner.run_models` yields); default: the
        settings' endpoint, if any."""
        self.settings = settings.model_copy(update={"confirm": True})
        configured = self.settings.models()
        self.models, self.llm_line = llm or (configured, _describe(configured))
        self.workspace = self.settings.run_dir
        self.journal = Journal(journal_path(self.workspace))
        self.console, self.reader, self.live, self.echo = console, reader, live, echo
        self._start = start or runner.start
        self.phase = "need"
        self.run: RunThread | None = None
        self.view: RunView | None = None
        self.draft: dict[str, Any] | None = None
        self.changed: dict[str, dict[str, Any]] = {}  # the draft's changed fields and their evidence
        self.exit_code: int | None = None
        self.deferred: deque[str] = deque()  # lines that wait for the task table
        self.input_ended = False
        self._refreshed = 0.0
        self._spinner = Spinner("dots", text=HINTS["drafting"])

    # -- the loop -----------------------------------------------------------------------------------------
    def loop(self) -> int:
        """Until /quit or the end of input; returns the exit status (130 after Ctrl-C)."""
        try:
            live = Live(console=self.console, get_renderable=self.render, refresh_per_second=8,
                        redirect_stdout=False, redirect_stderr=False) if self.live else nullcontext()
            with self.reader, live:
                self.greet()
                while self.exit_code is None:
                    line = self.next_line()
                    if line is not None:
                        self.handle(line.strip())
                    if self.input_ended and not self.deferred:
                        self.end_of_input()
        except KeyboardInterrupt:
            self.exit_code = 130
        self.leave()
        return self.exit_code

    def greet(self) -> None:
        s = self.settings
        self.say(f"[bold]capnas chat[/bold]: dataset {escape(s.dataset)}, generation {s.generation}, "
                 f"LLM {escape(self.llm_line)}, runs in {escape(self.workspace)}")
        self.prompt()

    def say(self, message: Any) -> None:
        self.console.print(message, highlight=False)

    def prompt(self) -> None:
        if not self.live:
            self.say(f"[dim]({HINTS[self.phase]})[/dim]")

    def set_phase(self, phase: str) -> None:
        self.phase = phase
        if self.view is not None and phase in ("running", "paused"):
            self.view.set_phase(phase)
        self.prompt()

    def tick(self) -> None:
        """Hand the run's interrupts to the person, notice its end, and refresh the numbers from the journal."""
        run = self.run
        if run is None:
            return
        pending = run.pending
        if pending is not None and pending.get("question") == "confirm_task" and self.phase == "drafting":
            self.draft, self.changed = pending["task"], pending.get("changed") or {}
            self.say(task_table(self.draft, title=f"Task for run {run.run_id}", changed=self.changed))
            self.set_phase("confirm")
        elif pending is not None and pending.get("question") == "paused" and self.phase == "running":
            self.say(f"[yellow]paused[/yellow] before round {pending.get('round', 0) + 1}: /resume to continue")
            self.set_phase("paused")
        elif pending is not None and pending.get("question") == "paused" and not self._pause_requested():
            run.answer({"resume": True})  # resumed from elsewhere: `Journal(...).request(run_id, "resume")`
            self.say("resumed")
            self.set_phase("running")
        if not run.alive and self.phase in ("drafting", "confirm", "running", "paused"):
            self.finished(run)
        if self.view is not None and time.monotonic() - self._refreshed > 1.0:
            self._refreshed = time.monotonic()
            self.refresh_numbers()

    def refresh_numbers(self) -> None:
        assert self.view is not None
        objective = self.view.task.get("objective", "cider")
        self.view.refresh(runner.summarize(self.workspace, self.view.run_id),
                          leaderboard_rows(self.journal, self.view.run_id, objective))

    def _pause_requested(self) -> bool:
        assert self.run is not None
        actions = [r["action"] for r in self.journal.requests(self.run.run_id) if r["action"] in ("pause", "resume")]
        return bool(actions) and actions[-1] == "pause"

    # -- input --------------------------------------------------------------------------------------------
    def next_line(self) -> str | None:
        """The next line to handle, in order. Lines typed (or piped) while the planner drafts the task wait for the
        task table (they are its answers); slash commands never wait."""
        line = None if self.deferred and self.phase != "drafting" else self.reader.poll(0.1)
        self.tick()
        waits = self.deferred or self.phase == "drafting"
        if line is not None and waits and not line.startswith("/") and line != END:
            self.deferred.append(line)
            line = None
        if line is None and self.deferred and self.phase != "drafting":
            line = self.deferred.popleft()
        return line

    def handle(self, line: str) -> None:
        if line == END:
            self.input_ended = True
            return
        if not line:
            return
        if self.echo:
            self.say(f"[bold cyan]›[/bold cyan] {escape(line)}")
        if line.startswith("/"):
            slash.dispatch(self, line)
        elif self.phase == "need":
            self.start_run(line)
        elif self.phase == "confirm":
            self.confirm(line)
        else:
            self.ask(line)

    def end_of_input(self) -> None:
        """Piped input is over: leave once the run (if any) ended; a task nobody confirmed is cancelled."""
        if self.phase == "confirm":
            self.confirm("n")
        if self.phase in ("need", "done"):
            self.exit_code = 0

    def start_run(self, requirement: str) -> None:
        if self.models is None and self.settings.generation != "random":
            self.say("[red]no LLM configured[/red]: start `capnas chat` with --llm-base-url/--llm-model "
                     "(any OpenAI-compatible server) or --generation random")
            return
        run_id = runner.new_run_id()
        task = self.settings.task().model_dump()
        self.view = RunView(run_id, task)
        ctx = self.settings.context(self.models)
        self.run = RunThread(self._start, ctx, task, requirement, run_id, self.on_event).start()
        self.say(f"run [bold]{run_id}[/bold]: the planner is turning that into a task…")
        self.set_phase("drafting")

    def on_event(self, e: dict[str, Any]) -> None:
        """On the run's thread: update the view, and write the milestones into the transcript."""
        if self.view is None:
            return
        self.view.on_event(e)
        line = event_line(e, self.view, verbose=not self.live)
        if line:
            self.say(line)

    def confirm(self, line: str) -> None:
        assert self.run is not None and self.draft is not None
        word = line.lower()
        if word in YES:
            self.say(task_table(self.draft, title=f"Task for run {self.run.run_id} (confirmed)", changed=self.changed))
            self.view.task = self.draft  # type: ignore[union-attr]
            # Never {}: LangGraph reads an empty dict as a resume map naming no interrupt, and asks again.
            self.run.answer({"task": self.draft})
            self.set_phase("running")
        elif word in NO:
            self.run.answer(None)  # the stream ends at the interrupt
            self.journal.set_run_status(self.run.run_id, "stopped", "cancelled")
            self.say(f"run {self.run.run_id} cancelled")
            self.run = self.view = None
            self.set_phase("need")
        elif "=" in line:
            try:
                before, self.draft = self.draft, apply_edits(self.draft, line)
            except EditError as err:
                self.say(f"[red]{escape(str(err))}[/red]")
                return
            self.changed = edited(before, self.draft, self.changed)
            self.say(task_table(self.draft, title="Task (edited)", changed=self.changed))
            self.prompt()
        else:
            self.say(f"[dim]{HINTS['confirm']}[/dim]")

    def ask(self, question: str) -> None:
        if self.models is None:
            self.say("questions are answered by the critic's LLM, and none is configured (--llm-base-url)")
            return
        assert self.run is not None
        from capnas.console.ask import answer_question

        run_id = self.run.run_id
        self.background(lambda: answer_question(self.models, self.journal, self.workspace, run_id, question),
                        lambda text: f"[bold]critic[/bold]: {escape(text) or '(no answer)'}")

    def background(self, work: Callable[[], Any], message: Callable[[Any], str]) -> None:
        """Slow work (an LLM call, a report) off the input thread; its result goes into the transcript."""

        def main() -> None:
            try:
                self.say(message(work()))
            except Exception as err:  # noqa: BLE001 - shown to the person, the session goes on
                self.say(f"[red]{escape(type(err).__name__)}: {escape(str(err))}[/red]")

        threading.Thread(target=main, name="chat-work", daemon=True).start()

    # -- the end of a run, and of the session --------------------------------------------------------------
    def finished(self, run: RunThread) -> None:
        confirmed = self.phase in ("running", "paused")
        if run.error is not None:
            self.say(f"[red]{escape(str(run.error))}[/red]")
            if self.view is not None:
                self.view.set_phase("failed")
        elif run.summary is not None:
            if self.view is not None:
                self.refresh_numbers()
            self.say(summary_text(run.summary, self.view))
            if self.view is not None and self.view.board:
                self.say(slash.leaderboard_table(self.view.board, self.view.task.get("objective", "cider")))
        self.set_phase("done" if confirmed else "need")

    def leave(self) -> None:
        """Stop waiting on the run. One nobody confirmed is cancelled; an unfinished one is marked interrupted
        (a pause is lifted, so that `capnas resume` goes on) and the way back is shown."""
        run = self.run
        if run is None:
            return
        run.close()  # an interrupt waiting now, or later, is answered with None
        if self.phase in ("drafting", "confirm"):
            self.journal.set_run_status(run.run_id, "stopped", "cancelled")
            self.say(f"run {run.run_id} cancelled: its task was never confirmed")
            return
        run.join(timeout=0.5)
        unfinished = (self.journal.get_run(run.run_id) or {}).get("status") == "running"
        if self.phase in ("running", "paused") and unfinished:
            if self.phase == "paused":
                self.journal.request(run.run_id, "resume")
            self.journal.set_run_status(run.run_id, "interrupted", "interrupted")
            self.say(f"run {run.run_id} is kept in {escape(self.workspace)} (every finished step is saved). "
                     f"Continue it with:\n  capnas resume {run.run_id} --run-dir {escape(self.workspace)}")

    @property
    def run_alive(self) -> bool:
        return self.run is not None and self.run.alive

    # -- drawing ------------------------------------------------------------------------------------------
    def render(self) -> RenderableType:
        """The live region: the run's dashboard (the task table is in the transcript, it may be taller than the
        terminal), the hint for this phase, then the line being typed."""
        parts: list[RenderableType] = []
        if self.phase == "drafting":
            parts.append(self._spinner)
        elif self.view is not None and self.phase in ("running", "paused", "done"):
            parts.append(self.view.render())
        if self.phase != "drafting":
            parts.append(Text(HINTS[self.phase], style="dim"))
        parts.append(Text.assemble(("› ", "bold cyan"), self.reader.buffer, ("▌", "blink")))
        return Group(*parts)


def _describe(models: AgentModels | None) -> str:
    if models is None:
        return "none (random generation needs no LLM)"
    return f"{models.default.model} at {models.default.base_url or 'api.openai.com'}"


def summary_text(summary: dict[str, Any], view: RunView | None) -> str:
    line = (f"[bold]done[/bold]: run {summary['run_id']} {summary['status']} ({summary.get('stop_reason')}): "
            f"{summary['candidates']} candidates, {summary['valid']} valid, {summary['trained']} trained, "
            f"{summary['tokens']:,} tokens, ${summary['cost_usd']:.4f}")
    best = summary.get("best")
    if best:
        name = view.short(best["candidate_id"]) if view else best["candidate_id"]
        line += f"\nbest {name}: " + " ".join(f"{k}={v:.3f}" for k, v in (best.get("metrics") or {}).items()
                                               if isinstance(v, float))
    return line
