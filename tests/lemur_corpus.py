"""The LEMUR test corpus (issue #19): the 13 image-captioning model files of the released nn-dataset
distribution (PyPI `nn-dataset` 2.1.2, MIT licence), fetched from the package registry at test time and never
stored in this repository (tests/fixtures/lemur/README.md says what capnas finds in each).

`corpus_dir()` makes sure the pinned wheel is in the cache ($CAPNAS_CACHE/lemur/, else ~/.cache/capnas/lemur/),
downloading it with pip (`--no-deps`: the wheel is only read, never installed) when it is missing, checks its
sha256, and extracts the 13 files, each checked against its own pinned sha256. `lemur_corpus` is the
session-scoped pytest fixture: it skips when the registry cannot be reached, except under CI (the
environment variable CI set), where a corpus that cannot be fetched fails the run."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

DISTRIBUTION, VERSION = "nn-dataset", "2.1.2"
WHEEL = "nn_dataset-2.1.2-py3-none-any.whl"
WHEEL_SHA256 = "1f0b66a4f4de80a27b44a502112d4436eac1f97361ea3aae3266a550f01b07de"
MEMBER_DIR = "ab/nn/nn/"
# The captioning models of the wheel's ab/nn/nn/, name -> sha256 of the file as released.
FILES = {
    "C10C-RESNETLSTM-6a517327bf0ef897a22186a2061e85b3.py": "30f1111158f7f447f2cc0ad18b7da4ad8b61b8158e5029a02bf2b625d5980a0f",
    "C10C-RESNETLSTM-8f7ac9c241d5b9546f8cd3484e0e100b.py": "b3b0cad5b86cc9f1f842a36b9273fc52dc2992cb88cf14a5a585858e9b73d505",
    "C10C-ResNetTransformer-0370e8d7135a3ac5a6917c5f15739115.py": "4916dd09f2a0649169f80d52bc129622f76cccffa9f4883c1eb9446ef5c73320",
    "C10C-ResNetTransformer-187ccbee8050ac295637ecedecb4da1e.py": "67b6b89c44f19576ba93f2ba3ba08251b76516b9358db8ef33e0eae988dfb4a8",
    "C10C-ResNetTransformer-e2b49b871c8b9a9014277a51b2348999.py": "37fd1cdd2abb5e1da868b05a107ec6cc3fc5d923dbfe506688ace7a0c2307a46",
    "C5C-RESNETLSTM-2710f3b99727c92b2c7ead7bfa8efe49.py": "2bc78d647616f1dbf95e1551e9a927f2a2de52bf919a37d4cb5a540f7e27ad33",
    "C5C-RESNETLSTM-c42512d71480c8ef10f31e3e6c33bbdf.py": "86e61fcf1543fe92035af50807bdae0a616f3e749292642ccaf95db970c6ed02",
    "C5C-ResNetTransformer-2a01510b5bf49095cb6befe6098baa74.py": "4ab195db70ae3c03fec77236ac003a1f0920542dee3c22dd87acdbf44ccd7dfb",
    "C5C-ResNetTransformer-83fb6b6bb7c76b742ad0713d29463514.py": "44e1c64ebaa55e7d119d1a68e0c26c2f199ee7538b7e8426e4acdb389cd808eb",
    "C8C-ResNetTransformer-7730b6eb6979d27e2e1bbc7d05255dff.py": "37acd598a3a86806272b7d208e09d2456d1f17dbde995687297dd9dd07eadc80",
    "ConvNeXtTransformer.py": "c6ef8b3d0afa365abf6f239a07d9b5044a450958ca5149004b3bb209d4f5d6f8",
    "RESNETLSTM.py": "067a7216338227ca60fa016906ff40fbb9bdf1cf045bc1a2207a0034cae0c45c",
    "ResNetTransformer.py": "749c46491554641af0489ea61e0ad8d164a33c595c6a07bd87f0f4c2d66f06dd",
}


class CorpusUnavailable(RuntimeError):
    """The wheel could not be fetched (no registry); the message says why in one line."""


def cache_dir() -> Path:
    root = os.environ.get("CAPNAS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "capnas") / "lemur"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wheel(cache: Path) -> Path:
    """The pinned wheel in `cache`, downloaded when missing; a wheel with another digest is an error, not a
    fallback (a changed release must be pinned again on purpose)."""
    wheel = cache / WHEEL
    if not wheel.exists():
        cache.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", f"{DISTRIBUTION}=={VERSION}", "--no-deps",
                               "--only-binary", ":all:", "--disable-pip-version-check", "-d", str(cache)],
                              capture_output=True, text=True, timeout=900)
        if done.returncode != 0 or not wheel.exists():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise CorpusUnavailable(f"pip download {DISTRIBUTION}=={VERSION} failed: {last}")
    digest = hashlib.sha256()
    with wheel.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != WHEEL_SHA256:
        raise AssertionError(f"{wheel}: sha256 {digest.hexdigest()} is not the pinned {WHEEL_SHA256}; delete it "
                             "to download it again")
    return wheel


def corpus_dir() -> Path:
    """The folder holding exactly the 13 captioning files, extracted from the pinned wheel."""
    cache = cache_dir()
    folder = cache / f"corpus-{VERSION}"
    if folder.is_dir() and sorted(p.name for p in folder.iterdir()) == sorted(FILES) and all(
            _sha256((folder / name).read_bytes()) == sha for name, sha in FILES.items()):
        return folder
    with zipfile.ZipFile(_wheel(cache)) as wheel:
        contents = {name: wheel.read(MEMBER_DIR + name) for name in FILES}
    for name, data in contents.items():
        assert _sha256(data) == FILES[name], f"{WHEEL}: {MEMBER_DIR}{name} is not the pinned file"
    staging = cache / f"corpus-{VERSION}.{os.getpid()}"
    staging.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        (staging / name).write_bytes(data)
    if folder.exists():  # a partial or stale folder: replace it whole
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()
    staging.rename(folder)
    return folder


@pytest.fixture(scope="session")
def lemur_corpus() -> Path:
    try:
        return corpus_dir()
    except (CorpusUnavailable, OSError, subprocess.TimeoutExpired) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the LEMUR corpus is needed under CI: {exc}")
        pytest.skip(f"the LEMUR corpus ({DISTRIBUTION} {VERSION} from the package registry) is unavailable: {exc}")
