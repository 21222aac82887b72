"""Encoder: a patch-embedding vision transformer trained from scratch."""

import torch
import torch.nn as nn


def patch_positions(rows: int, cols: int, dim: int, device: torch.device) -> torch.Tensor:
    """Fixed 2-D sine-cosine position codes [rows * cols, dim]: any image size works, no learned table."""
    quarter = dim // 4
    freq = 1.0 / 10000 ** (torch.arange(quarter, device=device) / quarter)
    y = torch.arange(rows, device=device)[:, None] * freq
    x = torch.arange(cols, device=device)[:, None] * freq
    y = torch.cat([y.sin(), y.cos()], 1)[:, None].expand(rows, cols, 2 * quarter)
    x = torch.cat([x.sin(), x.cos()], 1)[None, :].expand(rows, cols, 2 * quarter)
    return torch.cat([y, x], -1).reshape(rows * cols, 4 * quarter)


class ViTEncoder(nn.Module):
    """Non-overlapping `patch_size` patches embedded by a strided conv, then `depth` pre-norm transformer
    encoder layers. images [B, 3, H, W] in [0, 1] -> tokens [B, (H/p) * (W/p), dim]."""

    def __init__(self, patch_size: int = 16, dim: int = 128, depth: int = 2, heads: int = 4):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch_size, stride=patch_size)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout=0.1, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(dim), enable_nested_tensor=False)
        self.out_dim = dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch(images * 2 - 1)
        rows, cols = x.shape[2:]
        x = x.flatten(2).transpose(1, 2) + patch_positions(rows, cols, self.out_dim, x.device)
        return self.blocks(x)
