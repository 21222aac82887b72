"""`capnas sandbox check` and `capnas sandbox exec`, through the real command functions and real runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from capnas.commands import sandbox_cmd
from capnas.sandbox.tiers import ALLOW_UNSANDBOXED_ENV, TIER_ENV, host_support

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cli():
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """capnas (test instance)"""

    sandbox_cmd.register(app)
    runner = CliRunner()
    return lambda *args, **kw: runner.invoke(app, ["sandbox", *map(str, args)], **kw)


def test_check_prints_tier_and_layers_in_one_line(cli) -> None:
    result = cli("check")
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("sandbox tier ")
    if host_support().bwrap_ok:  # this machine and CI: root, bubblewrap installed
        assert first.startswith("sandbox tier A (isolated): bwrap ")
        assert "seccomp" in first and "landlock-fs" in first


def test_check_says_what_is_missing_and_refuses_tier_c(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TIER_ENV, "C")
    result = cli("check")
    assert result.exit_code == 1
    assert "tier C (unsandboxed, forced by CAPNAS_SANDBOX_TIER)" in result.output
    assert "missing bwrap" in result.output and ALLOW_UNSANDBOXED_ENV in result.output


def test_exec_runs_a_script_and_prints_json(cli, tmp_path: Path) -> None:
    script = tmp_path / "hello.py"
    script.write_text("print('hello from the sandbox')\n")
    result = cli("exec", script, "--json", "--time-limit", 30, "--memory-mb", 512)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["exit_reason"] == "ok" and data["stdout_tail"] == "hello from the sandbox"
    assert data["layers"]


def test_exec_exit_status_follows_the_script(cli, tmp_path: Path) -> None:
    script = tmp_path / "fails.py"
    script.write_text("raise SystemExit(5)\n")
    result = cli("exec", script)
    assert result.exit_code == 1
    assert "exit_reason=exit_5" in result.output


def test_exec_time_limit(cli, tmp_path: Path) -> None:
    script = tmp_path / "sleeps.py"
    script.write_text("import time\nfor _ in range(100): time.sleep(0.1)\n")
    result = cli("exec", script, "--time-limit", 1, "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["exit_reason"] == "wall_timeout"


def test_exec_usage_errors_exit_2(cli, tmp_path: Path) -> None:
    missing = tmp_path / "missing.py"
    result = cli("exec", missing)
    assert result.exit_code == 2 and "missing.py" in result.output
    script = tmp_path / "ok.py"
    script.write_text("pass\n")
    assert cli("exec", script, "--device", "tpu").exit_code == 2
