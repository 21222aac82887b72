"""Regenerate the committed reference models: `python -m capnas.tools.design.reference_models`."""

from capnas.tools.design.reference_models import write_reference_models

for path in write_reference_models():
    print(f"wrote {path}")
