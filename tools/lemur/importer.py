"""`import_lemur(source)`: a LEMUR `Net` file as a caption-net-v1 module, or `LemurImportError` naming why not.

The LEMUR code is kept verbatim, with one announced exception: the statement that imports LEMUR's loader
vocabulary (`from ab.nn.loader.coco_.Caption import GLOBAL_CAPTION_VOCAB`) becomes, on the same line, a
dict of the special ids, which LEMUR and capnas share (PAD 0, SOS/BOS 1, EOS 2, UNK 3); the words stay
with capnas's evaluator. The adapter (`adapter.ADAPTER`) follows the code. A file the adapter cannot serve
is refused before anything runs: it does not parse, has no `Net`, is no captioner, has a method LEMUR's
harness could not call, or reaches outside the contract's allow-list (the contract's own static checks).
"""

from __future__ import annotations

import ast
import hashlib

from capnas.contracts import caption_net_v1, check_source, must_stop
from capnas.contracts.static_checks import declared_hyperparameters
from capnas.tools.lemur.adapter import ADAPTER, MODULE_HYPERPARAMETERS

LEMUR_VOCAB_MODULE = "ab.nn.loader.coco_.Caption"
LEMUR_VOCAB_NAME = "GLOBAL_CAPTION_VOCAB"
SPECIAL_VOCAB = ("{'word2idx': {'<PAD>': 0, '<SOS>': 1, '<EOS>': 2, '<UNK>': 3}, "
                 "'idx2word': {0: '<PAD>', 1: '<SOS>', 2: '<EOS>', 3: '<UNK>'}}")
# How LEMUR's harness calls each method (ab/nn/util/Train.py): positional arguments after self.
LEMUR_CALLS = {"__init__": ("(in_shape, out_shape, prm, device)", 4), "train_setup": ("(prm)", 1),
               "learn": ("(train_data)", 1)}


class LemurImportError(ValueError):
    """The file cannot be served by the adapter; the message is one line naming the defect."""


def import_lemur(source: str, origin: str) -> str:
    """The caption-net-v1 module for LEMUR `source` (`origin` names it in the header)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise LemurImportError(f"syntax error at line {e.lineno}: {e.msg} (LEMUR could not import it either)") from None
    except ValueError as e:  # null bytes
        raise LemurImportError(f"not Python source: {e}") from None
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    net = classes.get("Net")
    if net is None:
        raise LemurImportError("no module-level class Net: not a LEMUR model file")
    _check_calls(net, classes)
    hyperparameters = _hyperparameters(tree, net)
    code, substituted = _provide_vocabulary(source, tree)
    header = _header(origin, source, substituted)
    module = header + code.rstrip("\n") + "\n" + ADAPTER.replace("{hyperparameters}", hyperparameters)
    _check_allow_list(module, header.count("\n"))
    return module


def _methods(cls: ast.ClassDef, classes: dict[str, ast.ClassDef], seen: set[str] | None = None) -> dict:
    """Methods as Python finds them among the file's own classes (a base from elsewhere is not read)."""
    seen = seen if seen is not None else set()
    seen.add(cls.name)
    found: dict[str, ast.FunctionDef] = {}
    for base in reversed(cls.bases):
        if isinstance(base, ast.Name) and base.id in classes and base.id not in seen:
            found.update(_methods(classes[base.id], classes, seen))
    found.update({n.name: n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))})
    return found


def _accepts(fn: ast.FunctionDef, n: int) -> bool:
    """Whether fn (a method) can be called with n positional arguments after self, nothing else required."""
    args = fn.args
    positional = (args.posonlyargs + args.args)[1:]
    required = len(positional) - len(args.defaults)
    kwonly_required = any(d is None for d in args.kw_defaults)
    return required <= n and (len(positional) >= n or args.vararg is not None) and not kwonly_required


def _shown(fn: ast.FunctionDef) -> str:
    return f"{fn.name}({ast.unparse(fn.args)})"


def _check_calls(net: ast.ClassDef, classes: dict[str, ast.ClassDef]) -> None:
    methods = _methods(net, classes)
    forward = methods.get("forward")
    if forward is None or not _accepts(forward, 2):
        shown = _shown(forward) if forward else "no forward"
        raise LemurImportError(f"not a captioner: Net has {shown}, which takes no captions beside the images")
    for name, (call, n) in LEMUR_CALLS.items():
        fn = methods.get(name)
        if fn is None:
            raise LemurImportError(f"Net has no {name}{call}, which LEMUR's harness calls")
        if not _accepts(fn, n):
            raise LemurImportError(f"Net.{_shown(fn)} at line {fn.lineno} cannot be called as {name}{call}, "
                                   "the way LEMUR's harness calls it")


def _hyperparameters(tree: ast.Module, net: ast.ClassDef) -> str:
    """The module-level supported_hyperparameters() to add: none when LEMUR's file has one, else the set
    Net's own method returns, read without running it."""
    if any(isinstance(n, ast.FunctionDef) and n.name == "supported_hyperparameters" for n in tree.body):
        return ""
    method = next((n for n in net.body if isinstance(n, ast.FunctionDef) and n.name == "supported_hyperparameters"),
                  None)
    if method is None:
        raise LemurImportError("no supported_hyperparameters(), at module level or in Net: LEMUR's harness "
                               "asks it which hyperparameters to give")
    names = declared_hyperparameters(ast.Module(body=[ast.FunctionDef(
        name="supported_hyperparameters", args=method.args, body=method.body, decorator_list=[],
        returns=None, type_params=[], lineno=method.lineno, col_offset=0)], type_ignores=[]))
    if names is None:
        raise LemurImportError(f"Net.supported_hyperparameters at line {method.lineno} does not return a set "
                               "literal of names, so no module-level one can be written for it")
    return MODULE_HYPERPARAMETERS.replace("{names}", repr(sorted(names)).replace("[", "{").replace("]", "}"))


def _provide_vocabulary(source: str, tree: ast.Module) -> tuple[str, int | None]:
    """Replace the one-line import of LEMUR's loader vocabulary with the special-id vocabulary, on the same
    line (so every other line keeps its number). Returns the code and the line replaced (or None)."""
    lines = source.splitlines(keepends=True)
    for node in ast.walk(tree):
        if (isinstance(node, ast.ImportFrom) and node.module == LEMUR_VOCAB_MODULE and node.level == 0
                and [(a.name, a.asname) for a in node.names] == [(LEMUR_VOCAB_NAME, None)]
                and node.lineno == node.end_lineno):
            line = lines[node.lineno - 1]
            before = line[:node.col_offset]
            after = line[node.end_col_offset:]
            lines[node.lineno - 1] = (f"{before}{LEMUR_VOCAB_NAME} = {SPECIAL_VOCAB}  "
                                      f"# capnas lemur import: was `{ast.unparse(node)}`{after}")
            return "".join(lines), node.lineno
    return source, None


def _header(origin: str, source: str, substituted: int | None) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]
    change = (f"#   except line {substituted}: LEMUR's loader vocabulary is given as capnas's special ids.\n"
              if substituted else "")
    return (f"# caption-net-v1 module made by `capnas lemur import` from the LEMUR (ABrain-One nn-dataset) model\n"
            f"# {origin} (sha256 {digest}...). The LEMUR code below is verbatim, with its own licence terms,\n"
            f"{change}"
            "# The capnas adapter at the end serves caption-net-v1: every reference caption in learn, the mean\n"
            "# loss returned, EOS-terminated ids at inference, max_len from prm, a module-level\n"
            "# supported_hyperparameters().\n\n")


def _check_allow_list(module: str, header_lines: int) -> None:
    """The contract's static checks of the whole module; a stopping violation refuses the file, naming the
    line in LEMUR's own numbering."""
    contract = caption_net_v1(vocab_size=100)
    stopping = [v for v in check_source(module, contract) if must_stop([v])]
    if stopping:
        v = stopping[0]
        line = f"line {v.line - header_lines}: " if v.line else ""
        more = f" (and {len(stopping) - 1} more)" if len(stopping) > 1 else ""
        raise LemurImportError(f"{line}{v.code} {v.message}{more}")
