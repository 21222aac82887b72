"""The caption-net-v1 glue that every rendered module ends with. It is not a component: `render` writes
`build_encoder()` and `build_decoder(feat_dim, vocab_size, dropout)` from the spec just above this code."""

import math

import torch
import torch.nn as nn

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
