"""Turn snippet files into one self-contained source text.

A snippet's relative imports (`from .additive_attention import AdditiveAttention`) name the siblings it needs:
those are inlined first, in dependency order. Its other imports are collected, de-duplicated and written once
at the top. Module docstrings are dropped (each class keeps its own). Nothing inside a body is rewritten.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SNIPPETS_DIR = Path(__file__).parent / "snippets"

# Import groups, written in this order and separated by a blank line.
_STDLIB = ("math", "typing")
_TORCH = ("torch",)


@dataclass(frozen=True)
class Snippet:
    name: str
    path: Path
    imports: tuple[str, ...]  # absolute import statements, verbatim
    requires: tuple[str, ...]  # sibling snippets named by relative imports
    defines: tuple[str, ...]  # top-level names (functions, classes, assignments)
    body: str  # the source after the module docstring and the imports


@cache
def read_snippet(name: str) -> Snippet:
    path = SNIPPETS_DIR / f"{name}.py"
    if not path.is_file():
        raise KeyError(f"no snippet {name!r}: {path} does not exist")
    text = path.read_text()
    tree = ast.parse(text, filename=str(path))
    lines = text.splitlines()
    imports: list[str] = []
    requires: list[str] = []
    body_start = 0
    for index, node in enumerate(tree.body):
        is_docstring = index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        if not (is_docstring or isinstance(node, ast.Import | ast.ImportFrom)):
            break
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            requires.append(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise ValueError(f"{path}:{node.lineno}: only `from .sibling import Name` relative imports are inlined")
        elif not is_docstring:
            imports.append(ast.get_source_segment(text, node))
        body_start = node.end_lineno
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom) and node.lineno > body_start:
            raise ValueError(f"{path}:{node.lineno}: imports must come before any other statement")
    return Snippet(
        name=name,
        path=path,
        imports=tuple(imports),
        requires=tuple(requires),
        defines=tuple(_top_level_names(tree)),
        body="\n".join(lines[body_start:]).strip("\n") + "\n",
    )


def _top_level_names(tree: ast.Module) -> list[str]:
    names = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
    return names


def resolve(names: list[str] | tuple[str, ...]) -> list[Snippet]:
    """The snippets `names` need, each once, every one after the siblings it imports."""
    ordered: list[Snippet] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in chain:
            raise ValueError(f"snippet import cycle: {' -> '.join(chain + (name,))}")
        if any(s.name == name for s in ordered):
            return
        snippet = read_snippet(name)
        for required in snippet.requires:
            visit(required, chain + (name,))
        ordered.append(snippet)

    for name in names:
        visit(name, ())
    return ordered


def import_block(snippets: list[Snippet]) -> str:
    """The union of the snippets' imports: standard library, torch, then other packages."""

    def group(statement: str) -> int:
        module = statement.split()[1].split(".")[0]
        return 0 if module in _STDLIB else 1 if module in _TORCH else 2

    unique = sorted({s for snippet in snippets for s in snippet.imports})
    groups = [[s for s in unique if group(s) == g] for g in range(3)]
    return "\n\n".join("\n".join(g) for g in groups if g) + "\n"


def check_no_clashes(snippets: list[Snippet]) -> None:
    seen: dict[str, str] = {}
    for snippet in snippets:
        for name in snippet.defines:
            if name in seen and seen[name] != snippet.name:
                raise ValueError(f"{snippet.path}: {name!r} is also defined by snippet {seen[name]!r}")
            seen[name] = snippet.name


def standalone_source(name: str) -> str:
    """One snippet with its imports and the siblings it needs: runnable on its own."""
    snippets = resolve([name])
    check_no_clashes(snippets)
    return import_block(snippets) + "".join("\n\n" + s.body for s in snippets)
