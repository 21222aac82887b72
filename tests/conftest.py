"""Shared fixtures. Keep this small: a fixture belongs here only when several test modules use it."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def flickr8k_dir() -> Path:
    """The shared Flickr8k copy (`<repo>/../shared/datasets/flickr8k`, or `$CAPNAS_FLICKR8K`); skips if absent."""
    folder = Path(os.environ.get("CAPNAS_FLICKR8K") or REPO.parent / "shared" / "datasets" / "flickr8k")
    if not (folder / "dataset_flickr8k.json").is_file():
        pytest.skip(f"Flickr8k not found at {folder} (set CAPNAS_FLICKR8K to its folder)")
    return folder


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private prepared-data cache; also set as $CAPNAS_CACHE so nothing lands in ~/.cache."""
    monkeypatch.setenv("CAPNAS_CACHE", str(tmp_path / "capnas-cache"))
    return tmp_path / "capnas-cache" / "prepared"


KarpathyFactory = Callable[..., Path]


@pytest.fixture
def make_karpathy(tmp_path: Path) -> KarpathyFactory:
    """Write a tiny Karpathy-layout dataset: `images/` of small PNGs and `dataset_tiny.json` beside it.

    `splits` gives each image's split; image k is a solid colour with captions "A picture number k, version j.".
    """

    def make(splits: tuple[str, ...] = ("train",) * 6 + ("val", "val", "test", "test"), captions_per_image: int = 5,
             folder: str = "tiny") -> Path:  # fmt: skip
        root = tmp_path / folder
        (root / "images").mkdir(parents=True)
        entries = []
        for k, split in enumerate(splits):
            name = f"img{k:02d}.png"
            Image.new("RGB", (40 + k, 30), (20 * k % 256, 90, 200)).save(root / "images" / name)
            sentences = [{"raw": f"A picture number {k}, version {j}.", "tokens": []} for j in range(captions_per_image)]
            entries.append({"filename": name, "imgid": k, "split": split, "sentences": sentences})
        path = root / "dataset_tiny.json"
        path.write_text(json.dumps({"dataset": "tiny", "images": entries}))
        return path

    return make


# -- a headless Chromium for the report's tests (Playwright; `bash scripts/browser.sh` installs both) ---------
CHROMIUM_NAMES = ("chromium", "chromium-browser", "chromium-headless-shell", "google-chrome", "google-chrome-stable")


def chromium_executable() -> str | None:
    """A Chromium binary on this machine, or None (Playwright then tries its own downloaded build)."""
    if os.environ.get("CAPNAS_CHROMIUM"):
        return os.environ["CAPNAS_CHROMIUM"]
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


@pytest.fixture
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright is not installed: run `bash scripts/browser.sh`")
    with sync_api.sync_playwright() as p:
        executable = chromium_executable()
        try:
            # no proxy, and every host name resolves to nothing: the page must not need the network
            instance = p.chromium.launch(executable_path=executable, headless=True,
                                         args=["--no-proxy-server", "--host-resolver-rules=MAP * ~NOTFOUND"])
        except Exception as e:  # noqa: BLE001 - no browser here: say so and skip
            pytest.skip(f"no Chromium to run (looked for {', '.join(CHROMIUM_NAMES)} on PATH and Playwright's own "
                        f"build; run `bash scripts/browser.sh`): {str(e).splitlines()[0]}")
        try:
            yield instance
        finally:
            instance.close()
