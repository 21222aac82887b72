"""A tiny document model for the model card: sections of paragraphs, tables, lists, quotes and code, rendered
to Markdown (MODEL_CARD.md) and to HTML (inside the report) from the same data, so the two never disagree.

Inline markup in text and cells: `code` and **bold** only.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Union

_INLINE_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


@dataclass
class Text:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Quote:
    text: str  # quoted as written (LLM prose is shown only as a quote, never as a number's source)
    who: str


@dataclass
class Code:
    text: str
    lang: str = ""


Block = Union[Text, Table, Bullets, Quote, Code]


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Document:
    title: str
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str) -> Section:
        for s in self.sections:
            if s.title == title:
                return s
        raise KeyError(f"no section {title!r}; sections: {[s.title for s in self.sections]}")

    def to_markdown(self) -> str:
        parts = [f"# {self.title}"]
        for s in self.sections:
            parts.append(f"## {s.title}")
            parts.extend(_block_markdown(b) for b in s.blocks)
        return "\n\n".join(parts) + "\n"

    def to_html(self, heading_level: int = 2) -> str:
        h1, h2 = f"h{heading_level}", f"h{heading_level + 1}"
        parts = [f"<{h1}>{inline_html(self.title)}</{h1}>"]
        for s in self.sections:
            parts.append(f"<{h2}>{inline_html(s.title)}</{h2}>")
            parts.extend(_block_html(b) for b in s.blocks)
        return "\n".join(parts)


def _cell_markdown(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _block_markdown(block: Block) -> str:
    if isinstance(block, Text):
        return block.text
    if isinstance(block, Table):
        lines = ["| " + " | ".join(_cell_markdown(h) for h in block.header) + " |",
                 "|" + "---|" * len(block.header)]
        lines += ["| " + " | ".join(_cell_markdown(c) for c in row) + " |" for row in block.rows]
        return "\n".join(lines)
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Quote):
        quoted = "\n".join(f"> {line}" for line in block.text.strip().splitlines() or [""])
        return f"{quoted}\n>\n> — {block.who}"
    if isinstance(block, Code):
        fence = "````" if "```" in block.text else "```"
        return f"{fence}{block.lang}\n{block.text.rstrip()}\n{fence}"
    raise TypeError(f"unknown block {type(block).__name__}")


def inline_html(text: str) -> str:
    """Escape, then turn `code` and **bold** into tags."""
    out = html.escape(str(text))
    out = _INLINE_CODE.sub(r"<code>\1</code>", out)
    return _BOLD.sub(r"<strong>\1</strong>", out)


def _block_html(block: Block) -> str:
    if isinstance(block, Text):
        return f"<p>{inline_html(block.text)}</p>"
    if isinstance(block, Table):
        body = "".join("<tr>" + "".join(f"<td>{inline_html(c)}</td>" for c in row) + "</tr>" for row in block.rows)
        if not any(str(h).strip() for h in block.header):  # a key/value table: no empty header row
            return f'<table class="card-table"><tbody>{body}</tbody></table>'
        head = "".join(f"<th>{inline_html(h)}</th>" for h in block.header)
        return f'<table class="card-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{inline_html(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Quote):
        return (f"<blockquote>{html.escape(block.text)}<footer>— {html.escape(block.who)}</footer></blockquote>")
    if isinstance(block, Code):
        return f"<pre><code>{html.escape(block.text.rstrip())}</code></pre>"
    raise TypeError(f"unknown block {type(block).__name__}")
