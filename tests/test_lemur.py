"""LEMUR exchange (issue #19): `capnas lemur import` on the corpus of real nn-dataset captioning files (the 13
of the released nn-dataset 2.1.2 wheel, fetched from the package registry by tests/lemur_corpus.py; what each
gives is summarized in tests/fixtures/lemur/README.md), the adapter's behaviour in-process on small batches, and
the one-line refusals.

Quick tests only; the sandboxed validation of every importable file and `capnas lemur score` are in
tests/test_lemur_sandbox.py (slow)."""

from __future__ import annotations

import ast
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from capnas.contracts import caption_net_v1, check_source
from capnas.tools.lemur.importer import LemurImportError, import_lemur
from lemur_corpus import FILES, VERSION, WHEEL_SHA256, lemur_corpus  # noqa: F401 - lemur_corpus is a fixture

README = Path(__file__).parent / "fixtures" / "lemur" / "README.md"
CAPNAS = [sys.executable, "-m", "capnas"]
LSTM_A = "C5C-RESNETLSTM-c42512d71480c8ef10f31e3e6c33bbdf.py"  # 3.8M parameters: ids that end on EOS
LSTM_B = "C5C-RESNETLSTM-2710f3b99727c92b2c7ead7bfa8efe49.py"  # 2.5M: 50 ids, no EOS
LOGITS = "C10C-RESNETLSTM-8f7ac9c241d5b9546f8cd3484e0e100b.py"  # 17M: [B, T, V] logits at inference

# What `capnas lemur import` does with each file of the corpus: None imports, else words of the refusal.
EXPECTED_IMPORT = {name: None for name in FILES} | {
    "ConvNeXtTransformer.py": "line 14: SEC-002 torchvision.models.convnext_tiny(weights=weights) would download weights",
    # Its resnet50 with ImageNet weights (line 18) is among the "3 more"; `import torchvision` is named first.
    "RESNETLSTM.py": "line 4: IMP-001 import of torchvision is not allowed (and 3 more)",
    "ResNetTransformer.py": "line 31: SEC-002 torchvision.models.resnet50(weights=models.ResNet50_Weights.IMAGENET1K_V2)",
}
PRM = {"lr": 1e-3, "momentum": 0.9, "dropout": 0.1, "max_len": 8}
VOCAB = 30


def test_the_corpus_is_the_thirteen_captioning_files_of_the_release(lemur_corpus: Path) -> None:
    files = sorted(p.name for p in lemur_corpus.glob("*.py"))
    assert files == sorted(EXPECTED_IMPORT) and len(files) == 13
    readme = README.read_text()
    assert f"nn-dataset {VERSION}" in readme and WHEEL_SHA256 in readme and "MIT" in readme
    assert all(f"`{name}`" in readme for name in files)
    assert not list(README.parent.glob("*.py"))  # third-party code is fetched, never stored here


@pytest.mark.parametrize("name", sorted(EXPECTED_IMPORT))
def test_each_corpus_file_imports_or_is_refused_with_its_defect(lemur_corpus: Path, name: str) -> None:
    source = (lemur_corpus / name).read_text(encoding="utf-8")
    expected = EXPECTED_IMPORT[name]
    if expected is not None:
        with pytest.raises(LemurImportError, match=None) as refused:
            import_lemur(source, name)
        assert expected in str(refused.value) and "\n" not in str(refused.value)
        return
    module = import_lemur(source, name)
    # The static clauses all hold: the adapter supplies what LEMUR files lack (module-level hyperparameters).
    assert check_source(module, caption_net_v1(vocab_size=VOCAB)) == []
    # LEMUR's code is there line for line; only the loader-vocabulary import may differ.
    kept = source.rstrip("\n").splitlines()
    lines = module.splitlines()
    start = lines.index(kept[0])
    changed = [a for a, b in zip(kept, lines[start:start + len(kept)]) if a != b]
    assert all("GLOBAL_CAPTION_VOCAB" in a for a in changed), changed


def test_the_loader_vocabulary_import_becomes_the_shared_special_ids(lemur_corpus: Path) -> None:
    # The file imports LEMUR's loader vocabulary inside a try at line 8 (an empty dict when it fails).
    module = import_lemur((lemur_corpus / LOGITS).read_text(), LOGITS)
    assert "    GLOBAL_CAPTION_VOCAB = {'word2idx': {'<PAD>': 0, '<SOS>': 1, '<EOS>': 2, '<UNK>': 3}" in module
    assert "except line 8" in module and "from ab.nn" not in module.replace("was `from ab.nn", "")


def test_a_hyperparameter_method_alone_gets_a_module_level_function() -> None:
    source = _lemur(GOOD_METHODS + "    def forward(self, images, captions=None):\n        return images\n"
                    "    def supported_hyperparameters(self):\n        return {'lr', 'momentum'}\n",
                    head="import torch\nimport torch.nn as nn\n")
    namespace: dict = {}
    exec(compile(import_lemur(source, "x.py"), "x.py", "exec"), namespace)  # noqa: S102 - our own source
    assert namespace["supported_hyperparameters"]() == {"lr", "momentum"}


def _lemur(net_body: str, head: str = "import torch\nimport torch.nn as nn\n\n\ndef supported_hyperparameters():\n"
           "    return {'lr'}\n\n\n") -> str:
    return head + "class Net(nn.Module):\n" + net_body


GOOD_METHODS = ("    def __init__(self, in_shape, out_shape, prm, device):\n        super().__init__()\n"
                "    def train_setup(self, prm):\n        self.lr = prm['lr']\n"
                "    def learn(self, train_data):\n        pass\n")


@pytest.mark.parametrize(("source", "words"), [
    ("x = (", "syntax error at line 1"),
    ("import torch\n\ndef supported_hyperparameters():\n    return {'lr'}\n", "no module-level class Net"),
    (_lemur(GOOD_METHODS + "    def forward(self, x):\n        return x\n"), "not a captioner: Net has forward(self, x)"),
    (_lemur(GOOD_METHODS.replace("learn(self, train_data)", "learn(self, train_data, epochs)")
            + "    def forward(self, images, captions=None):\n        return images\n"),
     "Net.learn(self, train_data, epochs) at line 14 cannot be called as learn(train_data)"),
    (_lemur(GOOD_METHODS.replace("    def train_setup(self, prm):\n        self.lr = prm['lr']\n", "")
            + "    def forward(self, images, captions=None):\n        return images\n"), "Net has no train_setup(prm)"),
    (_lemur(GOOD_METHODS + "    def forward(self, images, captions=None):\n        return images\n"
            "    def supported_hyperparameters(self):\n        return HP\n", head="import torch\nimport torch.nn as nn\n"),
     "does not return a set literal"),
    (_lemur(GOOD_METHODS + "    def forward(self, images, captions=None):\n        return images\n",
            head="import os\nimport torch\nimport torch.nn as nn\n\ndef supported_hyperparameters():\n    return {'lr'}\n"),
     "line 1: IMP-001 import of os is not allowed"),
    (_lemur(GOOD_METHODS + "    def forward(self, images, captions=None):\n        return open('w').read()\n"),
     "SEC-002 use of the builtin open"),
])
def test_defects_are_refused_in_one_line(source: str, words: str) -> None:
    with pytest.raises(LemurImportError) as refused:
        import_lemur(source, "x.py")
    assert words in str(refused.value), str(refused.value)
    assert "\n" not in str(refused.value)


# -- the adapter, in-process on trusted corpus files ------------------------------------------------------


def _load(corpus: Path, name: str) -> types.ModuleType:
    module = types.ModuleType(f"lemur_{name.replace('-', '_').replace('.py', '')}")
    exec(compile(import_lemur((corpus / name).read_text(), name), name, "exec"), module.__dict__)  # noqa: S102
    return module


def _batches(lengths=(7, 9), ncap=3, b=2):
    """LEMUR-style batches: 3-D captions [B, Ncap, L] of varying L, BOS first, EOS last, one all-PAD filler."""
    g = torch.Generator().manual_seed(0)
    out = []
    for length in lengths:
        caps = torch.randint(4, VOCAB, (b, ncap, length), generator=g)
        caps[:, :, 0], caps[:, :, -1] = 1, 2
        caps[-1, -1] = 0  # LEMUR's collate pads a missing reference with a PAD row
        out.append((torch.randn(b, 3, 32, 32, generator=g), caps))
    return out


def test_learn_trains_on_every_reference_and_returns_the_mean_loss_its_criterion_computed(lemur_corpus: Path) -> None:
    torch.manual_seed(0)
    module = _load(lemur_corpus, LSTM_A)
    assert module.supported_hyperparameters() == {"lr", "momentum"}
    net = module.Net((2, 3, 32, 32), (VOCAB,), dict(PRM), torch.device("cpu"))
    net.train_setup(dict(PRM))
    seen = []
    net.rnn.embed.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape))  # the decoder's word ids
    before = [p.detach().clone() for p in net.parameters()]
    loss = net.learn(_batches())
    # 2 images x 3 references, less the one PAD filler row: 5 captions per batch reach LEMUR's decoder.
    assert [s[:2] for s in seen] == [(5, 6), (5, 8)]
    assert isinstance(loss, float) and loss == pytest.approx(sum(net._capnas_losses) / 2)
    assert 2.0 < loss < 6.0  # cross-entropy of a fresh model over 30 words is about ln 30 = 3.4
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


# Ids that end on EOS, 50 ids with no end, [B, T, V] logits; the transformers with their own 20- and 50-step
# decoders are left to the slow sandboxed validation (tests/test_lemur_sandbox.py).
@pytest.mark.parametrize("name", [LSTM_A, LSTM_B, LOGITS])
def test_inference_gives_eos_terminated_ids_within_max_len(lemur_corpus: Path, name: str) -> None:
    torch.manual_seed(0)
    net = _load(lemur_corpus, name).Net((2, 3, 32, 32), (VOCAB,), dict(PRM), torch.device("cpu"))
    net.train_setup(dict(PRM))
    net.learn(_batches())
    net.eval()
    images = _batches()[0][0]
    with torch.no_grad():
        ids = net(images)
        logits = net(images, _batches()[0][1][:, 0])
    assert ids.dtype == torch.long and ids.shape[0] == 2 and 1 <= ids.shape[1] <= PRM["max_len"]
    for row in ids.tolist():
        assert 2 in row and row[0] != 1
        assert all(t == 0 for t in row[row.index(2) + 1:])
    assert logits.shape == (2, 6, VOCAB)  # one logit row per position predicting captions[:, 1:]


def test_terminate_drops_bos_ends_at_eos_or_pad_and_bounds_the_length(lemur_corpus: Path) -> None:
    terminate = _load(lemur_corpus, LSTM_A)._capnas_terminate
    ids = torch.tensor([[1, 5, 6, 2, 7, 8], [1, 1, 9, 0, 4, 4], [5, 6, 7, 8, 9, 10]])
    assert terminate(ids, 5).tolist() == [[5, 6, 2, 0, 0], [9, 2, 0, 0, 0], [5, 6, 7, 8, 2]]


# -- the command line -------------------------------------------------------------------------------------


def test_cli_import_writes_the_module_and_refuses_with_exit_1(lemur_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "net.py"
    done = subprocess.run([*CAPNAS, "lemur", "import", str(lemur_corpus / LSTM_A), "-o", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ast.parse(out.read_text())
    broken = tmp_path / "broken.py"  # no file of the release has a syntax error: a synthetic one
    broken.write_text("import torch\n\nclass Net(torch.nn.Module:\n    pass\n")
    refused = subprocess.run([*CAPNAS, "lemur", "import", str(broken), "-o", str(tmp_path / "x.py")],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and not (tmp_path / "x.py").exists()
    assert refused.stderr.strip().splitlines() == [
        f"capnas lemur import: {broken}: refused: syntax error at line 3: invalid syntax "
        "(LEMUR could not import it either)"]
    missing = subprocess.run([*CAPNAS, "lemur", "import", str(tmp_path / "nope.py"), "-o", str(out)],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.strip() == f"capnas lemur import: {tmp_path / 'nope.py'}: no such file"
    assert "Traceback" not in refused.stderr + missing.stderr


@pytest.mark.parametrize(("args", "line"), [
    (["{missing}", "--dataset", "shapes:30"], "capnas lemur score: {missing}: no such folder"),
    (["{empty}", "--dataset", "shapes:30"], "capnas lemur score: {empty}: no .py model files in it"),
    (["{corpus}", "--dataset", "shapes:30", "--epochs", "0"], "capnas lemur score: --epochs 0: must be between 1 and 500"),
    (["{corpus}", "--dataset", "nope.json"], "capnas lemur score: --dataset nope.json: unknown dataset 'nope.json'"),
])
def test_cli_score_refuses_bad_input_before_anything_runs(lemur_corpus: Path, tmp_path: Path, args: list[str],
                                                          line: str) -> None:
    (tmp_path / "empty").mkdir()
    where = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "corpus": lemur_corpus}
    args = [a.format(**where) for a in args]
    done = subprocess.run([*CAPNAS, "lemur", "score", *args, "--run-dir", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith(line.format(**where))
    assert not (tmp_path / "runs").exists()  # nothing ran
