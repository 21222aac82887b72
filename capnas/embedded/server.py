"""The embedded LLM's server life cycle: `EmbeddedLLM` starts the front and llama.cpp on 127.0.0.1 and stops them.

    with embedded_models("0.5b") as (models, description):   # AgentModels for the runner, one line for the user
        llm = build_chat_model(models.for_role("coder"), "coder", ledger)
        spec, raw, usage = ask_structured(llm, messages, ArchSpec)
    # the server (its whole process group) is gone here, also after an exception or Ctrl-C

`EmbeddedLLM` is the same as a plain context manager (`local.llm_config(role)`, `local.agent_models()`).
The process it starts is `python -m capnas.embedded serve ...` (`capnas.embedded.front`).

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
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from capnas.embedded.errors import EmbeddedLLMError, ServerNotInstalled
from capnas.embedded.front import SERVER_REQUIREMENT, _default_threads, _free_port
from capnas.embedded.weights import DEFAULT_MODEL, GGUFModel, _model, ensure_model

if TYPE_CHECKING:  # the server child imports this package too: keep LangChain out of it
    from capnas.agents.llm_config import AgentModels, LLMConfig, Role

__all__ = ["ROLE_MAX_TOKENS", "EmbeddedLLM", "embedded_models", "server_installed"]


def server_installed(python: str | None = None) -> bool:
    """Whether the llama.cpp server package (`xllamacpp`) is installed in `python` (default: this one)."""
    if python is None or Path(python).resolve() == Path(sys.executable).resolve():
        return importlib.util.find_spec("xllamacpp") is not None
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('xllamacpp') is None)"
    return subprocess.run([python, "-c", probe], capture_output=True).returncode == 0


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
            self.python, "-m", "capnas.embedded", "serve",
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
        from capnas.agents.llm_config import LLMConfig

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
        from capnas.agents.llm_config import ROLES, AgentModels

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
