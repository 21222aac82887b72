"""Guided search against random search at an equal budget, over seeds: does the LLM find better models?

Each arm runs one `capnas run` per seed with the very same budget flags (`--max-candidates N --min-candidates N`,
so the critic cannot end a guided run early and every arm generates the same number of candidates; epochs and
training seconds per candidate; a time budget meant not to bind). Arms:

- `random`: `--generation random`, no LLM (the baseline);
- `spec-0.5b`, `spec-1.5b`: `--generation spec` with the embedded Qwen2.5-Coder 0.5B / 1.5B model;
- `code`: `--generation code` with the OpenAI-compatible endpoint of `--llm-base-url`/`--llm-model`.

A guided arm names the parts of the search it uses (#18), e.g. `spec-1.5b+edits+inherit`; every part it does not
name is switched off, so `spec-1.5b` alone is the plain guided search and `spec-1.5b+all` has all four:
`edits` (typed critic edits, applied), `mutation` (a seeded mutation when the LLM gives nothing new), `inherit`
(a child starts from its parent's weights) and `promote` (the `--rungs`/`--promote` schedule: every candidate
trains the first rung, the best go on from their checkpoint; `--train-time-s` is then per rung). `random+promote`
is random search under the same schedule.

All runs of a benchmark share one workspace (`WORKDIR/workspace`), with run ids `<arm>-s<seed>`. Each finished
run leaves its result file `WORKDIR/<arm>-s<seed>.json`: the `capnas run --json` summary, the best-so-far curve
from `capnas compare RUN RUN --json` (`progress`), the exact command, start and end time, load average before
and after, and the machine's cores. A result file that exists is reused, never rerun (delete it to rerun that
run), so arms and seeds can run in separate invocations, in any order, and a crash loses one run at most (a run
that is in the journal without a result file is continued with `capnas resume`). `--table-only` builds the
table and the plot from the result files alone.

    .venv/bin/python benchmarks/bench_search.py --recipe shapes --arms random,spec-0.5b --seeds 0 1 2
    .venv/bin/python benchmarks/bench_search.py --recipe flickr8k --arms random --seeds 0 1 2     # one arm ...
    .venv/bin/python benchmarks/bench_search.py --recipe flickr8k --arms spec-0.5b --seeds 0 1 2  # ... then the next
    .venv/bin/python benchmarks/bench_search.py --recipe flickr8k --table-only                    # the table of all
    .venv/bin/python benchmarks/bench_search.py --recipe shapes --arms random,random+promote,spec-0.5b+all,\\
        spec-0.5b+edits,spec-0.5b+mutation,spec-0.5b+promote,spec-0.5b+inherit --seeds 0 1 2   # each part alone
    .venv/bin/python benchmarks/bench_search.py --recipe flickr8k --device cuda --candidates 12 --epochs 10 \\
        --train-time-s 300 --workdir .capnas/bench-search-flickr8k-gpu                            # on a GPU

Recipes (every budget is a flag; the recipe only sets the defaults):

- `shapes`: the synthetic `shapes:3000` with `capnas run`'s defaults (all families, 32 px), shortened: 4
  candidates, 2 epochs and at most 30 s of training each, 2 at once, one thread per job (one arm-seed takes a
  few minutes on 2 cores).
- `shapes-epochs`: `shapes:1000` bounded by epochs, not by the clock (at most 600 s of training each, which no
  candidate reaches), so its numbers do not depend on the machine's load: 4 candidates of 2 epochs each, or with
  `+promote` rungs 1,3 and promote 0.5 (every candidate 1 epoch, the best half on to 3: about the same 8 epochs
  per run). For the #18 rows: each part alone and all four against random and random with promotion.
- `flickr8k`: `$CAPNAS_FLICKR8K` (a folder holding `dataset_flickr8k.json`, or the json itself), else
  `../shared/datasets/flickr8k/dataset_flickr8k.json`; `--frozen-encoders --families
  efficientnet_lite0,lstm,gru,transformer --image-size 224 --min-count 5 --max-len 20 --max-params 12000000` (the
  CPU recipe of `bench_recipe.py`); provisional budgets: 6 candidates, 2 epochs, at most 240 s of training each.
- `flickr8k-epochs`: the same data and flags, bounded by epochs like `shapes-epochs` (at most 3600 s of training
  per rung, which no candidate reaches): 4 candidates of 2 epochs, or rungs 1,3 with promote 0.5; the #18 rows
  (random, random+promote, spec-1.5b+all), about two hours per arm for 3 seeds on 2 cores.

Output: a markdown table (per arm, mean ± sd over seeds and the per-seed values of best val CIDEr, test CIDEr and
BLEU-4 of the val-chosen best, candidates trained, LLM tokens and wall time; per guided arm, the paired per-seed
difference guided − random of test and val CIDEr and the ratio of mean test CIDEr guided / random), printed and
written to `WORKDIR/table.md`; and the best-so-far val objective against candidates trained (a thick line per
arm: the mean over seeds, where a seed that trained fewer candidates counts with its final best; thin lines: each
seed) as `WORKDIR/best_so_far.svg` (and `.png` when matplotlib is importable). sd is the sample standard deviation (n − 1). Every number comes from the journal (through
`capnas run --json` and `capnas compare --json`) and the evaluator: nothing here scores or counts anything.

WORKDIR defaults to `.capnas/bench-search-<recipe>/` in the repository (`.capnas/` is git-ignored).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULT_VERSION = 1
WORKSPACE = "workspace"
EMBEDDED = {"spec-0.5b": "qwen2.5-coder-0.5b", "spec-1.5b": "qwen2.5-coder-1.5b"}
ARMS = ("random", *EMBEDDED, "code")
# The parts of the search an arm may switch on (`spec-1.5b+edits+inherit`, `+all`; #18), with the capnas switch of
# each; `promote` is the benchmark's `--rungs`/`--promote` schedule instead of one fixed budget per candidate.
SWITCHES = {"edits": "critic-edits", "mutation": "mutation", "inherit": "inherit-weights"}
PARTS = ("edits", "mutation", "promote", "inherit")
FLICKR8K_FAMILIES = "efficientnet_lite0,lstm,gru,transformer"

# Defaults per recipe: every key is also a flag (--candidates, --epochs, ...), which overrides it.
RECIPES: dict[str, dict[str, Any]] = {
    "shapes": dict(dataset="shapes:3000", candidates=4, epochs=2, train_time_s=30.0, time_budget=30.0,
                   concurrency=2, image_size=None, max_len=None, min_count=None, families=None, max_params=None,
                   frozen_encoders=False, rungs=[1, 2], promote=0.5, arms="random,spec-0.5b"),
    "shapes-epochs": dict(dataset="shapes:1000", candidates=4, epochs=2, train_time_s=600.0, time_budget=60.0,
                          concurrency=2, image_size=None, max_len=None, min_count=None, families=None,
                          max_params=None, frozen_encoders=False, rungs=[1, 3], promote=0.5,
                          arms="random,random+promote,spec-0.5b,spec-0.5b+all"),
    "flickr8k": dict(dataset=None, candidates=6, epochs=2, train_time_s=240.0, time_budget=90.0,
                     concurrency=2, image_size=224, max_len=20, min_count=5, families=FLICKR8K_FAMILIES,
                     # the frozen backbone and a 2,538-word output layer alone are 4.3M parameters: under capnas's
                     # default 5M only 15% of random draws fit, under 12M 72% (bench_recipe.py's measurement)
                     max_params=12_000_000, frozen_encoders=True, rungs=[1, 2], promote=0.5,
                     arms="random,spec-0.5b,spec-1.5b"),
    # the #18 rows on real images, bounded by epochs as shapes-epochs is: 8 candidate-epochs per run either way
    "flickr8k-epochs": dict(dataset=None, candidates=4, epochs=2, train_time_s=3600.0, time_budget=240.0,
                            concurrency=2, image_size=224, max_len=20, min_count=5, families=FLICKR8K_FAMILIES,
                            max_params=12_000_000, frozen_encoders=True, rungs=[1, 3], promote=0.5,
                            arms="random,random+promote,spec-1.5b+all"),
}

# What one table row shows: (key, heading, decimals).
METRICS: tuple[tuple[str, str, int], ...] = (
    ("best_val_cider", "best val CIDEr", 3),
    ("test_cider", "test CIDEr", 3),
    ("test_bleu_4", "test BLEU-4", 3),
    ("trained", "trained", 1),
    ("tokens", "LLM tokens", 0),
    ("wall_s", "wall s", 0),
)
COLOURS = ("#0969da", "#bc4c00", "#1a7f37", "#8250df", "#cf222e", "#6e7781")


# -- inputs -----------------------------------------------------------------------------------------------
def flickr8k_json() -> str:
    """The Flickr8k captions json: `$CAPNAS_FLICKR8K` (its folder, or the file), else the shared copy."""
    given = os.environ.get("CAPNAS_FLICKR8K")
    path = Path(given) if given else REPO.parent / "shared" / "datasets" / "flickr8k"
    return str(path if path.suffix == ".json" else path / "dataset_flickr8k.json")


def budget_of(args: argparse.Namespace) -> dict[str, Any]:
    """The settings every run of this benchmark shares (the same in every arm): recorded in each result file."""
    return {"recipe": args.recipe, "dataset": args.dataset, "candidates": args.candidates, "epochs": args.epochs,
            "train_time_s": args.train_time_s, "time_budget": args.time_budget, "concurrency": args.concurrency,
            "threads": args.threads, "device": args.device, "image_size": args.image_size, "max_len": args.max_len,
            "min_count": args.min_count, "families": args.families, "frozen_encoders": args.frozen_encoders,
            **({"max_params": args.max_params} if args.max_params is not None else {}),
            "rungs": args.rungs, "promote": args.promote}  # the schedule of the +promote arms (every arm records it)


def arm_parts(arm: str) -> tuple[str, tuple[str, ...]]:
    """`spec-1.5b+edits+promote` -> ("spec-1.5b", ("edits", "promote")); `+all` is every part of the search."""
    base, *parts = arm.split("+")
    if base not in ARMS:
        raise SystemExit(f"bench_search: unknown arm {arm!r} (use {', '.join(ARMS)}, each optionally with "
                         f"+{'+'.join(PARTS)} or +all)")
    parts = list(PARTS) if parts == ["all"] else parts
    if unknown := [x for x in parts if x not in PARTS]:
        raise SystemExit(f"bench_search: arm {arm!r}: unknown part {', '.join(unknown)} (use {', '.join(PARTS)} "
                         "or all)")
    if base == "random" and set(parts) - {"promote"}:
        raise SystemExit(f"bench_search: arm {arm!r}: random search has no critic and no parents; of the parts "
                         "only +promote applies to it")
    return base, tuple(p for p in PARTS if p in parts)


def arm_flags(arm: str, args: argparse.Namespace) -> list[str]:
    """The `capnas run` flags that make an arm what it is (and nothing else differs between arms). A guided arm
    names every part of the search it uses (#18); the rest are switched off, so `spec-1.5b` alone is the plain
    guided search (one fixed budget per candidate, free-text feedback, re-asks on a duplicate)."""
    base, parts = arm_parts(arm)
    if "promote" in parts and not args.rungs:
        raise SystemExit(f"bench_search: arm {arm!r} promotes, but the benchmark has no rungs (pass --rungs 1,3)")
    flags = ["--rungs", ",".join(map(str, args.rungs)), "--promote", f"{args.promote:g}"] if "promote" in parts else []
    if base == "random":
        return ["--generation", "random", *flags]
    flags += [f"--{'' if part in parts else 'no-'}{flag}" for part, flag in SWITCHES.items()]
    if base in EMBEDDED:
        return ["--generation", "spec", "--embedded-model", EMBEDDED[base], *flags]
    if not args.llm_base_url or not args.llm_model:
        raise SystemExit("bench_search: the code arm needs --llm-base-url and --llm-model")
    flags += ["--llm-base-url", args.llm_base_url, "--llm-model", args.llm_model]
    return ["--generation", "code", *flags] + (["--llm-api-key-env", args.llm_api_key_env]
                                               if args.llm_api_key_env else [])


def capnas_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("capnas")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "capnas"]


def run_command(arm: str, seed: int, args: argparse.Namespace, workspace: Path) -> list[str]:
    """One (arm, seed): `capnas run` with the benchmark's budget flags, the arm's flags and the seed."""
    b = budget_of(args)
    cmd = [*capnas_cmd(), "run", "--json", "--no-report", "--run-dir", str(workspace), "--run-id", run_id(arm, seed),
           "--seed", str(seed), "--dataset", b["dataset"], "--max-candidates", str(b["candidates"]),
           "--min-candidates", str(b["candidates"]), "--epochs", str(b["epochs"]),
           "--train-time-s", f"{b['train_time_s']:g}", "--time-budget", f"{b['time_budget']:g}",
           "--concurrency", str(b["concurrency"]), "--device", b["device"]]
    for flag, key in (("--threads", "threads"), ("--image-size", "image_size"), ("--max-len", "max_len"),
                      ("--min-count", "min_count"), ("--families", "families"), ("--max-params", "max_params")):
        if b.get(key) is not None:
            cmd += [flag, str(b[key])]
    if b["frozen_encoders"]:
        cmd.append("--frozen-encoders")
    return cmd + arm_flags(arm, args)


def run_id(arm: str, seed: int) -> str:
    return f"{arm}-s{seed}"


def result_path(workdir: Path, arm: str, seed: int) -> Path:
    return workdir / f"{run_id(arm, seed)}.json"


# -- running ----------------------------------------------------------------------------------------------
def _json_line(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _run_logged(cmd: list[str], log: Path) -> tuple[int, str]:
    """Run `cmd`, its stderr (capnas's progress) appended to `log`; returns (exit code, stdout)."""
    with log.open("a") as err:
        err.write(f"\n$ {shlex.join(cmd)}\n")
        err.flush()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO)
    return proc.returncode, proc.stdout


def run_exists(workspace: Path, rid: str) -> bool:
    from capnas import runner

    return runner.run_exists(workspace, rid)


def source_commit() -> str | None:
    """The commit of the code this benchmark runs (with '+dirty' for uncommitted changes); None outside git."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=30, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def run_one(arm: str, seed: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any] | None:
    """Run (or continue) one arm-seed and write its result file; None when the run did not end (see the log)."""
    workspace = workdir / WORKSPACE
    workspace.mkdir(parents=True, exist_ok=True)
    rid = run_id(arm, seed)
    log = workdir / "logs" / f"{rid}.log"
    log.parent.mkdir(exist_ok=True)
    cmd = run_command(arm, seed, args, workspace)
    resumed = run_exists(workspace, rid)
    if resumed:  # started before and never written: continue it (finished candidates are not redone)
        cmd_run = [*capnas_cmd(), "resume", rid, "--run-dir", str(workspace), "--json"]
    else:
        cmd_run = cmd
    started, load_before, t0 = datetime.datetime.now().astimezone(), os.getloadavg(), time.monotonic()
    print(f"[{started:%H:%M:%S}] {rid}: {'resuming' if resumed else 'running'} (log {log})", flush=True)
    code, stdout = _run_logged(cmd_run, log)
    process_wall_s = time.monotonic() - t0
    summary = _json_line(stdout)
    if summary is None or summary.get("status") not in ("finished", "stopped"):
        print(f"  {rid}: did not end (exit {code}, status {(summary or {}).get('status')}); see {log}; "
              "running the benchmark again continues it", flush=True)
        return None
    code_c, out_c = _run_logged([*capnas_cmd(), "compare", rid, rid, "--run-dir", str(workspace), "--json"], log)
    compared = _json_line(out_c) if code_c == 0 else None
    result = {
        "version": RESULT_VERSION, "arm": arm, "seed": seed, "run_id": rid, "budget": budget_of(args),
        "command": shlex.join(cmd), "resumed_with": shlex.join(cmd_run) if resumed else None,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "process_wall_s": round(process_wall_s, 1),
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "commit": source_commit(),
        "summary": summary,
        "objective": (compared or {}).get("objective"),
        "progress": ((compared or {}).get("a") or {}).get("progress"),
    }
    path = result_path(workdir, arm, seed)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(path)
    best = summary.get("best") or {}
    print(f"  {rid}: {summary['status']} ({summary.get('stop_reason')}), {summary.get('trained')} trained, "
          f"val {fmt((best.get('metrics') or {}).get('cider'), 3)}, "
          f"test {fmt((best.get('test_metrics') or {}).get('cider'), 3)}, {process_wall_s:.0f} s", flush=True)
    return result


# -- reading results --------------------------------------------------------------------------------------
def values(result: dict[str, Any]) -> dict[str, float | None]:
    """The table's numbers of one result file (None where the run has none, e.g. no trained candidate)."""
    s = result.get("summary") or {}
    best = s.get("best") or {}
    val, test = best.get("metrics") or {}, best.get("test_metrics") or {}
    return {"best_val_cider": val.get("cider"), "test_cider": test.get("cider"), "test_bleu_4": test.get("bleu_4"),
            "trained": s.get("trained"), "tokens": s.get("tokens"), "wall_s": s.get("wall_s")}


def load_results(workdir: Path, arms: Iterable[str] | None = None,
                 seeds: Iterable[int] | None = None) -> dict[str, dict[int, dict[str, Any]]]:
    """{arm: {seed: result}} from the result files in `workdir` (only the given arms and seeds, when given)."""
    pattern = re.compile(r"^(?P<arm>.+)-s(?P<seed>\d+)\.json$")
    arms, seeds = (list(arms) if arms is not None else None), (set(seeds) if seeds is not None else None)
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted(workdir.glob("*-s*.json")):
        m = pattern.match(path.name)
        if not m or (arms is not None and m["arm"] not in arms) or (seeds is not None and int(m["seed"]) not in seeds):
            continue
        out.setdefault(m["arm"], {})[int(m["seed"])] = json.loads(path.read_text())
    def rank(arm: str) -> tuple:
        base, parts = arm_parts(arm) if arm.split("+")[0] in ARMS else (arm, ())
        return ARMS.index(base) if base in ARMS else 99, len(parts), arm

    order = arms if arms is not None else sorted(out, key=rank)
    return {a: dict(sorted(out[a].items())) for a in order if a in out}


# -- statistics and the table -----------------------------------------------------------------------------
def mean_sd(xs: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """Mean, sample sd (n − 1; None for fewer than two values) and n of the values that are not None."""
    have = [float(x) for x in xs if x is not None]
    if not have:
        return None, None, 0
    return statistics.fmean(have), (statistics.stdev(have) if len(have) > 1 else None), len(have)


def paired(guided: dict[int, dict[str, Any]], random: dict[int, dict[str, Any]], key: str) -> dict[int, float]:
    """Per seed present in both arms with a value in both: guided − random."""
    out = {}
    for seed in sorted(set(guided) & set(random)):
        g, r = values(guided[seed])[key], values(random[seed])[key]
        if g is not None and r is not None:
            out[seed] = g - r
    return out


def ratio_of_means(guided: dict[int, dict[str, Any]], random: dict[int, dict[str, Any]], key: str) -> float | None:
    """Mean guided / mean random of `key` over the paired seeds (None without pairs or with a zero mean)."""
    seeds = paired(guided, random, key)
    if not seeds:
        return None
    g = statistics.fmean(values(guided[s])[key] for s in seeds)
    r = statistics.fmean(values(random[s])[key] for s in seeds)
    return g / r if r else None


def fmt(x: float | None, decimals: int) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:,.{decimals}f}" if decimals == 0 else f"{x:.{decimals}f}"


def fmt_mean_sd(xs: Sequence[float | None], decimals: int) -> str:
    m, sd, n = mean_sd(xs)
    if m is None:
        return "n/a"
    text = fmt(m, decimals) + (f" ± {fmt(sd, decimals)}" if sd is not None else "")
    return text + (f" (n={n})" if n != len(xs) else "")


def budget_notes(results: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    """Lines saying where result files disagree on the budget (a table of unequal budgets says little)."""
    budgets = {run_id(a, s): json.dumps(r.get("budget"), sort_keys=True) for a, rs in results.items()
               for s, r in rs.items()}
    if len(set(budgets.values())) <= 1:
        return []
    groups: dict[str, list[str]] = {}
    for rid, b in budgets.items():
        groups.setdefault(b, []).append(rid)
    return ["WARNING: the result files do not share one budget:"] + [f"  {', '.join(ids)}: {b}"
                                                                      for b, ids in groups.items()]


def table(results: dict[str, dict[int, dict[str, Any]]]) -> str:
    """The markdown tables: per arm mean ± sd, per seed, and guided − random paired by seed."""
    if not results:
        return "no result files\n"
    lines = [f"| arm | seeds | {' | '.join(h for _, h, _ in METRICS)} |", "|---|---|" + "---:|" * len(METRICS)]
    for arm, rs in results.items():
        vals = [values(r) for r in rs.values()]
        cells = [fmt_mean_sd([v[k] for v in vals], d) for k, _, d in METRICS]
        lines.append(f"| {arm} | {len(rs)} | {' | '.join(cells)} |")
    lines += ["", f"| arm | seed | {' | '.join(h for _, h, _ in METRICS)} | candidates | ended by |",
              "|---|---:|" + "---:|" * len(METRICS) + "---:|---|"]
    for arm, rs in results.items():
        for seed, r in rs.items():
            v, s = values(r), r.get("summary") or {}
            lines.append(f"| {arm} | {seed} | {' | '.join(fmt(v[k], d) for k, _, d in METRICS)} | "
                         f"{s.get('candidates', 'n/a')} | {s.get('stop_reason') or s.get('status', '')} |")
    pairs = [(arm, base) for arm in results if arm_parts(arm)[0] != "random"
             for base in ("random", "random+promote") if base in results
             and (base == "random" or "promote" in arm_parts(arm)[1])]  # the same schedule's random arm too
    if pairs:
        lines += ["", "| guided − random, paired by seed | per seed | mean ± sd | mean test CIDEr guided / random |",
                  "|---|---|---:|---:|"]
        for arm, base in pairs:
            for key, name in (("test_cider", "test CIDEr"), ("best_val_cider", "best val CIDEr")):
                d = paired(results[arm], results[base], key)
                per_seed = ", ".join(f"s{s}: {x:+.3f}" for s, x in d.items()) or "no pairs"
                ratio = ratio_of_means(results[arm], results[base], "test_cider") if key == "test_cider" else None
                label = arm if base == "random" else f"{arm} − {base}"
                lines.append(f"| {label} {name} | {per_seed} | {fmt_mean_sd(list(d.values()), 3)} | "
                             f"{fmt(ratio, 2) + 'x' if ratio is not None else ''} |")
    return "\n".join(lines) + "\n"


def context_lines(results: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    """When, where and under what budget the runs ran, from their result files."""
    all_r = [r for rs in results.values() for r in rs.values()]
    if not all_r:
        return []
    starts = sorted(r.get("started", "") for r in all_r)
    ends = sorted(r.get("finished", "") for r in all_r)
    loads = [x for r in all_r for x in (r.get("load_before", [None])[0], r.get("load_after", [None])[0])
             if x is not None]
    cores = sorted({(r.get("machine") or {}).get("cores") for r in all_r} - {None})
    b = all_r[0].get("budget") or {}
    commits = {}  # commit -> its arms, in the order first seen
    for arm, rs in results.items():
        for r in rs.values():
            commits.setdefault(r.get("commit") or "unrecorded", set()).add(arm)
    code = "; code at " + ", ".join(f"{c} ({', '.join(sorted(arms))})" for c, arms in commits.items())
    out = [f"runs from {starts[0]} to {ends[-1]}; {', '.join(map(str, cores))} cores; 1-min load average "
           f"{min(loads):.1f}-{max(loads):.1f} at the runs' starts and ends{code}" if loads else ""]
    schedule = (f"; +promote arms: rungs {','.join(map(str, b['rungs']))} epochs, promote {b.get('promote')}, "
                "that many seconds per rung") if b.get("rungs") else ""
    out.append(f"budget per run: {b.get('candidates')} candidates (min = max), {b.get('epochs')} epochs and "
               f"{b.get('train_time_s')} s of training each{schedule}, time budget {b.get('time_budget')} min, concurrency "
               f"{b.get('concurrency')}, threads {b.get('threads')}, device {b.get('device')}, data {b.get('dataset')}")
    return [line for line in out if line] + budget_notes(results)


# -- the plot ---------------------------------------------------------------------------------------------
def curves(results: dict[str, dict[int, dict[str, Any]]]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Per arm: each seed's best-so-far (candidates trained, best val) and their mean at each count of
    candidates trained. A seed that trained fewer candidates keeps its final best in the mean after its last
    point (its best-so-far does not change once its run has ended); seeds with no trained candidate are left out."""
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for arm, rs in results.items():
        seeds = {f"s{s}": [(float(p["trained"]), float(p["best_val"])) for p in (r.get("progress") or [])]
                 for s, r in rs.items()}

        def at(pts: list[tuple[float, float]], x: float) -> float | None:
            before = [y for px, y in pts if px <= x]
            return before[-1] if before else None

        xs = sorted({x for pts in seeds.values() for x, _ in pts})
        mean = []
        for x in xs:
            ys = [y for pts in seeds.values() if pts and (y := at(pts, x)) is not None]
            if ys:
                mean.append((x, statistics.fmean(ys)))
        out[arm] = {"mean": mean, **seeds}
    return out


def _tint(colour: str, amount: float = 0.55) -> str:
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(c + (255 - c) * amount):02x}" for c in (r, g, b))


def svg_plot(results: dict[str, dict[int, dict[str, Any]]], objective: str = "cider") -> str:
    from capnas.tools.report.svg_chart import Series, chart

    data = curves(results)
    series = [Series(f"{arm} mean", lines["mean"], COLOURS[i % len(COLOURS)], style="line")
              for i, (arm, lines) in enumerate(data.items())]
    for i, (arm, lines) in enumerate(data.items()):  # a seed with one point gets a marker, else it is invisible
        colour = COLOURS[i % len(COLOURS)]
        series += [Series(f"{arm} {name}", pts, _tint(colour), style="step",
                          marker="circle" if len(pts) == 1 else "none")
                   for name, pts in lines.items() if name != "mean"]
    name = {"cider": "CIDEr", "bleu_4": "BLEU-4"}.get(objective, objective)
    svg = chart(series, x_label="candidates trained", y_label=f"best-so-far val {name}",
                title=f"best-so-far val {name}: mean over seeds (thick), each seed (thin)", width=760, height=380)

    def thin(m: re.Match) -> str:  # seed lines thinner than the means
        return m.group(0).replace('stroke-width="2"', 'stroke-width="1"')

    return re.sub(r'<g class="series" data-name="[^"]* s\d+"[^>]*>.*?</g>', thin, svg)


def png_plot(results: dict[str, dict[int, dict[str, Any]]], path: Path, objective: str = "cider") -> bool:
    """The same plot as a PNG when matplotlib is importable (it is no dependency of capnas); False without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 4))
    for i, (arm, lines) in enumerate(curves(results).items()):
        colour = COLOURS[i % len(COLOURS)]
        for name, pts in lines.items():
            if pts and name != "mean":
                ax.step(*zip(*pts), where="post", color=colour, alpha=0.35, linewidth=1)
        if lines["mean"]:
            ax.plot(*zip(*lines["mean"]), color=colour, linewidth=2.2, marker="o", label=f"{arm} mean")
    ax.set_xlabel("candidates trained")
    ax.set_ylabel(f"best-so-far val {objective}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_outputs(results: dict[str, dict[int, dict[str, Any]]], workdir: Path) -> str:
    """Print and write the table (`table.md`) and the plot (`best_so_far.svg`, `.png` when possible)."""
    objective = next((r.get("objective") for rs in results.values() for r in rs.values() if r.get("objective")),
                     "cider")
    text = "\n".join(context_lines(results)) + "\n\n" + table(results)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "table.md").write_text(text)
    (workdir / "best_so_far.svg").write_text(svg_plot(results, objective))
    files = [workdir / "table.md", workdir / "best_so_far.svg"]
    if png_plot(results, workdir / "best_so_far.png", objective):
        files.append(workdir / "best_so_far.png")
    print("\n" + text)
    print("written: " + ", ".join(map(str, files)) + ("" if len(files) == 3 else " (no PNG: matplotlib is not installed)"))
    return text


# -- the command ------------------------------------------------------------------------------------------
def rung_list(text: str) -> list[int]:
    """`1,3` -> [1, 3] (empty: no rungs); anything else is a one-line argparse error."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of epochs: write e.g. 1,3") from None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", choices=sorted(RECIPES), default="shapes")
    p.add_argument("--arms", default=None,
                   help=f"comma-separated, of {', '.join(ARMS)} (default: the recipe's; with --table-only: every "
                        "arm with a result file)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="default 0 1 2 (with --table-only: every seed with a result file)")
    p.add_argument("--workdir", type=Path, default=None, help="result files, workspace, logs, table and plot "
                   "(default: .capnas/bench-search-<recipe>/, git-ignored)")
    p.add_argument("--table-only", action="store_true", help="no runs: the table and plot from the result files")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto, for every run")
    p.add_argument("--dataset", default=None, help="override the recipe's data (shapes:N, or a captions json)")
    p.add_argument("--candidates", type=int, default=None, help="candidates per run (= --max- and --min-candidates)")
    p.add_argument("--epochs", type=int, default=None, help="max epochs per candidate")
    p.add_argument("--train-time-s", type=float, default=None, help="seconds of training per candidate")
    p.add_argument("--time-budget", type=float, default=None,
                   help="minutes per run: meant not to bind (it would cut a slow arm's candidates)")
    p.add_argument("--concurrency", type=int, default=None, help="candidates trained at once")
    p.add_argument("--threads", type=int, default=None, help="torch threads per job (default: 1 on cpu, else "
                   "capnas's default)")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--max-len", type=int, default=None)
    p.add_argument("--min-count", type=int, default=None)
    p.add_argument("--families", default=None, help="comma-separated families every arm searches")
    p.add_argument("--max-params", type=int, default=None, help="parameter budget per model (frozen ones count)")
    p.add_argument("--rungs", type=rung_list, default=None, help="epochs at each rung for the +promote arms, e.g. 1,2 (default: "
                   "the recipe's); --train-time-s is then the training seconds per rung")
    p.add_argument("--promote", type=float, default=None, help="fraction promoted at each rung (+promote arms)")
    p.add_argument("--llm-base-url", default=None, help="the code arm's OpenAI-compatible endpoint")
    p.add_argument("--llm-model", default=None, help="the code arm's model name at that endpoint")
    p.add_argument("--llm-api-key-env", default=None, help="environment variable holding the endpoint's key")
    args = p.parse_args(argv)
    recipe = RECIPES[args.recipe]
    for key in ("candidates", "epochs", "train_time_s", "time_budget", "concurrency", "image_size", "max_len",
                "min_count", "families", "max_params", "rungs", "promote"):
        if getattr(args, key) is None:
            setattr(args, key, recipe[key])
    args.frozen_encoders = recipe["frozen_encoders"]
    if args.dataset is None:
        args.dataset = recipe["dataset"] or flickr8k_json()
    if args.threads is None and args.device == "cpu":
        args.threads = 1
    args.arms_given = args.arms is not None
    args.arms = [a.strip() for a in (args.arms or recipe["arms"]).split(",") if a.strip()]
    args.seeds_given = args.seeds is not None
    args.seeds = args.seeds if args.seeds is not None else [0, 1, 2]
    args.workdir = args.workdir or REPO / ".capnas" / f"bench-search-{args.recipe}"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir: Path = args.workdir
    if args.table_only:
        results = load_results(workdir, args.arms if args.arms_given else None,
                               args.seeds if args.seeds_given else None)
        write_outputs(results, workdir)
        return 0 if results else 1
    for arm in args.arms:
        arm_flags(arm, args)  # refuse a bad arm before any run starts
    if not args.dataset.startswith("shapes") and not Path(args.dataset).is_file():
        raise SystemExit(f"bench_search: no dataset at {args.dataset} (set CAPNAS_FLICKR8K or pass --dataset)")
    workdir.mkdir(parents=True, exist_ok=True)
    failed = []
    for arm in args.arms:
        for seed in args.seeds:
            path = result_path(workdir, arm, seed)
            if path.is_file():
                print(f"{run_id(arm, seed)}: reusing {path}", flush=True)
                continue
            if run_one(arm, seed, args, workdir) is None:
                failed.append(run_id(arm, seed))
    results = load_results(workdir, args.arms, args.seeds)
    write_outputs(results, workdir)
    if failed:
        print(f"did not end: {', '.join(failed)} (run the same command again to continue them)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
