"""Name resolution over a module's AST, enough for the static checks: which dotted name an expression like
`nn.functional.relu` reaches through the imports, and which loads of a builtin name are not shadowed by a
local binding (so `def forward(self, input)` is fine while a bare `open(...)` is not)."""

from __future__ import annotations

import ast
from collections.abc import Iterator

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef,
           ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def import_aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> dotted name it was imported as, over every import in the file (any depth).
    `import torch.nn as nn` -> {"nn": "torch.nn"}; `import torch.nn` -> {"torch": "torch"};
    `from torch import nn` -> {"nn": "torch.nn"}."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    root = alias.name.split(".")[0]
                    aliases[root] = root
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if alias.name != "*":
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def attribute_chain(node: ast.expr) -> list[str] | None:
    """`a.b.c` -> ["a", "b", "c"]; None when the chain does not start at a plain name (e.g. `f().x`)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def resolve(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """The dotted name an expression reaches through the imports (`F.relu` -> "torch.nn.functional.relu"),
    or None when its root is not an imported name."""
    chain = attribute_chain(node)
    if chain is None or chain[0] not in aliases:
        return None
    return ".".join([aliases[chain[0]], *chain[1:]])


def is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def unshadowed_loads(tree: ast.Module, names: set[str]) -> list[ast.Name]:
    """Loads of `names` that reach the builtins: not bound in their own scope or any enclosing function or
    module scope (class bodies do not enclose their methods, as in Python)."""
    found: list[ast.Name] = []
    _visit_scope(tree, [], names, found)
    return found


def _visit_scope(scope: ast.AST, enclosing: list[set[str]], names: set[str], found: list[ast.Name]) -> None:
    nodes = list(_scope_nodes(scope))
    bound = _bindings(scope, nodes)
    visible = [*enclosing, bound]
    for node in nodes:
        if (isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in names
                and not any(node.id in b for b in visible)):
            found.append(node)
    # A class body's names are not visible inside its methods.
    inner = enclosing if isinstance(scope, ast.ClassDef) else visible
    for node in nodes:
        if isinstance(node, _SCOPES):
            _visit_scope(node, inner, names, found)


def _scope_nodes(scope: ast.AST) -> Iterator[ast.AST]:
    """Every node evaluated in `scope` itself. Nested scopes are yielded (so their names can be bound here)
    but not entered, except for the parts Python evaluates in the enclosing scope: decorators, defaults,
    annotations, base classes and a comprehension's first iterable."""
    for child in _own_children(scope):
        yield from _walk_until_scope(child)


def _own_children(scope: ast.AST) -> Iterator[ast.AST]:
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
        yield from scope.body
    elif isinstance(scope, ast.Lambda):
        yield scope.body
    elif isinstance(scope, ast.ClassDef):
        yield from scope.body
    elif isinstance(scope, _COMPREHENSIONS):
        for i, gen in enumerate(scope.generators):
            yield gen.target
            if i > 0:
                yield gen.iter
            yield from gen.ifs
        if isinstance(scope, ast.DictComp):
            yield scope.key
            yield scope.value
        else:
            yield scope.elt
    else:
        yield from ast.iter_child_nodes(scope)


def _walk_until_scope(node: ast.AST) -> Iterator[ast.AST]:
    yield node
    if isinstance(node, _SCOPES):
        for part in _evaluated_outside(node):
            yield from _walk_until_scope(part)
        return
    for child in ast.iter_child_nodes(node):
        yield from _walk_until_scope(child)


def _evaluated_outside(scope: ast.AST) -> list[ast.AST]:
    parts: list[ast.AST] = []
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        args = scope.args
        parts += [d for d in args.defaults + args.kw_defaults if d is not None]
        if not isinstance(scope, ast.Lambda):
            parts += scope.decorator_list
            parts += [a.annotation for a in _all_args(args) if a.annotation is not None]
            if scope.returns is not None:
                parts.append(scope.returns)
    elif isinstance(scope, ast.ClassDef):
        parts += scope.decorator_list + scope.bases + [k.value for k in scope.keywords]
    elif isinstance(scope, _COMPREHENSIONS):
        parts.append(scope.generators[0].iter)
    return parts


def _all_args(args: ast.arguments) -> list[ast.arg]:
    extra = [a for a in (args.vararg, args.kwarg) if a is not None]
    return args.posonlyargs + args.args + args.kwonlyargs + extra


def _bindings(scope: ast.AST, nodes: list[ast.AST]) -> set[str]:
    bound: set[str] = set()
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        bound |= {a.arg for a in _all_args(scope.args)}
    for node in nodes:
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            bound.add(node.rest)
    return bound
