"""Promotion and inherited weights at the level of one training job: a real sandboxed harness on tiny shapes data,
real pycocoevalcap. A promoted job trains on from its checkpoint (no epoch twice, its optimizer where it was); a
child job starts from its parent's weights where names and shapes match."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from capnas.tools.data.datasets import load_dataset, prepare_dataset
from capnas.tools.jobs.training import INHERIT_FILE, RESULT_FILE, reopen, train_candidate
from capnas.tools.scoring.metrics import CaptionEvaluator
from test_training import FAST, TINY

# TINY with a wider embedding: the GRU's input weights and the embedding change shape, everything else matches.
WIDER_EMBEDDING = TINY.replace("nn.Embedding(self.vocab_size, 32,", "nn.Embedding(self.vocab_size, 48,").replace(
    "nn.GRU(32, 64,", "nn.GRU(48, 64,")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory):
    """shapes:200 at 32 px: 160 train (5 batches of 32), 20 val and 20 test images."""
    dataset = load_dataset("shapes:200")
    prepared = prepare_dataset(dataset, image_size=32, max_len=20, min_count=1,
                               cache_root=tmp_path_factory.mktemp("cache") / "prepared")
    return dataset, prepared


@pytest.fixture(scope="module")
def evaluator():
    with CaptionEvaluator() as ev:
        yield ev


def _train(shapes, evaluator, run_dir: Path, code: str = TINY, events: list | None = None, **kw):
    dataset, prepared = shapes
    settings = dict(hparams={"lr": 3e-3}, patience=None, evaluator=evaluator, **FAST)
    settings.update(kw)
    return train_candidate(code, prepared, dataset, run_dir, on_event=(events.append if events is not None else None),
                           **settings)


def test_a_promoted_job_trains_on_from_its_checkpoint_without_repeating_an_epoch(shapes, evaluator, tmp_path) -> None:
    run_dir = tmp_path / "run"
    rung0 = _train(shapes, evaluator, run_dir, epochs=1, keep_checkpoint=True)
    assert rung0.ok and rung0.exit_reason == "epochs", rung0.error
    assert (run_dir / "job" / "checkpoint.pt").exists()  # kept for the promotion

    reopen(run_dir, 3)
    reopen(run_dir, 3)  # a resumed promotion reopens again: nothing changes
    assert not (run_dir / RESULT_FILE).exists()
    events: list[dict] = []
    rung1 = _train(shapes, evaluator, run_dir, events=events, epochs=3, keep_checkpoint=True)
    assert rung1.ok and rung1.exit_reason == "epochs", rung1.error
    start = next(e for e in events if e["event"] == "start")
    assert start["resumed_from"] == 1
    assert {e["epoch"] for e in events if e["event"] in ("step", "epoch")} == {2, 3}  # epoch 1 not retrained
    assert [p.epoch for p in rung1.curve] == [1, 2, 3]
    assert rung1.curve[0] == rung0.curve[0]  # as rung 0 scored it
    assert [e["epoch"] for e in events if e["event"] == "val"] == [2, 3]
    # The optimizer went on from its state: Adam has taken one step per batch of all three epochs (5 batches each);
    # one rebuilt by a fresh train_setup would have counted only the last two.
    ckpt = torch.load(run_dir / "job" / "checkpoint.pt", map_location="cpu", weights_only=False)
    steps = {float(s["step"]) for s in ckpt["optimizers"]["optimizer"]["state"].values()}
    assert ckpt["epoch"] == 3 and steps == {15.0}


def test_only_a_job_that_ran_its_epochs_with_a_kept_checkpoint_can_be_reopened(shapes, evaluator, tmp_path) -> None:
    with pytest.raises(ValueError, match="holds no training job"):
        reopen(tmp_path / "nothing", 3)
    plain = _train(shapes, evaluator, tmp_path / "plain", epochs=1)
    assert plain.ok
    with pytest.raises(ValueError, match="kept no checkpoint .*keep_checkpoint=True"):
        reopen(plain.run_dir, 2)
    with pytest.raises(ValueError, match="already runs 1 epochs"):
        reopen(plain.run_dir, 1 - 1)


def test_a_child_starts_from_its_parents_weights_and_learns_faster_than_a_fresh_init(shapes, evaluator, tmp_path) -> None:
    parent = _train(shapes, evaluator, tmp_path / "parent", epochs=3)
    assert parent.ok and parent.best_weights is not None and parent.inherited is None

    fresh = _train(shapes, evaluator, tmp_path / "fresh", epochs=1)
    events: list[dict] = []
    child = _train(shapes, evaluator, tmp_path / "child", events=events, epochs=1, inherit=parent.best_weights)
    assert fresh.ok and child.ok, (fresh.error, child.error)
    n_tensors = len(torch.load(parent.best_weights, weights_only=True))
    assert child.inherited == {"tensors": n_tensors, "of_tensors": n_tensors, "params": parent.params,
                               "of_params": parent.params}
    assert next(e for e in events if e["event"] == "start")["inherited"] == child.inherited
    # The same seed, data order and init; only the starting weights differ.
    assert child.curve[0].loss < fresh.curve[0].loss, (child.curve[0].loss, fresh.curve[0].loss)
    copy = tmp_path / "child" / INHERIT_FILE
    assert copy.read_bytes() == parent.best_weights.read_bytes() and not copy.stat().st_mode & 0o222


def test_a_child_of_another_shape_inherits_only_the_tensors_whose_names_and_shapes_match(shapes, evaluator,
                                                                                          tmp_path) -> None:
    parent = _train(shapes, evaluator, tmp_path / "parent", epochs=1)
    child = _train(shapes, evaluator, tmp_path / "child", code=WIDER_EMBEDDING, epochs=1, inherit=parent.best_weights)
    assert child.ok, child.error
    # embed.weight [V, 32] and rnn.weight_ih_l0 [192, 32] change shape; conv, init_h, out, rnn.weight_hh_l0 and
    # the GRU's biases match
    vocab = len(shapes[1].vocab)
    got = child.inherited
    assert got is not None and got["of_tensors"] == got["tensors"] + 2 and got["of_params"] == child.params
    assert got["params"] == parent.params - vocab * 32 - 3 * 64 * 32
