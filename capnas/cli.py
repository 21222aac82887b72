"""The `capnas` command line. Each command lives in its own module under `capnas.commands` and
registers itself here; heavy imports (torch, langgraph) happen inside the commands, so `--help` is fast."""

from __future__ import annotations

import typer

from capnas import __version__
from capnas.commands import COMMAND_MODULES

app = typer.Typer(
    name="capnas",
    help="LLM agents that design, validate, train and score image-captioning networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"capnas {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """capnas: design image-captioning networks with LLM agents, safely and measurably."""


for _module in COMMAND_MODULES:
    _module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
