"""The coder's tool turn, wired into the run: its tools run sandboxed jobs in the run's slots and executor, each
call and its result is a `coder_tool` event in the journal (with its sandbox seconds), and a spent run budget
(time, a person's stop) ends the turn. Tokens are the ledger's: every LLM turn of the loop is counted, and refused
once the token budget is spent (`BudgetExceeded`, as for any call).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from capnas.agents.coder_tools import Executors
from capnas.graph.journal import CODER_TOOL
from capnas.graph.services import RunServices
from capnas.tools.jobs.snippet import SANDBOX_FAILURES, run_snippet
from capnas.tools.jobs.validation import ValidationReport

# The candidate ends with this violation when the coder stops calling tools without submitting.
NO_SUBMIT = {"code": "LLM-002", "clause": "The coder submits within its tool-call budget", "line": None,
             "hint": "raise coder_tool_calls, or ask the model to submit once check_contract passes"}


def check_result(report: ValidationReport) -> dict[str, Any]:
    """What `check_contract` tells the model: the verdict, each violation (code, line, message, hint) and the
    probe's measurements, with the probe's sandbox seconds."""
    sandbox = report.sandbox or {}
    return {"ok": report.ok, "stage": report.stage,
            "violations": [{"code": v.code, "line": v.line, "message": v.message, "hint": v.hint}
                           for v in report.violations],
            "params": report.params, "latency_ms": report.latency_ms, "frozen_params": report.frozen_params,
            "sandbox_s": sandbox.get("duration_s", 0.0)}


def executors(svc: RunServices, cid: str, probe: Callable[[str], ValidationReport],
              stop: Callable[[], str | None], emit: Callable[..., None]) -> Executors:
    """The tools' executors for candidate `cid`: `probe(code)` is the validator node's own (static checks, then the
    sandboxed probe in a slot), so the coder's check and the validator's verdict cannot disagree."""

    def check(code: str) -> dict[str, Any]:
        try:
            return check_result(probe(code))
        except (*SANDBOX_FAILURES, ValueError) as err:  # the sandbox failed, not the draft
            return {"ok": False, "error": f"the sandbox could not run the probe: {str(err)[-500:]}", "sandbox_s": 0.0}

    def snippet(code: str, module: str | None) -> dict[str, Any]:
        try:
            with svc.slots.job(svc.ctx.device, threads=svc.threads) as device:
                result = run_snippet(code, svc.contract, svc.prepared.sandbox_dir, device, module=module,
                                     threads=svc.threads, runner=svc.runner,
                                     scratch_root=svc.scratch_dir if svc.ctx.executor == "ray" else None)
        except (*SANDBOX_FAILURES, ValueError) as err:  # e.g. a job the walls stopped at start-up
            return {"exit_reason": "sandbox_error", "error": str(err)[-1000:], "sandbox_s": 0.0}
        return result.model_dump()

    def on_call(record: dict[str, Any]) -> None:
        svc.journal.log_event(svc.run_id, CODER_TOOL, record, cid)
        emit(tool=record["tool"], call=record["call"], sandbox_s=record["sandbox_s"])

    return Executors(check=check, snippet=snippet, on_call=on_call, stop=stop)


def no_submit_violation(reason: str) -> dict[str, Any]:
    """The contract report of a candidate whose coder never submitted."""
    return {"ok": False, "stage": "coder", "violations": [{**NO_SUBMIT, "message": reason}]}
