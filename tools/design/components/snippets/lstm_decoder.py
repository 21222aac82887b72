"""Decoder: an LSTM language model conditioned on the image, with optional additive attention."""

import torch
import torch.nn as nn

from .additive_attention import AdditiveAttention


class LSTMDecoder(nn.Module):
    """The state starts from the mean image token; with `attention` every step also reads a context vector
    attended over all tokens (Show, Attend and Tell). Teacher forcing: `forward`; generation: `start`/`step`."""

    def __init__(self, feat_dim: int, vocab_size: int, embed_dim: int = 256, hidden_size: int = 512,
                 num_layers: int = 1, attention: bool = True, dropout: float = 0.3):
        super().__init__()
        self.num_layers, self.hidden_size = num_layers, hidden_size
        self.attention = AdditiveAttention(feat_dim, hidden_size, hidden_size) if attention else None
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)  # PAD = 0
        self.init_h = nn.Linear(feat_dim, num_layers * hidden_size)
        self.init_c = nn.Linear(feat_dim, num_layers * hidden_size)
        self.rnn = nn.LSTM(embed_dim + (feat_dim if attention else 0), hidden_size, num_layers,
                           batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, vocab_size)

    def start(self, memory: torch.Tensor) -> tuple:
        """Decoding state for tokens [B, N, D]: (memory, attention keys or None, h, c)."""
        pooled = memory.mean(1)
        shape = (memory.size(0), self.num_layers, self.hidden_size)
        h = torch.tanh(self.init_h(pooled)).view(shape).transpose(0, 1).contiguous()
        c = torch.tanh(self.init_c(pooled)).view(shape).transpose(0, 1).contiguous()
        keys = self.attention.keys(memory) if self.attention is not None else None
        return memory, keys, h, c

    def step(self, prev_ids: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """Logits [B, V] for the token after prev_ids [B], and the next state."""
        memory, keys, h, c = state
        x = self.drop(self.embed(prev_ids))
        if self.attention is not None:
            x = torch.cat([x, self.attention(memory, keys, h[-1])], -1)
        out, (h, c) = self.rnn(x[:, None], (h, c))
        return self.out(self.drop(out[:, 0])), (memory, keys, h, c)

    def forward(self, memory: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits [B, T, V] predicting the token after each of inputs [B, T]."""
        state = self.start(memory)
        if self.attention is None:  # no per-step image input: run the whole sequence in one call
            out, _ = self.rnn(self.drop(self.embed(inputs)), state[2:])
            return self.out(self.drop(out))
        logits = []
        for t in range(inputs.size(1)):
            step_logits, state = self.step(inputs[:, t], state)
            logits.append(step_logits)
        return torch.stack(logits, 1)
