"""What a sandboxed job is and what comes back. Data only: the launcher (`capnas.sandbox.launcher`)
runs a `Job`, the harness (`capnas.sandbox.harness`) executes it inside the walls."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

Entry = Literal["probe", "train", "generate", "script"]

ExitReason = str  # ok | exit_N | wall_timeout | cpu_limit | oom_killed | rss_watchdog | file_size_limit | signal_N


class Limits(BaseModel):
    """Resource limits for one job. `None` means "no limit of this kind"."""

    wall_s: float = 600.0
    cpu_s: float | None = None
    memory_mb: int | None = 4096
    pids: int = 256
    file_size_mb: int = 1024
    tmp_mb: int = 256


class Job(BaseModel):
    """One run of the in-sandbox harness.

    `scratch` is the only writable directory: the candidate code (`candidate.py`), the job's inputs
    (`job.json`, written by the launcher) and every output (`result.json`, weights, ids) live there.
    `data_dir` is a prepared dataset, mounted read-only. `script` is used only by entry "script".
    """

    entry: Entry
    scratch: Path
    data_dir: Path | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    limits: Limits = Field(default_factory=Limits)
    device: str = "cpu"  # "cpu" or "cuda" / "cuda:N"
    script: Path | None = None


class SandboxResult(BaseModel):
    exit_reason: ExitReason
    returncode: int | None = None
    peak_rss_mb: float | None = None
    duration_s: float
    stdout_tail: str = ""
    stderr_tail: str = ""
    result: dict[str, Any] | None = None  # the harness's result.json, when it wrote one
    tier: str  # "A", "B" or "C"
    layers: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit_reason == "ok"
