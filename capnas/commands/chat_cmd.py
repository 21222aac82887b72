"""`capnas chat`: describe what you need, confirm the task, watch and steer the run (see `capnas.console`)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from capnas.commands.options import with_settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def register(app: typer.Typer) -> None:
    @app.command("chat")
    @with_settings(exclude=("requirement",))
    def chat(
        settings: dict[str, Any],
        config: Optional[Path] = typer.Option(None, "--config", help="YAML/JSON run settings (as for `capnas run`)."),
        plain: bool = typer.Option(False, "--plain", help="Progress as lines, no live view (automatic without a TTY)."),
    ) -> None:
        """Talk to capnas: say what you need, confirm the task, watch the run; /help inside lists the commands.

        Ctrl-C or /quit never loses a run: `capnas resume RUN_ID` continues it."""
        from capnas.settings import RunSettings, SettingsError

        try:
            settings = RunSettings.load(config, settings)
        except SettingsError as err:
            typer.echo(f"capnas chat: {err}", err=True)
            raise typer.Exit(EXIT_USAGE)
        # (after the check: these import torch and langgraph, seconds)
        from rich.console import Console

        from capnas import runner
        from capnas.console import ChatSession
        from capnas.console.keys import KeyReader, LineReader
        from capnas.embedded import EmbeddedLLMError
        _log_to_file(settings.run_dir)
        live = not plain and sys.stdin.isatty() and sys.stdout.isatty()
        echo = live or not sys.stdin.isatty()  # a terminal in line mode echoes by itself
        try:
            # no endpoint configured: the embedded local model, served while the session lasts
            with runner.run_models(settings.models(), settings.generation, settings.embedded_model,
                                   progress=lambda line: typer.echo(line, err=True)) as llm:
                session = ChatSession(settings, Console(highlight=False), KeyReader() if live else LineReader(),
                                      live=live, llm=llm, echo=echo)
                code = session.loop()
        except KeyboardInterrupt:  # while the embedded model was starting: no run yet
            raise typer.Exit(EXIT_INTERRUPTED)
        except EmbeddedLLMError as err:
            typer.echo(f"capnas chat: the embedded LLM could not start: {err}\n  pass --llm-base-url/--llm-model "
                       "to use another OpenAI-compatible server, or --generation random to run without an LLM",
                       err=True)
            raise typer.Exit(EXIT_FAILED)
        if session.run_alive:
            # The run's thread is inside a graph step (perhaps a training job): leave without waiting for it,
            # as a kill would. Every finished step is already checkpointed.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        raise typer.Exit(code)


def _log_to_file(run_dir: str) -> None:
    """Logs go to RUN_DIR/capnas.log: anything on the terminal would tear the live view."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=Path(run_dir) / "capnas.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
