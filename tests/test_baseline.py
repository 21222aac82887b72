"""Guided against random at equal budget: `capnas run --baseline random` runs a sibling random search under the
guided run's budget, scores each arm's val-chosen best on test once after both ended, and the report compares
them. The test split is read by nothing before a run's search has ended."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from llm_server import ScriptedLLMServer, tool_call

from capnas.graph.journal import Journal

pytestmark = pytest.mark.slow

BASE = {"dataset": "shapes:200", "epochs": 2, "train_time_s": 20, "time_budget": 60, "threads": 1,
        "max_latency_ms": 10_000, "concurrency": 1, "max_params": 50_000_000}
SPEC_A = {"encoder": {"name": "small_cnn"}, "decoder": {"name": "lstm", "embed_dim": 128, "hidden_size": 128,
                                                        "num_layers": 1, "attention": False},
          "lr": 0.003, "batch_size": 32, "epochs": 2}
SPEC_B = {**SPEC_A, "decoder": {**SPEC_A["decoder"], "attention": True}}


def test_a_baseline_run_has_two_arms_with_one_budget_and_one_test_score_each(tmp_path: Path, browser) -> None:
    critique = {"feedback": "try attention", "decision": "refine", "parent_id": None}
    script = [tool_call("ArchSpec", SPEC_A, role="coder"), tool_call("Critique", critique, role="critic"),
              tool_call("RoundPlan", {"encoders": ["small_cnn"], "decoders": ["lstm"]}, role="planner"),
              tool_call("ArchSpec", SPEC_B, role="coder"), tool_call("Critique", critique, role="critic")]
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({**BASE, "run_dir": str(tmp_path / "ws"), "max_candidates": 2, "seed": 4}))
    with ScriptedLLMServer(script) as server:
        done = subprocess.run(
            [sys.executable, "-m", "capnas", "run", "--config", str(config), "--generation", "spec",
             "--llm-base-url", server.base_url, "--llm-model", "scripted", "--baseline", "random", "--run-id", "g",
             "--json"], capture_output=True, text=True, timeout=1200, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["baseline"]["run_id"] == "g-random" and summary["baseline"]["generation"] == "random"

    journal = Journal(tmp_path / "ws" / "journal.sqlite")
    guided, base = journal.get_run("g"), journal.get_run("g-random")
    # one budget, read back from the journal: the same task but for the candidate count, which is the guided arm's
    assert {c.mode for c in journal.candidates("g")} == {"spec"}
    assert {c.mode for c in journal.candidates("g-random")} == {"random"}
    same = {k: v for k, v in guided["task"].items() if k != "budgets"}
    assert {k: v for k, v in base["task"].items() if k != "budgets"} == same
    for key in ("epochs", "train_time_s", "time_budget"):
        assert base["task"]["budgets"][key] == guided["task"]["budgets"][key]
    assert base["task"]["budgets"]["max_candidates"] == len(journal.candidates("g")) == 2
    assert base["config"]["seed"] == guided["config"]["seed"] == 4

    # test scored exactly once per arm, after both arms' last candidate
    last_training = max(c.updated_at for run in ("g", "g-random") for c in journal.candidates(run))
    for run in ("g", "g-random"):
        scored = journal.events(run, "test_scored")
        assert len(scored) == 1, f"{run}: test scored {len(scored)} times"
        assert scored[0]["created_at"] > last_training
        best = journal.leaderboard(run)[0]
        assert scored[0]["payload"]["candidate_id"] == best.candidate_id  # the val-chosen best
    assert summary["best"]["test_metrics"]["cider"] == journal.events("g", "test_scored")[0]["payload"]["metrics"]["cider"]

    # the comparison, on the command line and in the report as a person sees it
    compared = subprocess.run([sys.executable, "-m", "capnas", "compare", "g", "--run-dir", str(tmp_path / "ws"),
                               "--json"], capture_output=True, text=True, timeout=120)
    assert compared.returncode == 0, compared.stderr
    both = json.loads(compared.stdout)
    assert (both["a"]["run_id"], both["b"]["run_id"]) == ("g", "g-random") and both["verdict"]
    html = Path(summary["report"]["html"])
    page = browser.new_page()
    page.goto(html.as_uri())
    section = page.locator("section#guided-against-random")
    assert section.is_visible()
    assert "g-random" in section.inner_text() and "test cider" in section.inner_text()
    assert page.locator('svg[data-plot="compare-candidates"]').count() == 1
    assert page.locator('svg[data-plot="compare-time"]').count() == 1
    card = (html.parent / "MODEL_CARD.md").read_text()
    assert "## Against random search" in card and "Scored once on the held-out **test** split" in card


def test_the_test_split_is_read_only_after_the_search_has_ended(tmp_path: Path, monkeypatch) -> None:
    """Every read of the test split (its image ids, its references, a sandboxed job generating on it) is timed;
    all come after the last candidate of either arm was trained."""
    import capnas.sandbox.prepared as prepared_format
    import capnas.tools.jobs.training as training
    from capnas import runner
    from capnas.settings import RunSettings

    reads: list[tuple[str, float]] = []

    def spy(name, real, split_of):
        def wrapped(*args, **kwargs):
            if split_of(*args, **kwargs) == "test":
                reads.append((name, time.time()))
            return real(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(prepared_format, "load_image_ids",
                        spy("image ids", prepared_format.load_image_ids, lambda d, split, *a, **k: split))
    monkeypatch.setattr(training, "split_references",
                        spy("references", training.split_references, lambda ds, split, *a, **k: split))
    monkeypatch.setattr(training, "run_sandboxed",
                        spy("sandboxed job", training.run_sandboxed, lambda job, *a, **k: job.args.get("split")))
    monkeypatch.setenv("CAPNAS_CACHE", str(tmp_path / "cache"))
    settings = RunSettings.load(None, {**BASE, "generation": "random", "max_candidates": 1, "min_candidates": 0,
                                       "epochs": 1, "train_time_s": 10, "families": "small_cnn,gru",
                                       "run_dir": str(tmp_path / "ws")})
    summary = runner.start(settings.context(None), settings.task().model_dump(), run_id="t", baseline="random")
    assert summary["trained"] >= 1 and summary["baseline"]["trained"] >= 1
    journal = Journal(tmp_path / "ws" / "journal.sqlite")
    last_training = max(c.updated_at for run in ("t", "t-random") for c in journal.candidates(run))
    assert {name for name, _ in reads} == {"image ids", "references", "sandboxed job"}, reads
    early = [(name, round(last_training - at, 1)) for name, at in reads if at <= last_training]
    assert not early, f"the test split was read before the search ended: {early}"


def test_a_random_candidate_that_breaks_the_contract_is_drawn_again_within_the_repair_rounds(tmp_path: Path) -> None:
    # The guided arms repair an invalid candidate from its violations (max_repairs rounds); the baseline gets the
    # same rounds as fresh draws, so neither arm loses a candidate slot to a first draw the contract refuses.
    # Seed 1 under 1.5M parameters: two draws over the budget, the third fits.
    done = subprocess.run(
        [sys.executable, "-m", "capnas", "run", "--generation", "random", "--dataset", "shapes:60", "--families",
         "small_cnn,lstm,gru", "--max-candidates", "1", "--min-candidates", "1", "--epochs", "1", "--train-time-s",
         "20", "--max-params", "1500000", "--max-latency-ms", "10000", "--seed", "1", "--threads", "1",
         "--run-dir", str(tmp_path / "ws"), "--run-id", "r", "--json", "--no-report"],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    journal = Journal(tmp_path / "ws" / "journal.sqlite")
    [cand] = journal.candidates("r")
    repairs = journal.events("r", "repair")
    assert cand.status == "trained" and cand.params <= 1_500_000 and cand.metrics
    assert cand.repairs == len(repairs) == 2  # max_repairs, the default: no more draws than an LLM gets repairs
    for e in repairs:  # each redraw replaced a draw the contract refused for its size
        assert "BUD-001" in {v["code"] for v in e["payload"]["contract"]["violations"]}
    assert len({e["payload"]["previous_code"] for e in repairs} | {cand.code}) == 3  # three different draws
