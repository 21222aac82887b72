"""The allow-list admits torchvision.models architectures built without downloaded weights (issue #19): a
builder called with weights=None (or nothing) passes; any request for weights, and the rest of torchvision,
is refused with a hint. The probe runs such a model in the real sandbox."""

from __future__ import annotations

import textwrap

import pytest

from capnas.contracts import caption_net_v1, check_source, must_stop
from test_contract_static import SKELETON

CONTRACT = caption_net_v1(vocab_size=40)


def findings(extra: str) -> list:
    return [v for v in check_source(SKELETON + textwrap.dedent(extra), CONTRACT)]


@pytest.mark.parametrize("extra", [
    "import torchvision.models as tv\nm = tv.resnet18(weights=None)\n",
    "import torchvision.models as tv\nm = tv.alexnet()\n",
    "from torchvision.models import resnet50\nm = resnet50(weights=None, num_classes=10)\n",
    "import torchvision.models as tv\nm = tv.mobilenet_v3_small(pretrained=False)\n",
    "from torchvision.models import AlexNet_Weights\nname = AlexNet_Weights.IMAGENET1K_V1\n",  # naming is no download
])
def test_architectures_without_weights_pass(extra: str) -> None:
    assert findings(extra) == []


@pytest.mark.parametrize(("extra", "code", "words"), [
    ("import torchvision.models as tv\nm = tv.resnet50(weights=tv.ResNet50_Weights.IMAGENET1K_V2)\n",
     "SEC-002", "resnet50(weights=tv.ResNet50_Weights.IMAGENET1K_V2) would download weights"),
    ("import torchvision.models as tv\nW = None\nm = tv.alexnet(weights=W)\n", "SEC-002", "alexnet(weights=W)"),
    ("import torchvision.models as tv\nm = tv.alexnet(pretrained=True)\n", "SEC-002", "pretrained=True"),
    ("from torchvision.models import resnet18\nm = resnet18(weights='DEFAULT')\n", "SEC-002", "weights='DEFAULT'"),
    ("import torchvision.models as tv\ncfg = {}\nm = tv.resnet18(**cfg)\n", "SEC-002", "pass weights=None"),
    ("from torchvision.models import AlexNet_Weights\nw = AlexNet_Weights.IMAGENET1K_V1.get_state_dict()\n",
     "SEC-002", "get_state_dict downloads weights"),
    ("import torchvision.models\nx = torchvision.io.read_file('a.jpg')\n", "IMP-001", "only torchvision.models"),
    ("import torchvision.datasets\n", "IMP-001", "torchvision.datasets"),
    ("import torchvision\n", "IMP-001", "torchvision"),
])
def test_weights_and_the_rest_of_torchvision_are_refused(extra: str, code: str, words: str) -> None:
    found = findings(extra)
    assert any(v.code == code and words in v.message for v in found), [(v.code, v.message) for v in found]
    assert must_stop(found)
    if "would download weights" in words:
        assert any("weights=None" in v.message and "efficientnet-lite0" in v.message for v in found)


TV_MODEL = '''
import torch
import torch.nn as nn
import torchvision.models as tv


def supported_hyperparameters():
    return {"lr"}


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.max_len = prm["max_len"]
        backbone = tv.squeezenet1_1(weights=None)
        self.encoder = nn.Sequential(backbone.features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 64))
        self.embed = nn.Embedding(out_shape[0], 64)
        self.gru = nn.GRU(64, 64, batch_first=True)
        self.out = nn.Linear(64, out_shape[0])
        self.to(device)

    def train_setup(self, prm):
        self.criterion = nn.CrossEntropyLoss(ignore_index=0)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=prm["lr"])

    def _logits(self, images, tokens):
        h0 = self.encoder(images).unsqueeze(0)
        out, _ = self.gru(self.embed(tokens), h0)
        return self.out(out)

    def learn(self, train_data):
        total, n = 0.0, 0
        for images, captions in train_data:
            b, ncap, length = captions.shape
            caps = captions.reshape(b * ncap, length)
            logits = self._logits(images.repeat_interleave(ncap, 0), caps[:, :-1])
            loss = self.criterion(logits.reshape(-1, logits.size(-1)), caps[:, 1:].reshape(-1))
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            total, n = total + loss.item(), n + 1
        return total / max(n, 1)

    def forward(self, images, captions=None):
        if captions is not None:
            return self._logits(images, captions[:, :-1])
        tokens = torch.ones(images.size(0), 1, dtype=torch.long, device=images.device)
        for _ in range(self.max_len - 1):
            step = self._logits(images, tokens)[:, -1]
            step[:, :2] = float("-inf")  # no PAD, no BOS
            tokens = torch.cat([tokens, step.argmax(-1, keepdim=True)], 1)
        ids = tokens[:, 1:]
        ids[:, -1] = 2
        seen = (ids == 2).cumsum(1)
        return ids.masked_fill((seen > 1) | ((seen == 1) & (ids != 2)), 0)
'''


@pytest.mark.slow  # ~25 s: torchvision's import and a probe in the sandbox
def test_a_torchvision_architecture_passes_the_sandboxed_probe() -> None:
    from capnas.tools.jobs.validation import validate_code

    # Generous time budgets: the point is the allow-list and the real builder, not speed on a shared CI box.
    contract = caption_net_v1(vocab_size=40, image_size=32, max_len=8, max_latency_ms=5000.0, max_probe_s=300.0)
    assert check_source(TV_MODEL, contract) == []
    report = validate_code(TV_MODEL, contract, "cpu", seed=0)
    assert report.ok, [(v.code, v.message) for v in report.violations]
    assert report.params > 720_000  # SqueezeNet 1.1's own 0.72M feature parameters are there: the builder ran
