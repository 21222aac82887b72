"""`capnas export RUN_ID --format lemur` on a real run (`report_run`), and the exported file driven exactly as
LEMUR's harness drives a model (ab/nn/util/Train.py, ab/nn/loader/coco_/Caption.py, as released in nn-dataset
2.1.2): Net(in_shape, out_shape, prm, device) with LEMUR's prm (its hyperparameters, batch, transform; no
max_len), train_setup(prm),
learn over a DataRoll of batches whose captions are [B, Ncap, L] with L the longest caption of each batch (so
longer than the task's max_len at times, and with all-PAD filler references), then net(images) in eval mode."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from report_run import MAX_LEN, RUN_ID, BuiltRun, build_run

pytestmark = pytest.mark.slow

LEMUR_VOCAB = 57  # LEMUR builds its own vocabulary; only the four special ids are shared with capnas
LEMUR_MEAN, LEMUR_STD = (104.01362025, 114.03422265, 119.9165958), (73.6027665, 69.89082075, 70.9150767)


@pytest.fixture
def built(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> BuiltRun:
    run = build_run(tmp_path_factory.getbasetemp() / "report-run")
    monkeypatch.setenv("CAPNAS_CACHE", str(run.cache))
    return run


@pytest.fixture
def exported(built: BuiltRun, tmp_path: Path) -> tuple[Path, str]:
    proc = subprocess.run([sys.executable, "-m", "capnas", "export", RUN_ID, "--format", "lemur", "--workspace",
                           str(built.workspace), "--out", str(tmp_path / "lemur")], capture_output=True, text=True,
                          env=dict(os.environ), timeout=600)
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.splitlines()[0]), proc.stdout


def test_the_export_is_one_lemur_named_file_that_says_what_does_not_carry_over(exported: tuple[Path, str]) -> None:
    path, stdout = exported
    source = path.read_text()
    assert path.name == f"CAPNAS-{hashlib.md5(source.encode()).hexdigest()}.py"  # LEMUR's prefix-md5 naming
    for what in ("weights", "vocabulary", "normalization"):
        assert f"not carried over: {what}:" in stdout
        assert f"#   - {what}:" in source
    assert "prm.get(\"max_len\", _LEMUR_MAX_LEN)" in source and f"_LEMUR_MAX_LEN = {MAX_LEN}" in source


class DataRoll:
    """What LEMUR's learn receives: an iterable over the train loader's batches (ab.nn.util.Classes.DataRoll)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def _lemur_batches(batch: int, size: int, lengths: list[int], ncap: int = 5):
    """Batches as COCOCaptionDataset.collate_fn builds them: <SOS> words <EOS> per reference, padded with
    <PAD> to the batch's longest caption, missing references as all-<PAD> rows; images normalized with the
    loader's mean and deviation (of 0..255 pixels)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for longest in lengths:
        caps = torch.zeros(batch, ncap, longest, dtype=torch.long)
        for i in range(batch):
            for j in range(ncap - (i % 2)):  # odd images have one reference fewer: a PAD row
                n = int(torch.randint(1, longest - 1, (1,), generator=g)) if j else longest - 2
                caps[i, j, 0], caps[i, j, n + 1] = 1, 2
                caps[i, j, 1:n + 1] = torch.randint(4, LEMUR_VOCAB, (n,), generator=g)
        pixels = torch.randint(0, 256, (batch, 3, size, size), generator=g).float()
        images = (pixels - torch.tensor(LEMUR_MEAN).view(1, 3, 1, 1)) / torch.tensor(LEMUR_STD).view(1, 3, 1, 1)
        out.append((images, caps))
    return out


def _load(path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the run's own candidate (rendered from capnas's component library)
    return module


def test_the_exported_model_runs_the_way_lemurs_harness_runs_a_model(exported: tuple[Path, str]) -> None:
    path, _ = exported
    module = _load(path)
    torch.manual_seed(0)
    # optuna_objective: every declared name gets a value (lr, momentum, dropout, else a float in [0, 1]),
    # then batch and transform; no max_len.
    suggested = {"lr": 1e-3, "momentum": 0.9, "dropout": 0.2}
    prm = {name: suggested.get(name, 0.5) for name in module.supported_hyperparameters()}
    prm.update(batch=4, transform="norm_256_flip")
    batches = _lemur_batches(batch=4, size=32, lengths=[9, MAX_LEN + 8, 14])
    in_shape = tuple(batches[0][0].shape)  # get_in_shape: the first batch's images
    device = torch.device("cpu")  # torch_device()

    model = module.Net(in_shape, (LEMUR_VOCAB,), prm, device)
    model.to(device)
    model.train_setup(prm)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.train()
    model.learn(DataRoll(batches))  # LEMUR ignores what learn returns
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())

    model.eval()
    with torch.no_grad():
        outputs = model(batches[1][0].to(device))  # Train.eval: outputs = self.model(inputs)
    assert isinstance(outputs, torch.Tensor) and outputs.dtype == torch.long
    assert outputs.shape[0] == 4 and 1 <= outputs.shape[1] <= MAX_LEN
    assert int(outputs.min()) >= 0 and int(outputs.max()) < LEMUR_VOCAB


def test_without_the_lemur_face_the_capnas_model_fails_on_lemurs_prm(built: BuiltRun) -> None:
    """The symptom the export fixes: LEMUR's prm has no max_len, and a caption-net-v1 model reads it."""
    from capnas.graph.journal import Journal

    best = Journal(built.workspace / "journal.sqlite").leaderboard(RUN_ID)[0]
    module = types.ModuleType("capnas_candidate")
    exec(compile(best.code, "candidate.py", "exec"), module.__dict__)  # noqa: S102 - the run's own spec code
    prm = {name: 0.5 for name in module.supported_hyperparameters()} | {"batch": 4, "transform": "norm_256_flip"}
    with pytest.raises(KeyError, match="max_len"):
        module.Net((4, 3, 32, 32), (LEMUR_VOCAB,), prm, torch.device("cpu"))
