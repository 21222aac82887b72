"""The caption vocabulary and the one tokenizer used everywhere (vocabulary, encoding, evaluation text).

Special ids are fixed by the caption-net contract: PAD=0, BOS=1, EOS=2, UNK=3. Real words follow,
most frequent first (ties alphabetical), so the same captions always give the same ids.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, ValidationError, field_validator

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")

_WORD = re.compile(r"[^\W_]+")  # runs of letters and digits, any alphabet
_APOSTROPHES = re.compile(r"['\u2019]")


def tokenize(text: str) -> list[str]:
    """Lower-case words with punctuation dropped; apostrophes join ("man's" -> "mans")."""
    return _WORD.findall(_APOSTROPHES.sub("", text.lower()))


class VocabularyError(ValueError):
    pass


class Vocabulary(BaseModel, frozen=True):
    words: tuple[str, ...]  # id -> word; the first four are SPECIAL_TOKENS
    min_count: int

    @field_validator("words")
    @classmethod
    def _specials_first(cls, words: tuple[str, ...]) -> tuple[str, ...]:
        if words[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
            raise ValueError(f"the first ids must be {list(SPECIAL_TOKENS)}, got {list(words[:4])}")
        if len(set(words)) != len(words):
            raise ValueError("words repeat")
        return words

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 5) -> Vocabulary:
        """Words seen at least `min_count` times in `captions` (pass TRAIN captions only)."""
        if min_count < 1:
            raise VocabularyError(f"min_count must be >= 1, got {min_count}")
        counts = Counter(w for caption in captions for w in tokenize(caption))
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(words=SPECIAL_TOKENS + tuple(w for w in kept if w not in SPECIAL_TOKENS), min_count=min_count)

    def __len__(self) -> int:
        return len(self.words)

    @cached_property
    def _ids(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    def encode(self, text: str, max_len: int) -> list[int]:
        """`BOS w1 .. wk EOS PAD ..`, exactly `max_len` ids; words past `max_len - 2` are dropped so EOS fits."""
        if max_len < 3:
            raise VocabularyError(f"max_len must be >= 3 (BOS, one word, EOS), got {max_len}")
        ids = [self._ids.get(w, UNK) for w in tokenize(text)][: max_len - 2]
        return [BOS, *ids, EOS] + [PAD] * (max_len - 2 - len(ids))

    def decode(self, ids: Sequence[int]) -> str:
        """Words up to the first EOS, with PAD and BOS skipped."""
        words = []
        for i in map(int, ids):
            if i == EOS:
                break
            if i in (PAD, BOS):
                continue
            if not 0 <= i < len(self.words):
                raise VocabularyError(f"token id {i} is outside the vocabulary (size {len(self.words)})")
            words.append(self.words[i])
        return " ".join(words)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=1))

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        try:
            return cls.model_validate_json(Path(path).read_bytes())
        except OSError as e:
            raise VocabularyError(f"cannot load vocabulary {path}: {e}") from e
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'file'}: {err['msg']}" for err in e.errors())
            raise VocabularyError(f"cannot load vocabulary {path}: {problems}") from e
