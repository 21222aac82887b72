"""Encoder: a plain convolutional stack trained from scratch."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class SmallCNNEncoder(nn.Module):
    """`depth` stages of two 3x3 conv-BN-ReLU layers; each stage halves the resolution and doubles the channels.

    images [B, 3, H, W] in [0, 1] -> tokens [B, N, out_dim], one per cell of an at most `grid` x `grid` map.
    """

    def __init__(self, width: int = 32, depth: int = 3, grid: int = 7):
        super().__init__()
        layers, channels = [], 3
        for stage in range(depth):
            out = width * 2**stage
            layers += [
                nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.Conv2d(out, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.grid = grid
        self.out_dim = channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.features(images - 0.5)
        # Cap the token count so that large images do not make attention over tokens expensive.
        x = F.adaptive_avg_pool2d(x, (min(self.grid, x.size(2)), min(self.grid, x.size(3))))
        return x.flatten(2).transpose(1, 2)
