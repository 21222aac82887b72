"""`capnas plan TEXT`: the task the planner drafts from a requirement, without running anything: each changed field
with the words it was read from, as the chat's confirmation table shows it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from capnas.commands.options import with_settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def register(app: typer.Typer) -> None:
    @app.command("plan")
    @with_settings(exclude=("requirement",))
    def plan(
        settings: dict[str, Any],
        text: str = typer.Argument(..., help="The requirement, in the person's words."),
        config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON run settings: the defaults."),
        json_out: bool = typer.Option(False, "--json", help='Print {"task": ..., "changed": {FIELD: {value, '
                                                             'evidence, source}}, "ignored": [...]}.'),
    ) -> None:
        """Draft the task a requirement asks for: the run settings (flags, --config) are the defaults, and a field
        changes only where the requirement's words say so. Uses the run's LLM (the embedded model when none is
        configured; none with --generation random, which leaves the deterministic reading alone)."""
        from capnas.settings import RunSettings, SettingsError

        if not text.strip():
            typer.echo("capnas plan: TEXT is empty; say what you need, e.g. "
                       "capnas plan \"under 1M parameters, with a GRU decoder\"", err=True)
            raise typer.Exit(EXIT_USAGE)
        try:
            settings = RunSettings.load(config, settings)
        except SettingsError as err:
            typer.echo(f"capnas plan: {err}", err=True)
            raise typer.Exit(EXIT_USAGE)
        # (after the check: these import langchain and, through the runner, langgraph)
        from capnas import runner
        from capnas.agents.llm import build_chat_model
        from capnas.agents.planner import draft_task
        from capnas.embedded import EmbeddedLLMError

        try:
            with runner.run_models(settings.models(), settings.generation, settings.embedded_model,
                                   progress=lambda line: typer.echo(line, err=True)) as (models, _):
                llm = build_chat_model(models.for_role("planner"), "planner") if models is not None else None
                drafted, _, _ = draft_task(llm, text, settings.task())
        except EmbeddedLLMError as err:
            typer.echo(f"capnas plan: the embedded LLM could not start: {err}\n  pass --llm-base-url/--llm-model "
                       "to use another OpenAI-compatible server, or --generation random to read without an LLM",
                       err=True)
            raise typer.Exit(EXIT_FAILED)
        if json_out:
            typer.echo(json.dumps({"task": drafted.task.model_dump(mode="json"), "changed": drafted.evidence(),
                                   "ignored": drafted.ignored}))
            return
        from rich.console import Console

        from capnas.console.taskform import task_table

        Console().print(task_table(drafted.task.model_dump(), title="Task", changed=drafted.evidence()))
        for line in drafted.ignored:
            Console(stderr=True, highlight=False).print(f"[dim]not used: {line}[/dim]")
        if not drafted.changed:
            typer.echo("nothing in the requirement was read as a setting: the run's settings stand", err=True)
