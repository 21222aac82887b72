"""Re-score a folder of LEMUR files: import each, validate it, train it in the sandbox, score it with the
evaluator (pycocoevalcap on the fixed val split). Every file ends as a row: its metrics, or the one reason it
stopped (refused at import, a contract violation, a failed training job). No number here comes from the
model's own report: metrics are the evaluator's, from the ids the sandbox wrote."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capnas.contracts import Contract, caption_net_v1
from capnas.tools.lemur.importer import LemurImportError, import_lemur

# LEMUR's models have 6M-100M parameters and were never sized for caption-net-v1's defaults.
LEMUR_BUDGETS = {"max_params": 200_000_000, "max_latency_ms": 60_000.0, "max_probe_s": 600.0,
                 "max_memory_mb": 8192}


@dataclass
class LemurRow:
    """One file of the folder: `stage` is where it stopped (import, validate, train) or `scored`."""

    file: str
    stage: str
    reason: str | None = None
    params: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    module: str | None = None  # the imported caption-net-v1 module, when it imported

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "stage": self.stage, "reason": self.reason, "params": self.params,
                "metrics": self.metrics}


def lemur_contract(vocab_size: int, image_size: int, max_len: int, **budgets: Any) -> Contract:
    """caption-net-v1 with LEMUR-sized budgets (a keyword overrides one)."""
    return caption_net_v1(vocab_size, image_size, max_len, **{**LEMUR_BUDGETS, **budgets})


def lemur_files(folder: Path) -> list[Path]:
    """The model files of a LEMUR folder, in name order (`__init__.py` and the like are not models)."""
    return sorted(p for p in Path(folder).glob("*.py") if not p.name.startswith("_"))


def score_folder(folder: Path, contract: Contract, train: Callable[[str, Path], Any], run_root: Path, *,
                 device: str = "cpu", on_row: Callable[[LemurRow], None] | None = None) -> list[LemurRow]:
    """One row per file of `folder`. `train(module_source, run_dir)` trains an imported, valid module and
    returns a `TrainResult` (`capnas.tools.jobs.training.train_candidate` with the task bound)."""
    from capnas.tools.jobs.validation import validate_code

    rows = []
    for path in lemur_files(folder):
        row = LemurRow(file=path.name, stage="import")
        try:
            row.module = import_lemur(path.read_text(encoding="utf-8"), f"{path.name}")
        except (OSError, UnicodeDecodeError) as exc:
            row.reason = f"cannot read it: {exc}"
        except LemurImportError as exc:
            row.reason = str(exc)
        if row.module is not None:
            report = validate_code(row.module, contract, device)
            row.params = report.params
            if not report.ok:
                row.stage = "validate"
                first = report.violations[0]
                more = f" (and {len(report.violations) - 1} more)" if len(report.violations) > 1 else ""
                row.reason = f"{first.code} {first.message}{more}"
            else:
                result = train(row.module, Path(run_root) / path.stem)
                row.params = result.params or row.params
                if result.ok:
                    row.stage, row.metrics = "scored", dict(result.metrics)
                else:
                    row.stage = "train"
                    row.reason = f"{result.exit_reason}: {' '.join((result.error or '').split())[-300:]}"
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def leaderboard(rows: list[LemurRow]) -> list[LemurRow]:
    """Scored files first, best CIDEr first; then the rest in the order of the folder."""
    scored = sorted((r for r in rows if r.stage == "scored"), key=lambda r: -r.metrics.get("cider", 0.0))
    return scored + [r for r in rows if r.stage != "scored"]
