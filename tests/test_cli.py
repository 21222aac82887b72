"""Every command of the `capnas` CLI answers --help, and --version prints the installed version."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

import capnas
from capnas.cli import app

runner = CliRunner()


def _command_paths(cmd, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    # typer vendors its own click; groups are the commands that hold a `commands` mapping.
    paths = [prefix]
    for name, sub in (getattr(cmd, "commands", None) or {}).items():
        paths += _command_paths(sub, prefix + (name,))
    return paths


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"capnas {capnas.__version__}"


def test_every_command_has_help() -> None:
    root = typer.main.get_command(app)
    paths = _command_paths(root)
    assert len(paths) >= 2, "the CLI registered no commands"
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, f"capnas {' '.join(path)} --help failed: {result.output}"
        assert "Usage" in result.output
