"""`capnas validate FILE.py --dataset SPEC`: exit status 0 valid, 1 violations, 2 bad input; JSON and human output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from capnas.commands import validate_cmd

FIXTURES = Path(__file__).parent / "fixtures" / "models"
runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    # Registered on a bare app: the command must work without the rest of the CLI.
    app = typer.Typer()
    validate_cmd.register(app)

    @app.callback()
    def root() -> None:
        """Test root, so that `validate` stays a named subcommand."""

    return app


def _needs_sandbox() -> None:
    from capnas.sandbox import detect_tier
    from capnas.sandbox.tiers import SandboxUnavailable, require_runnable

    try:
        require_runnable(detect_tier())
    except SandboxUnavailable as e:
        pytest.skip(f"no sandbox on this host: {e}")


def invoke(app: typer.Typer, *args: str):
    return runner.invoke(app, ["validate", *args], env={"COLUMNS": "200", "OMP_NUM_THREADS": "1"})


def test_violations_as_json_exit_1(app: typer.Typer) -> None:
    path = FIXTURES / "broken" / "torch_load_weights.py"
    result = invoke(app, str(path), "--dataset", "shapes:20", "--json")
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"ok", "violations", "params", "latency_ms"} and doc["ok"] is False
    [violation] = doc["violations"]
    assert set(violation) == {"code", "clause", "message", "line", "hint"}
    assert violation["code"] == "SEC-002"
    assert "torch.load" in path.read_text().splitlines()[violation["line"] - 1]


def test_human_output_shows_code_location_source_line_and_hint(app: typer.Typer) -> None:
    path = FIXTURES / "broken" / "eval_activation.py"
    result = invoke(app, str(path), "--dataset", "shapes:20")
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert "1 violation of caption-net-v1" in out
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "eval(" in text)
    assert f"SEC-001  {path}:{line}" in out
    assert f"{line} |         self.act = eval(" in out
    assert "found: use of the builtin eval" in out and "hint: Write the code out directly" in out


def test_missing_file_exit_2_names_it(app: typer.Typer, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.py"
    result = invoke(app, str(missing), "--dataset", "shapes:20")
    assert result.exit_code == 2 and f"{missing}: no such file" in result.stderr


def test_unreadable_file_exit_2_names_it(app: typer.Typer, tmp_path: Path) -> None:
    binary = tmp_path / "model.py"
    binary.write_bytes(b"\xff\xfe\x00import torch")
    result = invoke(app, str(binary), "--dataset", "shapes:20")
    assert result.exit_code == 2 and str(binary) in result.stderr and "UTF-8" in result.stderr


def test_bad_dataset_exit_2_names_it(app: typer.Typer, tmp_path: Path) -> None:
    spec = str(tmp_path / "captions.json")
    result = invoke(app, str(FIXTURES / "valid" / "cnn_gru.py"), "--dataset", spec)
    assert result.exit_code == 2 and spec in result.stderr


def test_unknown_contract_exit_2_names_it(app: typer.Typer) -> None:
    result = invoke(app, str(FIXTURES / "valid" / "cnn_gru.py"), "--dataset", "shapes:20", "--contract", "caption-net-v7")
    assert result.exit_code == 2 and "caption-net-v7" in result.stderr


def test_impossible_task_exit_2(app: typer.Typer) -> None:
    result = invoke(app, str(FIXTURES / "valid" / "cnn_gru.py"), "--dataset", "shapes:20", "--max-len", "2")
    assert result.exit_code == 2 and "--max-len 2: must be between" in result.stderr


def test_dataset_is_required(app: typer.Typer) -> None:
    result = invoke(app, str(FIXTURES / "valid" / "cnn_gru.py"))
    assert result.exit_code == 2 and "--dataset" in result.output


@pytest.mark.slow
def test_valid_model_exit_0_through_the_sandbox(app: typer.Typer) -> None:
    _needs_sandbox()
    result = invoke(app, str(FIXTURES / "valid" / "cnn_lstm.py"), "--dataset", "shapes:20", "--image-size", "32",
                    "--max-len", "12", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["violations"] == [] and doc["params"] > 0 and doc["latency_ms"] > 0


def test_a_probe_budget_below_zero_is_refused_before_anything_runs(app: typer.Typer) -> None:
    result = invoke(app, str(FIXTURES / "valid" / "cnn_gru.py"), "--dataset", "shapes:20", "--max-probe-s", "0")
    assert result.exit_code == 2 and "--max-probe-s 0: must be greater than 0" in result.stderr


@pytest.mark.slow
def test_the_probe_budget_flag_reaches_the_sandboxed_probe(app: typer.Typer) -> None:
    """`--max-probe-s` (LEMUR-sized models need minutes) is the budget the probe is held to: 10 ms is exceeded."""
    _needs_sandbox()
    result = invoke(app, str(FIXTURES / "valid" / "cnn_lstm.py"), "--dataset", "shapes:20", "--image-size", "32",
                    "--max-len", "12", "--max-latency-ms", "100000", "--max-probe-s", "0.01", "--json")
    assert result.exit_code == 1, result.output
    codes = {v["code"]: v for v in json.loads(result.stdout)["violations"]}
    assert set(codes) == {"BUD-003"} and "over the 0.01 s budget" in codes["BUD-003"]["message"]
