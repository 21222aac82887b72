"""Decoder: a transformer decoder whose layers cross-attend to the image tokens."""

import math

import torch
import torch.nn as nn


def token_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """Fixed sinusoidal position codes [length, dim] (Vaswani et al.): any caption length works."""
    position = torch.arange(length, device=device)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device) * (-math.log(10000.0) / dim))
    codes = torch.zeros(length, dim, device=device)
    codes[:, 0::2] = torch.sin(position * freq)
    codes[:, 1::2] = torch.cos(position * freq)
    return codes


class TransformerDecoder(nn.Module):
    """Pre-norm causal self-attention over the caption plus cross-attention to the projected image tokens.
    Teacher forcing: `forward`; generation: `start`/`step` (each step re-reads the prefix: captions are short)."""

    def __init__(self, feat_dim: int, vocab_size: int, d_model: int = 256, num_layers: int = 2, heads: int = 4,
                 dropout: float = 0.1):
        super().__init__()
        self.d_model = d_model
        self.memory_proj = nn.Linear(feat_dim, d_model)
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=0)  # PAD = 0
        layer = nn.TransformerDecoderLayer(d_model, heads, 4 * d_model, dropout, batch_first=True, norm_first=True)
        self.layers = nn.TransformerDecoder(layer, num_layers, norm=nn.LayerNorm(d_model))
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(d_model, vocab_size)

    def decode(self, memory: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, V] for inputs [B, T] given already projected memory [B, N, d_model]."""
        length = inputs.size(1)
        x = self.drop(self.embed(inputs) + token_positions(length, self.d_model, inputs.device))
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=inputs.device)
        return self.out(self.layers(x, memory, tgt_mask=causal, tgt_is_causal=True))

    def forward(self, memory: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits [B, T, V] predicting the token after each of inputs [B, T]."""
        return self.decode(self.memory_proj(memory), inputs)

    def start(self, memory: torch.Tensor) -> tuple:
        """Decoding state: (projected memory, the ids fed so far [B, 0])."""
        return self.memory_proj(memory), torch.zeros(memory.size(0), 0, dtype=torch.long, device=memory.device)

    def step(self, prev_ids: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """Logits [B, V] for the token after prev_ids [B], and the next state."""
        memory, ids = state
        ids = torch.cat([ids, prev_ids[:, None]], 1)
        return self.decode(memory, ids)[:, -1], (memory, ids)
