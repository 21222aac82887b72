"""`capnas caption MODEL_DIR IMAGE...`: caption images with an exported model. The model's code was generated,
so it runs inside the sandbox, like validation and training did; only the captions come back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import typer


def register(app: typer.Typer) -> None:
    @app.command("caption")
    def caption_command(
        model_dir: Path = typer.Argument(
            ..., metavar="MODEL_DIR", help="A folder `capnas report` or `capnas export` wrote (runs/RUN_ID/model)."),
        images: list[Path] = typer.Argument(..., metavar="IMAGE...", help="Image files (any format Pillow reads)."),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
        as_json: bool = typer.Option(False, "--json", help='Print [{"image": ..., "caption": ...}, ...].'),
        timeout: float = typer.Option(300.0, "--timeout", metavar="SECONDS", help="Wall-clock limit of the job."),
    ) -> None:
        """Print one caption per image: `IMAGE<TAB>caption` lines, or JSON.

        Exit status: 0 ok, 2 bad model folder or image (the message names it) or no sandbox, 1 the model failed."""
        from capnas.sandbox import SandboxError, SandboxUnavailable
        from capnas.tools.report.export import ExportError, ImageInputError, caption_folder_sandboxed, check_folder

        def fail(message: str, code: int) -> NoReturn:
            typer.echo(f"capnas caption: {message}", err=True)
            raise typer.Exit(code)

        try:
            check_folder(model_dir)
        except ExportError as exc:
            fail(str(exc), 2)
        for image in images:
            if not image.is_file():
                fail(f"image file not found: {image}", 2)
        try:
            captions = caption_folder_sandboxed(model_dir, images, device=device, wall_s=timeout)
        except (SandboxUnavailable, SandboxError) as exc:
            fail(f"no sandbox to run the model in: {exc}", 2)
        except ImageInputError as exc:
            fail(str(exc), 2)
        except ExportError as exc:
            fail(str(exc), 1)
        if as_json:
            typer.echo(json.dumps([{"image": str(i), "caption": c} for i, c in zip(images, captions)]))
            return
        for image, caption in zip(images, captions):
            typer.echo(f"{image}\t{caption}")
