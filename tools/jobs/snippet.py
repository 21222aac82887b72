"""Run a short script of the coder's in the sandbox: its `run_snippet` tool.

    result = run_snippet("print(images.shape)", contract, prepared.sandbox_dir)
    result.exit_reason, result.stdout_tail, result.sandbox_s

The script is untrusted like any candidate (no static checks: the walls are the boundary), so it runs as a job of
its own kind (`snippet`) through the same launcher as a probe: no network, a clean environment, limits, tree kill.
It sees a tiny batch of the prepared training data (mounted read-only: the sandbox view, which holds no val or
test references), the contract, and, when given, the draft module as `candidate.py`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, Field

from capnas.contracts import Contract
from capnas.sandbox import Job, Limits, SandboxError, SandboxResult, SandboxUnavailable, run_sandboxed
from capnas.sandbox.job import CANDIDATE_FILE
from capnas.sandbox.snippet import SNIPPET_FILE
from capnas.tools.jobs.validation import DEFAULT_STARTUP_S

TAIL_CHARS = 2000  # of stdout and of stderr: what the model reads back (tokens), the rest is noise
# What a job raises when the sandbox itself failed, not the code in it: the coder's tools answer these as results.
SANDBOX_FAILURES = (SandboxError, SandboxUnavailable)
MAX_EVENTS = 20
BATCH_SIZE = 4
PIDS = 64  # a snippet needs a few threads, not a process tree: a fork bomb stops here


class SnippetResult(BaseModel):
    """How a snippet ended, as the coder (and the journal) reads it."""

    exit_reason: str  # the sandbox's: ok, exit_N, wall_timeout, oom_killed, ...
    stdout_tail: str = ""
    stderr_tail: str = ""
    sandbox_s: float  # the job's wall seconds in the sandbox
    # Lines the script printed that look like harness events (JSON objects with an "event" key): the launcher
    # hands those over apart from the stdout tail, so here they are, the last few.
    events: list[dict[str, Any]] = Field(default_factory=list)
    tier: str | None = None


def run_snippet(code: str, contract: Contract, data_dir: Path | None, device: str = "cpu", *,
                module: str | None = None, batch_size: int = BATCH_SIZE, threads: int | None = None,
                runner: Callable[..., SandboxResult] | None = None,
                scratch_root: str | Path | None = None) -> SnippetResult:
    """Run `code` as `__main__` in a fresh sandbox, with the probe's time and memory budgets. Raises the sandbox's
    SandboxUnavailable/SandboxError when it cannot run the job at all."""
    scratch = Path(tempfile.mkdtemp(prefix="capnas-snippet-", dir=scratch_root))
    try:
        (scratch / SNIPPET_FILE).write_text(code, encoding="utf-8")
        if module:
            (scratch / CANDIDATE_FILE).write_text(module, encoding="utf-8")
        job = Job(entry="snippet", scratch=scratch, data_dir=data_dir, device=device,
                  args={"contract": contract.model_dump(mode="json"), "batch_size": batch_size,
                        **({"threads": threads} if threads else {})},
                  limits=Limits(wall_s=contract.budgets.max_probe_s + DEFAULT_STARTUP_S,
                                memory_mb=contract.budgets.max_memory_mb, pids=PIDS, file_size_mb=64,
                                scratch_mb=256))
        events: list[dict[str, Any]] = []
        result = (runner or run_sandboxed)(job, events.append)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return SnippetResult(exit_reason=result.exit_reason, stdout_tail=result.stdout_tail[-TAIL_CHARS:],
                         stderr_tail=result.stderr_tail[-TAIL_CHARS:], sandbox_s=result.duration_s, tier=result.tier,
                         events=events[-MAX_EVENTS:])
