"""`capnas export RUN_ID [--candidate ID] --out DIR`: one trained candidate as a self-contained model folder
(code, weights, vocabulary, config, layer table, model card, predict.py). `capnas report` exports the best one."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import typer

from capnas.commands.report_cmd import DEFAULT_WORKSPACE, read_run


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_command(
        run_id: str = typer.Argument(..., metavar="RUN_ID", help="The run the model comes from."),
        candidate: str | None = typer.Option(
            None, "--candidate", metavar="ID", help="A trained candidate of the run (default: the best)."),
        workspace: Path = typer.Option(
            Path(DEFAULT_WORKSPACE), "--workspace", "--run-dir", metavar="DIR",
            help="Workspace holding the run's journal and run dirs."),
        out: Path | None = typer.Option(
            None, "--out", metavar="DIR", help="The folder to write (default: DIR/runs/RUN_ID/model-CANDIDATE)."),
    ) -> None:
        """Export a trained candidate; prints the folder. Exit status: 0 ok, 2 no such run, 1 cannot export."""
        from capnas.tools.report.export import export_model
        from capnas.tools.report.run_data import ReportError, RunData, UnknownRunError

        def fail(message: str, code: int) -> NoReturn:
            typer.echo(f"capnas export: {message}", err=True)
            raise typer.Exit(code)

        try:
            data = RunData(read_run(workspace, run_id), workspace)
        except UnknownRunError as exc:
            fail(str(exc), 2)
        try:
            cand = data.candidate(candidate) if candidate else data.best
            if cand is None:
                fail(f"run {run_id} has no trained candidate to export", 1)
            target = out or workspace / "runs" / run_id / f"model-{cand.candidate_id}"
            folder = export_model(data, target, candidate_id=cand.candidate_id)
        except ReportError as exc:
            fail(str(exc), 1)
        typer.echo(str(folder))
