"""A plain LangChain agent with capnas as one of its tools.

    python examples/langchain_agent.py "I need a small captioning model for phones, under 2M parameters" \
        --base-url http://127.0.0.1:8080/v1 --model qwen2.5-coder --config examples/run.yaml

The agent's model reads the request and decides whether to call `design_captioning_model` (the LangChain
`StructuredTool` that `capnas.as_tool()` returns) and with which arguments. The tool runs a whole design job
(planner, coder, sandboxed validation and training, critic) and returns the run summary as JSON; the agent then
answers in words. capnas's own agents use the same endpoint and model unless `--config` says otherwise.

The loop below is the whole agent: `bind_tools`, invoke, run the tool calls, repeat until the model answers in
text. With the `langchain` package installed, `langchain.agents.create_agent(model, tools=[tool])` does the same.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

import capnas

SYSTEM = (
    "You help people get image-captioning models. When someone asks for one, call the design_captioning_model "
    "tool with their requirement in their own words, then report the best candidate and its validation scores "
    "from the tool's answer (never invent numbers)."
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("request", help="what the person asks the agent")
    p.add_argument("--base-url", default=os.environ.get("CAPNAS_LLM_BASE_URL") or os.environ.get("OPENAI_BASE_URL"),
                   help="OpenAI-compatible endpoint (env CAPNAS_LLM_BASE_URL or OPENAI_BASE_URL; none: OpenAI)")
    p.add_argument("--model", default=os.environ.get("CAPNAS_LLM_MODEL", "gpt-4o-mini"),
                   help="model name at that endpoint (env CAPNAS_LLM_MODEL)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key, if any")
    p.add_argument("--config", type=Path, help="capnas run settings (YAML) applied to every design job")
    p.add_argument("--max-steps", type=int, default=6, help="model turns before the agent gives up")
    return p.parse_args(argv)


def design_tool(args: argparse.Namespace):
    """capnas as a LangChain tool; the config file's settings are defaults for every call."""
    defaults: dict[str, Any] = yaml.safe_load(args.config.read_text()) if args.config else {}
    defaults.setdefault("llm_base_url", args.base_url)
    defaults.setdefault("llm_model", args.model)
    if os.environ.get(args.api_key_env):
        defaults.setdefault("llm_api_key_env", args.api_key_env)
    return capnas.as_tool(**defaults)


def run_agent(request: str, llm: ChatOpenAI, tools: list, max_steps: int = 6) -> str:
    """The tool-calling loop: the model's tool calls are run and their results handed back, until it answers."""
    by_name = {t.name: t for t in tools}
    model = llm.bind_tools(tools)
    messages: list[BaseMessage] = [SystemMessage(SYSTEM), HumanMessage(request)]
    for _ in range(max_steps):
        reply = model.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            return reply.text
        for call in reply.tool_calls:
            print(f"[agent] calling {call['name']}({json.dumps(call['args'])})", file=sys.stderr, flush=True)
            result = by_name[call["name"]].invoke(call)  # a ToolMessage answering this call
            print(f"[agent] {call['name']} returned {str(result.content)[:2000]}", file=sys.stderr, flush=True)
            messages.append(result)
    raise RuntimeError(f"no answer after {max_steps} model turns")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    llm = ChatOpenAI(model=args.model, base_url=args.base_url, temperature=0,
                     api_key=os.environ.get(args.api_key_env) or "sk-no-key-needed")
    print(run_agent(args.request, llm, [design_tool(args)], args.max_steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
