"""The files a finished run leaves for people: the HTML report, the best model's card and the exported model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from capnas.tools.report.export import export_model
from capnas.tools.report.html_report import write_html_report
from capnas.tools.report.model_card import build_model_card
from capnas.tools.report.run_data import RunData, RunRecord


@dataclass
class ReportFiles:
    html: Path
    model_card: Path | None  # MODEL_CARD.md of the best model
    model_dir: Path | None  # the exported best model


def write_report_bundle(record: RunRecord, workspace: str | Path, *, out: Path | None = None,
                        export: bool = True, layer_probe: bool = True) -> ReportFiles:
    """The HTML report at `out` (default `<workspace>/runs/<run>/report.html`), the best model's card beside it
    (MODEL_CARD.md) and, with `export`, the best model exported to `<workspace>/runs/<run>/model/`."""
    data = RunData(record, Path(workspace))
    run_root = data.workspace / "runs" / data.run_id
    card = build_model_card(data, data.best, layer_probe=layer_probe) if data.best is not None else None
    html = write_html_report(data, out or run_root / "report.html", card=card)
    card_path = model_dir = None
    if card is not None:
        card_path = html.parent / "MODEL_CARD.md"
        card_path.write_text(card.to_markdown(), encoding="utf-8")
        if export:
            model_dir = export_model(data, run_root / "model", card=card)
    return ReportFiles(html=html, model_card=card_path, model_dir=model_dir)
