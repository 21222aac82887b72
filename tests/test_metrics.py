"""The caption evaluator against real pycocoevalcap and Java: same numbers as the library's own pipeline,
and none of its traps (hangs, shifted captions, writes into site-packages, a dead METEOR process)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from capnas.tools.scoring import metrics
from capnas.tools.scoring.metrics import (
    METRIC_KEYS,
    CaptionEvaluator,
    CaptionInputError,
    MetricsError,
    pair_with_split,
    ptb_tokenize,
    read_results,
    spice_unavailable_reason,
)

REFS = {
    1: ["A dog runs across the grass.", "A brown dog is running on a lawn.", "The dog plays outside."],
    2: ["Two children are playing in the snow.", "Kids play in snow.", "Two kids having fun in the snow."],
    3: ["A man rides a bicycle down the street.", "A cyclist on a city road.", "A person riding a bike."],
    4: ["A cat sleeps on a red sofa.", "A cat is lying on the couch.", "The cat naps on a sofa."],
}
CANDS = {1: "A dog is running on the grass.", 2: "Children play in the snow.", 3: "A man riding a bike.",
         4: "A dog on a sofa."}


@pytest.fixture(scope="module")
def evaluator():
    with CaptionEvaluator() as ev:
        yield ev


def library_scores(refs: dict, cands: dict, with_meteor: bool = True) -> dict[str, float]:
    """pycocoevalcap's own pipeline, as in its COCOEvalCap.evaluate: tokenize, then each scorer."""
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
    res = tok.tokenize({k: [{"caption": cands[k]}] for k in refs})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {"bleu_1": bleu[0], "bleu_2": bleu[1], "bleu_3": bleu[2], "bleu_4": bleu[3],
              "rouge_l": Rouge().compute_score(gts, res)[0], "cider": Cider().compute_score(gts, res)[0]}
    if with_meteor:  # a JVM start (~10 s): only where METEOR is compared
        meteor = Meteor()
        try:
            scores["meteor"], _ = meteor.compute_score(gts, res)
        finally:
            meteor.meteor_p.kill()
            meteor.meteor_p.wait()
    return scores


# ---------------------------------------------------------------- scores


def test_scores_equal_pycocoevalcap_pipeline(evaluator: CaptionEvaluator) -> None:
    result = evaluator.score(REFS, CANDS)
    assert list(result.scores) == list(METRIC_KEYS)
    expected = library_scores(REFS, CANDS)
    for key in METRIC_KEYS:
        assert result.scores[key] == pytest.approx(expected[key], abs=1e-12), key
    assert 0 < result.scores["bleu_4"] < result.scores["bleu_1"] < 1
    assert result.n_images == 4 and set(result.per_image) == set(REFS)
    # image 4 says "dog" where the references say "cat": it must score below image 1 on every per-image metric
    for key in ("meteor", "rouge_l", "cider"):
        assert result.per_image[4][key] < result.per_image[1][key], key


def test_candidate_equal_to_a_reference_scores_full_marks(evaluator: CaptionEvaluator) -> None:
    result = evaluator.score(REFS, {k: v[0] for k, v in REFS.items()})
    for n in range(1, 5):  # pycocoevalcap's BLEU adds 1e-15/1e-9 smoothing terms, so "1.0" is 1 - 2e-13
        assert result.scores[f"bleu_{n}"] == pytest.approx(1.0, abs=1e-9)
    assert result.scores["meteor"] == pytest.approx(1.0)
    assert result.scores["rouge_l"] == pytest.approx(1.0)
    expected = library_scores(REFS, {k: v[0] for k, v in REFS.items()}, with_meteor=False)
    assert result.scores["cider"] == pytest.approx(expected["cider"], abs=1e-12)


def test_meteor_process_is_reused_across_calls(evaluator: CaptionEvaluator) -> None:
    evaluator.score(REFS, CANDS)
    pid = evaluator._meteor.meteor_p.pid  # the one JVM this evaluator holds
    second = evaluator.score(REFS, {k: v[1] for k, v in REFS.items()})
    assert evaluator._meteor.meteor_p.pid == pid and evaluator._meteor.meteor_p.poll() is None
    assert second.scores["bleu_4"] == pytest.approx(1.0, abs=1e-9)


def test_partial_evaluation_scores_only_given_images(evaluator: CaptionEvaluator) -> None:
    result = evaluator.score(REFS, {1: CANDS[1], 3: CANDS[3]}, require_all=False)
    assert result.n_images == 2 and set(result.per_image) == {1, 3}
    expected = library_scores({1: REFS[1], 3: REFS[3]}, CANDS, with_meteor=False)
    assert result.scores["cider"] == pytest.approx(expected["cider"], abs=1e-12)


# ---------------------------------------------------------------- traps


@pytest.mark.timeout(180)
def test_empty_candidates_score_without_hanging(evaluator: CaptionEvaluator) -> None:
    cands = {1: CANDS[1], 2: "", 3: "   ", 4: ""}  # empty in the middle and last, whitespace-only
    result = evaluator.score(REFS, cands)
    assert all(math.isfinite(v) for v in result.scores.values())
    for k in (2, 3, 4):
        assert result.per_image[k] == {"bleu_4": pytest.approx(0.0, abs=1e-6), "meteor": 0.0, "rouge_l": 0.0,
                                       "cider": 0.0}
    assert result.per_image[1]["cider"] > 0


@pytest.mark.timeout(180)
def test_newlines_and_meteor_separators_do_not_shift_or_hang(evaluator: CaptionEvaluator) -> None:
    # The library's tokenizer would turn "\r", "\f" or "\u2028" into extra lines and give image 2 image 1's tail.
    messy_refs = {k: list(v) for k, v in REFS.items()}
    messy_refs[3][0] = "A man rides ||| a bicycle\ndown the street."
    messy = {1: "A dog is\r\nrunning on\fthe grass.", 2: "Children play\u2028in the snow.",
             3: "A man ||| riding a bike.", 4: "A dog\non a sofa."}
    clean_refs = {k: list(v) for k, v in REFS.items()}
    clean_refs[3][0] = "A man rides ||| a bicycle down the street."
    clean = {**CANDS, 3: "A man ||| riding a bike."}
    got, want = evaluator.score(messy_refs, messy), evaluator.score(clean_refs, clean)
    assert got.scores == pytest.approx(want.scores, abs=1e-12)
    assert got.per_image == want.per_image


def test_ptb_tokenize_keeps_one_output_per_input() -> None:
    texts = ["", "A dog, running.", "", "Two\u2028lines\rhere!", "x\fy\x1cz", "Héllo wörld.", ""]
    assert ptb_tokenize(texts) == ["", "a dog running", "", "two lines here", "x y z", "héllo wörld", ""]


def test_ptb_tokenize_matches_library_on_clean_text() -> None:
    texts = [c for v in REFS.values() for c in v] + list(CANDS.values())
    lib = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    assert ptb_tokenize(texts) == [lib[i][0] for i in range(len(texts))]


def _writes_under(folder: Path, action) -> list[str]:
    """Paths under `folder` that `action()` opens for writing, seen through Python's audit hooks."""
    seen: list[str] = []
    active = [True]

    def hook(event: str, args: tuple) -> None:
        if not active[0] or event != "open" or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        mode, flags = args[1], args[2]
        writing = (mode is not None and any(c in mode for c in "wax+")) or (
            mode is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        if writing and str(os.fsdecode(args[0])).startswith(str(folder)):
            seen.append(os.fsdecode(args[0]))

    sys.addaudithook(hook)  # hooks cannot be removed; this one is switched off below
    try:
        action()
    finally:
        active[0] = False
    return seen


def test_tokenizer_writes_nothing_in_site_packages() -> None:
    from pycocoevalcap.tokenizer import ptbtokenizer

    package = Path(ptbtokenizer.__file__).resolve().parents[1]  # pycocoevalcap/ (a namespace package: no __file__)
    # The library's tokenizer does write there (the trap this guards against) ...
    assert _writes_under(package, lambda: PTBTokenizer().tokenize({1: [{"caption": "a dog"}]}))
    # ... ours does not.
    assert _writes_under(package, lambda: ptb_tokenize(["a dog"])) == []


@pytest.mark.timeout(300)
def test_stuck_meteor_is_killed_and_replaced() -> None:
    with CaptionEvaluator(meteor_timeout_s=0.01) as ev:  # far less than the JVM needs to start
        first = ev._meteor.meteor_p
        with pytest.raises(MetricsError, match=r"METEOR did not answer within 0.01 s on 4 images"):
            ev.score(REFS, CANDS)
        assert first.poll() is not None, "the stuck METEOR process was left running"
        ev.meteor_timeout_s = None
        result = ev.score(REFS, CANDS)
        assert ev._meteor.meteor_p.pid != first.pid
        assert result.scores["meteor"] > 0


# ---------------------------------------------------------------- environment and SPICE


def test_missing_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MetricsError, match=r"`java` was not found on PATH.*apt-get install default-jre-headless"):
        CaptionEvaluator()


def test_spice_reason_names_missing_jars(tmp_path: Path) -> None:
    reason = spice_unavailable_reason(tmp_path)
    assert f"lib/stanford-corenlp-3.6.0.jar, lib/stanford-corenlp-3.6.0-models.jar missing from {tmp_path}" in reason
    assert "never downloads" in reason
    (tmp_path / "lib").mkdir()
    for name in ("spice-1.0.jar", "lib/stanford-corenlp-3.6.0.jar", "lib/stanford-corenlp-3.6.0-models.jar"):
        (tmp_path / name).write_bytes(b"")
    assert spice_unavailable_reason(tmp_path) is None


def test_spice_without_its_jars_is_reported_not_computed(evaluator: CaptionEvaluator) -> None:
    if spice_unavailable_reason() is None:
        pytest.skip("SPICE's CoreNLP jars are installed here")
    result = evaluator.score(REFS, CANDS)
    assert "spice" not in result.scores and "stanford-corenlp-3.6.0" in result.unavailable["spice"]


def test_failing_spice_never_breaks_an_evaluation(evaluator: CaptionEvaluator, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(gts, res):
        raise subprocess.CalledProcessError(1, ["java", "-jar", "spice-1.0.jar"])

    monkeypatch.setattr(evaluator, "_spice_reason", None)  # pretend the jars are there
    monkeypatch.setattr(CaptionEvaluator, "_run_spice", staticmethod(broken))
    result = evaluator.score(REFS, CANDS)
    assert list(result.scores) == list(METRIC_KEYS)
    assert result.unavailable["spice"].startswith("SPICE failed: CalledProcessError")


def test_child_stdout_is_sent_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    with metrics._stdout_to_stderr():
        subprocess.run(["echo", "from-the-jar"], check=True)
    print("after")
    out, err = capfd.readouterr()
    assert out == "after\n" and "from-the-jar" in err


# ---------------------------------------------------------------- bad input to score()


@pytest.mark.parametrize(
    ("refs", "cands", "message"),
    [
        (REFS, {**CANDS, 99: "a dog"}, r"1 candidate image id\(s\) have no references: 99"),
        (REFS, {1: CANDS[1]}, r"3 of 4 referenced image\(s\) have no candidate: 2, 3, 4"),
        ({**REFS, 5: []}, {**CANDS, 5: "x"}, r"not so for image id\(s\) 5"),
        ({**REFS, 5: "a cat"}, {**CANDS, 5: "x"}, r"not so for image id\(s\) 5"),
        (REFS, {**CANDS, 2: None}, r"each candidate must be one string; not so for image id\(s\) 2"),
        (REFS, {}, r"no candidate captions"),
    ],
)
def test_bad_score_input_names_the_ids(refs, cands, message) -> None:
    with pytest.raises(CaptionInputError, match=message):
        metrics.check_inputs(refs, cands)


def test_long_id_lists_are_cut_with_a_count() -> None:
    refs = {i: ["a dog"] for i in range(100)}
    with pytest.raises(CaptionInputError, match=r"99 of 100 .*: 1, 2, 3, 4, 5, \.\.\. \(99 in all\)"):
        metrics.check_inputs(refs, {0: "a dog"})


# ---------------------------------------------------------------- CAPTIONS.json


def write(tmp_path: Path, data, name: str = "captions.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"image_id": 1, "caption": "a"}, r"expected a JSON list .* got a JSON dict"),
        ("[{\"image_id\": 1,", r"not valid JSON"),
        ([], r"the results list is empty"),
        ([{"image_id": 1, "caption": "a"}, {"caption": "b"}], r"entry 1: missing key\(s\) 'image_id'"),
        ([{"image_id": 1}], r"entry 0: missing key\(s\) 'caption'"),
        ([{"image_id": 1, "caption": "a"}, "b"], r"entry 1: expected an object"),
        ([{"image_id": 1, "caption": 3}], r"entry 0: \"caption\" must be a string"),
        ([{"image_id": True, "caption": "a"}], r"entry 0: \"image_id\" must be"),
        ([{"image_id": 1.5, "caption": "a"}], r"entry 0: \"image_id\" must be"),
        ([{"image_id": 7, "caption": "a"}, {"image_id": 8, "caption": "b"}, {"image_id": 7, "caption": "c"}],
         r"entry 2: duplicate image_id 7 \(first at entry 0\)"),
    ],
)
def test_bad_results_file_names_file_and_entry(tmp_path: Path, data, message) -> None:
    path = write(tmp_path, data)
    with pytest.raises(CaptionInputError, match=message) as info:
        read_results(path)
    assert str(path) in str(info.value)


def test_missing_results_file(tmp_path: Path) -> None:
    with pytest.raises(CaptionInputError, match=r"nope\.json: no such file"):
        read_results(tmp_path / "nope.json")


@dataclass
class Item:
    image_id: int
    filename: str
    captions: list[str]


ITEMS = [Item(10, "a.jpg", ["a dog"]), Item(11, "b.jpg", ["a cat"]), Item(12, "c.jpg", ["a bird"])]


def test_results_pair_by_id_or_file_name(tmp_path: Path) -> None:
    path = write(tmp_path, [{"image_id": 10, "caption": "x"}, {"image_id": "b.jpg", "caption": "y"},
                            {"image_id": 12, "caption": "z"}])
    refs, cands = pair_with_split(read_results(path), ITEMS, source=path, split="val")
    assert cands == {10: "x", 11: "y", 12: "z"}
    assert refs == {10: ["a dog"], 11: ["a cat"], 12: ["a bird"]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([{"image_id": 10, "caption": "x"}, {"image_id": 99, "caption": "y"}, {"image_id": "z.jpg", "caption": "z"}],
         r"2 image_id\(s\) are not in split 'val': 99 \(entry 1\), 'z.jpg' \(entry 2\)"),
        ([{"image_id": 10, "caption": "x"}, {"image_id": "a.jpg", "caption": "y"}],
         r"entry 1 \('a.jpg'\) and entry 0 name the same image \(a.jpg, id 10\)"),
        ([{"image_id": 10, "caption": "x"}], r"2 of 3 images of split 'val' have no caption: 'b.jpg', 'c.jpg'"),
        ([{"image_id": "10", "caption": "x"}], r"'10' \(entry 0\)"),  # a string is a file name, never an id
    ],
)
def test_results_not_matching_the_split_name_the_entries(tmp_path: Path, data, message) -> None:
    path = write(tmp_path, data)
    with pytest.raises(CaptionInputError, match=message) as info:
        pair_with_split(read_results(path), ITEMS, source=path, split="val")
    assert str(path) in str(info.value)
