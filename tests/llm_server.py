"""A scripted OpenAI-compatible chat server on 127.0.0.1 for tests.

It replays a script of `Step`s over real HTTP, so the code under test runs its real client stack
(langchain-openai → openai → httpx): retries, timeouts, tool-call parsing, usage accounting.

    with ScriptedLLMServer([http_error(429), answer("hi")]) as server:
        llm = ChatOpenAI(base_url=server.base_url, api_key="x", model="scripted")
        llm.invoke("hello")
        assert len(server.requests) == 2

Each request takes the first unused step whose matchers accept it, so steps for different agents can
be interleaved: `answer("...", role="coder")` only answers requests sent by a model built for the coder
(the `X-Capnas-Role` header that `capnas.agents.llm.build_chat_model` sets), `when="..."` only requests
whose system prompt contains that text. A request no step accepts gets HTTP 400 (never retried), so a
test that runs out of script fails at once and names the request.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from capnas.agents.llm_config import ROLE_HEADER  # set by build_chat_model on every request


@dataclass(frozen=True)
class Step:
    """One scripted reply. Build them with `answer`, `tool_call`, `http_error` and `hang`."""

    content: str | None = None  # assistant text (may be deliberately malformed JSON)
    tool_name: str | None = None  # answer with a tool call instead of text
    tool_arguments: str | None = None  # the raw arguments string, sent verbatim
    status: int | None = None  # answer with this HTTP error status instead
    retry_after: str | None = None  # Retry-After header for error statuses
    delay_s: float = 0.0  # wait this long before answering
    hang: bool = False  # never answer (until the server stops): the client's timeout must fire
    usage: tuple[int, int] | None = None  # reported (prompt, completion) tokens; counted when None
    finish_reason: str | None = None  # default: "tool_calls" for tool calls, else "stop"
    role: str | None = None  # only requests carrying this X-Capnas-Role header
    when: str | None = None  # only requests whose system prompt contains this text

    def matches(self, role: str | None, system_prompt: str) -> bool:
        if self.role is not None and self.role != role:
            return False
        return self.when is None or self.when in system_prompt


def answer(content: str, **options: Any) -> Step:
    """A plain-text chat completion."""
    return Step(content=content, **options)


def tool_call(name: str, arguments: dict[str, Any] | str, **options: Any) -> Step:
    """A chat completion holding one tool call; a `str` is sent as-is, so it may be broken JSON."""
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return Step(tool_name=name, tool_arguments=raw, **options)


def http_error(status: int, *, retry_after: str | None = "0", **options: Any) -> Step:
    """An HTTP error reply (429 and 5xx are what clients retry)."""
    return Step(status=status, retry_after=retry_after, **options)


def hang(**options: Any) -> Step:
    """A request that is never answered, so the client times out (and retries, if it may)."""
    return Step(hang=True, **options)


@dataclass
class Exchange:
    """One request the server received and what it did with it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    step: Step | None = None  # None: no step matched (answered 400), or not a chat request
    usage: tuple[int, int] | None = None  # (prompt, completion) tokens reported back
    status: int | None = 200  # None: never answered (a hang step)

    @property
    def role(self) -> str | None:
        return self.headers.get(ROLE_HEADER.lower())


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # content blocks
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def _system_prompt(body: dict[str, Any]) -> str:
    messages = body.get("messages") or []
    return "\n".join(_message_text(m) for m in messages if m.get("role") in ("system", "developer"))


def _count_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: whitespace-separated words."""
    return len(text.split())


@dataclass
class _Script:
    pending: list[Step]  # steps not used yet, in script order
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, role: str | None, system_prompt: str) -> Step | None:
        with self.lock:
            for i, step in enumerate(self.pending):
                if step.matches(role, system_prompt):
                    return self.pending.pop(i)
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self.server.owner.record(Exchange(self.path, self._headers(), {}))
        if self.path.rstrip("/").endswith("/models"):
            model = {"id": "scripted", "object": "model", "created": 0, "owned_by": "tests"}
            self._send_json(200, {"object": "list", "data": [model]})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        exchange = Exchange(self.path, self._headers(), json.loads(raw or b"{}"))
        self.server.owner.record(exchange)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            exchange.status = 404
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        step = self.server.owner.script.take(exchange.role, _system_prompt(exchange.body))
        exchange.step = step
        if step is None:
            exchange.status = 400
            last = _message_text((exchange.body.get("messages") or [{}])[-1])[:200]
            message = f"scripted LLM server: no step left for role={exchange.role!r}, last message {last!r}"
            self._send_json(400, {"error": {"message": message, "type": "script_exhausted"}})
            return
        if step.hang:
            exchange.status = None
            self.server.stopping.wait()
            self.close_connection = True
            return
        if step.delay_s and self.server.stopping.wait(step.delay_s):
            return  # the server is shutting down
        try:
            self._reply(step, exchange)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting

    def _reply(self, step: Step, exchange: Exchange) -> None:
        if step.status is not None:
            exchange.status = step.status
            headers = {"Retry-After": step.retry_after} if step.retry_after is not None else {}
            error = {"message": f"scripted error {step.status}", "type": "scripted", "code": step.status}
            self._send_json(step.status, {"error": error}, headers)
            return
        body = exchange.body
        prompt_text = " ".join(_message_text(m) for m in body.get("messages") or [])
        completion_text = step.content if step.tool_name is None else step.tool_arguments
        usage = step.usage or (_count_tokens(prompt_text), _count_tokens(completion_text or ""))
        exchange.usage = usage
        usage_json = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
        message: dict[str, Any] = {"role": "assistant", "content": step.content}
        if step.tool_name is not None:
            call_id = f"call_{uuid.uuid4().hex[:12]}"
            function = {"name": step.tool_name, "arguments": step.tool_arguments}
            message["tool_calls"] = [{"id": call_id, "type": "function", "function": function}]
        finish = step.finish_reason or ("tool_calls" if step.tool_name else "stop")
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "created": int(time.time()),
            "model": body.get("model", "scripted"),
        }
        if body.get("stream"):
            self._send_stream(base, message, finish, usage_json, body)
        else:
            choice = {"index": 0, "message": message, "finish_reason": finish}
            completion = {**base, "object": "chat.completion", "choices": [choice], "usage": usage_json}
            self._send_json(200, completion)

    def _send_stream(
        self, base: dict, message: dict, finish: str, usage: dict, body: dict[str, Any]
    ) -> None:
        """Server-sent events: the whole answer in one delta, then the finish, then usage if asked."""
        delta = dict(message)
        if "tool_calls" in delta:
            delta["tool_calls"] = [{"index": 0, **call} for call in delta["tool_calls"]]
        chunk = {**base, "object": "chat.completion.chunk"}
        events = [
            {**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
            {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
        ]
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({**chunk, "choices": [], "usage": usage})
        payload = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")  # no chunked encoding: the body ends with the connection
        self.end_headers()
        self.wfile.write(payload.encode())
        self.close_connection = True

    def _headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items()}

    def _send_json(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: ScriptedLLMServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.owner = owner
        self.stopping = threading.Event()


class ScriptedLLMServer:
    """The server, started on a free port by `start()` or `with`; `base_url` ends in `/v1`."""

    def __init__(self, steps: Sequence[Step] = ()) -> None:
        self.script = _Script(list(steps))
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- script and records ------------------------------------------------------------------
    def add(self, *steps: Step) -> None:
        """Append steps to the script (also while a test is running)."""
        with self.script.lock:
            self.script.pending.extend(steps)

    def record(self, exchange: Exchange) -> None:
        with self._lock:
            self.exchanges.append(exchange)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of every chat-completion request received, in order."""
        with self._lock:
            return [e.body for e in self.exchanges if e.path.rstrip("/").endswith("/chat/completions")]

    @property
    def reported_usage(self) -> tuple[int, int]:
        """Total (prompt, completion) tokens reported in successful answers."""
        with self._lock:
            served = [e.usage for e in self.exchanges if e.usage is not None]
        return sum(u[0] for u in served), sum(u[1] for u in served)

    @property
    def unused_steps(self) -> list[Step]:
        with self.script.lock:
            return list(self.script.pending)

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> ScriptedLLMServer:
        self._httpd = _HTTPServer(self)
        # A short poll interval keeps shutdown (once per test) from costing half a second.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="scripted-llm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.stopping.set()  # wakes hang steps
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None

    def __enter__(self) -> ScriptedLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def llm_server() -> Iterator[ScriptedLLMServer]:
    """A started server with an empty script: `llm_server.add(answer(...), ...)`.
    Import it into a test module or conftest to use it."""
    with ScriptedLLMServer() as server:
        yield server
