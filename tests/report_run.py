"""A real finished run for the report, model card, export and caption tests, built once per test session.

Nothing is made up where a tool measures it: two spec candidates are validated in the sandbox and trained for
real (tiny models on 80 shapes images at 32 px, 3 and 20 epochs, scored by pycocoevalcap), a third is an LLM-style
module that the validator rejects, a fourth repeats the first's code (the journal marks it a duplicate). The
rows are written with the journal's own API, the way the graph's nodes write them (`graph.nodes.trainer_node`);
the planner's and critic's answers are recorded as LLM calls, as `graph.nodes._ask` records them; then the
val-chosen best is scored once on test, as the reporter node does (`graph.final_test`).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

RUN_ID = "20250101-120000-test"
DATASET = "shapes:100"
IMAGE_SIZE, MAX_LEN = 32, 12
INVALID_CODE = '''\
import os
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.proj = nn.Linear(3, out_shape[0])
        os.system("echo hello")

    def forward(self, images, captions=None):
        return self.proj(images.mean((2, 3)))
'''
PLANNER_RATIONALE = "Keep the small CNN and GRU, add attention over the image tokens and train longer."
CRITIC_FEEDBACK = "Every caption is the same sentence and the loss still falls: add attention, train longer."


@dataclass(frozen=True)
class BuiltRun:
    workspace: Path
    run_id: str
    cache: Path  # $CAPNAS_CACHE the run prepared its data in
    trained: tuple[str, ...]  # candidate ids, in the order they were made
    invalid: str
    duplicate: str


_LOCK = threading.Lock()
_BUILT: dict[Path, BuiltRun] = {}


def build_run(root: Path) -> BuiltRun:
    """The run under `root`, built on the first call and reused after. Its prepared data lives in
    `BuiltRun.cache`: point $CAPNAS_CACHE there (monkeypatch) wherever the run's data must be found."""
    with _LOCK:
        if root not in _BUILT:
            before = os.environ.get("CAPNAS_CACHE")
            try:
                _BUILT[root] = _build(root)
            finally:
                if before is None:
                    os.environ.pop("CAPNAS_CACHE", None)
                else:
                    os.environ["CAPNAS_CACHE"] = before
        return _BUILT[root]


_REPORTS: dict[Path, dict] = {}


def report_once(built: BuiltRun) -> dict:
    """`capnas report RUN_ID --workspace WS --json` through the real command line, once per session; returns
    its JSON (paths of the page, the model card and the exported model) and its stderr."""
    import subprocess
    import sys

    with _LOCK:
        if built.workspace not in _REPORTS:
            env = {**os.environ, "CAPNAS_CACHE": str(built.cache)}
            proc = subprocess.run([sys.executable, "-m", "capnas", "report", built.run_id, "--workspace",
                                   str(built.workspace), "--json"], capture_output=True, text=True, env=env,
                                  timeout=600)
            assert proc.returncode == 0, proc.stderr
            _REPORTS[built.workspace] = {**json.loads(proc.stdout), "stderr": proc.stderr}
        return _REPORTS[built.workspace]


def _build(root: Path) -> BuiltRun:
    from capnas.contracts.caption_net_v1 import caption_net_v1
    from capnas.graph.context import Context
    from capnas.graph.final_test import score_best_on_test
    from capnas.graph.services import RunServices
    from capnas.graph.journal import Journal
    from capnas.tools.design.archspec import ArchSpec, render
    from capnas.tools.design.components.options import GRUOptions, SmallCNNOptions
    from capnas.tools.data.datasets import load_dataset, prepare_dataset
    from capnas.tools.scoring.metrics import CaptionEvaluator
    from capnas.tools.task import Budgets, Task
    from capnas.tools.jobs.training import train_candidate
    from capnas.tools.jobs.validation import validate_code

    cache = root / "cache"
    os.environ["CAPNAS_CACHE"] = str(cache)
    workspace = root / "ws"
    budgets = Budgets(max_candidates=4, time_budget=20, epochs=20, train_time_s=120)
    # a generous latency budget: 2 shared CPU cores time a batch of 1 anywhere from 50 to 600 ms
    task = Task(dataset=DATASET, image_size=IMAGE_SIZE, max_len=MAX_LEN, min_count=1, max_latency_ms=10_000,
                budgets=budgets)
    dataset = load_dataset(task.dataset)
    prepared = prepare_dataset(dataset, image_size=task.image_size, max_len=task.max_len, min_count=task.min_count)
    contract = caption_net_v1(len(prepared.vocab), task.image_size, task.max_len, max_params=task.max_params,
                              max_latency_ms=task.max_latency_ms)
    journal = Journal(workspace / "journal.sqlite")  # capnas.graph.services.journal_path(workspace)
    config = {"workspace": str(workspace), "generation": "spec", "device": "cpu", "seed": 0}
    journal.create_run(task.model_dump(), config, run_id=RUN_ID)
    journal.log_llm_call(RUN_ID, "planner", "plan round 1",
                         json.dumps({"raw": "", "parsed": {"rationale": PLANNER_RATIONALE}}), key="planner:round1",
                         input_tokens=812, output_tokens=64, cost_usd=0.0)

    specs = [
        ArchSpec(encoder=SmallCNNOptions(width=16, depth=2, grid=4),
                 decoder=GRUOptions(embed_dim=128, hidden_size=128, num_layers=1, attention=False),
                 lr=3e-3, batch_size=16, epochs=3),
        ArchSpec(encoder=SmallCNNOptions(width=16, depth=2, grid=4),
                 decoder=GRUOptions(embed_dim=128, hidden_size=128, num_layers=1, attention=True),
                 lr=3e-3, batch_size=16, epochs=20),
    ]
    trained: list[str] = []
    with CaptionEvaluator(spice=False) as evaluator:
        for k, spec in enumerate(specs):
            cid = f"r{k:03d}"
            code = render(spec)
            journal.add_candidate(RUN_ID, code, round=k, mode="spec", parent_id=trained[-1] if trained else None,
                                  spec=spec.model_dump(mode="json"), plan=spec.describe(), candidate_id=cid)
            report = validate_code(code, contract, "cpu")
            assert report.ok, report.violations
            journal.update_candidate(cid, status="valid", contract=report.model_dump(mode="json"),
                                     params=report.params)
            run_dir = workspace / "runs" / RUN_ID / cid
            result = train_candidate(code, prepared, dataset, run_dir, hparams=spec.prm(), epochs=spec.epochs,
                                     batch_size=spec.batch_size, train_time_s=budgets.train_time_s, patience=None,
                                     threads=1, evaluator=evaluator)
            assert result.ok, (result.exit_reason, result.error)
            journal.update_candidate(
                cid, status="trained", exit_reason=result.exit_reason,
                curve=[p.model_dump(mode="json") for p in result.curve], metrics=result.metrics,
                samples=[s.model_dump(mode="json") for s in result.samples], hparams=result.hparams,
                params=result.params, artifacts=str(run_dir))
            journal.log_llm_call(RUN_ID, "critic", f"critique {cid}",
                                 json.dumps({"raw": "", "parsed": {"feedback": CRITIC_FEEDBACK, "decision": "refine",
                                                                   "parent_id": cid}}),
                                 candidate_id=cid, key=f"critic:{cid}", input_tokens=1500, output_tokens=120)
            trained.append(cid)

    invalid = "r002"
    journal.add_candidate(RUN_ID, INVALID_CODE, round=2, mode="code", parent_id=trained[-1],
                          plan="LLM-written module", candidate_id=invalid)
    report = validate_code(INVALID_CODE, contract, "cpu")
    assert not report.ok
    journal.update_candidate(invalid, status="invalid", contract=report.model_dump(mode="json"), params=report.params)

    duplicate = "r003"
    twin = journal.get_candidate(trained[0])
    journal.add_candidate(RUN_ID, twin.code, round=3, mode="spec", parent_id=None, spec=twin.spec, plan=twin.plan,
                          candidate_id=duplicate)
    assert journal.get_candidate(duplicate).status == "duplicate"
    journal.set_run_status(RUN_ID, "finished", "max_candidates")
    # the end of a run: its val-chosen best scored once on test, by the function the reporter node calls
    svc = RunServices(ctx=Context(run_dir=str(workspace), device="cpu", threads=1), run_id=RUN_ID, task=task,
                      journal=journal)
    try:
        assert score_best_on_test(svc) is not None, journal.events(RUN_ID, "test_failed")
    finally:
        svc.evaluator.close()
    return BuiltRun(workspace=workspace, run_id=RUN_ID, cache=cache, trained=tuple(trained), invalid=invalid,
                    duplicate=duplicate)
