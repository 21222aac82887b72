"""The `capnas` command line. Each command lives in its own module under `capnas.commands` and
registers itself here; heavy imports (torch, langgraph) happen inside the commands, so `--help` is fast."""

from __future__ import annotations

import logging
import sys
import tempfile
import time
import traceback
from pathlib import Path

import typer

from capnas import __version__
from capnas.commands import COMMAND_MODULES
from capnas.commands._checks import UsageError, _click_exceptions

# (older typer raises click's own Exit and Abort; the bundled copy uses typer's)
ClickExit = getattr(_click_exceptions, "Exit", typer.Exit)
ClickAbort = getattr(_click_exceptions, "Abort", typer.Abort)

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


def main(argv: list[str] | None = None) -> None:
    """Run the CLI with every error as one line: a bad flag (click's usage errors, exit 2) or an unexpected
    failure (exit 1, its traceback written to the log named in the line). Nothing a person sees is a raw
    traceback; a run's own errors are handled by its command and keep the run resumable."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="capnas", standalone_mode=False)
    except UsageError as err:
        name = err.ctx.command_path if err.ctx is not None else "capnas"
        if err.format_message():  # (no message: `capnas` alone, which printed the help)
            typer.echo(f"{name}: {err.format_message()}  (see `{name} --help`)", err=True)
        sys.exit(2)
    except (typer.Exit, ClickExit) as err:  # the command chose its status
        sys.exit(err.exit_code)
    except (typer.Abort, ClickAbort):  # Ctrl-C at a prompt
        typer.echo("", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - the last line of defence: log it, say where, exit 1
        log_path = _crash_log(err)
        typer.echo(f"capnas: unexpected error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                   f"  (traceback in {log_path}; please report it)", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _crash_log(err: BaseException) -> Path:
    """The traceback, appended to the log a command opened (RUN_DIR/capnas.log), else to a file in the temp dir."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    path = Path(handlers[0].baseFilename) if handlers else Path(tempfile.gettempdir()) / "capnas-error.log"
    with path.open("a", encoding="utf-8") as out:
        out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} capnas {' '.join(sys.argv[1:])}\n")
        traceback.print_exception(err, file=out)
    return path


if __name__ == "__main__":
    main()
