"""caption-net-v1 model: small_cnn(width=32, depth=3, grid=7) + gru(embed_dim=256, hidden_size=512, num_layers=1, attention=False).

Rendered by capnas from this architecture spec; change the spec and render again instead of editing.

spec: {"encoder":{"name":"small_cnn","width":32,"depth":3,"grid":7},"decoder":{"name":"gru","embed_dim":256,"hidden_size":512,"num_layers":1,"attention":false},"dropout":0.3,"lr":0.001,"weight_decay":0.0,"grad_clip":5.0,"batch_size":32,"epochs":15}
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---- small_cnn -----------------------------------------------------------------------------------
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


# ---- additive_attention --------------------------------------------------------------------------
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


# ---- gru_decoder ---------------------------------------------------------------------------------
class GRUDecoder(nn.Module):
    """The state starts from the mean image token; with `attention` every step also reads a context vector
    attended over all tokens. Teacher forcing: `forward`; generation: `start`/`step`."""

    def __init__(self, feat_dim: int, vocab_size: int, embed_dim: int = 256, hidden_size: int = 512,
                 num_layers: int = 1, attention: bool = True, dropout: float = 0.3):
        super().__init__()
        self.num_layers, self.hidden_size = num_layers, hidden_size
        self.attention = AdditiveAttention(feat_dim, hidden_size, hidden_size) if attention else None
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)  # PAD = 0
        self.init_h = nn.Linear(feat_dim, num_layers * hidden_size)
        self.rnn = nn.GRU(embed_dim + (feat_dim if attention else 0), hidden_size, num_layers,
                          batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, vocab_size)

    def start(self, memory: torch.Tensor) -> tuple:
        """Decoding state for tokens [B, N, D]: (memory, attention keys or None, h)."""
        shape = (memory.size(0), self.num_layers, self.hidden_size)
        h = torch.tanh(self.init_h(memory.mean(1))).view(shape).transpose(0, 1).contiguous()
        keys = self.attention.keys(memory) if self.attention is not None else None
        return memory, keys, h

    def step(self, prev_ids: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """Logits [B, V] for the token after prev_ids [B], and the next state."""
        memory, keys, h = state
        x = self.drop(self.embed(prev_ids))
        if self.attention is not None:
            x = torch.cat([x, self.attention(memory, keys, h[-1])], -1)
        out, h = self.rnn(x[:, None], h)
        return self.out(self.drop(out[:, 0])), (memory, keys, h)

    def forward(self, memory: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits [B, T, V] predicting the token after each of inputs [B, T]."""
        state = self.start(memory)
        if self.attention is None:  # no per-step image input: run the whole sequence in one call
            out, _ = self.rnn(self.drop(self.embed(inputs)), state[2])
            return self.out(self.drop(out))
        logits = []
        for t in range(inputs.size(1)):
            step_logits, state = self.step(inputs[:, t], state)
            logits.append(step_logits)
        return torch.stack(logits, 1)


# ---- architecture chosen by the spec -------------------------------------------------------------
def build_encoder():
    return SmallCNNEncoder(width=32, depth=3, grid=7)


def build_decoder(feat_dim, vocab_size, dropout):
    return GRUDecoder(feat_dim, vocab_size, embed_dim=256, hidden_size=512, num_layers=1, attention=False, dropout=dropout)


# ---- caption-net-v1 glue -------------------------------------------------------------------------
PAD, BOS, EOS, UNK = 0, 1, 2, 3  # fixed by caption-net-v1


def supported_hyperparameters():
    return {"lr", "weight_decay", "grad_clip", "dropout"}


def finish_captions(ids: torch.Tensor) -> torch.Tensor:
    """Force EOS at the last position of rows that never emitted one, and PAD everything after the first EOS."""
    ids = ids.clone()
    ids[~(ids == EOS).any(1), -1] = EOS
    is_eos = (ids == EOS).long()
    ids[is_eos.cumsum(1) - is_eos > 0] = PAD
    return ids


class Net(nn.Module):
    """Image tokens [B, N, D] from the encoder condition a caption decoder (see build_encoder/build_decoder)."""

    def __init__(self, in_shape: tuple, out_shape: tuple, prm: dict, device: torch.device):
        super().__init__()
        self.device = torch.device(device)
        self.vocab_size = int(out_shape[0])
        self.max_len = int(prm["max_len"])
        self.encoder = build_encoder()
        self.decoder = build_decoder(self.encoder.out_dim, self.vocab_size, float(prm["dropout"]))
        self.to(self.device)

    def train_setup(self, prm: dict) -> None:
        self.criterion = nn.CrossEntropyLoss(ignore_index=PAD)
        trainable = [p for p in self.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=float(prm["lr"]), weight_decay=float(prm["weight_decay"]))
        self.grad_clip = float(prm["grad_clip"])

    def learn(self, train_data) -> float:
        """One pass over (images [B, 3, H, W], captions [B, Ncap, L]) batches; every reference is a target."""
        self.train()
        total, batches = 0.0, 0
        for images, captions in train_data:
            n_cap, length = captions.shape[1], captions.shape[2]
            # Encode each image once and share its tokens among its Ncap references.
            memory = self.encoder(images).repeat_interleave(n_cap, dim=0)
            captions = captions.reshape(-1, length)
            logits = self.decoder(memory, captions[:, :-1])
            loss = self.criterion(logits.reshape(-1, self.vocab_size), captions[:, 1:].reshape(-1))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.parameters(), self.grad_clip)
            self.optimizer.step()
            total += loss.detach()
            batches += 1
        return float(total) / batches if batches else math.nan

    def forward(self, images: torch.Tensor, captions: torch.Tensor | None = None) -> torch.Tensor:
        """With captions [B, L]: teacher-forced logits [B, L-1, V]. Without: generated ids [B, T], T < max_len."""
        memory = self.encoder(images)
        if captions is not None:
            return self.decoder(memory, captions[:, :-1])
        return self.generate(memory)

    @torch.no_grad()
    def generate(self, memory: torch.Tensor) -> torch.Tensor:
        """Greedy decoding from BOS for at most max_len - 1 tokens, stopping once every row has emitted EOS."""
        state = self.decoder.start(memory)
        prev = torch.full((memory.size(0),), BOS, dtype=torch.long, device=memory.device)
        finished = torch.zeros_like(prev, dtype=torch.bool)
        tokens = []
        for _ in range(self.max_len - 1):
            logits, state = self.decoder.step(prev, state)
            logits[:, [PAD, BOS]] = -math.inf  # never valid inside a generated caption
            prev = logits.argmax(-1)
            tokens.append(prev)
            finished |= prev == EOS
            if bool(finished.all()):
                break
        return finish_captions(torch.stack(tokens, 1))
