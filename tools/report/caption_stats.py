"""Error analysis of generated captions, counted from the captions a training job saved and the split's
references: lengths, diversity, vocabulary coverage, the words a model never says, and the captions closest to
and furthest from their references. Counting only: nothing here is a metric of the leaderboard.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from capnas.tools.data.vocab import SPECIAL_TOKENS, tokenize


@dataclass(frozen=True)
class LengthStats:
    mean: float
    median: float
    min: int
    max: int

    @classmethod
    def of(cls, lengths: Sequence[int]) -> LengthStats:
        if not lengths:
            return cls(0.0, 0.0, 0, 0)
        return cls(statistics.fmean(lengths), float(statistics.median(lengths)), min(lengths), max(lengths))


@dataclass(frozen=True)
class ScoredCaption:
    image_id: int
    generated: str
    closest_reference: str
    word_f1: float  # unigram F1 against the closest reference, clipped counts


@dataclass(frozen=True)
class CaptionStats:
    images: int
    generated_lengths: LengthStats  # words per caption
    reference_lengths: LengthStats
    distinct_captions: int
    distinct_words: int  # distinct words across all generated captions
    vocab_words: int  # words of the task vocabulary (special tokens excluded)
    reference_words: int  # distinct vocabulary words used in this split's references
    never_generated: list[tuple[str, int]]  # reference words (in the vocabulary) never generated, by reference count
    never_generated_total: int
    top_generated: list[tuple[str, int]]
    unknown_words: int  # '<unk>' tokens in the generated captions
    empty_captions: int
    best: list[ScoredCaption]
    worst: list[ScoredCaption]

    @property
    def vocab_coverage(self) -> float:
        """Share of the vocabulary the model ever said."""
        return self.distinct_words / self.vocab_words if self.vocab_words else 0.0

    @property
    def reference_coverage(self) -> float:
        """Share of the (vocabulary) words this split's references use that the model ever said."""
        said = self.reference_words - self.never_generated_total
        return said / self.reference_words if self.reference_words else 0.0


def word_f1(candidate: Sequence[str], reference: Sequence[str]) -> float:
    if not candidate or not reference:
        return 0.0
    overlap = sum((Counter(candidate) & Counter(reference)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(candidate), overlap / len(reference)
    return 2 * precision * recall / (precision + recall)


def caption_stats(generated: Mapping[int, str], references: Mapping[int, Sequence[str]],
                  vocab_words: Sequence[str], examples: int = 3, top: int = 10) -> CaptionStats:
    """Statistics over the images that have both a generated caption and references."""
    ids = [i for i in generated if i in references]
    gen_tokens = {i: tokenize(generated[i]) for i in ids}
    ref_tokens = {i: [tokenize(r) for r in references[i]] for i in ids}
    words = [w for w in vocab_words if w not in SPECIAL_TOKENS]
    in_vocab = set(words)

    gen_counts = Counter(w for i in ids for w in gen_tokens[i])
    ref_counts = Counter(w for i in ids for ref in ref_tokens[i] for w in ref if w in in_vocab)
    never = [(w, n) for w, n in ref_counts.most_common() if w not in gen_counts]

    scored = []
    for i in ids:
        best_ref = max(ref_tokens[i], key=lambda ref: word_f1(gen_tokens[i], ref), default=[])
        ref_text = references[i][ref_tokens[i].index(best_ref)] if ref_tokens[i] else ""
        scored.append(ScoredCaption(i, generated[i], ref_text, word_f1(gen_tokens[i], best_ref)))
    ranked = sorted(scored, key=lambda s: (-s.word_f1, s.image_id))
    worst = sorted(scored, key=lambda s: (s.word_f1, s.image_id))

    return CaptionStats(
        images=len(ids),
        generated_lengths=LengthStats.of([len(gen_tokens[i]) for i in ids]),
        reference_lengths=LengthStats.of([len(r) for i in ids for r in ref_tokens[i]]),
        distinct_captions=len({" ".join(gen_tokens[i]) for i in ids}),
        distinct_words=len([w for w in gen_counts if w in in_vocab]),
        vocab_words=len(words),
        reference_words=len(ref_counts),
        never_generated=never[:top],
        never_generated_total=len(never),
        top_generated=gen_counts.most_common(top),
        unknown_words=sum(generated[i].split().count(SPECIAL_TOKENS[3]) for i in ids),
        empty_captions=sum(1 for i in ids if not gen_tokens[i]),
        best=ranked[:examples],
        worst=worst[:examples],
    )
