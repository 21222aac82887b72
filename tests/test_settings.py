"""One declaration per setting, checked at the edge: `capnas run`, `capnas chat` and `capnas resume` refuse a bad
value with one line and exit 2 before any run, server or LLM starts; the graph's own defaults are the run's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from capnas.graph.context import Context
from capnas.settings import CONTEXT_KEYS, RunSettings, SettingsError
from capnas.tools.task import Budgets, Task


# -- one declaration -------------------------------------------------------------------------------------
def test_task_defaults_are_capnas_runs_defaults_field_by_field() -> None:
    """`Task()` is what a LangGraph Server or `build_graph` user gets; `RunSettings().task()` is `capnas run`."""
    graph_default, run_default = Task().model_dump(), RunSettings().task().model_dump()
    for key in Task.model_fields:
        assert graph_default[key] == run_default[key], f"Task().{key} differs from capnas run's default"
    assert graph_default["budgets"] == Budgets().model_dump()


def test_context_defaults_are_capnas_runs_defaults() -> None:
    graph_default, run_default = Context(), RunSettings().context(None)
    for key in CONTEXT_KEYS:
        assert getattr(graph_default, key) == getattr(run_default, key), f"Context().{key} differs from capnas run's"


def test_run_settings_copy_each_declaration_with_its_bounds() -> None:
    """The flat settings carry the very Field of the record they come from: bounds are declared once."""
    for key in ("max_len", "max_params", "image_size", "min_count"):
        assert RunSettings.model_fields[key].metadata == Task.model_fields[key].metadata
    for key in ("epochs", "max_candidates", "time_budget", "train_time_s"):
        assert RunSettings.model_fields[key].metadata == Budgets.model_fields[key].metadata
    assert RunSettings.model_fields["concurrency"].metadata == Context.model_fields["concurrency"].metadata


def test_sizes_that_follow_the_data_are_filled_once() -> None:
    assert (Task(dataset="shapes:200").image_size, Task(dataset="shapes:200").min_count) == (32, 1)
    photos = Task(dataset="/data/dataset_flickr8k.json")
    assert (photos.image_size, photos.min_count) == (224, 5)
    assert Task(dataset="x.json", min_count=2, image_size=64).model_dump()["min_count"] == 2


def test_families_are_checked_and_read_from_a_comma_list() -> None:
    assert RunSettings(families="small_cnn, gru").families == ["small_cnn", "gru"]
    with pytest.raises(SettingsError, match=r"--families .*unknown family lstmx; encoders: .*decoders: lstm"):
        RunSettings.load(None, {"families": "small_cnn,lstmx"})


def test_a_journal_of_an_older_run_still_reads() -> None:
    """Older journals wrote the run's minutes as time_budget_min and the run dir as workspace."""
    assert Budgets(time_budget_min=7.5).time_budget == 7.5
    assert Context.from_record({"workspace": "/w", "generation": "random"}, None).run_dir == "/w"


def test_a_guided_plan_stays_inside_the_families_a_person_allowed() -> None:
    from capnas.agents.planner import RoundPlan, sanitize

    task = Task(families=["small_cnn", "gru"])
    plan = sanitize(RoundPlan(encoders=["vit", "small_cnn"], decoders=["transformer"], rationale="x"), task)
    assert (plan.encoders, plan.decoders) == (["small_cnn"], ["gru"])


# -- checked at the edge ---------------------------------------------------------------------------------
def _embedded_servers() -> set[int]:
    """Pids of embedded LLM servers on this machine (what `capnas run` would start first)."""
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"capnas.embedded" in (proc / "cmdline").read_bytes():
                pids.add(int(proc.name))
        except OSError:
            continue
    return pids


def _refused(tmp_path: Path, *args: str) -> str:
    """Run `capnas ARGS` in an empty folder: exit 2, one line on stderr, nothing written, no server started (the
    refusal comes before anything slow; no wall-time assert, which a loaded machine would break)."""
    before, listing = _embedded_servers(), sorted(p.name for p in tmp_path.iterdir())
    done = subprocess.run([sys.executable, "-m", "capnas", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, env={**os.environ, "CAPNAS_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {done.stderr}"
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == listing, "a refused command wrote something"
    assert _embedded_servers() <= before, "a refused command started an LLM server"
    return lines[0]


@pytest.mark.parametrize("command", ["run", "chat"])
@pytest.mark.parametrize(("args", "named"), [
    (["--max-params", "10"], "--max-params 10: must be between 1000 and 10000000000"),
    (["--max-len", "200"], "--max-len 200: must be between 4 and 64"),
    (["--epochs", "0"], "--epochs 0: must be between 1 and 500"),
    (["--dataset", "missing/dataset_x.json"], "--dataset 'missing/dataset_x.json': unknown dataset"),
    (["--families", "small_cnn,lstmx"], "unknown family lstmx"),
    (["--device", "gpu7"], "--device 'gpu7': unknown device"),
    (["--epochs", "many"], "'--epochs'"),
    (["--no-such-flag"], "--no-such-flag"),
])
def test_a_bad_flag_is_one_line_and_exit_2(tmp_path: Path, command: str, args: list[str], named: str) -> None:
    assert named in _refused(tmp_path, command, *args)


def test_a_missing_image_folder_is_named(tmp_path: Path, make_karpathy) -> None:
    data = make_karpathy()
    line = _refused(data.parent.parent, "run", "--dataset", str(data), "--images", str(data.parent / "nope"))
    assert "--images" in line and "no such folder" in line


def test_an_image_folder_without_the_files_is_named(tmp_path: Path, make_karpathy) -> None:
    data = make_karpathy()
    (data.parent / "images" / "img03.png").unlink()
    line = _refused(data.parent.parent, "run", "--dataset", str(data))
    assert "--dataset" in line and "img03.png" in line


@pytest.mark.parametrize(("text", "named"), [
    ("epochs: [1, 2\n", "is not valid YAML"),
    ("- just\n- a list\n", "must hold a mapping"),
    ("epochs: 2\nepoch_count: 3\n", "unknown key 'epoch_count'"),
    ("max_len: 200\n", "max_len: 200: must be between 4 and 64"),
    ("families: [resnet, vit_huge]\n", "families: ['resnet', 'vit_huge']: unknown family vit_huge"),
])
def test_a_bad_config_file_is_one_line_naming_the_key(tmp_path: Path, text: str, named: str) -> None:
    (tmp_path / "run.yaml").write_text(text)
    line = _refused(tmp_path, "run", "--config", "run.yaml")
    assert named in line and "run.yaml" in line


@pytest.mark.parametrize("generation", ["random", "spec"])
def test_a_key_pasted_into_a_role_is_refused_in_every_mode_and_never_echoed(tmp_path: Path, generation: str) -> None:
    (tmp_path / "run.yaml").write_text(f"generation: {generation}\nllm_roles:\n  coder:\n    api_key: sk-pasted-1234\n")
    line = _refused(tmp_path, "run", "--config", "run.yaml")
    assert "roles.coder: api_key: settings never hold a key" in line and "api_key_env" in line
    assert "sk-pasted" not in line


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    assert "--config nope.yaml: no such file" in _refused(tmp_path, "run", "--config", "nope.yaml")


def test_resume_of_an_unknown_run_or_workspace_is_refused(tmp_path: Path) -> None:
    line = _refused(tmp_path, "resume", "r-none", "--run-dir", "ws")
    assert "ws" in line and "r-none" not in os.listdir(tmp_path)


def test_an_unexpected_error_is_one_line_with_the_logs_path(tmp_path: Path) -> None:
    """The last line of defence: a failure nobody foresaw prints where its traceback went, not the traceback."""
    code = ("import sys; import capnas.cli as cli\n"
            "@cli.app.command('boom')\n"
            "def boom():\n    raise RuntimeError('planted')\n"
            "cli.main(['boom'])\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "RuntimeError: planted" in lines[0] and "Traceback" not in done.stderr
    log = tmp_path / "capnas-error.log"
    assert str(log) in lines[0] and "Traceback" in log.read_text()


# -- the settings reach the run --------------------------------------------------------------------------
@pytest.mark.slow
def test_random_generation_searches_only_the_families_given(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "capnas", "run", "--generation", "random", "--families", "small_cnn,gru",
         "--dataset", "shapes:200", "--max-candidates", "3", "--min-candidates", "0", "--epochs", "1",
         "--train-time-s", "15", "--threads", "1", "--concurrency", "1", "--max-latency-ms", "10000",
         "--max-params", "50000000", "--run-dir", str(tmp_path / "ws"), "--no-report", "--json"],
        capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    from capnas.graph.journal import Journal

    cands = Journal(tmp_path / "ws" / "journal.sqlite").candidates(json.loads(done.stdout)["run_id"])
    assert len(cands) == 3 and sum(c.status == "trained" for c in cands) >= 2
    assert {(c.spec["encoder"]["name"], c.spec["decoder"]["name"]) for c in cands} == {("small_cnn", "gru")}


@pytest.mark.slow
def test_a_budget_extended_in_chat_lengthens_the_next_candidates_training(tmp_path: Path) -> None:
    """The run's minutes are nearly spent after candidate 1; a person's /budget (the journal request it writes,
    see test_chat_units) gives more, and the trainer reads it: candidate 2 trains its full train_time_s."""
    from capnas import runner
    from capnas.graph.journal import Journal

    settings = RunSettings.load(None, dict(
        dataset="shapes:200", generation="random", max_candidates=2, min_candidates=0, epochs=50, train_time_s=20,
        time_budget=0.2, threads=1, concurrency=1, max_latency_ms=10_000, max_params=50_000_000,
        families="small_cnn,gru", run_dir=str(tmp_path / "ws")))
    journal = Journal(tmp_path / "ws" / "journal.sqlite")

    def on_event(e: dict) -> None:
        if e.get("event") == "candidate" and e.get("status") == "trained":
            journal.request("r-budget", "budget", max_candidates=2, time_budget=10.0)  # what `/budget 2 10` writes

    summary = runner.start(settings.context(None), settings.task().model_dump(), run_id="r-budget", on_event=on_event)
    calls = [e["payload"] for e in journal.events("r-budget", "train_call")]
    assert summary["trained"] == 2 and len(calls) == 2
    assert calls[0]["train_time_s"] == 10.0, "the first candidate had the 10 s floor of a nearly spent run"
    assert calls[1]["train_time_s"] == 20.0 and calls[1]["remaining_s"] > 500


@pytest.mark.slow
def test_bench_concurrency_extracts_frozen_tokens_before_any_timed_row(tmp_path: Path, make_karpathy) -> None:
    """It prepares the cache its runs read (same settings object), so no row pays for an extraction."""
    data = make_karpathy(splits=("train",) * 12 + ("val",) * 4 + ("test",) * 2)
    keep = tmp_path / "rows"
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parents[1] / "benchmarks" / "bench_concurrency.py"),
         "--dataset", str(data), "--image-size", "64", "--families", "efficientnet_lite0", "gru",
         "--frozen-encoders", "--max-params", "50000000", "--candidates", "1", "--epochs", "1",
         "--concurrency", "1", "--keep", str(keep)],
        capture_output=True, text=True, timeout=900, env={**os.environ, "CAPNAS_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "frozen-encoder tokens extracted before the rows" in done.stdout
    from capnas.graph.journal import Journal

    journal = Journal(keep / "c1" / "journal.sqlite")
    calls = journal.events("c1", "train_call")
    assert calls and all(e["payload"]["features"] for e in calls), "the row trained on stored tokens"
    assert journal.events("c1", "features_extracted") == [], "the timed row extracted tokens"
