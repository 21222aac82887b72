"""benchmarks/bench_search.py: the statistics and tables from hand-made result files, and one tiny real run."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_search.py"

spec = importlib.util.spec_from_file_location("bench_search", SCRIPT)
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_search"] = bench
spec.loader.exec_module(bench)

BUDGET = {"recipe": "shapes", "candidates": 4, "epochs": 2}


def result(arm: str, seed: int, val: float | None, test: float | None, bleu: float | None = 0.2, trained: int = 4,
           tokens: int = 0, wall: float = 100.0, progress: list[float] | None = None, budget=None) -> dict:
    best = None if val is None else {"candidate_id": f"{arm}-c1", "metrics": {"cider": val, "bleu_4": 0.1},
                                     "test_metrics": None if test is None else {"cider": test, "bleu_4": bleu}}
    return {"version": 1, "arm": arm, "seed": seed, "run_id": f"{arm}-s{seed}", "budget": budget or BUDGET,
            "started": "2026-12-01T10:00:00+00:00", "finished": "2026-12-01T10:05:00+00:00",
            "load_before": [2.0, 2.0, 2.0], "load_after": [3.5, 2.0, 2.0], "machine": {"cores": 2},
            "summary": {"run_id": f"{arm}-s{seed}", "status": "finished", "stop_reason": "max_candidates",
                        "candidates": 4, "trained": trained, "best": best, "tokens": tokens, "wall_s": wall},
            "objective": "cider",
            "progress": [{"trained": i + 1, "elapsed_s": 10.0 * (i + 1), "best_val": v}
                         for i, v in enumerate(progress or [])]}


def write(workdir: Path, *results: dict) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    for r in results:
        (workdir / f"{r['arm']}-s{r['seed']}.json").write_text(json.dumps(r))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    # random test CIDEr 1.0, 2.0, 3.0; guided 1.5, 2.0, 4.0 -> differences +0.5, 0, +1.0
    write(tmp_path,
          result("random", 0, 1.2, 1.0, tokens=0, progress=[0.5, 1.2]),
          result("random", 1, 2.2, 2.0, progress=[2.2, 2.2]),
          result("random", 2, 3.2, 3.0, progress=[1.0, 3.2]),
          result("spec-0.5b", 0, 1.4, 1.5, tokens=1000, progress=[1.4, 1.4]),
          result("spec-0.5b", 1, 2.0, 2.0, tokens=2000, progress=[1.0, 2.0]),
          result("spec-0.5b", 2, 4.1, 4.0, tokens=3000, trained=3, progress=[4.1]))
    return tmp_path


def test_mean_sd_is_the_sample_sd_and_skips_missing_values():
    m, sd, n = bench.mean_sd([1.0, 2.0, None, 3.0])
    assert (m, n) == (2.0, 3) and sd == pytest.approx(1.0)
    assert bench.mean_sd([2.5]) == (2.5, None, 1)
    assert bench.mean_sd([None]) == (None, None, 0)
    assert bench.fmt_mean_sd([1.0, 2.0, None, 3.0], 3) == "2.000 ± 1.000 (n=3)"


def test_paired_difference_and_ratio_from_result_files(workdir: Path):
    results = bench.load_results(workdir)
    assert list(results) == ["random", "spec-0.5b"] and list(results["random"]) == [0, 1, 2]
    diff = bench.paired(results["spec-0.5b"], results["random"], "test_cider")
    assert diff == pytest.approx({0: 0.5, 1: 0.0, 2: 1.0})
    m, sd, n = bench.mean_sd(list(diff.values()))
    assert m == pytest.approx(0.5) and sd == pytest.approx(0.5) and n == 3
    assert bench.ratio_of_means(results["spec-0.5b"], results["random"], "test_cider") == pytest.approx(7.5 / 6.0)


def test_pairs_only_seeds_both_arms_scored(tmp_path: Path):
    write(tmp_path, result("random", 0, 1.0, 1.0), result("random", 1, 1.0, None),
          result("spec-0.5b", 0, 2.0, 3.0), result("spec-0.5b", 1, 2.0, 3.0), result("spec-0.5b", 2, 2.0, 3.0))
    results = bench.load_results(tmp_path)
    assert bench.paired(results["spec-0.5b"], results["random"], "test_cider") == {0: 2.0}
    assert bench.ratio_of_means(results["spec-0.5b"], results["random"], "test_cider") == pytest.approx(3.0)


def test_table_rows(workdir: Path):
    text = bench.table(bench.load_results(workdir))
    lines = text.splitlines()
    random_row = next(line for line in lines if line.startswith("| random | 3 |"))
    assert "| 2.200 ± 1.000 | 2.000 ± 1.000 | 0.200 ± 0.000 | 4.0 ± 0.0 | 0 ± 0 | 100 ± 0 |" in random_row
    guided_row = next(line for line in lines if line.startswith("| spec-0.5b | 3 |"))
    assert "2.500 ± 1.323" in guided_row and "2,000 ± 1,000" in guided_row and "3.7 ± 0.6" in guided_row
    assert "| spec-0.5b | 2 | 4.100 | 4.000 |" in text  # a per-seed row
    diff_row = next(line for line in lines if line.startswith("| spec-0.5b test CIDEr |"))
    assert "s0: +0.500, s1: +0.000, s2: +1.000" in diff_row and "0.500 ± 0.500" in diff_row and "1.25x" in diff_row


def test_a_run_without_a_trained_candidate_reads_na(tmp_path: Path):
    write(tmp_path, result("random", 0, None, None), result("random", 1, 1.0, 2.0))
    text = bench.table(bench.load_results(tmp_path))
    assert "| random | 0 | n/a | n/a | n/a |" in text
    assert "2.000 (n=1)" in text


def test_unequal_budgets_are_flagged(tmp_path: Path):
    write(tmp_path, result("random", 0, 1.0, 1.0), result("spec-0.5b", 0, 1.0, 1.0, budget={"candidates": 8}))
    notes = bench.context_lines(bench.load_results(tmp_path))
    assert any(line.startswith("WARNING") for line in notes)
    assert not any("WARNING" in line for line in bench.context_lines(bench.load_results(tmp_path, ["random"])))


def test_plot_means_and_seed_lines(workdir: Path):
    results = bench.load_results(workdir)
    curves = bench.curves(results)
    # spec-0.5b at 2 trained: seed 2 trained one candidate, so its final best 4.1 stays in the mean
    assert curves["spec-0.5b"]["mean"] == [(1.0, pytest.approx((1.4 + 1.0 + 4.1) / 3)),
                                           (2.0, pytest.approx((1.4 + 2.0 + 4.1) / 3))]
    svg = bench.svg_plot(results)
    assert svg.startswith("<svg") and 'data-name="random mean"' in svg and 'data-name="spec-0.5b s2"' in svg
    assert 'data-values="1,1.23333 2,2.2"' in svg  # the random mean: (0.5+2.2+1)/3, (1.2+2.2+3.2)/3
    seed_group = svg.split('data-name="random s0"')[1].split("</g>")[0]
    assert 'stroke-width="1"' in seed_group and 'stroke-width="2"' not in seed_group


def test_table_only_writes_table_and_svg(workdir: Path, capsys):
    assert bench.main(["--recipe", "shapes", "--workdir", str(workdir), "--table-only"]) == 0
    out = capsys.readouterr().out
    assert "spec-0.5b test CIDEr" in out
    assert (workdir / "table.md").read_text().strip() in out
    assert (workdir / "best_so_far.svg").read_text().startswith("<svg")
    assert bench.main(["--workdir", str(workdir / "empty"), "--table-only"]) == 1


def test_every_arm_gets_the_same_budget_flags(tmp_path: Path):
    args = bench.parse_args(["--recipe", "flickr8k", "--candidates", "5", "--llm-base-url", "http://127.0.0.1:1/v1",
                             "--llm-model", "m"])
    cmds = {arm: bench.run_command(arm, 1, args, tmp_path) for arm in ("random", "spec-0.5b", "spec-1.5b", "code")}
    assert cmds["spec-1.5b"][cmds["spec-1.5b"].index("--embedded-model") + 1] == "qwen2.5-coder-1.5b"

    def budget_part(cmd: list[str]) -> list[str]:
        cut = cmd.index("--generation")
        return [x for x in cmd[:cut] if not x.startswith(("random-", "spec-", "code-"))]

    assert all(budget_part(c) == budget_part(cmds["random"]) for c in cmds.values())
    c = cmds["random"]
    assert c[c.index("--max-candidates") + 1] == c[c.index("--min-candidates") + 1] == "5"
    assert "--frozen-encoders" in c and c[c.index("--families") + 1] == "efficientnet_lite0,lstm,gru,transformer"
    assert c[c.index("--threads") + 1] == "1" and c[c.index("--seed") + 1] == "1"
    with pytest.raises(SystemExit, match="--llm-base-url"):
        bench.arm_flags("code", bench.parse_args([]))
    with pytest.raises(SystemExit, match="unknown arm"):
        bench.arm_flags("spec-7b", bench.parse_args([]))


@pytest.mark.parametrize("recipe", ["shapes-epochs", "flickr8k-epochs"])
def test_epoch_bound_recipes_give_both_schedules_the_same_epochs(recipe: str):
    r = bench.RECIPES[recipe]
    plain = r["candidates"] * r["epochs"]
    alive, promoted, reached = r["candidates"], 0, 0
    for rung in r["rungs"]:  # the promoter's rule: the floor(n * promote) best of a rung go on to the next
        promoted += alive * (rung - reached)
        alive, reached = math.floor(alive * r["promote"]), rung
    assert promoted == plain, f"{recipe}: {promoted} candidate-epochs promoted against {plain} plain"
    # and no candidate is cut by the clock: its seconds per rung are far above an epoch on 2 cores
    assert r["train_time_s"] >= 600
    assert r["time_budget"] * 60 >= r["candidates"] * r["train_time_s"] / r["concurrency"]


def test_an_arm_names_the_parts_of_the_search_it_uses_and_switches_off_the_rest(tmp_path: Path):
    args = bench.parse_args(["--recipe", "shapes", "--rungs", "1,3", "--promote", "0.25"])
    flags = {arm: bench.arm_flags(arm, args) for arm in ("random", "random+promote", "spec-0.5b", "spec-0.5b+all",
                                                         "spec-1.5b+edits+inherit")}
    switches = ("critic-edits", "mutation", "inherit-weights")
    assert [f for f in flags["spec-0.5b"] if f.startswith("--")] == [
        "--generation", "--embedded-model", *(f"--no-{s}" for s in switches)]  # the plain guided search
    assert all(f"--{s}" in flags["spec-0.5b+all"] for s in switches)
    for arm in ("random+promote", "spec-0.5b+all"):
        f = flags[arm]
        assert f[f.index("--rungs") + 1] == "1,3" and f[f.index("--promote") + 1] == "0.25"
    assert "--rungs" not in flags["random"] and "--rungs" not in flags["spec-1.5b+edits+inherit"]
    assert {"--critic-edits", "--no-mutation", "--inherit-weights"} <= set(flags["spec-1.5b+edits+inherit"])
    # the budget every arm records names the schedule, so a table of part arms shares one budget
    assert bench.budget_of(args)["rungs"] == [1, 3] and bench.budget_of(args)["promote"] == 0.25
    for bad, says in (("random+edits", "only \\+promote applies"), ("spec-0.5b+speed", "unknown part speed"),
                      ("spec-9b+all", "unknown arm")):
        with pytest.raises(SystemExit, match=says):
            bench.arm_flags(bad, args)
    with pytest.raises(SystemExit, match="no rungs"):
        bench.arm_flags("random+promote", bench.parse_args(["--rungs", ""]))
    # the table pairs a promoted guided arm with random search under the same schedule, too
    results = {arm: {0: {"summary": {"best": {"metrics": {"cider": v}, "test_metrics": {"cider": v}}}}}
               for arm, v in (("random", 0.5), ("random+promote", 0.8), ("spec-0.5b+all", 1.0))}
    text = bench.table(results)
    assert "| spec-0.5b+all test CIDEr | s0: +0.500 |" in text and "2.00x" in text
    assert "| spec-0.5b+all − random+promote test CIDEr | s0: +0.200 |" in text and "1.25x" in text


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_random_arm_on_shapes_end_to_end(tmp_path: Path, cache_root: Path):
    cmd = [sys.executable, str(SCRIPT), "--recipe", "shapes", "--arms", "random", "--seeds", "0",
           "--workdir", str(tmp_path / "w"), "--dataset", "shapes:300", "--candidates", "2", "--epochs", "1",
           "--train-time-s", "15", "--time-budget", "10"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=360)
    assert first.returncode == 0, first.stdout + first.stderr
    saved = json.loads((tmp_path / "w" / "random-s0.json").read_text())
    summary = saved["summary"]
    assert summary["run_id"] == "random-s0" and summary["generation"] == "random" and summary["candidates"] == 2
    assert "--min-candidates 2" in saved["command"] and saved["machine"]["cores"] >= 1
    assert len(saved["progress"]) == summary["trained"] and saved["objective"] == "cider"
    if summary["trained"]:
        best = summary["best"]
        assert saved["progress"][-1]["best_val"] == pytest.approx(best["metrics"]["cider"])
        assert math.isfinite(best["test_metrics"]["cider"])
    assert "| random | 1 |" in first.stdout and (tmp_path / "w" / "best_so_far.svg").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)  # the result file is reused
    assert again.returncode == 0 and "random-s0: reusing" in again.stdout
    assert json.loads((tmp_path / "w" / "random-s0.json").read_text()) == saved
