"""The tokenizer and the vocabulary: ids, min count, encode/decode, save/load."""

from __future__ import annotations

from pathlib import Path

import pytest

from capnas.tools.data.vocab import BOS, EOS, PAD, UNK, Vocabulary, VocabularyError, tokenize


def test_tokenize_lowercases_and_drops_punctuation() -> None:
    assert tokenize("A child, in a PINK dress; climbing up.") == ["a", "child", "in", "a", "pink", "dress", "climbing", "up"]
    assert tokenize("The man's dog’s ball -- 2 dogs!") == ["the", "mans", "dogs", "ball", "2", "dogs"]
    assert tokenize("un café très_bon") == ["un", "café", "très", "bon"]
    assert tokenize(" ... ") == []


def test_build_keeps_words_seen_min_count_times_most_frequent_first() -> None:
    vocab = Vocabulary.build(["a dog runs", "A dog sits.", "a cat sits", "a bird"], min_count=2)
    assert vocab.words == ("<pad>", "<bos>", "<eos>", "<unk>", "a", "dog", "sits")
    assert (vocab.words[PAD], vocab.words[BOS], vocab.words[EOS], vocab.words[UNK]) == (
        "<pad>", "<bos>", "<eos>", "<unk>"
    )  # fmt: skip
    assert len(vocab) == 7
    assert Vocabulary.build(["b a", "a b"], min_count=1).words[4:] == ("a", "b")  # ties go alphabetical


def test_encode_pads_to_max_len_and_maps_unknown_words() -> None:
    vocab = Vocabulary.build(["a dog runs"] * 2, min_count=1)
    a, dog, runs = (vocab.words.index(w) for w in ("a", "dog", "runs"))
    assert vocab.encode("A dog swims!", max_len=7) == [BOS, a, dog, UNK, EOS, PAD, PAD]
    assert vocab.encode("a dog runs", max_len=5) == [BOS, a, dog, runs, EOS]


def test_encode_truncates_words_so_eos_always_fits() -> None:
    vocab = Vocabulary.build(["a dog runs"], min_count=1)
    ids = vocab.encode("a dog runs a dog runs", max_len=4)
    assert len(ids) == 4 and ids[0] == BOS and ids[-1] == EOS
    assert vocab.decode(ids) == "a dog"
    with pytest.raises(VocabularyError, match="max_len must be >= 3"):
        vocab.encode("a dog", max_len=2)


def test_decode_stops_at_eos_and_skips_pad_and_bos() -> None:
    vocab = Vocabulary.build(["a dog runs"], min_count=1)
    a, dog, runs = (vocab.words.index(w) for w in ("a", "dog", "runs"))
    assert vocab.decode([BOS, a, PAD, dog, UNK, EOS, runs, runs]) == "a dog <unk>"
    assert vocab.decode([a, dog, runs]) == "a dog runs"  # no EOS: everything
    assert vocab.decode(vocab.encode("A dog, runs.", max_len=8)) == "a dog runs"
    with pytest.raises(VocabularyError, match="token id 99 is outside the vocabulary"):
        vocab.decode([a, 99])


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    vocab = Vocabulary.build(["a dog runs", "a cat"], min_count=1)
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded == vocab
    assert loaded.encode("a cat runs", 6) == vocab.encode("a cat runs", 6)


def test_load_of_a_broken_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "vocab.json"
    path.write_text('{"words": ["a", "b"], "min_count": 1}')
    with pytest.raises(VocabularyError, match=rf"cannot load vocabulary {path}.*first ids must be"):
        Vocabulary.load(path)
    with pytest.raises(VocabularyError, match=rf"cannot load vocabulary {tmp_path / 'nothing.json'}"):
        Vocabulary.load(tmp_path / "nothing.json")


def test_min_count_below_one_is_refused() -> None:
    with pytest.raises(VocabularyError, match="min_count must be >= 1"):
        Vocabulary.build(["a"], min_count=0)
