"""`capnas run`, `capnas resume`, `capnas runs`: headless design runs (scripts, clusters, CI)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import typer

from capnas.commands.options import with_settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _progress_printer(json_mode: bool, requirement: str = ""):
    """One line per event on stderr (stdout stays clean for --json)."""
    from rich.console import Console
    from rich.markup import escape

    from capnas.tools.data.progress import progress_line

    console = Console(stderr=True, highlight=False)

    def on_event(e: dict[str, Any]) -> None:
        kind = e.get("event")
        if kind == "task" and requirement and e.get("changed") is not None:  # what it changed, from which words
            changed = e["changed"]
            logging.getLogger(__name__).info("task from the requirement %r: %s", requirement, json.dumps(changed))
            console.print("task from the requirement: " + ("nothing in it was read as a setting; the run's settings "
                                                           "stand" if not changed else ""))
            for key, change in changed.items():
                value = change["value"]
                shown = ", ".join(map(str, value)) if isinstance(value, list) else f"{value:,}" if isinstance(
                    value, int) and not isinstance(value, bool) else str(value)
                console.print(f"  {key} = {escape(shown)}  [dim]\u2190 \u201c{escape(change['evidence'])}\u201d"
                              f" ({change.get('source', 'reader')})[/dim]")
        elif kind == "candidate":
            extra = ""
            if e.get("violations"):
                extra = " violations: " + ", ".join(e["violations"][:5])
            if e.get("metrics"):
                extra = " " + " ".join(f"{k}={v:.3f}" for k, v in e["metrics"].items() if isinstance(v, float))
            if e.get("plan"):
                extra += f" [dim]{e['plan']}[/dim]"
            console.print(f"  {e['candidate_id']}: {e['status']}{extra}")
        elif kind == "coder_tool":  # the coder trying its draft before it submits
            console.print(f"    {e.get('candidate_id')} coder tool call {e.get('call')}: {e.get('tool')}"
                          f" ({e.get('sandbox_s') or 0:.1f} s in the sandbox)")
        elif kind == "train" and e.get("phase") == "epoch":  # candidates of a round train at once: name each
            loss = e.get("loss")
            console.print(f"    {e.get('candidate_id')} epoch {e.get('epoch')}: " +
                          (f"loss={loss:.3f}" if isinstance(loss, float) else "loss=n/a"))
        elif kind == "train" and e.get("phase") == "val":
            console.print(f"    {e.get('candidate_id')} epoch {e.get('epoch')}: val cider={e.get('cider', float('nan')):.3f}")
        elif kind == "round" and e.get("random"):
            console.print(f"[bold]round {e['round']}[/bold]: {len(e.get('candidates') or [])} random draws")
        elif kind == "round":
            pairs = e.get("families") or []
            console.print(f"[bold]round {e['round']}[/bold]: " + ("; ".join(f"{enc} + {dec}" for enc, dec in pairs) or
                          f"{', '.join(e['plan']['encoders'][:2])} × {', '.join(e['plan']['decoders'][:2])}"))
        elif kind == "test" and e.get("phase") == "start":
            console.print(f"  {e['candidate_id']}: the search has ended; scoring it once on the test split")
        elif kind == "test" and e.get("metrics"):
            console.print(f"  {e['candidate_id']}: test " + " ".join(
                f"{k}={v:.3f}" for k, v in e["metrics"].items() if isinstance(v, float)))
        elif kind == "critic" and e.get("feedback"):
            console.print(f"  critic ({e['decision']}): {e['feedback']}")
        elif kind == "done":
            console.print(f"[bold]done[/bold]: {e['status']} ({e['stop_reason']})")
        elif kind == "progress":  # preparing the data: a line every few seconds
            console.print(f"  [dim]{escape(progress_line(e))}[/dim]")

    return on_event


@contextmanager
def _llm(models, generation: str, embedded_model: str | None) -> Iterator[tuple[Any, str]]:
    """`runner.run_models`, with a failing embedded model turned into a clear message and exit 1."""
    from capnas import runner
    from capnas.embedded import EmbeddedLLMError

    try:
        with runner.run_models(models, generation, embedded_model,
                               progress=lambda line: typer.echo(line, err=True)) as chosen:
            yield chosen
    except EmbeddedLLMError as err:
        typer.echo(f"capnas: the embedded LLM could not start: {err}\n  pass --llm-base-url/--llm-model to "
                   "use another OpenAI-compatible server, or --generation random to run without an LLM", err=True)
        raise typer.Exit(EXIT_FAILED)


def _interrupted(run_id: str, run_dir: str) -> None:
    typer.echo(f"\ninterrupted; everything finished so far is kept. Continue with: "
               f"capnas resume {run_id} --run-dir {run_dir}", err=True)
    raise typer.Exit(130)


def _banner(llm_line: str, settings, device: str) -> None:
    """One line at start: which LLM, data, device, sandbox tier and budget this run uses."""
    from capnas.sandbox import detect_tier

    tier = detect_tier()
    typer.echo(f"capnas run: LLM {llm_line}; data {settings.dataset}; device {device}; sandbox tier {tier.tier}; "
               f"budget {settings.max_candidates} candidates, {settings.time_budget:g} min, "
               f"{settings.generation} generation"
               + (f", {settings.concurrency} at once" if settings.concurrency > 1 else "")
               + (f", ray executor at {settings.ray_address or 'a local instance'}" if settings.executor == "ray" else ""),
               err=True)


def _log_to_file(run_dir: str) -> None:
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=Path(run_dir) / "capnas.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _write_report(summary: dict[str, Any], workspace: str) -> None:
    """The run's HTML report, model card and exported best model (a failure here never fails the run)."""
    from capnas.commands.report_cmd import read_run
    from capnas.tools.report.bundle import write_report_bundle

    try:
        files = write_report_bundle(read_run(workspace, summary["run_id"]), workspace)
    except Exception as err:  # noqa: BLE001 - the run's results are in the journal either way
        logging.getLogger(__name__).exception("report failed")
        summary["report"] = {"error": f"{type(err).__name__}: {err}"}
        return
    summary["report"] = {"html": str(files.html), "model_card": str(files.model_card) if files.model_card else None,
                         "model_dir": str(files.model_dir) if files.model_dir else None}


def _finish(summary: dict[str, Any], json_mode: bool) -> None:
    if json_mode:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        from rich.console import Console

        line = f"run {summary['run_id']}: {summary['status']} ({summary.get('stop_reason')}), " \
               f"{summary['candidates']} candidates, {summary['valid']} valid, {summary['trained']} trained"
        Console().print(line)
        for arm in (summary, summary.get("baseline")):
            best = (arm or {}).get("best")
            if not best:
                continue
            Console().print(f"best of {arm['run_id']} ({arm.get('generation')}) {best['candidate_id']}: val " + " ".join(
                f"{k}={v:.3f}" for k, v in (best["metrics"] or {}).items() if isinstance(v, float)))
            if best.get("test_metrics"):
                Console().print("  test (scored once, after the search) " + " ".join(
                    f"{k}={v:.3f}" for k, v in best["test_metrics"].items() if isinstance(v, float)))
        if summary.get("baseline"):
            Console().print(f"compare them: capnas compare {summary['run_id']}")
        for what, path in (summary.get("report") or {}).items():
            if path:
                Console().print(f"{what.replace('_', ' ')}: {path}")
    raise typer.Exit(EXIT_OK if summary["status"] in ("finished", "stopped") else EXIT_FAILED)


def register(app: typer.Typer) -> None:
    @app.command("run")
    @with_settings()
    def run(
        settings: dict[str, Any],
        config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON file; every run setting is a key."),
        run_id: Optional[str] = typer.Option(None, "--run-id", help="Name the run (default: time and a random suffix)."),
        report: bool = typer.Option(True, "--report/--no-report",
                                    help="Write the HTML report and export the best model at the end."),
        json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
    ) -> None:
        """Run a design search headless; resumable with `capnas resume RUN_ID`.

        Exit status: 0 finished or stopped on a budget, 1 the run failed (resume it), 2 bad options or config."""
        from capnas.settings import RunSettings, SettingsError

        try:
            settings = RunSettings.load(config, settings)
        except SettingsError as err:
            typer.echo(f"capnas run: {err}", err=True)
            raise typer.Exit(EXIT_USAGE)
        from capnas import runner  # (after the check: it imports torch and langgraph, seconds)
        if run_id is not None and runner.run_exists(settings.run_dir, run_id):
            typer.echo(f"capnas run: --run-id {run_id}: that run already exists in {settings.run_dir}; "
                       f"continue it with `capnas resume {run_id}` or choose another id", err=True)
            raise typer.Exit(EXIT_USAGE)
        _log_to_file(settings.run_dir)
        with _llm(settings.models(), settings.generation, settings.embedded_model) as (models, llm_line):
            ctx = settings.context(models)
            _banner(llm_line, settings, ctx.device)
            run_id = run_id or runner.new_run_id()
            try:
                summary = runner.start(ctx, settings.task().model_dump(), settings.requirement, run_id=run_id,
                                       on_event=_progress_printer(json_out, settings.requirement),
                                       baseline=settings.baseline)
            except KeyboardInterrupt:
                _interrupted(run_id, settings.run_dir)
            except runner.RunError as err:
                typer.echo(f"capnas run: {err}", err=True)
                raise typer.Exit(EXIT_USAGE if err.usage else EXIT_FAILED)
        if report:
            _write_report(summary, settings.run_dir)
        _finish(summary, json_out)

    @app.command("resume")
    def resume(
        run_id: str = typer.Argument(..., help="The run to continue."),
        run_dir: str = typer.Option(".capnas", "--run-dir", help="Workspace holding the run."),
        json_out: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
    ) -> None:
        """Continue a run after a crash, without redoing finished candidates."""
        from capnas import runner
        from capnas.graph.services import journal_path

        if not journal_path(run_dir).is_file():
            typer.echo(f"capnas resume: --run-dir {run_dir}: no journal there (the workspace `capnas run` wrote; "
                       "see `capnas runs --run-dir DIR`)", err=True)
            raise typer.Exit(EXIT_USAGE)
        try:
            embedded = runner.recorded_context(run_dir, run_id).extra.get("embedded_model")
            with _llm(None, "spec" if embedded else "random", embedded) as (models, llm_line):
                summary = runner.resume(run_dir, run_id, models=models, on_event=_progress_printer(json_out))
        except KeyboardInterrupt:
            _interrupted(run_id, run_dir)
        except runner.RunError as err:
            typer.echo(f"capnas resume: {err}", err=True)
            raise typer.Exit(EXIT_USAGE if err.usage else EXIT_FAILED)
        _finish(summary, json_out)

    @app.command("runs")
    def runs(
        run_dir: str = typer.Option(".capnas", "--run-dir", help="Workspace holding the runs."),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON list."),
    ) -> None:
        """List runs with their status and best score."""
        from capnas import runner
        from capnas.graph.journal import Journal
        from capnas.graph.services import journal_path

        if not journal_path(run_dir).exists():
            typer.echo(f"capnas runs: no journal in {run_dir} (start one with `capnas run`)", err=True)
            raise typer.Exit(EXIT_USAGE)
        rows = [runner.summarize(run_dir, r["run_id"]) for r in Journal(journal_path(run_dir)).list_runs()]
        if json_out:
            typer.echo(json.dumps(rows))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table("run", "status", "candidates", "trained", "best", "cider")
        for r in rows:
            best = r["best"] or {}
            table.add_row(r["run_id"], r["status"], str(r["candidates"]), str(r["trained"]),
                          best.get("candidate_id", "-"), f"{(best.get('metrics') or {}).get('cider', float('nan')):.3f}")
        Console().print(table)

    @app.command("compare")
    def compare(
        run_a: str = typer.Argument(..., help="The first run (say, a guided search)."),
        run_b: Optional[str] = typer.Argument(None, help="The second run (default: RUN_A's random baseline)."),
        run_dir: str = typer.Option(".capnas", "--run-dir", help="Workspace holding the runs."),
        json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """Two runs side by side: each best (chosen on val) with its val and test metrics, what each spent, and
        one sentence of what it means. `capnas compare RUN` compares a run with its `--baseline random` arm."""
        from capnas.graph.services import journal_path

        if not journal_path(run_dir).is_file():
            typer.echo(f"capnas compare: --run-dir {run_dir}: no journal there (start one with `capnas run`)", err=True)
            raise typer.Exit(EXIT_USAGE)
        from capnas import runner
        from capnas.graph.journal import baseline_id
        from capnas.tools.report.compare import as_json, comparison_table, verdict

        try:
            a, b = runner.compare(run_dir, run_a, run_b or baseline_id(run_a))
        except runner.RunError as err:
            typer.echo(f"capnas compare: {err}", err=True)
            raise typer.Exit(EXIT_USAGE)
        if json_out:
            typer.echo(json.dumps(as_json(a, b)))
            return
        from rich.console import Console
        from rich.table import Table

        rows = comparison_table(a, b)
        table = Table(*rows[0])
        for row in rows[1:]:
            table.add_row(*row)
        Console().print(table)
        Console().print(verdict(a, b))

    @app.command("leaderboard")
    def leaderboard(
        run_ids: Optional[list[str]] = typer.Argument(None, help="Runs to compare (default: every run)."),
        run_dir: str = typer.Option(".capnas", "--run-dir", help="Workspace holding the runs."),
        metric: str = typer.Option("cider", "--metric", help="Val metric to rank by."),
        json_out: bool = typer.Option(False, "--json", help="Print a JSON list."),
    ) -> None:
        """Trained candidates of one or more runs, best first: how a guided search compares with `random`."""
        from capnas.graph.journal import Journal
        from capnas.graph.services import journal_path
        from capnas.tools.scoring.metrics import METRIC_KEYS

        if not journal_path(run_dir).exists():
            typer.echo(f"capnas leaderboard: no journal in {run_dir} (start one with `capnas run`)", err=True)
            raise typer.Exit(EXIT_USAGE)
        if metric not in METRIC_KEYS:
            typer.echo(f"capnas leaderboard: unknown metric {metric!r}; use one of {', '.join(METRIC_KEYS)}", err=True)
            raise typer.Exit(EXIT_USAGE)
        journal = Journal(journal_path(run_dir))
        known = {r["run_id"] for r in journal.list_runs()}
        if missing := [r for r in run_ids or [] if r not in known]:
            typer.echo(f"capnas leaderboard: no run {', '.join(missing)} in {run_dir} (see `capnas runs`)", err=True)
            raise typer.Exit(EXIT_USAGE)
        rows = [{"run_id": c.run_id, "candidate_id": c.candidate_id, "mode": c.mode, "model": c.plan,
                 "params": c.params, "metrics": c.metrics}
                for c in journal.leaderboard(None, metric) if not run_ids or c.run_id in run_ids]
        if json_out:
            typer.echo(json.dumps(rows))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table("rank", "candidate", "mode", "model", "params", *METRIC_KEYS)
        for i, r in enumerate(rows, 1):
            table.add_row(str(i), r["candidate_id"], r["mode"], r["model"] or "", f"{r['params'] or 0:,}",
                          *(f"{r['metrics'].get(k, float('nan')):.3f}" for k in METRIC_KEYS))
        Console().print(table)
