"""The embedded LLM on this machine: assembly, server start-up, raw speed, and structured calls per model.

    .venv/bin/python benchmarks/bench_embedded_llm.py            # the 0.5B default
    .venv/bin/python benchmarks/bench_embedded_llm.py 0.5b 1.5b  # both

Prints one table row per model, then the answers. Columns:
- assemble_s: building the GGUF from its part packages (0 when it is already in the cache; delete
  `~/.cache/capnas/models/*.gguf`, or point $CAPNAS_CACHE elsewhere, to time it).
- start_s: from spawning the server to its first answer on /v1/models (model load included).
- prompt_tok_s / decode_tok_s: llama.cpp's own timings for one plain 128-token completion.
- small_s: one `ask_structured` call for a 5-field schema (wall time, forced tool call).
- spec_cold_s / spec_warm_s: the coder's real spec call (`agents.coder.write_spec`, `ArchSpec`, a ~6.2k-token
  prompt): first with nothing cached, then again with the prompt prefix in the server's cache (what later
  candidates in a run mostly see: the contract and tool schema repeat, snippets and leaderboard change).
- spec_tok: prompt + completion tokens of the spec call; spec_e2e_tok_s: completion tokens per wall second.
The load average is printed alongside: on a shared 2-core machine it changes the numbers several-fold.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from typing import Literal

from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from capnas.agents import coder
from capnas.agents.llm import ask_structured, build_chat_model
from capnas.agents.usage import UsageLedger
from capnas.contracts import get_contract
from capnas.embedded import EmbeddedLLM, ensure_model


class ArchChoice(BaseModel):
    """A small image-captioning architecture."""

    encoder: Literal["cnn", "vit"] = Field(description="image encoder family")
    decoder: Literal["lstm", "gru", "transformer"] = Field(description="caption decoder family")
    hidden_size: int = Field(ge=16, le=4096, description="decoder hidden size")
    dropout: float = Field(ge=0, le=0.9, description="dropout probability")
    reason: str = Field(description="one sentence: why this design")


SMALL = [
    SystemMessage("You design image-captioning networks for a small dataset. Answer by calling the tool."),
    HumanMessage("Pick an encoder, a decoder, a hidden size and a dropout for a model that trains in 5 minutes."),
]


def spec_messages():  # noqa: ANN201 - LangChain messages
    contract = get_contract("caption-net-v1", vocab_size=300, image_size=64)
    snippets = coder.choose_snippets(["small_cnn"], ["lstm"], 2)
    return coder.coder_messages("spec", contract, snippets, "", "", plan="A small CNN encoder with an LSTM decoder.")


def raw_speed(base_url: str, model: str) -> tuple[float, float]:
    """(prompt tokens/s, decode tokens/s) from llama.cpp's timings for one plain 128-token completion."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Write a Python function that parses a CSV line, with a docstring. " * 4}],
        "max_tokens": 128, "temperature": 0.0, "cache_prompt": False,
    }  # fmt: skip
    request = urllib.request.Request(f"{base_url}/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=900) as reply:  # noqa: S310 - 127.0.0.1
        timings = json.load(reply)["timings"]
    return timings["prompt_per_second"], timings["predicted_per_second"]


def bench(name: str) -> dict[str, object]:
    began = time.monotonic()
    path = ensure_model(name, progress=lambda m: print(f"  {m}", flush=True))
    row: dict[str, object] = {"model": name, "assemble_s": time.monotonic() - began, "load_avg": os.getloadavg()[0]}
    with EmbeddedLLM(name) as local:
        row["start_s"] = local.startup_s
        row["prompt_tok_s"], row["decode_tok_s"] = raw_speed(local.base_url, local.model.served_name)
        small = build_chat_model(local.llm_config("planner", max_output_tokens=256, temperature=0.0), "planner", UsageLedger())  # fmt: skip
        t = time.monotonic()
        choice, _raw, _usage = ask_structured(small, SMALL, ArchChoice)
        row["small_s"] = time.monotonic() - t
        row["small_answer"] = choice.model_dump_json()
        llm = build_chat_model(local.agent_models().for_role("coder"), "coder", UsageLedger())
        messages = spec_messages()
        for label in ("cold", "warm"):
            t = time.monotonic()
            spec, _code, _raw, usage = coder.write_spec(llm, messages)
            wall = time.monotonic() - t
            row[f"spec_{label}_s"] = wall
            row["spec_tok"] = f"{usage['input_tokens']}+{usage['output_tokens']}"
            row["spec_e2e_tok_s"] = usage["output_tokens"] / wall
            row["spec_answer"] = spec.describe()
    row["load_avg"] = f"{row['load_avg']:.1f}-{os.getloadavg()[0]:.1f}"
    print(f"  {path.name}: done", flush=True)
    return row


COLUMNS = ["model", "assemble_s", "start_s", "prompt_tok_s", "decode_tok_s", "small_s", "spec_tok", "spec_cold_s",
           "spec_warm_s", "spec_e2e_tok_s", "load_avg"]  # fmt: skip


def main(names: list[str]) -> None:
    rows = [bench(n) for n in names]
    print(f"{os.cpu_count()} CPUs")
    print(" | ".join(f"{c:>14}" for c in COLUMNS))
    for row in rows:
        print(" | ".join(f"{row[c]:>14.1f}" if isinstance(row[c], float) else f"{row[c]!s:>14}" for c in COLUMNS))
    for row in rows:
        print(f"{row['model']}: small {row['small_answer']}")
        print(f"{row['model']}: spec  {row['spec_answer']}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["0.5b"])
