"""`capnas sandbox check` (which isolation this host gives) and `capnas sandbox exec SCRIPT.py` (run any
Python file in the sandbox exactly as a job would, and show what happened)."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from enum import Enum
from pathlib import Path

import typer

from capnas.commands._checks import OneLineErrors, check_device


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


def check() -> None:
    """Print the sandbox tier and its layers in one line, then how to get any layer that is missing."""
    from capnas.sandbox.tiers import SandboxUnavailable, detect_tier

    try:
        info = detect_tier()
    except SandboxUnavailable as e:
        typer.echo(f"capnas sandbox: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(info.line())
    for hint in info.hints():
        typer.echo(f"  {hint}")
    if info.tier == "C":
        typer.echo("  untrusted model code would run unprotected: capnas refuses unless CAPNAS_ALLOW_UNSANDBOXED=1")
        raise typer.Exit(1)


def exec_script(
    script: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True,
                                  help="The Python file to run as __main__ inside the sandbox."),
    time_limit: float = typer.Option(60.0, "--time-limit", min=0.1, help="Wall-clock limit in seconds."),
    memory_mb: int = typer.Option(4096, "--memory-mb", min=16, help="Memory limit in MB."),
    device: Device = typer.Option(Device.cpu, "--device", help="cpu, or cuda (the first GPU)."),
    scratch: Path | None = typer.Option(None, "--scratch", file_okay=False,
                                        help="Scratch dir to use and keep (default: a temporary one, removed)."),
    as_json: bool = typer.Option(False, "--json", help="Print the SandboxResult as JSON."),
) -> None:
    """Run SCRIPT.py inside the sandbox as a job would; exit 0 when it exited 0, else 1."""
    from capnas.sandbox import Job, Limits, run_sandboxed
    from capnas.sandbox.launcher import SandboxError
    from capnas.sandbox.tiers import SandboxUnavailable

    check_device("sandbox exec", device.value)
    workdir = scratch if scratch is not None else Path(tempfile.mkdtemp(prefix="capnas-exec-"))
    job = Job(entry="script", scratch=workdir, script=script, device=device.value,
              limits=Limits(wall_s=time_limit, memory_mb=memory_mb))

    def show_event(event: dict) -> None:
        if not as_json:
            typer.echo(json.dumps(event), err=True)

    try:
        result = run_sandboxed(job, on_event=show_event)
    except (SandboxUnavailable, SandboxError, ValueError) as e:
        typer.echo(f"capnas sandbox exec: {e}", err=True)
        raise typer.Exit(2) from e
    finally:
        if scratch is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        if result.stdout_tail:
            typer.echo(result.stdout_tail)
        if result.stderr_tail:
            sys.stderr.write(result.stderr_tail if result.stderr_tail.endswith("\n") else result.stderr_tail + "\n")
        peak = f"{result.peak_rss_mb:.0f} MB" if result.peak_rss_mb is not None else "n/a"
        typer.echo(f"exit_reason={result.exit_reason} returncode={result.returncode} duration={result.duration_s:.2f}s "
                   f"peak_rss={peak} tier={result.tier} layers={','.join(result.layers)}", err=True)
    raise typer.Exit(0 if result.exit_reason == "ok" else 1)


def register(app: typer.Typer) -> None:
    sandbox_app = typer.Typer(help="Inspect and use the sandbox that untrusted model code runs in.",
                              no_args_is_help=True)
    sandbox_app.command("check", cls=OneLineErrors)(check)
    sandbox_app.command("exec", cls=OneLineErrors)(exec_script)
    app.add_typer(sandbox_app, name="sandbox")
