"""Caption images with an exported capnas model. Needs torch and Pillow only; this file is `predict.py`.

    from predict import caption
    caption(["photo.jpg", pil_image])        # -> ['a dog runs on the grass', ...]

    python predict.py photo.jpg other.png [--json] [--device cuda] [--out captions.json]

The folder beside this file holds `model.py` (caption-net-v1 code), `weights.pt` (its state_dict, loaded with
`weights_only=True`), `vocab.json` (id -> word) and `config.json` (image_size, max_len, hparams).
Images are prepared as in training: RGB, resized to image_size x image_size (bicubic), values in [0, 1].

Running this runs `model.py`, code that passed the caption-net-v1 contract inside capnas's sandbox; here it
runs in-process, unsandboxed, like any Python you install. `capnas caption MODEL_DIR IMAGE...` runs this same
file inside capnas's sandbox instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
PAD, BOS, EOS = 0, 1, 2


class ImageError(ValueError):
    """An image file that cannot be read; the message names it."""


class Captioner:
    """The model of one exported folder, built once, ready to caption batches of images."""

    def __init__(self, model_dir: str | Path = HERE, device: str = "cpu"):
        self.dir = Path(model_dir)
        self.config = json.loads((self.dir / "config.json").read_text())
        self.words = json.loads((self.dir / "vocab.json").read_text())["words"]
        self.size = int(self.config["image_size"])
        self.device = torch.device(device)
        self.seed = int(self.config.get("seed", 0))
        torch.manual_seed(self.seed)
        module = _load_module(self.dir / "model.py", f"capnas_exported_{abs(hash(str(self.dir.resolve())))}")
        prm = {**self.config["hparams"], "max_len": int(self.config["max_len"])}
        self.model = module.Net((1, 3, self.size, self.size), (len(self.words),), prm, self.device)
        state = torch.load(self.dir / "weights.pt", map_location=self.device, weights_only=True)
        self.model.load_state_dict(state)
        self.model.eval()

    def pixels(self, image: str | Path | Image.Image) -> torch.Tensor:
        """uint8 [3, S, S], exactly as capnas prepared the training images."""
        if isinstance(image, Image.Image):
            img = image.convert("RGB")
        else:
            try:
                with Image.open(image) as opened:
                    opened.draft("RGB", (self.size, self.size))  # JPEG: decode at a reduced scale, as in training
                    img = opened.convert("RGB")
            except (OSError, ValueError) as e:
                raise ImageError(f"cannot read image {image}: {e}") from e
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.Resampling.BICUBIC, reducing_gap=3.0)
        data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        return data.view(self.size, self.size, 3).permute(2, 0, 1).contiguous()

    def decode(self, ids: list[int]) -> str:
        words = []
        for i in ids:
            if i == EOS:
                break
            if i not in (PAD, BOS):
                words.append(self.words[i] if 0 <= i < len(self.words) else "<unk>")
        return " ".join(words)

    @torch.no_grad()
    def caption(self, images: list, batch_size: int = 32) -> list[str]:
        out: list[str] = []
        torch.manual_seed(self.seed)
        for start in range(0, len(images), batch_size):
            batch = torch.stack([self.pixels(im) for im in images[start:start + batch_size]])
            ids = self.model(batch.to(self.device).float().div_(255.0))
            out += [self.decode(row) for row in ids.long().cpu().tolist()]
        return out


def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot load the model code {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_CACHE: dict[tuple[str, str], Captioner] = {}


def caption(images: list, model_dir: str | Path = HERE, device: str = "cpu") -> list[str]:
    """One caption per image (file paths or PIL images)."""
    key = (str(Path(model_dir).resolve()), device)
    if key not in _CACHE:
        _CACHE[key] = Captioner(model_dir, device)
    return _CACHE[key].caption(list(images))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Caption images with this exported capnas model.")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--json", action="store_true", help='print [{"image": ..., "caption": ...}, ...]')
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model-dir", default=str(HERE))
    parser.add_argument("--out", help="also write the JSON list to this file")
    args = parser.parse_args(argv)
    try:
        captions = caption(args.images, args.model_dir, args.device)
    except ImageError as e:
        print(f"predict.py: {e}", file=sys.stderr)
        return 2
    if args.out:
        Path(args.out).write_text(json.dumps([{"image": im, "caption": c} for im, c in zip(args.images, captions)]))
    if args.json:
        print(json.dumps([{"image": im, "caption": c} for im, c in zip(args.images, captions)]))
    else:
        for im, c in zip(args.images, captions):
            print(f"{im}\t{c}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
