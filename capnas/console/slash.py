"""Slash commands of `capnas chat`. Controls go through the journal (`Journal.request`), which the graph reads
between candidates, so /pause, /budget and /stop take effect when the current candidate is done."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from rich.markup import escape
from rich.table import Table

from capnas.runner import summarize
from capnas.tools.report.summary import METRIC_KEYS, leaderboard_rows

if TYPE_CHECKING:
    from capnas.console.session import ChatSession

HELP = {
    "/help": "this list",
    "/status": "the run's counts, best candidate, tokens and cost (from the journal)",
    "/leaderboard": "trained candidates, best first",
    "/report": "write the HTML report, the model card and the exported best model",
    "/pause": "pause after the current candidate",
    "/resume": "continue a paused run",
    "/budget N [MIN]": "allow N candidates in all (and MIN minutes)",
    "/stop": "end the run after the current candidate (the reporter still writes the summary)",
    "/new": "start another run (after this one ended)",
    "/quit": "leave; an unfinished run is kept and `capnas resume RUN_ID` continues it",
}


def dispatch(s: ChatSession, line: str) -> None:
    name, *args = line.split()
    handler = COMMANDS.get(name.lower())
    if handler is None:
        s.say(f"unknown command {escape(name)}; /help lists them")
        return
    handler(s, args)


def _run_id(s: ChatSession) -> str | None:
    if s.run is None:
        s.say("no run yet: describe what you need first")
        return None
    return s.run.run_id


def _live_run_id(s: ChatSession) -> str | None:
    run_id = _run_id(s)
    if run_id is not None and s.phase not in ("running", "paused"):
        s.say("that needs a running run" + (" (confirm the task first)" if s.phase == "confirm" else ""))
        return None
    return run_id


def help_(s: ChatSession, args: list[str]) -> None:
    table = Table(show_header=False, box=None)
    for cmd, text in HELP.items():
        table.add_row(f"[bold]{escape(cmd)}[/bold]", text)
    table.add_row("anything else", "before a run: your requirement; during and after one: a question about it")
    s.say(table)


def status(s: ChatSession, args: list[str]) -> None:
    if (run_id := _run_id(s)) is None:
        return
    r = summarize(s.workspace, run_id)
    best = r["best"] or {}
    metrics = " ".join(f"{k}={v:.3f}" for k, v in (best.get("metrics") or {}).items() if isinstance(v, float))
    s.say(f"run {run_id}: {s.phase} (journal: {r['status']}), {r['candidates']} candidates, {r['valid']} valid, "
          f"{r['trained']} trained, {r['tokens']:,} tokens, ${r['cost_usd']:.4f}"
          + (f"\nbest {best['candidate_id']}: {metrics}" if best else ""))


def leaderboard(s: ChatSession, args: list[str]) -> None:
    if (run_id := _run_id(s)) is None:
        return
    objective = (s.view.task if s.view else {}).get("objective", "cider")
    rows = leaderboard_rows(s.journal, run_id, objective)
    s.say(leaderboard_table(rows, objective) if rows else "no trained candidate yet")


def leaderboard_table(rows: list[dict[str, Any]], objective: str) -> Table:
    table = Table(title=f"leaderboard (by val {objective})", title_justify="left", header_style="bold")
    for col in ("#", "candidate", "model", "params", *METRIC_KEYS):
        table.add_column(col, no_wrap=col != "model")
    for i, r in enumerate(rows, 1):
        table.add_row(str(i), r["candidate_id"], escape(r.get("plan") or ""), f"{r['params'] or 0:,}",
                      *(f"{r[k]:.3f}" if isinstance(r.get(k), (int, float)) else "-" for k in METRIC_KEYS))
    return table


def report(s: ChatSession, args: list[str]) -> None:
    if (run_id := _run_id(s)) is None:
        return
    from capnas.commands.report_cmd import read_run
    from capnas.tools.report.bundle import write_report_bundle

    def work() -> dict[str, Any]:
        files = write_report_bundle(read_run(s.workspace, run_id), s.workspace)
        return {"report": files.html, "model card": files.model_card, "exported model": files.model_dir}

    s.say("writing the report…")
    s.background(work, lambda paths: "\n".join(f"{k}: {escape(str(v))}" for k, v in paths.items() if v))


def pause(s: ChatSession, args: list[str]) -> None:
    if (run_id := _live_run_id(s)) is not None:
        s.journal.request(run_id, "pause")
        s.say("the run pauses after the current candidate")


def resume(s: ChatSession, args: list[str]) -> None:
    if (run_id := _live_run_id(s)) is None:
        return
    assert s.run is not None
    if s.phase == "paused" and s.run.pending is not None:
        s.run.answer({"resume": True})  # the planner records the resume itself ({} would resume nothing)
        s.set_phase("running")
        s.say("resumed")
    else:
        s.journal.request(run_id, "resume")
        s.say("not paused (a pending pause is cancelled)")


def budget(s: ChatSession, args: list[str]) -> None:
    if (run_id := _live_run_id(s)) is None:
        return
    try:
        candidates = int(args[0])
        minutes = float(args[1]) if len(args) > 1 else None
        if candidates < 1 or (minutes is not None and minutes <= 0):
            raise ValueError
    except (IndexError, ValueError):
        s.say("usage: /budget N [MINUTES], e.g. /budget 4 or /budget 4 30")
        return
    s.journal.request(run_id, "budget", max_candidates=candidates, time_budget=minutes)
    if s.view is not None:
        budgets = s.view.task.setdefault("budgets", {})
        budgets["max_candidates"] = candidates
        if minutes is not None:
            budgets["time_budget"] = minutes
    s.say(f"budget: {candidates} candidates" + (f", {minutes:g} minutes" if minutes else "")
          + " (checked after each candidate)")


def stop(s: ChatSession, args: list[str]) -> None:
    if s.phase == "confirm":
        s.confirm("n")
        return
    if (run_id := _live_run_id(s)) is None:
        return
    s.journal.request(run_id, "stop")
    s.say("stopping after the current candidate; the reporter then writes the summary")
    if s.phase == "paused":
        resume(s, [])


def new(s: ChatSession, args: list[str]) -> None:
    if s.phase in ("drafting", "confirm", "running", "paused"):
        s.say("a run is going: /stop it (or /quit) first")
        return
    s.run = s.view = None
    s.set_phase("need")


def quit_(s: ChatSession, args: list[str]) -> None:
    s.exit_code = 0


COMMANDS: dict[str, Callable[[ChatSession, list[str]], None]] = {
    "/help": help_, "/status": status, "/leaderboard": leaderboard, "/report": report, "/pause": pause,
    "/resume": resume, "/budget": budget, "/stop": stop, "/new": new, "/quit": quit_, "/exit": quit_,
}
