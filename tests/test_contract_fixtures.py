"""The fixture corpus: every valid model passes, every broken one fails with the code on its first line.

Broken fixtures start with `# expect: CODE`; a second line `# via: sandbox` sends them through the real
sandboxed child process (`validate_file`) instead of the in-process probe (the infinite loop could never
come back in-process, and a memory hog must meet the real memory wall)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from capnas.contracts import Contract, caption_net_v1, check_file, must_stop
from capnas.contracts.probe import run_probe

FIXTURES = Path(__file__).parent / "fixtures" / "models"
VALID = sorted((FIXTURES / "valid").glob("*.py"))
BROKEN = sorted((FIXTURES / "broken").glob("*.py"))

# Tiny task: 32 px images, 40 ids, 12-token captions. Budgets sized so the valid fixtures pass with margin.
CONTRACT = caption_net_v1(vocab_size=40, image_size=32, max_len=12, max_params=500_000, max_latency_ms=150.0,
                          max_probe_s=60.0)
# Through the sandbox: a short probe budget, so the infinite loop is stopped soon, and a memory wall that
# leaves `import torch` room but not a runaway cache.
SANDBOX_CONTRACT = caption_net_v1(vocab_size=40, image_size=32, max_len=12, max_params=500_000,
                                  max_latency_ms=150.0, max_probe_s=5.0, max_memory_mb=1536)
SANDBOX_STARTUP_S = 25.0


def expectation(path: Path) -> tuple[str, bool]:
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# expect: "), f"{path.name}: first line must be '# expect: CODE'"
    return lines[0].removeprefix("# expect: ").strip(), lines[1].strip() == "# via: sandbox"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Two shared cores: torch's default of one thread per core makes every tiny op wait on the other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_corpus_size_and_coverage() -> None:
    assert len(VALID) >= 6 and len(BROKEN) >= 30
    expected = {expectation(p)[0] for p in BROKEN}
    known = {c.code for c in CONTRACT.clauses}
    assert expected <= known, sorted(expected - known)
    # RUN-004 (the interpreter itself crashes) has no portable fixture; its mapping is tested on its own.
    assert known - expected == {"RUN-004"}, sorted(known - expected)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_fixture_passes(path: Path) -> None:
    assert check_file(path, CONTRACT) == []
    result = run_probe(path, CONTRACT.model_dump())
    assert result["violations"] == [] and result["ok"] is True
    assert 0 < result["params"] <= CONTRACT.budgets.max_params
    assert result["latency_ms"] > 0 and result["skipped"] == []


@pytest.mark.parametrize("path", [p for p in BROKEN if not expectation(p)[1]], ids=lambda p: p.stem)
def test_broken_fixture_fails_with_its_code(path: Path) -> None:
    code, _ = expectation(path)
    static = check_file(path, CONTRACT)
    if CONTRACT.clause(code).stage == "static":
        assert code in [v.code for v in static], static
        return
    # A dynamic failure must get past the static checks, or the fixture tests nothing at run time.
    assert not must_stop(static), static
    result = run_probe(path, CONTRACT.model_dump())
    found = [v["code"] for v in result["violations"]]
    assert code in found, result["violations"]
    assert result["ok"] is False


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in BROKEN if expectation(p)[1]], ids=lambda p: p.stem)
def test_broken_fixture_fails_in_the_sandbox(path: Path, sandbox_ready: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from capnas.tools.jobs.validation import validate_file

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code, _ = expectation(path)
    report = validate_file(path, SANDBOX_CONTRACT, startup_s=SANDBOX_STARTUP_S)
    assert code in [v.code for v in report.violations], (report.violations, report.sandbox)
    assert report.stage == "probe" and not report.ok


@pytest.fixture
def sandbox_ready() -> None:
    from capnas.sandbox import detect_tier
    from capnas.sandbox.tiers import SandboxUnavailable, require_runnable

    try:
        require_runnable(detect_tier())
    except SandboxUnavailable as e:
        pytest.skip(f"no sandbox on this host: {e}")


def test_contract_reaches_the_probe_as_plain_data() -> None:
    # The harness hands run_probe the JSON form; a Contract object must work the same.
    assert isinstance(Contract.from_data(CONTRACT.model_dump(mode="json")), Contract)
