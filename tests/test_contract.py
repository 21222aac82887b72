"""The contract as data: clause table, rendering (the coder's prompt text), factories and lookups."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from capnas.contracts import CONTRACTS, Contract, caption_net_v1, get_contract

REPO = Path(__file__).resolve().parents[1]
CODE = re.compile(r"\b[A-Z]{3}-\d{3}\b")


@pytest.fixture
def contract() -> Contract:
    return caption_net_v1(vocab_size=123, image_size=48, max_len=14, max_params=777_000, max_latency_ms=33.0,
                          max_probe_s=21.0, max_memory_mb=2048)


def test_render_holds_every_clause_code_rule_and_hint(contract: Contract) -> None:
    text = contract.render()
    for clause in contract.clauses:
        assert f"- {clause.code}: {clause.rule}\n  Hint: {clause.hint}\n" in text, clause.code


def test_render_is_deterministic_and_survives_the_trip_into_the_sandbox(contract: Contract) -> None:
    again = Contract.model_validate(contract.model_dump(mode="json"))
    assert again == contract
    assert contract.render() == contract.render() == again.render()
    assert caption_net_v1(vocab_size=123, image_size=48, max_len=14, max_params=777_000, max_latency_ms=33.0,
                          max_probe_s=21.0, max_memory_mb=2048).render() == contract.render()


def test_render_states_the_numbers_the_checks_enforce(contract: Contract) -> None:
    text = contract.render()
    for fragment in ("in_shape = (32, 3, 48, 48)", "out_shape = (123,)", "`[B, Ncap, 14]`",
                     "logits `[B, 13, 123]`", "at most 777,000 parameters", "at most 33 ms",
                     "within 21 s and 2048 MB", "PAD=0, BOS=1, EOS=2, UNK=3", "lr=0.001", "momentum=0.9",
                     "dropout=0.1", "any other declared name = 0.5", "torch.hub", "efficientnet_lite_pytorch"):
        assert fragment in text, fragment
    assert "Every generated id is in [0, 123)" in contract.clause("OUT-004").rule


def test_clause_codes_are_unique_and_cover_each_family(contract: Contract) -> None:
    codes = [c.code for c in contract.clauses]
    assert len(codes) == len(set(codes))
    assert {c[:3] for c in codes} == {"SYN", "IMP", "SEC", "SIG", "HYP", "RUN", "TRN", "OUT", "BUD"}


def test_every_code_the_checkers_emit_is_in_the_clause_table(contract: Contract) -> None:
    sources = [*sorted((REPO / "contracts").glob("*.py")), REPO / "tools" / "jobs" / "validation.py"]
    emitted = {code for path in sources for code in CODE.findall(path.read_text())}
    known = {c.code for c in contract.clauses}
    assert emitted, "found no codes in the checkers"
    assert emitted <= known, f"codes used but not in the clause table: {sorted(emitted - known)}"


def test_violation_carries_the_clause_rule_and_hint(contract: Contract) -> None:
    v = contract.violation("TRN-004", "only captions[:, 0]", line=12)
    clause = contract.clause("TRN-004")
    assert v.model_dump() == {"code": "TRN-004", "clause": clause.rule, "message": "only captions[:, 0]",
                              "line": 12, "hint": clause.hint}


def test_unknown_clause_code_is_a_key_error_naming_it(contract: Contract) -> None:
    with pytest.raises(KeyError, match="XYZ-999"):
        contract.violation("XYZ-999", "nope")


def test_contract_is_immutable(contract: Contract) -> None:
    with pytest.raises(pydantic.ValidationError):
        contract.vocab_size = 5  # type: ignore[misc]


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"vocab_size": 4}, "vocab_size"),
    ({"vocab_size": 50, "image_size": 4}, "image_size"),
    ({"vocab_size": 50, "max_len": 2}, "max_len"),
])
def test_factory_rejects_impossible_tasks(kwargs: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        caption_net_v1(**kwargs)


def test_budgets_must_be_positive() -> None:
    with pytest.raises(pydantic.ValidationError, match="max_params"):
        caption_net_v1(50, max_params=0)


def test_duplicate_clause_codes_are_rejected(contract: Contract) -> None:
    data = contract.model_dump()
    data["clauses"] = [*data["clauses"], data["clauses"][0]]
    with pytest.raises(pydantic.ValidationError, match="duplicate clause codes"):
        Contract.model_validate(data)


def test_get_contract_by_name() -> None:
    assert set(CONTRACTS) == {"caption-net-v1"}
    assert get_contract("caption-net-v1", vocab_size=60).vocab_size == 60
    with pytest.raises(KeyError, match="caption-net-v9"):
        get_contract("caption-net-v9", vocab_size=60)


def test_contract_and_validator_import_without_torch() -> None:
    # The validator runs in the agent's process; torch belongs only inside the sandboxed probe.
    code = ("import sys, capnas.contracts, capnas.tools.jobs.validation, capnas.commands.validate_cmd; "
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
