"""Bahdanau-style additive attention over image tokens, used by the recurrent decoders."""

import torch
import torch.nn as nn


class AdditiveAttention(nn.Module):
    """weights = softmax_n(v . tanh(W_k token_n + W_q query)); context = sum_n weights_n * token_n."""

    def __init__(self, token_dim: int, query_dim: int, attn_dim: int):
        super().__init__()
        self.key = nn.Linear(token_dim, attn_dim)
        self.query = nn.Linear(query_dim, attn_dim, bias=False)
        self.score = nn.Linear(attn_dim, 1, bias=False)

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        """Project tokens [B, N, D] once per caption; every decoding step reuses the result."""
        return self.key(memory)

    def forward(self, memory: torch.Tensor, keys: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """Context [B, D] for query [B, Q], given tokens [B, N, D] and their keys [B, N, A]."""
        scores = self.score(torch.tanh(keys + self.query(query)[:, None])).squeeze(-1)
        return torch.bmm(scores.softmax(-1)[:, None], memory).squeeze(1)
