"""The coder: writes one candidate.

- `code` mode: the LLM writes the whole module (for capable models); violations come back for repair.
- `spec` mode: the LLM fills an `ArchSpec` through a forced tool call and the code is rendered from the
  component library, so it satisfies the contract by construction (for small local models).
- `random` mode lives in the graph: `archspec.sample` with no LLM, the equal-budget baseline.

The prompt always carries the contract's own rendered text (`Contract.render()`), so what the coder reads
and what the validator checks can never disagree.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from capnas.agents.llm import ask_structured, ask_text
from capnas.contracts.contract import Contract
from capnas.tools.design.archspec import ArchSpec, frozen, render, spec_model
from capnas.tools.design.components import get_component

CODER_SYSTEM = {
    "code": (
        "You are the coder of capnas. You write one complete PyTorch module for an image-captioning network "
        "that satisfies the contract below exactly. Reply with the module in a single ```python block."
    ),
    "spec": (
        "You are the coder of capnas. You design an image-captioning network by filling an architecture spec "
        "over a library of components; capnas renders it into code that satisfies the contract below. "
        "Answer only by calling the tool."
    ),
}


def choose_snippets(encoders: list[str], decoders: list[str], k: int) -> list[str]:
    """The k components the planner's families point at, alternating encoder and decoder."""
    chosen: list[str] = []
    for pair in zip(encoders, decoders):
        chosen.extend(pair)
    chosen.extend(encoders[len(decoders):] + decoders[len(encoders):])
    return chosen[:k]


def coder_messages(
    mode: str,
    contract: Contract,
    snippets: list[str],
    leaderboard: str,
    feedback: str,
    *,
    plan: str = "",
    repair: dict[str, Any] | None = None,
    refine: dict[str, Any] | None = None,
) -> list[BaseMessage]:
    """The coder's prompt: the contract, the components, the best so far, the critic's feedback, when refining
    in code mode the parent's module with the changes the critic requires (`refine`: parent_id, code, changes),
    and when repairing, the previous attempt with its violations (code, line, hint).

    `code` mode shows the contract's full rendered text and the k snippets' source. `spec` mode shows only
    what a spec can change (the contract's budgets and shapes) and the snippets' tunable options: the code
    is rendered from the library, so the API text would only cost prompt tokens (6k of them, minutes on a
    small local model on a CPU) without changing any choice the model can make."""
    if mode == "code":
        parts = [f"# The contract\n\n{contract.render()}"]
        if snippets:
            shown = "\n\n".join(f"## {name}\n```python\n{get_component(name).source()}\n```" for name in snippets)
            parts.append(f"# Components you may use\n\n{shown}")
    else:
        b, c, h, w = contract.input_shape
        parts = [f"# The contract ({contract.name} {contract.version})\n\n{h}x{w} RGB images, vocabulary of "
                 f"{contract.vocab_size} ids, captions of {contract.max_len} tokens. Budgets: at most "
                 f"{contract.budgets.max_params:,} parameters (frozen ones count) and "
                 f"{contract.budgets.max_latency_ms:g} ms per image at inference."]
        if snippets:
            shown = "\n".join(f"- {name}: " + "; ".join(f"{k} {v}" for k, v in get_component(name).tunable().items())
                              for name in snippets)
            parts.append(f"# Components suggested for this round\n\n{shown}")
    parts.append(f"# Best candidates so far\n\n{leaderboard or '(none yet)'}")
    parts.append(f"# Critic's feedback\n\n{feedback or '(none yet)'}")
    if plan:
        parts.append(f"# Planner's suggestion\n\n{plan}")
    if refine:
        changes = "\n".join(f"- {change}" for change in refine["changes"])
        parts.append(f"# Refine {refine['parent_id']}\n\nStart from its module below and make exactly these changes, "
                     f"keeping everything else:\n{changes}\n\n```python\n{refine['code']}\n```")
    if repair:
        violations = "\n".join(
            f"- {v['code']} (line {v.get('line') or '?'}): {v['message']} Hint: {v['hint']}" for v in repair["violations"]
        )
        previous = f"```python\n{repair['code']}\n```" if mode == "code" else f"```json\n{repair['spec']}\n```"
        parts.append(f"# Your previous attempt failed the contract\n\n{previous}\n\nViolations:\n{violations}\n\nFix every one.")
    ask = "Write the module now." if mode == "code" else "Fill the architecture spec now."
    return [SystemMessage(CODER_SYSTEM[mode]), HumanMessage("\n\n".join(parts) + f"\n\n{ask}")]


def write_spec(llm, messages: list[BaseMessage], families: tuple[str, str] | None = None,
               frozen_encoder: bool = False) -> tuple[ArchSpec, str, str, dict]:
    """spec mode: (spec, rendered code, raw reply, usage). `families` (encoder, decoder) fixes the families the
    planner assigned: the model fills their options and the training fields. `frozen_encoder` fixes a pretrained
    encoder's `freeze` (in the schema when the families are known, else on the answer)."""
    schema = spec_model(*families, frozen=frozen_encoder) if families else ArchSpec
    answer, raw, usage = ask_structured(llm, messages, schema)
    spec = ArchSpec(**answer.model_dump())
    spec = frozen(spec) if frozen_encoder else spec
    return spec, render(spec), raw, dict(usage or {})


def write_code(llm, messages: list[BaseMessage]) -> tuple[str, str, dict]:
    """code mode: (module source, raw reply, usage)."""
    code, usage = ask_text(llm, messages, fence="python")
    return code, code, dict(usage or {})
