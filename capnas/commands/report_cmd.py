"""`capnas report RUN_ID`: the run's self-contained HTML report, the best model's card and its export.

This is where the journal is read for the reports: `read_run` turns the run's rows into a plain `RunRecord`,
and everything below it (`capnas.tools.report.run_data`, `html_report`, `model_card`, `export`) works from that record
and the files the training jobs wrote, never from the journal itself (tools do not import graph).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

from capnas.commands._checks import OneLineErrors, fail as _fail

if TYPE_CHECKING:
    from capnas.tools.report.run_data import RunRecord

DEFAULT_WORKSPACE = ".capnas"
# The name `capnas.graph.services.journal_path` gives it (that module imports LangChain: seconds to load).
JOURNAL_FILE = "journal.sqlite"


def run_problem(workspace: str | Path, run_id: str) -> str | None:
    """Why RUN_ID cannot be read from WORKSPACE's journal (no journal, not a journal, no such run, naming the
    recent runs), or None when it can. Cheap (no torch): commands call it before loading anything else."""
    from capnas.graph.journal import Journal

    path = Path(workspace) / JOURNAL_FILE
    if not path.is_file():
        return f"no run journal at {path}: pass the workspace of the run with --workspace"
    try:
        journal = Journal(path)
        if journal.get_run(run_id) is not None:
            return None
        recent = [r["run_id"] for r in journal.list_runs()[:5]]
    except sqlite3.DatabaseError as err:
        return f"{path} is not a capnas run journal ({err})"
    return f"no run {run_id!r} in {path} (recent runs: {', '.join(recent) or 'none'})"


def read_run(workspace: str | Path, run_id: str) -> RunRecord:
    """The run's journal rows as a `RunRecord`: the run, its candidates, the leaderboard by the run's objective,
    LLM usage, and the parsed planner/critic answers the model card quotes. Raises UnknownRunError (naming the
    journal and the recent runs) when there is no such run."""
    from capnas.graph.journal import CODER_TOOL, TEST_SCORED, Journal, baseline_id
    from capnas.tools.report.run_data import RunRecord, UnknownRunError

    problem = run_problem(workspace, run_id)
    if problem:
        raise UnknownRunError(problem)
    journal = Journal(Path(workspace) / JOURNAL_FILE)
    run = journal.get_run(run_id)
    candidates = journal.candidates(run_id)
    objective = (run.get("task") or {}).get("objective", "cider")
    keys = {f"planner:round{c.round}" for c in candidates} | {f"critic:{c.candidate_id}" for c in candidates}
    answers = {}
    for key in sorted(keys):
        raw = journal.recorded_response(run_id, key)
        if raw is None:
            continue
        try:
            parsed = json.loads(raw).get("parsed")
        except (ValueError, AttributeError):
            continue
        if isinstance(parsed, dict):
            answers[key] = parsed
    tests = journal.events(run_id, TEST_SCORED)
    tool_calls: dict[str, list[dict]] = {}
    for event in journal.events(run_id, CODER_TOOL):
        tool_calls.setdefault(event["candidate_id"], []).append(event["payload"])
    base_id = baseline_id(run_id)
    baseline = (read_run(workspace, base_id) if (run.get("config") or {}).get("baseline") and journal.get_run(base_id)
                else None)
    return RunRecord(run=run, candidates=[c.to_dict() for c in candidates],
                     leaderboard=[c.candidate_id for c in journal.leaderboard(run_id, objective)],
                     usage=journal.usage(run_id), answers=answers, test=tests[-1]["payload"] if tests else None,
                     baseline=baseline, tool_calls=tool_calls)


def register(app: typer.Typer) -> None:
    @app.command("report", cls=OneLineErrors)
    def report_command(
        run_id: str = typer.Argument(..., metavar="RUN_ID", help="The run to report on (`capnas runs` lists them)."),
        workspace: Path = typer.Option(
            Path(DEFAULT_WORKSPACE), "--workspace", "--run-dir", metavar="DIR",
            help="Workspace holding the run's journal and run dirs."),
        out: Path | None = typer.Option(
            None, "--out", metavar="FILE", help="Where to write the HTML page (default: DIR/runs/RUN_ID/report.html)."),
        export: bool = typer.Option(
            True, "--export/--no-export", help="Also export the best model to DIR/runs/RUN_ID/model/."),
        layers: bool = typer.Option(
            True, "--layers/--no-layers",
            help="Measure the best model's layer table (builds it inside the sandbox; a few seconds)."),
        as_json: bool = typer.Option(False, "--json", help="Print the written paths as one JSON object."),
    ) -> None:
        """Write RUN_ID's self-contained HTML report, the best model's card, and export the best model.

        The page needs no network: leaderboard, curves, captioned validation images, search tree, contract reports.

        Exit status: 0 written, 2 no such run or workspace, 1 the report could not be made."""

        def fail(message: str, code: int) -> NoReturn:
            _fail("report", message, code)

        if out is not None and out.is_dir():
            fail(f"--out {out}: is a folder; give the path of the HTML file to write", 2)
        problem = run_problem(workspace, run_id)
        if problem:
            fail(problem, 2)

        from capnas.tools.report.bundle import write_report_bundle
        from capnas.tools.report.run_data import ReportError, UnknownRunError

        try:
            record = read_run(workspace, run_id)
        except UnknownRunError as exc:
            fail(str(exc), 2)
        try:
            files = write_report_bundle(record, workspace, out=out, export=export, layer_probe=layers)
        except ReportError as exc:
            fail(str(exc), 1)
        paths = {"html": str(files.html), "model_card": str(files.model_card) if files.model_card else None,
                 "model_dir": str(files.model_dir) if files.model_dir else None}
        if as_json:
            typer.echo(json.dumps(paths))
            return
        typer.echo(f"report: {files.html}")
        if files.model_card:
            typer.echo(f"model card: {files.model_card}")
        if files.model_dir:
            typer.echo(f"exported model: {files.model_dir}  (try: capnas caption {files.model_dir} IMAGE...)")
        if not files.model_card:
            typer.echo("no trained candidate in this run: no model card, nothing exported", err=True)
