"""`capnas eval`: score a COCO-format results file against a dataset split."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from capnas.commands._checks import OneLineErrors, fail, load_data

COMMAND = "eval"
METRIC_LABELS = {"bleu_1": "BLEU-1", "bleu_2": "BLEU-2", "bleu_3": "BLEU-3", "bleu_4": "BLEU-4",
                 "meteor": "METEOR", "rouge_l": "ROUGE-L", "cider": "CIDEr", "spice": "SPICE"}


class EvalSplit(str, Enum):
    val = "val"
    test = "test"


def register(app: typer.Typer) -> None:
    @app.command("eval", cls=OneLineErrors)
    def eval_command(
        captions: Path = typer.Argument(
            ..., metavar="CAPTIONS.json",
            help='COCO results file: a JSON list of {"image_id": ..., "caption": "..."}; '
            "image_id is the dataset's image id (Karpathy imgid, COCO id) or the image's file name."),
        dataset: str = typer.Option(
            ..., "--dataset", metavar="SPEC",
            help="'shapes', 'shapes:N', or the path of a Karpathy/COCO captions json."),
        images: Path | None = typer.Option(
            None, "--images", metavar="DIR", help="Image folder of a json dataset (default: images/ beside the json)."),
        split: EvalSplit = typer.Option(..., "--split", help="The split the captions were generated for."),
        as_json: bool = typer.Option(
            False, "--json", help="Print one JSON object of lower-case metric keys instead of a table."),
    ) -> None:
        """Score captions with BLEU-1..4, METEOR, ROUGE-L and CIDEr (pycocoevalcap; needs Java).

        Every image of the split needs exactly one caption. Exit status: 0 ok, 2 bad input, 1 metrics failed."""
        from capnas.tools.scoring.metrics import (
            CaptionEvaluator, CaptionInputError, MetricsError, check_inputs, pair_with_split, read_results)

        # The inputs are read and paired before the evaluator starts its Java process.
        try:
            entries = read_results(captions)
        except CaptionInputError as exc:
            fail(COMMAND, str(exc))
        data = load_data(COMMAND, dataset, images)
        try:
            refs, cands = pair_with_split(entries, data.split(split.value), source=captions, split=split.value)
            check_inputs(refs, cands)
        except CaptionInputError as exc:
            fail(COMMAND, str(exc))
        try:
            with CaptionEvaluator() as evaluator:
                result = evaluator.score(refs, cands)
        except CaptionInputError as exc:
            fail(COMMAND, str(exc))
        except MetricsError as exc:
            fail(COMMAND, str(exc), 1)

        for metric, reason in result.unavailable.items():
            typer.echo(f"note: {METRIC_LABELS.get(metric, metric)} not computed: {reason}", err=True)
        if as_json:
            typer.echo(json.dumps(result.scores))
            return
        _print_table(result.scores, result.unavailable, title=f"{data.name} {split.value}: {result.n_images} images")


def _print_table(scores: dict[str, float], unavailable: dict[str, str], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, min_width=len(title) + 4)
    table.add_column("metric")
    table.add_column("score", justify="right")
    for key, value in scores.items():
        table.add_row(METRIC_LABELS.get(key, key), f"{value:.4f}")
    for key in unavailable:
        table.add_row(METRIC_LABELS.get(key, key), "n/a")
    Console().print(table)
