"""`capnas caption MODEL_DIR IMAGE...`: caption images with an exported model. The model's code was generated,
so it runs inside the sandbox, like validation and training did; only the captions come back."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from capnas.commands._checks import OneLineErrors, check_device, fail

COMMAND = "caption"


def register(app: typer.Typer) -> None:
    @app.command("caption", cls=OneLineErrors)
    def caption_command(
        model_dir: Path = typer.Argument(
            ..., metavar="MODEL_DIR", help="A folder `capnas report` or `capnas export` wrote (runs/RUN_ID/model)."),
        images: list[Path] = typer.Argument(..., metavar="IMAGE...", help="Image files (any format Pillow reads)."),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
        as_json: bool = typer.Option(False, "--json", help='Print [{"image": ..., "caption": ...}, ...].'),
        timeout: float = typer.Option(
            300.0, "--timeout", metavar="SECONDS", min=0.1, help="Wall-clock limit of the job."),
    ) -> None:
        """Print one caption per image: `IMAGE<TAB>caption` lines, or JSON.

        Exit status: 0 ok, 2 bad model folder or image (the message names it) or no sandbox, 1 the model failed."""
        # The device, the images and the folder are checked here, before the sandbox starts (and the cheap
        # checks before torch is imported).
        device = check_device(COMMAND, device, indexed=False)
        if not model_dir.is_dir():
            fail(COMMAND, f"{model_dir} is not a folder; pass the folder `capnas report` exported (runs/<run>/model)")
        for image in images:
            if not image.is_file():
                fail(COMMAND, f"image file not found: {image}")
            problem = _unreadable(image)
            if problem:
                fail(COMMAND, f"cannot read image {image}: {problem}")

        from capnas.sandbox import SandboxError, SandboxUnavailable
        from capnas.tools.report.export import ExportError, ImageInputError, caption_folder_sandboxed, check_folder

        try:
            check_folder(model_dir)
        except ExportError as exc:
            fail(COMMAND, str(exc))
        try:
            captions = caption_folder_sandboxed(model_dir, images, device=device, wall_s=timeout)
        except (SandboxUnavailable, SandboxError) as exc:
            fail(COMMAND, f"no sandbox to run the model in: {exc}")
        except ImageInputError as exc:
            fail(COMMAND, str(exc))
        except ExportError as exc:
            fail(COMMAND, str(exc), 1)
        if as_json:
            typer.echo(json.dumps([{"image": str(i), "caption": c} for i, c in zip(images, captions)]))
            return
        for image, caption in zip(images, captions):
            typer.echo(f"{image}\t{caption}")


def _unreadable(image: Path) -> str | None:
    """Why Pillow cannot read `image` (None when it can). Only the header and the file's structure are read
    here (`verify`); the pixels are decoded in the sandbox, as predict.py does."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image) as opened:
            opened.verify()
    except UnidentifiedImageError:
        return "not an image file Pillow can read"
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt files raise many kinds of errors
        return f"{type(exc).__name__}: {exc}"
    return None
