"""Encoder: a ResNet-style stack of basic residual blocks trained from scratch."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut, as in ResNet-18/34."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """A stride-2 stem, then `stages` stages of `blocks` basic blocks (every stage after the first halves the
    resolution and doubles the channels). images [B, 3, H, W] in [0, 1] -> tokens [B, N, out_dim]."""

    def __init__(self, width: int = 32, blocks: int = 2, stages: int = 3, grid: int = 7):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        layers, channels = [], width
        for stage in range(stages):
            out = width * 2**stage
            for block in range(blocks):
                layers.append(BasicBlock(channels, out, stride=2 if stage > 0 and block == 0 else 1))
                channels = out
        self.layers = nn.Sequential(*layers)
        self.grid = grid
        self.out_dim = channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(images - 0.5))
        # Cap the token count so that large images do not make attention over tokens expensive.
        x = F.adaptive_avg_pool2d(x, (min(self.grid, x.size(2)), min(self.grid, x.size(3))))
        return x.flatten(2).transpose(1, 2)
