"""Reference caption-net-v1 models: rendered from fixed specs and committed beside this file, so that they can
be read, diffed and trained as known-good baselines. After changing a snippet, the glue or a spec below:

    .venv/bin/python -m capnas.tools.design.reference_models

A test fails while a committed file differs from a fresh render.
"""

from __future__ import annotations

from pathlib import Path

from capnas.tools.design.archspec import ArchSpec, render
from capnas.tools.design.components.options import (
    EfficientNetLite0Options,
    GRUOptions,
    LSTMOptions,
    SmallCNNOptions,
    TransformerOptions,
)

DIRECTORY = Path(__file__).parent

REFERENCE_SPECS: dict[str, ArchSpec] = {
    # Show, Attend and Tell on a frozen pretrained backbone: the classic strong baseline for small data.
    "efficientnet_lstm_attention": ArchSpec(
        encoder=EfficientNetLite0Options(freeze=True),
        decoder=LSTMOptions(embed_dim=256, hidden_size=512, num_layers=1, attention=True),
        dropout=0.3, lr=4e-4, weight_decay=0.0, grad_clip=5.0, batch_size=32, epochs=10,
    ),
    # The same backbone with a transformer decoder cross-attending to the 1280-d tokens.
    "efficientnet_transformer": ArchSpec(
        encoder=EfficientNetLite0Options(freeze=True),
        decoder=TransformerOptions(d_model=256, num_layers=2, heads=4),
        dropout=0.1, lr=3e-4, weight_decay=0.01, grad_clip=1.0, batch_size=32, epochs=10,
    ),
    # Nothing pretrained: a small CNN and a GRU started from the mean image token (no attention).
    "small_cnn_gru": ArchSpec(
        encoder=SmallCNNOptions(width=32, depth=3, grid=7),
        decoder=GRUOptions(embed_dim=256, hidden_size=512, num_layers=1, attention=False),
        dropout=0.3, lr=1e-3, weight_decay=0.0, grad_clip=5.0, batch_size=32, epochs=15,
    ),
}


def reference_path(name: str, directory: Path = DIRECTORY) -> Path:
    if name not in REFERENCE_SPECS:
        raise KeyError(f"unknown reference model {name!r}; known: {', '.join(REFERENCE_SPECS)}")
    return directory / f"{name}.py"


def reference_source(name: str) -> str:
    """The committed source of one reference model."""
    return reference_path(name).read_text()


def write_reference_models(directory: Path = DIRECTORY) -> list[Path]:
    """Render every reference spec into `directory`; returns the files written."""
    paths = []
    for name, spec in REFERENCE_SPECS.items():
        path = reference_path(name, directory)
        path.write_text(render(spec))
        paths.append(path)
    return paths


__all__ = ["DIRECTORY", "REFERENCE_SPECS", "reference_path", "reference_source", "write_reference_models"]
