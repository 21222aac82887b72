"""What a sandboxed job is and what comes back. Data only: the launcher (`capnas.sandbox.launcher`)
runs a `Job`, the harness (`capnas.sandbox.harness`) executes it inside the walls."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

Entry = Literal["probe", "train", "generate", "features", "script", "snippet"]

# Files in the scratch dir that the launcher and the harness agree on.
JOB_FILE = "job.json"  # HarnessInput, written by the launcher
CANDIDATE_FILE = "candidate.py"  # the model code under test (entries probe, train, generate, features)
RESULT_FILE = "result.json"  # the entry's return value, written atomically by the harness
EXIT_CONFINEMENT_FAILED = 121  # harness exit status when it could not put up the walls it was asked for

ExitReason = str  # ok | exit_N | wall_timeout | cpu_limit | oom_killed | rss_watchdog | file_size_limit | signal_N


class Limits(BaseModel):
    """Resource limits for one job. `None` means "no limit of this kind"."""

    wall_s: float = 600.0
    cpu_s: float | None = None
    memory_mb: int | None = 4096
    pids: int = 256
    file_size_mb: int = 1024
    tmp_mb: int = 256
    # Total bytes the job may leave in scratch (many files each under file_size_mb can still fill a disk);
    # checked by the launcher's watchdog about once a second.
    scratch_mb: int | None = 8192


class Job(BaseModel):
    """One run of the in-sandbox harness.

    `scratch` is the only writable directory: the candidate code (`candidate.py`), the job's inputs
    (`job.json`, written by the launcher) and every output (`result.json`, weights, ids) live there.
    `data_dir` is a prepared dataset, mounted read-only. `script` is used only by entry "script".
    """

    entry: Entry
    scratch: Path
    data_dir: Path | None = None
    # Files from outside scratch the job reads (a parent's weights), each mounted read-only at its own path.
    inputs: list[Path] = Field(default_factory=list)
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
    peak_memory_mb: float | None = None  # the cgroup's peak (page cache and tmpfs included), when one was used
    cpu_s: float | None = None  # user + system CPU seconds of the whole process tree that was waited for

    @property
    def ok(self) -> bool:
        return self.exit_reason == "ok"


class Confinement(BaseModel):
    """What the harness applies to itself before it touches any untrusted code (written by the launcher)."""

    run_as_uid: int | None = None  # drop to this uid/gid (per-run uid when the launcher runs as root)
    run_as_gid: int | None = None
    drop_caps: bool = False  # stay uid 0 but give up every capability (root without a traversable uid)
    landlock: bool = False
    read_paths: list[str] = Field(default_factory=list)  # as seen inside the sandbox
    write_paths: list[str] = Field(default_factory=list)
    seccomp: bool = False
    rlimits: dict[str, tuple[int, int]] = Field(default_factory=dict)  # "RLIMIT_CPU" -> (soft, hard)


class HarnessInput(BaseModel):
    """The content of `<scratch>/job.json`: the job and the walls the harness puts up around it."""

    job: Job
    confinement: Confinement = Field(default_factory=Confinement)
