"""The house plan's one-way arrows, checked on the source: each room may import the rooms below it, never one
above. Every import counts, those inside functions too. Skip-level imports (the CLI reading a report, a tools
job starting the sandbox) are allowed: the rule is the direction (DEVELOPING.md, "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Top to bottom. A room is a module prefix; the longest matching prefix names a module's room.
ROOMS = [
    "capnas",  # the application: CLI, chat console, Python API, settings, the embedded LLM
    "capnas.graph",
    "capnas.agents",
    "capnas.tools.lemur",  # exchange with LEMUR: imports, validates, trains and exports like a run does
    "capnas.tools.report",
    "capnas.tools.jobs",
    "capnas.tools.scoring",
    "capnas.tools.data",
    "capnas.tools.task",
    "capnas.tools.design",
    "capnas.tools",  # the package docstring only
    "capnas.sandbox",
    "capnas.contracts",
]
# Where each import namespace lives in the tree (pyproject.toml's package-dir).
FOLDERS = {"capnas": "capnas", "capnas.graph": "graph", "capnas.agents": "agents", "capnas.tools": "tools",
           "capnas.sandbox": "sandbox", "capnas.contracts": "contracts"}


def room_of(module: str) -> str | None:
    matches = [r for r in ROOMS if module == r or module.startswith(r + ".")]
    return max(matches, key=len) if matches else None


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO)
    top = rel.parts[0]
    namespace = next(ns for ns, folder in FOLDERS.items() if folder == top)
    parts = [*namespace.split("."), *rel.parts[1:]]
    parts[-1] = parts[-1].removesuffix(".py")
    return ".".join(p for p in parts if p != "__init__")


def imports(source: str, module: str) -> list[tuple[int, str]]:
    """(line, imported module) of every import in `source`, relative ones resolved against `module`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: -node.level]
                base = ".".join([*package, base] if base else package)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names]  # `from capnas.tools import report`
    return found


def upward_imports(source: str, module: str) -> list[str]:
    """Each import of `source` (as `module`) that points to a room above the module's own."""
    own = room_of(module)
    problems = []
    for line, target in imports(source, module):
        room = room_of(target)
        if room is None or own is None or not target.startswith("capnas"):
            continue
        if ROOMS.index(room) < ROOMS.index(own):
            problems.append(f"{module}:{line} imports {target} ({room} is above {own})")
    return problems


def sources() -> list[Path]:
    return sorted(p for folder in FOLDERS.values() for p in (REPO / folder).rglob("*.py")
                  if "snippets" not in p.parts and "reference_models" not in p.parts)


def test_every_room_imports_only_rooms_below_it() -> None:
    problems = [p for path in sources() for p in upward_imports(path.read_text(), module_name(path))]
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_every_module_has_a_room() -> None:
    assert all(room_of(module_name(p)) for p in sources())


@pytest.mark.parametrize(("module", "planted"), [
    ("capnas.tools.data.prepare", "from capnas.graph.journal import Journal\n"),
    ("capnas.tools.design.archspec", "def f():\n    from capnas.tools.data import vocab\n"),  # inside a function
    ("capnas.sandbox.harness", "import capnas.tools.jobs.training\n"),
    ("capnas.contracts.probe", "from capnas import settings\n"),
    ("capnas.tools.scoring.metrics", "from ..report import run_data\n"),  # relative
])
def test_a_planted_upward_import_is_caught(module: str, planted: str) -> None:
    assert upward_imports(planted, module), f"{planted!r} in {module} was not caught"


def test_downward_and_sideways_imports_pass() -> None:
    assert not upward_imports("from capnas.tools.data.vocab import Vocabulary\nimport torch\n", "capnas.tools.jobs.training")
    assert not upward_imports("from capnas.tools.report.model_card import x\n", "capnas.tools.report.export")
