"""Pieces of the dynamic probe that need no candidate: synthetic batches and the checks on what `forward`
returns. Each check returns a list of (code, message) pairs; empty means the clause holds."""

from __future__ import annotations

import torch

from capnas.contracts.contract import Contract

Finding = tuple[str, str]


def synthetic_batch(contract: Contract, batch: int, n_cap: int, generator: torch.Generator,
                    device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """images float32 [B, C, H, W] in [0, 1]; captions int64 [B, Ncap, L], rows `BOS w.. EOS PAD..` with
    words drawn from the non-special ids and lengths from 1 to L-2."""
    _, channels, height, width = contract.input_shape
    ids = contract.special_ids
    length = contract.max_len
    images = torch.rand(batch, channels, height, width, generator=generator)
    captions = torch.full((batch, n_cap, length), ids.pad, dtype=torch.long)
    first_word = max(ids.pad, ids.bos, ids.eos, ids.unk) + 1
    for b in range(batch):
        for k in range(n_cap):
            words = int(torch.randint(1, length - 1, (1,), generator=generator))
            captions[b, k, 0] = ids.bos
            captions[b, k, 1:words + 1] = torch.randint(first_word, contract.vocab_size, (words,), generator=generator)
            captions[b, k, words + 1] = ids.eos
    return images.to(device), captions.to(device)


def replace_later_references(captions: torch.Tensor, contract: Contract, generator: torch.Generator) -> torch.Tensor:
    """The same batch with every reference but the first redrawn: a model that trains on captions[:, 0] only
    cannot tell the two apart."""
    fresh = synthetic_batch(contract, captions.size(0), captions.size(1), generator, "cpu")[1].to(captions.device)
    out = captions.clone()
    out[:, 1:] = fresh[:, 1:]
    return out


def describe(value: object) -> str:
    if value is None:
        return "None"
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {list(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


def check_logits(logits: object, contract: Contract, batch: int) -> list[Finding]:
    expected = [batch, contract.max_len - 1, contract.vocab_size]
    if type(logits) is not torch.Tensor or not logits.is_floating_point() or list(logits.shape) != expected:
        return [("OUT-001", f"forward(images, captions) returned {describe(logits)}; expected float logits {expected}")]
    if not bool(torch.isfinite(logits).all()):
        bad = int((~torch.isfinite(logits)).sum())
        return [("OUT-008", f"teacher-forced logits hold {bad} NaN/inf values")]
    return []


def check_generated(ids: object, contract: Contract, batch: int) -> list[Finding]:
    """OUT-002..OUT-006 on the output of forward(images)."""
    if type(ids) is not torch.Tensor:
        return [("OUT-002", f"forward(images) returned {describe(ids)}; expected one int64 tensor [B, T]")]
    if ids.dtype != torch.long or ids.dim() != 2 or ids.size(0) != batch or not 1 <= ids.size(1) <= contract.max_len:
        return [("OUT-003", f"forward(images) returned {describe(ids)}; expected int64 [{batch}, T] with "
                            f"1 <= T <= {contract.max_len}")]
    findings: list[Finding] = []
    out_of_range = (ids < 0) | (ids >= contract.vocab_size)
    if bool(out_of_range.any()):
        bad = ids[out_of_range]
        findings.append(("OUT-004", f"{int(out_of_range.sum())} generated ids outside [0, {contract.vocab_size}), "
                                    f"e.g. {int(bad[0])} (min {int(ids.min())}, max {int(ids.max())})"))
    findings += check_termination(ids, contract)
    if bool((ids[:, 0] == contract.special_ids.bos).any()):
        rows = (ids[:, 0] == contract.special_ids.bos).nonzero().flatten().tolist()
        findings.append(("OUT-006", f"rows {rows} start with BOS ({contract.special_ids.bos})"))
    return findings


def check_termination(ids: torch.Tensor, contract: Contract) -> list[Finding]:
    eos, pad = contract.special_ids.eos, contract.special_ids.pad
    is_eos = ids == eos
    missing = (~is_eos.any(1)).nonzero().flatten().tolist()
    if missing:
        return [("OUT-005", f"rows {missing} hold no EOS ({eos}); e.g. row {missing[0]}: {ids[missing[0]].tolist()}")]
    after_first = (is_eos.long().cumsum(1) - is_eos.long()) > 0  # positions after the first EOS
    dirty = (after_first & (ids != pad)).any(1).nonzero().flatten().tolist()
    if dirty:
        return [("OUT-005", f"rows {dirty} hold tokens other than PAD ({pad}) after their first EOS; "
                            f"e.g. row {dirty[0]}: {ids[dirty[0]].tolist()}")]
    return []
