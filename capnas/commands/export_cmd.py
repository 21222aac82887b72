"""`capnas export RUN_ID [--candidate ID] --out DIR`: one trained candidate as a self-contained model folder
(code, weights, vocabulary, config, layer table, model card, predict.py). `capnas report` exports the best one.
`--format lemur` writes one LEMUR-style Net file instead (`capnas.tools.lemur.export`)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from capnas.commands._checks import OneLineErrors, fail
from capnas.commands.report_cmd import DEFAULT_WORKSPACE, JOURNAL_FILE, read_run, run_problem

COMMAND = "export"


class ExportFormat(str, Enum):
    capnas = "capnas-model-v1"
    lemur = "lemur"


def register(app: typer.Typer) -> None:
    @app.command("export", cls=OneLineErrors)
    def export_command(
        run_id: str = typer.Argument(..., metavar="RUN_ID", help="The run the model comes from."),
        candidate: str | None = typer.Option(
            None, "--candidate", metavar="ID", help="A trained candidate of the run (default: the best)."),
        workspace: Path = typer.Option(
            Path(DEFAULT_WORKSPACE), "--workspace", "--run-dir", metavar="DIR",
            help="Workspace holding the run's journal and run dirs."),
        out: Path | None = typer.Option(
            None, "--out", metavar="DIR", help="The folder to write (default: DIR/runs/RUN_ID/model-CANDIDATE)."),
        export_format: ExportFormat = typer.Option(
            ExportFormat.capnas, "--format",
            help="capnas-model-v1: code, weights, vocabulary, card, predict.py; lemur: one LEMUR-style Net file "
                 "(architecture only) written into --out (default: DIR/runs/RUN_ID/lemur)."),
    ) -> None:
        """Export a trained candidate; prints the folder.

        Exit status: 0 ok, 2 no such run or candidate (or one that is not trained), 1 cannot export."""
        if out is not None and out.exists() and not out.is_dir():
            fail(COMMAND, f"--out {out}: exists and is not a folder")
        problem = run_problem(workspace, run_id) or candidate_problem(workspace, run_id, candidate)
        if problem:
            fail(COMMAND, problem)

        from capnas.tools.report.export import export_model
        from capnas.tools.report.run_data import ReportError, RunData, UnknownRunError

        try:
            data = RunData(read_run(workspace, run_id), workspace)
        except UnknownRunError as exc:
            fail(COMMAND, str(exc))
        except ReportError as exc:
            fail(COMMAND, str(exc), 1)
        if export_format is ExportFormat.lemur:
            _export_lemur(data, out or workspace / "runs" / run_id / "lemur", candidate)
            return
        try:
            cand = data.candidate(candidate) if candidate else data.best
            if cand is None:
                fail(COMMAND, f"run {run_id} has no trained candidate to export", 1)
            target = out or workspace / "runs" / run_id / f"model-{cand.candidate_id}"
            folder = export_model(data, target, candidate_id=cand.candidate_id)
        except ReportError as exc:
            fail(COMMAND, str(exc), 1)
        typer.echo(str(folder))


def _export_lemur(data, out: Path, candidate: str | None) -> None:
    """Write the LEMUR file; print its path, then what does not carry over."""
    from capnas.tools.lemur.export import export_lemur
    from capnas.tools.report.run_data import ReportError

    try:
        path, notes = export_lemur(data, out, candidate)
    except ReportError as exc:
        fail(COMMAND, str(exc), 1)
    except OSError as exc:
        fail(COMMAND, f"--out {out}: cannot write it: {exc}", 1)
    typer.echo(str(path))
    for note in notes:
        typer.echo(f"  not carried over: {note}")


def candidate_problem(workspace: Path, run_id: str, candidate: str | None) -> str | None:
    """Why `--candidate` cannot be exported (no such candidate in the run, or not trained), naming the trained
    ones; None when it can or none was given. Reads the journal only (no torch)."""
    if candidate is None:
        return None
    from capnas.graph.journal import Journal

    rows = {c.candidate_id: c for c in Journal(Path(workspace) / JOURNAL_FILE).candidates(run_id)}
    trained = ", ".join(cid for cid, c in rows.items() if c.status == "trained") or "none"
    if candidate not in rows:
        return f"--candidate {candidate}: no candidate {candidate!r} in run {run_id} (trained: {trained})"
    if rows[candidate].status != "trained":
        return (f"--candidate {candidate}: candidate {candidate} is {rows[candidate].status}, not trained: only "
                f"trained models export (trained: {trained})")
    return None
