"""The embedded default, for real: `capnas run` with no LLM configured assembles the local Qwen2.5-Coder model
(from the PyPI part packages, once per cache), serves it with llama.cpp on 127.0.0.1 and runs a small budget
through the whole graph in `spec` mode. Slow: the model answers on the CPU."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from capnas.graph.journal import Journal

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("xllamacpp") is None,
                       reason="the embedded LLM server is not installed: pip install 'capnas[embedded]'"),
]


def test_run_with_no_llm_configured_uses_the_embedded_model(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    done = subprocess.run(
        [sys.executable, "-m", "capnas", "run", "--dataset", "shapes:200", "--max-candidates", "1", "--epochs", "1",
         "--train-time-s", "20", "--threads", "1", "--max-latency-ms", "10000", "--max-params", "50000000", "--run-dir", str(workspace),
         "--no-report", "--json"],
        capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "LLM embedded qwen2.5-coder-0.5b" in done.stderr  # the one-line banner says which LLM
    summary = json.loads(done.stdout)
    assert summary["status"] == "finished" and summary["candidates"] == 1
    assert summary["tokens"] > 0  # the coder (and critic) really asked the local model

    journal = Journal(workspace / "journal.sqlite")
    (cand,) = journal.candidates(summary["run_id"])
    assert cand.mode == "spec" and cand.spec is not None
    calls = {role for role in journal.usage(summary["run_id"])}
    assert "coder" in calls
    # Budgets are wide here, so the rendered spec satisfies the contract by construction: it trains and is scored.
    assert (summary["valid"], summary["trained"], cand.status) == (1, 1, "trained")
    assert set(cand.metrics) >= {"bleu_4", "meteor", "rouge_l", "cider"}
