"""The dynamic probe in-process: its result document, hyperparameter defaults, frozen parts, and how it turns
whatever the candidate raises into violations that point at the candidate's line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from capnas.contracts import caption_net_v1
from capnas.contracts.probe import run_probe

FIXTURES = Path(__file__).parent / "fixtures" / "models"
BASE = FIXTURES / "valid" / "cnn_lstm.py"
CONTRACT = caption_net_v1(vocab_size=40, image_size=32, max_len=12, max_params=500_000, max_latency_ms=150.0)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def variant(tmp_path: Path, old: str, new: str, source: Path = BASE) -> Path:
    text = source.read_text()
    assert old in text, old
    path = tmp_path / "candidate.py"
    path.write_text(text.replace(old, new, 1))
    return path


def line_of(path: Path, fragment: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if fragment in line)


def codes(result: dict) -> list[str]:
    return [v["code"] for v in result["violations"]]


def test_result_document_of_a_valid_model() -> None:
    result = run_probe(str(BASE), CONTRACT.model_dump(mode="json"), device="cpu", seed=0)
    assert json.loads(json.dumps(result)) == result  # JSON-able as is
    assert result["ok"] is True and result["violations"] == []
    assert result["params"] == result["trainable_params"] > 0 and result["frozen_params"] == 0
    assert result["latency_ms"] > 0 and result["loss"] > 0
    assert {"import", "learn(train_data)", "forward(images)", "total"} <= set(result["timings"])
    assert result["hyperparameters"] == {"dropout": 0.1, "lr": 1e-3, "momentum": 0.9, "max_len": 12}


def test_given_hyperparameters_win_and_unknown_names_get_the_default(tmp_path: Path) -> None:
    path = variant(tmp_path, 'return {"lr", "momentum", "dropout"}', 'return {"lr", "momentum", "dropout", "beta"}')
    path.write_text(path.read_text().replace('self.max_len = int(prm["max_len"])',
                                             'self.max_len = int(prm["max_len"] + 0 * prm["beta"])'))
    result = run_probe(path, CONTRACT, prm={"lr": 0.05, "max_len": 99})
    assert result["ok"], result["violations"]
    assert result["hyperparameters"] == {"beta": 0.5, "dropout": 0.1, "lr": 0.05, "momentum": 0.9, "max_len": 12}


def test_a_frozen_encoder_is_reported_not_rejected() -> None:
    result = run_probe(FIXTURES / "valid" / "frozen_cnn_gru.py", CONTRACT)
    assert result["ok"], result["violations"]
    frozen_conv = 16 * 3 * 5 * 5 + 16
    assert result["frozen_params"] == frozen_conv
    assert result["trainable_params"] == result["params"] - frozen_conv


def test_an_exception_points_at_the_candidate_line_and_keeps_the_last_traceback_line(tmp_path: Path) -> None:
    path = variant(tmp_path, "            loss.backward()\n",
                   "            loss.backward()\n            raise ValueError('gradient check failed')\n")
    result = run_probe(path, CONTRACT)
    [violation] = [v for v in result["violations"] if v["code"] == "TRN-001"]
    assert violation["line"] == line_of(path, "gradient check failed")
    assert violation["message"] == "learn(train_data) raised ValueError: gradient check failed"
    assert "OUT-002" not in codes(result)  # inference still ran, and passed


def test_system_exit_from_the_candidate_does_not_end_the_probe(tmp_path: Path) -> None:
    path = variant(tmp_path, "        super().__init__()\n", "        super().__init__()\n        raise SystemExit(3)\n")
    result = run_probe(path, CONTRACT)
    assert codes(result) == ["RUN-002"] and "SystemExit: 3" in result["violations"][0]["message"]
    assert result["params"] is None


def test_an_import_error_stops_everything_after_it(tmp_path: Path) -> None:
    path = variant(tmp_path, "PAD, BOS, EOS = 0, 1, 2\n", "PAD, BOS, EOS = 0, 1, 2\nTABLE = [1, 2][5]\n")
    result = run_probe(path, CONTRACT)
    assert codes(result) == ["RUN-001"]
    assert result["violations"][0]["line"] == line_of(path, "TABLE = ")
    assert "IndexError" in result["violations"][0]["message"]


def test_hyperparameters_declared_out_of_sight_of_the_static_checks(tmp_path: Path) -> None:
    path = variant(tmp_path, 'def supported_hyperparameters():\n    return {"lr", "momentum", "dropout"}',
                   'NAMES = ("lr", "momentum", "dropout", "warmup")\n\n\n'
                   'def supported_hyperparameters():\n    return set(NAMES)')
    result = run_probe(path, CONTRACT)
    assert codes(result) == ["HYP-002"] and "warmup" in result["violations"][0]["message"]


def test_supported_hyperparameters_must_return_a_set_of_str(tmp_path: Path) -> None:
    path = variant(tmp_path, 'return {"lr", "momentum", "dropout"}', 'return dict(lr=1, momentum=2, dropout=3)')
    assert "HYP-001" in codes(run_probe(path, CONTRACT))


def test_sampling_one_reference_per_image_counts_as_using_all_of_them(tmp_path: Path) -> None:
    path = variant(
        tmp_path,
        "            images = images.repeat_interleave(n_cap, dim=0)\n"
        "            captions = captions.reshape(-1, length)\n",
        "            pick = torch.randint(n_cap, (captions.size(0),), device=captions.device)\n"
        "            captions = captions[torch.arange(captions.size(0)), pick]\n")
    result = run_probe(path, CONTRACT)
    assert result["ok"], result["violations"]


def test_the_probe_checks_its_own_time_budget() -> None:
    hurried = caption_net_v1(vocab_size=40, image_size=32, max_len=12, max_probe_s=0.001)
    result = run_probe(BASE, hurried)
    assert codes(result) == ["BUD-003"]


def test_report_steps_prints_one_event_per_step(capfd: pytest.CaptureFixture[str]) -> None:
    run_probe(BASE, CONTRACT, report_steps=True)
    events = [json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    steps = [e["step"] for e in events if e["event"] == "probe_step"]
    assert steps[:3] == ["import", "import", "supported_hyperparameters()"]
    assert "learn(train_data)" in steps and steps[-1] == "forward(images) with a batch of 1"
    assert {e["method"] for e in events if e["step"] == "learn(train_data)"} == {"learn"}


def test_a_missing_file_is_a_run_violation_not_a_crash(tmp_path: Path) -> None:
    result = run_probe(tmp_path / "absent.py", CONTRACT)
    assert codes(result) == ["RUN-001"] and "absent.py" in result["violations"][0]["message"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("path", sorted((FIXTURES / "valid").glob("*.py")), ids=lambda p: p.stem)
def test_valid_fixtures_pass_on_the_gpu(path: Path) -> None:
    result = run_probe(path, CONTRACT, device="cuda")
    assert result["ok"], result["violations"]


DEVICE_TYPE_MODEL = ("        self.device = torch.device(device)\n",
                     "        self.device = device  # used as handed over: a torch.device, as in training\n"
                     "        self.amp = self.device.type == 'cuda'\n")


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")], ids=["str", "torch.device"])
def test_the_model_gets_a_torch_device_as_in_training(tmp_path: Path, device) -> None:
    """Training and generation build Net(..., torch.device); so does the probe, whatever its caller passed:
    a model that reads `device.type` in __init__ is valid here too (it crashed with a plain string)."""
    path = variant(tmp_path, *DEVICE_TYPE_MODEL)
    result = run_probe(path, CONTRACT, device=device)
    assert result["ok"], result["violations"]
    assert result["device"] == "cpu"  # still JSON: the result goes through result.json


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_model_gets_a_torch_device_on_the_gpu(tmp_path: Path) -> None:
    path = variant(tmp_path, *DEVICE_TYPE_MODEL)
    result = run_probe(path, CONTRACT, device="cuda")
    assert result["ok"], result["violations"]
    assert result["device"] == "cuda"
