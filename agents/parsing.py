"""Pulling JSON objects and code blocks out of model text.

Strict on purpose: JSON is parsed with the stdlib and never "repaired" (langchain_core's
`parse_json_markdown` closes truncated objects, which would turn a cut-off answer into a plausible one).
"""

from __future__ import annotations

import json
import re
from typing import Any

# An opening fence with an optional language tag, its body, then a closing fence or the end of the
# text (an answer cut off by the token cap leaves its last block unterminated).
_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_ALIASES = {"python": {"python", "py", "python3"}, "json": {"json", "jsonc"}}


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """Every fenced block as (language tag in lower case, body), in order."""
    return [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]


def extract_fenced(text: str, lang: str) -> str | None:
    """The body of the first block tagged `lang` (or an alias), else of the first untagged block."""
    names = _ALIASES.get(lang, {lang})
    blocks = fenced_blocks(text)
    for tag, body in blocks:
        if tag in names:
            return body
    for tag, body in blocks:
        if not tag:
            return body
    return None


def extract_json_object(text: str) -> dict[str, Any]:
    """The JSON object in a model's answer: the whole text, a ```json (or untagged) fenced block,
    or the first balanced `{...}` in the text. Raises ValueError when there is none."""
    candidates = [text.strip()]
    candidates += [body for tag, body in fenced_blocks(text) if tag in ("", *_ALIASES["json"])]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    # raw_decode parses one value and stops, so it finds the balanced object (strings and nested
    # braces included) at each "{" without a hand-written brace counter.
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    raise ValueError("no JSON object found in the answer")
