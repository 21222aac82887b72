"""The caption-net-v1 adapter appended to an imported LEMUR file (see `importer.py`).

`ADAPTER` is Python source, not a module of capnas: it runs inside the sandbox as part of the generated
file, after the LEMUR code, so it may use only what the contract allows (torch, collections). Its `Net`
subclasses LEMUR's `Net`, so LEMUR's parameters keep their names and LEMUR's own methods (which call
`self.forward`, `self.train_setup`, `Net._helper`) still find LEMUR's behaviour: while a LEMUR method runs,
the adapter's overrides step aside (`_capnas_inside`).
"""

from __future__ import annotations

# {hyperparameters} is filled by the importer: LEMUR's own module-level function when it has one, else one
# read from Net's method (LEMUR's harness calls the module-level function, so a method alone is not enough).
ADAPTER = '''

# ---- capnas adapter: caption-net-v1 around the LEMUR model above ------------------------------------------
import collections.abc as _capnas_abc
import torch as _capnas_torch

_CAPNAS_PAD, _CAPNAS_BOS, _CAPNAS_EOS = 0, 1, 2  # LEMUR's <PAD>, <SOS>, <EOS> ids are capnas's
_LemurNet = Net
{hyperparameters}

class _CapnasLossRecorder(_capnas_torch.nn.Module):
    """Wraps LEMUR's criterion to note each loss it computes: LEMUR's learn returns nothing."""

    def __init__(self, inner, sink):
        super().__init__()
        self.inner = inner
        self.sink = sink

    def forward(self, *args, **kwargs):
        loss = self.inner(*args, **kwargs)
        self.sink.append(float(loss.detach()))
        return loss


def _capnas_every_reference(images, captions):
    """LEMUR batches hold [B, Ncap, L] captions and most LEMUR models train on captions[:, 0] only: hand
    them [B*Ncap, 1, L], each image repeated once per reference, the all-PAD filler rows dropped."""
    if captions.dim() != 3:
        return images, captions
    b, ncap, length = captions.shape
    keep = (captions != _CAPNAS_PAD).any(-1).reshape(b * ncap)
    return images.repeat_interleave(ncap, 0)[keep], captions.reshape(b * ncap, 1, length)[keep]


def _capnas_terminate(ids, max_len):
    """Generated ids as caption-net-v1 wants them. LEMUR models return BOS-led rows, BOS as a word, no EOS or
    PAD as the end: BOS ids are dropped, the first EOS or PAD ends the caption (EOS there, PAD after it),
    at most max_len - 1 words, and a row with no end gets EOS after its last word."""
    ids = ids.long()
    words = ids != _CAPNAS_BOS
    order = (~words).long().argsort(dim=1, stable=True)  # words first, in their order
    ids = ids.gather(1, order).masked_fill(~words.gather(1, order), _CAPNAS_PAD)[:, :max_len - 1]
    eos = _capnas_torch.full((ids.size(0), 1), _CAPNAS_EOS, dtype=_capnas_torch.long, device=ids.device)
    ids = _capnas_torch.cat([ids, eos], 1)
    end = (ids == _CAPNAS_EOS) | (ids == _CAPNAS_PAD)
    first = end & (end.long().cumsum(1) == 1)
    return ids.masked_fill(first, _CAPNAS_EOS).masked_fill(end.long().cumsum(1).gt(0) & ~first, _CAPNAS_PAD)


class Net(_LemurNet, _capnas_torch.nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        # LEMUR's prm carries batch, epoch_max and transform beside the hyperparameters; max_len is capnas's.
        lemur_prm = dict(prm)
        lemur_prm.setdefault("batch", int(in_shape[0]))
        lemur_prm.setdefault("epoch_max", 1)
        lemur_prm.setdefault("transform", "capnas")
        super().__init__(in_shape, out_shape, lemur_prm, device)
        self._capnas_prm = lemur_prm
        self._capnas_max_len = int(prm["max_len"])
        self._capnas_losses = []
        self._capnas_inside = False
        self.to(device)

    def _capnas_call(self, method, *args):
        """Run one of LEMUR's own methods with the adapter's overrides out of its way."""
        outer = getattr(self, "_capnas_inside", True)
        self._capnas_inside = True
        try:
            return method(*args)
        finally:
            self._capnas_inside = outer

    def train_setup(self, prm):
        if getattr(self, "_capnas_inside", True):
            return super().train_setup(prm)
        return self._capnas_call(super().train_setup, dict(self._capnas_prm, **prm))

    def _capnas_record_losses(self):
        """Wrap whichever of criterion, criteria (LEMUR's tuple) and loss_fn the model keeps."""
        sink = self._capnas_losses

        def wrap(found):
            if isinstance(found, (tuple, list)):
                return tuple(wrap(c) for c in found)
            if callable(found) and not isinstance(found, _CapnasLossRecorder):
                return _CapnasLossRecorder(found, sink)
            return found

        if getattr(self, "criterion", None) is not None:
            self.criterion = wrap(self.criterion)
        if getattr(self, "criteria", None) is not None:
            self.criteria = wrap(self.criteria)
        if getattr(self, "loss_fn", None) is not None:
            self.loss_fn = wrap(self.loss_fn)

    def learn(self, train_data):
        if getattr(self, "_capnas_inside", True):
            return super().learn(train_data)
        self._capnas_losses.clear()

        def batches():
            for images, captions in train_data:
                # LEMUR's learn built its criterion (train_setup) before asking for the first batch.
                self._capnas_record_losses()
                yield _capnas_every_reference(images, captions)

        returned = self._capnas_call(super().learn, batches())
        if isinstance(returned, _capnas_abc.Generator):  # a learn written as a generator trains as it is drained
            returned = self._capnas_call(list, returned)
        if self._capnas_losses:
            return sum(self._capnas_losses) / len(self._capnas_losses)
        if isinstance(returned, (int, float)) and not isinstance(returned, bool):
            return float(returned)
        raise RuntimeError("the LEMUR model's learn reports no loss: it keeps no criterion, criteria or "
                           "loss_fn attribute and returned no number")

    def _capnas_logits(self, images, captions):
        """LEMUR's teacher-forced logits for captions [B, L], one row per input position (a model that
        drops the last input itself gives L-1 rows, one that does not gives L)."""
        out = self._capnas_call(super().forward, images, captions)
        return out[0] if isinstance(out, (tuple, list)) else out

    def _capnas_greedy(self, images):
        """Greedy decoding through LEMUR's teacher-forced path, for a model whose inference gives one step
        only: each step feeds BOS and the words so far (plus a filler the model may drop)."""
        b = images.size(0)
        tokens = _capnas_torch.full((b, 1), _CAPNAS_BOS, dtype=_capnas_torch.long, device=images.device)
        filler = _capnas_torch.full((b, 1), _CAPNAS_PAD, dtype=_capnas_torch.long, device=images.device)
        for _ in range(self._capnas_max_len - 1):
            step = self._capnas_logits(images, _capnas_torch.cat([tokens, filler], 1))[:, tokens.size(1) - 1]
            step = step.float().clone()
            step[:, _CAPNAS_PAD] = float("-inf")
            step[:, _CAPNAS_BOS] = float("-inf")
            tokens = _capnas_torch.cat([tokens, step.argmax(-1, keepdim=True)], 1)
            if bool((tokens == _CAPNAS_EOS).any(1).all()):
                break
        return tokens[:, 1:]

    def forward(self, images, *args, **kwargs):
        if getattr(self, "_capnas_inside", True):
            return super().forward(images, *args, **kwargs)
        captions = args[0] if args else kwargs.get("captions")
        if captions is not None:
            logits = self._capnas_logits(images, captions)
            if logits.dim() == 3 and logits.size(1) == captions.size(1):
                logits = logits[:, :-1]  # the last position predicts past the caption
            return logits
        out = self._capnas_call(super().forward, images)
        out = out[0] if isinstance(out, (tuple, list)) else out
        if out.is_floating_point():
            one_step = out.dim() == 2 or (out.dim() == 3 and out.size(1) == 1)
            with _capnas_torch.no_grad():
                ids = self._capnas_greedy(images) if one_step else out.argmax(-1)
        else:
            ids = out
        return _capnas_terminate(ids, self._capnas_max_len)
'''

MODULE_HYPERPARAMETERS = '''

def supported_hyperparameters():
    return {names}
'''
