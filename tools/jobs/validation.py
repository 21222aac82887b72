"""Validate a candidate against its contract: static checks first, then the dynamic probe in the sandbox.

    report = validate_file("candidate.py", caption_net_v1(vocab_size=300))
    report.ok, report.violations, report.params, report.latency_ms

Code that fails a syntax, import, security or signature clause is never executed. Everything else runs
only inside `capnas.sandbox.run_sandboxed`; how the sandbox ended (timeout, memory, crash) becomes a
violation like any other, with the line of the step that was running where it is known.
"""

from __future__ import annotations

import ast
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, Field

from capnas.contracts import Contract, Violation, check_source, must_stop
from capnas.contracts.static_checks import definition_lines
from capnas.sandbox import Job, Limits, SandboxResult, run_sandboxed
from capnas.sandbox.job import CANDIDATE_FILE

# Interpreter start and `import torch` in a fresh sandboxed process, on top of the contract's probe budget.
DEFAULT_STARTUP_S = 30.0
STDERR_LINES = 12


class ValidationReport(BaseModel):
    ok: bool
    violations: list[Violation]
    params: int | None = None  # None when the probe did not get as far as building the model
    latency_ms: float | None = None  # per image, batch of 1, on the probe's device
    frozen_params: int | None = None  # parameters learn left unchanged (frozen on purpose or not)
    stage: str = Field(description="'static' when the code was not run, else 'probe'")
    timings: dict[str, float] = Field(default_factory=dict)
    sandbox: dict[str, Any] | None = None  # exit reason, tier, duration, peak memory of the probe run

    def cli_json(self) -> dict[str, Any]:
        """The `capnas validate --json` document."""
        return {"ok": self.ok, "violations": [v.model_dump() for v in self.violations],
                "params": self.params, "latency_ms": self.latency_ms}


def validate_file(path: str | Path, contract: Contract, device: str = "cpu", *, seed: int = 0,
                  prm: dict[str, Any] | None = None, startup_s: float = DEFAULT_STARTUP_S,
                  scratch_root: str | Path | None = None,
                  on_event: Callable[[dict[str, Any]], None] | None = None) -> ValidationReport:
    """Validate the candidate file at `path`. Raises OSError/UnicodeDecodeError when it cannot be read, and
    the sandbox's SandboxUnavailable/SandboxError when the probe cannot be run at all."""
    return validate_code(Path(path).read_text(encoding="utf-8"), contract, device, seed=seed, prm=prm,
                         startup_s=startup_s, scratch_root=scratch_root, on_event=on_event)


def validate_code(code: str, contract: Contract, device: str = "cpu", *, seed: int = 0,
                  prm: dict[str, Any] | None = None, startup_s: float = DEFAULT_STARTUP_S,
                  scratch_root: str | Path | None = None,
                  on_event: Callable[[dict[str, Any]], None] | None = None,
                  runner: Callable[..., SandboxResult] | None = None,
                  threads: int | None = None) -> ValidationReport:
    """Validate candidate source code (what the coder agent hands over). `runner` runs the sandboxed probe
    (default: a child process here; see `capnas.tools.jobs.executors`); `threads` sets torch's CPU threads in it."""
    static = check_source(code, contract)
    if must_stop(static):
        return ValidationReport(ok=False, violations=static, stage="static")

    scratch = Path(tempfile.mkdtemp(prefix="capnas-validate-", dir=scratch_root))
    steps: list[dict[str, Any]] = []

    def record(event: dict[str, Any]) -> None:
        if event.get("event") == "probe_step":
            steps.append(event)
        if on_event is not None:
            on_event(event)

    try:
        (scratch / CANDIDATE_FILE).write_text(code, encoding="utf-8")
        job = Job(
            entry="probe",
            scratch=scratch,
            device=device,
            args={"contract": contract.model_dump(mode="json"), "seed": seed, "prm": prm, "report_steps": True,
                  **({"threads": threads} if threads else {})},
            limits=Limits(wall_s=contract.budgets.max_probe_s + startup_s, memory_mb=contract.budgets.max_memory_mb),
        )
        result = (runner or run_sandboxed)(job, on_event=record)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    lines = definition_lines(ast.parse(code))
    last_step = steps[-1] if steps else None
    probe = result.result if result.ok and isinstance(result.result, dict) else {}
    dynamic = violations_from_sandbox(result, contract, lines, last_step)
    # The probe re-checks HYP-002 only when the static checks could not; drop any repeat of a static code.
    static_codes = {v.code for v in static}
    violations = static + [v for v in dynamic if v.code not in static_codes]
    return ValidationReport(
        ok=not violations,
        violations=violations,
        params=probe.get("params"),
        latency_ms=probe.get("latency_ms"),
        frozen_params=probe.get("frozen_params"),
        stage="probe",
        timings=probe.get("timings") or {},
        sandbox={"exit_reason": result.exit_reason, "tier": result.tier, "duration_s": result.duration_s,
                 "peak_rss_mb": result.peak_rss_mb, "peak_memory_mb": result.peak_memory_mb},
    )


def violations_from_sandbox(result: SandboxResult, contract: Contract, lines: dict[str, int] | None = None,
                            last_step: dict[str, Any] | None = None) -> list[Violation]:
    """The probe's own violations when it finished; otherwise one violation saying how the sandbox ended."""
    lines = lines or {}
    where = f" during {last_step['step']}" if last_step else ""
    line = lines.get(str(last_step.get("method"))) if last_step else None
    reason = result.exit_reason
    if reason == "ok":
        if not isinstance(result.result, dict) or not isinstance(result.result.get("violations"), list):
            return [contract.violation("RUN-004", f"the probe ended without a result{_stderr(result)}", line)]
        try:
            return [Violation.model_validate(v) for v in result.result["violations"]]
        except ValueError as e:
            return [contract.violation("RUN-004", f"the probe's result is malformed: {e}", line)]
    if reason in ("wall_timeout", "cpu_limit"):
        budget = contract.budgets.max_probe_s
        return [contract.violation("BUD-003", f"the probe was stopped after {result.duration_s:.1f} s{where} "
                                              f"({reason}; budget {budget:g} s plus start-up)", line)]
    if reason in ("oom_killed", "rss_watchdog"):
        peak = result.peak_memory_mb or result.peak_rss_mb
        seen = f", peak {peak:.0f} MB" if peak else ""
        return [contract.violation("BUD-004", f"the probe was killed for memory{where} ({reason}{seen}; "
                                              f"budget {contract.budgets.max_memory_mb} MB)", line)]
    return [contract.violation("RUN-004", f"the probe process ended with {reason}{where}{_stderr(result)}", line)]


def _stderr(result: SandboxResult) -> str:
    tail = [ln for ln in result.stderr_tail.strip().splitlines() if ln.strip()][-STDERR_LINES:]
    return (": " + " | ".join(tail))[:1500] if tail else ""
