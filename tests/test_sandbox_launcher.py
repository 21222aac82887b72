"""run_sandboxed end to end with real child processes: events and tails, result files, exit reasons, the
probe entry, tier selection, bad jobs, and what a run leaves behind on the host (nothing)."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from capnas.contracts import caption_net_v1
from capnas.sandbox import Job, Limits, SandboxError, SandboxUnavailable, detect_tier, run_sandboxed
from capnas.sandbox.launcher import _classify
from capnas.sandbox.tiers import ALLOW_UNSANDBOXED_ENV, TIER_ENV, host_support

pytestmark = pytest.mark.timeout(120)
FIXTURES = Path(__file__).parent / "fixtures" / "models"
QUICK = Limits(wall_s=30, memory_mb=1024, pids=64, file_size_mb=64, tmp_mb=32, scratch_mb=256)


def script(tmp_path: Path, source: str, name: str = "job.py") -> Path:
    path = tmp_path / name
    path.write_text(source)
    return path


def run_script(tmp_path: Path, source: str, on_event=None, **job: Any):
    return run_sandboxed(Job(entry="script", scratch=tmp_path / "scratch", script=script(tmp_path, source),
                             limits=job.pop("limits", QUICK), **job), on_event=on_event)


def test_events_go_to_the_callback_and_other_output_to_the_tails(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    result = run_script(tmp_path, (
        "import json, sys\n"
        "print('plain line')\n"
        "print(json.dumps({'event': 'step', 'step': 1, 'loss': 2.5}))\n"
        "print('{\"not\": \"an event\"}')\n"
        "print('to stderr', file=sys.stderr)\n"
    ), on_event=events.append)
    assert result.exit_reason == "ok" and result.returncode == 0
    assert events == [{"event": "step", "step": 1, "loss": 2.5}]  # the harness's own events are not passed on
    assert result.stdout_tail.splitlines() == ["plain line", '{"not": "an event"}']
    assert result.stderr_tail.strip() == "to stderr"
    assert result.result == {"exit_status": 0}
    assert result.tier == detect_tier().tier and "seccomp" in result.layers and "landlock-fs" in result.layers
    assert result.duration_s > 0 and result.peak_rss_mb and result.peak_rss_mb > 1


def test_harness_emit_helper_reaches_on_event(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    result = run_script(tmp_path, (
        "from capnas.sandbox.harness import emit\n"
        "emit('epoch', epoch=1, loss=float('nan'), images_per_s=120.5)\n"
    ), on_event=events.append)
    assert result.exit_reason == "ok", result.stderr_tail
    assert events == [{"event": "epoch", "epoch": 1, "loss": "nan", "images_per_s": 120.5}]


@pytest.mark.parametrize(("source", "reason"), [
    ("raise SystemExit(3)", "exit_3"),
    ("raise ValueError('bad candidate')", "exit_1"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", "signal_15"),
    ("import sys; sys.exit(137)", "exit_137"),  # a real status 137 is not mistaken for SIGKILL
])
def test_exit_reasons(tmp_path: Path, source: str, reason: str) -> None:
    result = run_script(tmp_path, source)
    assert result.exit_reason == reason, (result.exit_reason, result.stderr_tail)
    if reason == "exit_1":
        assert "ValueError: bad candidate" in result.stderr_tail


def test_classify_maps_signals_and_bwrap_statuses() -> None:
    killed, xcpu = 9, 24
    assert _classify(killed, None, None, 0, 0.0, None) == "signal_9"
    assert _classify(killed, None, None, 1, 0.0, None) == "oom_killed"
    assert _classify(xcpu, None, None, 0, 0.0, None) == "cpu_limit"
    assert _classify(killed, None, None, 0, 5.0, 5.0) == "cpu_limit"  # RLIMIT_CPU's hard limit is SIGKILL
    assert _classify(25, None, None, 0, 0.0, None) == "file_size_limit"
    assert _classify(153 << 8, None, None, 0, 0.0, None) == "file_size_limit"  # bwrap: 128 + SIGXFSZ
    assert _classify(153 << 8, None, 153, 0, 0.0, None) == "exit_153"  # ... unless the harness said so
    assert _classify(0, "wall_timeout", None, 0, 0.0, None) == "wall_timeout"


def test_script_result_is_its_exit_status(tmp_path: Path) -> None:
    result = run_script(tmp_path, "import json; json.dump({'bleu': 0.25}, open('result.json', 'w')); raise SystemExit(4)")
    assert result.result == {"exit_status": 4}  # the harness writes the entry's result, atomically, last


def test_a_result_link_to_a_host_file_is_not_followed(tmp_path: Path) -> None:
    """A job that replaces result.json by a link to a host secret gets nothing back."""
    secret = tmp_path / "secret.json"
    secret.write_text('{"secret": "canary"}')
    result = run_script(tmp_path, (
        "import atexit, os\n"
        f"atexit.register(lambda: (os.remove('result.json') if os.path.exists('result.json') else None,"
        f" os.symlink({str(secret)!r}, 'result.json')))\n"
        "import sys; sys.exit(0)\n"
    ))
    assert (tmp_path / "scratch" / "result.json").is_symlink()
    assert result.result is None


def test_probe_entry_runs_the_contract_probe_on_the_candidate(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    shutil.copy(FIXTURES / "valid" / "cnn_lstm.py", scratch / "candidate.py")
    contract = caption_net_v1(vocab_size=40, image_size=32, max_len=12, max_params=500_000, max_latency_ms=500.0)
    job = Job(entry="probe", scratch=scratch, args={"contract": contract.model_dump(mode="json"), "seed": 0},
              limits=Limits(wall_s=110, memory_mb=3072))
    result = run_sandboxed(job)
    assert result.exit_reason == "ok", result.stderr_tail
    assert result.result is not None and result.result["ok"] is True, result.result
    assert result.result["device"] == "cpu"


def test_probe_of_a_crashing_candidate_reports_a_violation(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "candidate.py").write_text("raise RuntimeError('import-time failure')\n")
    contract = caption_net_v1(vocab_size=40, image_size=32, max_len=12)
    job = Job(entry="probe", scratch=scratch, args={"contract": contract.model_dump(mode="json")},
              limits=Limits(wall_s=110, memory_mb=3072))
    result = run_sandboxed(job)
    assert result.exit_reason == "ok", result.stderr_tail
    assert result.result is not None and result.result["ok"] is False and result.result["violations"]


def test_probe_without_candidate_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="candidate.py"):
        run_sandboxed(Job(entry="probe", scratch=tmp_path / "empty"))


@pytest.mark.parametrize(("job", "message"), [
    (dict(entry="script", script=Path("/nonexistent/job.py")), "/nonexistent/job.py"),
    (dict(entry="script", script=None), "job.script"),
    (dict(entry="script", device="tpu"), "'tpu'"),
    (dict(entry="script", data_dir=Path("/nonexistent/data")), "/nonexistent/data"),
])
def test_bad_jobs_name_the_offending_field(tmp_path: Path, job: dict[str, Any], message: str) -> None:
    job.setdefault("script", script(tmp_path, "pass"))
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        run_sandboxed(Job(scratch=tmp_path / "scratch", **job))


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path: Path) -> None:
    if host_support().gpu_devices:
        pytest.skip("this host has a GPU")
    with pytest.raises(ValueError, match="no /dev/nvidia"):
        run_script(tmp_path, "pass", device="cuda")


def test_unreadable_dataset_is_refused_with_the_fix(tmp_path: Path) -> None:
    if detect_tier().tier != "A" or os.geteuid() != 0:
        pytest.skip("only a per-run uid (tier A as root) needs a world-readable dataset")
    data = tmp_path / "prepared"
    data.mkdir(mode=0o700)
    data.chmod(0o700)
    with pytest.raises(ValueError, match=r"prepared.*chmod -R a\+rX"):
        run_script(tmp_path, "pass", data_dir=data)


def test_dataset_is_readable_inside(tmp_path: Path) -> None:
    data = tmp_path / "prepared"
    data.mkdir()
    (data / "meta.json").write_text('{"n": 3}')
    result = run_script(tmp_path, f"import json; print(json.load(open({str(data / 'meta.json')!r}))['n'])",
                        data_dir=data)
    assert result.exit_reason == "ok", result.stderr_tail
    assert result.stdout_tail.strip() == "3"


def test_scratch_is_handed_back_to_its_owner(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    owner = (scratch.stat().st_uid, scratch.stat().st_gid)
    result = run_script(tmp_path, "open('out.txt', 'w').write('x')")
    assert result.exit_reason == "ok", result.stderr_tail
    for path in (scratch, scratch / "out.txt", scratch / "job.json"):
        assert (path.stat().st_uid, path.stat().st_gid) == owner, path


def test_no_cgroup_is_left_behind(tmp_path: Path) -> None:
    support = host_support().cgroups
    if support is None:
        pytest.skip("no cgroups here")
    before = {p: set(os.listdir(p)) for p in support.parents.values()}
    run_script(tmp_path, "import os; os.fork() or os._exit(0)")
    for parent, names in before.items():
        assert {n for n in os.listdir(parent) if n.startswith("capnas-")} <= names


def test_on_event_errors_surface_after_cleanup(tmp_path: Path) -> None:
    def broken(event: dict[str, Any]) -> None:
        raise KeyError("consumer bug")

    with pytest.raises(KeyError, match="consumer bug"):
        run_script(tmp_path, "import json; print(json.dumps({'event': 'step'}))", on_event=broken)


def test_forced_tiers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TIER_ENV, "Z")
    with pytest.raises(SandboxUnavailable, match="'Z' is not a tier"):
        detect_tier()
    monkeypatch.setenv(TIER_ENV, "C")
    monkeypatch.delenv(ALLOW_UNSANDBOXED_ENV, raising=False)
    assert detect_tier().tier == "C"
    with pytest.raises(SandboxUnavailable, match=ALLOW_UNSANDBOXED_ENV):
        run_script(tmp_path, "pass")
    monkeypatch.setenv(ALLOW_UNSANDBOXED_ENV, "1")
    result = run_script(tmp_path, "print('unprotected')")
    assert result.tier == "C" and result.exit_reason == "ok"
    assert "seccomp" not in result.layers and "landlock-fs" not in result.layers


def test_sandbox_failure_is_a_sandbox_error_not_a_job_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A harness that cannot confine itself refuses to run the job; the launcher says the sandbox failed."""
    import capnas.sandbox.launcher as launcher

    real_plan = launcher._plan

    def plan_with_impossible_rlimit(*args: Any, **kwargs: Any):
        plan = real_plan(*args, **kwargs)
        plan.confinement.rlimits["RLIMIT_BOGUS"] = (1, 1)
        return plan

    monkeypatch.setattr(launcher, "_plan", plan_with_impossible_rlimit)
    with pytest.raises(SandboxError, match="RLIMIT_BOGUS"):
        run_script(tmp_path, "open('ran', 'w')")
    assert not (tmp_path / "scratch" / "ran").exists()


def test_job_json_is_what_the_harness_reads(tmp_path: Path) -> None:
    result = run_script(tmp_path, "import json; print(json.load(open('job.json'))['confinement']['seccomp'])")
    assert result.stdout_tail.strip() == "True"
    mode = (tmp_path / "scratch" / "job.json").stat().st_mode
    assert stat.S_ISREG(mode)
    assert json.loads((tmp_path / "scratch" / "job.json").read_text())["job"]["entry"] == "script"
