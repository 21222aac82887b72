"""`capnas report`: the HTML page against the journal it was made from, and the pieces it is built of.

The slow tests share one real run (`report_run.build_run`: two candidates validated and trained in the sandbox,
one rejected by the validator, one duplicate) and one `capnas report` of it through the real command line.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from report_run import RUN_ID, BuiltRun, build_run, report_once

from capnas.graph.journal import Journal

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def built(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> BuiltRun:
    run = build_run(tmp_path_factory.getbasetemp() / "report-run")
    monkeypatch.setenv("CAPNAS_CACHE", str(run.cache))
    return run


def _capnas(*args: str, env_cache: Path | None = None) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ)
    if env_cache is not None:
        env["CAPNAS_CACHE"] = str(env_cache)
    return subprocess.run([sys.executable, "-m", "capnas", *args], capture_output=True, text=True, env=env,
                          timeout=600)


# -- quick: the parts ---------------------------------------------------------------------------------------


def test_svg_chart_plots_the_given_values() -> None:
    from capnas.tools.report.svg_chart import Series, chart, nice_ticks

    axis = nice_ticks(0.013, 0.61)
    assert axis.lo <= 0.013 and axis.hi >= 0.61 and 4 <= len(axis.ticks) <= 8
    svg = chart([Series("train loss", [(1, 3.25), (2, 2.5), (3, 2.0)], "#bc4c00"),
                 Series("val CIDEr", [(1, 0.1), (3, 0.4)], "#0969da", axis="right", marker="square")],
                x_label="epoch", y_label="train loss", y2_label="val CIDEr", title="a <b> title")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert 'data-values="1,3.25 2,2.5 3,2"' in svg and 'data-values="1,0.1 3,0.4"' in svg
    assert svg.count("<polyline") == 2 and "a &lt;b&gt; title" in svg
    empty = chart([Series("nothing", [], "#000")], x_label="x", y_label="y")
    assert "no data" in empty and "<polyline" not in empty


def test_card_document_renders_markdown_and_html_from_the_same_blocks() -> None:
    from capnas.tools.report.card_doc import Bullets, Code, Document, Quote, Section, Table, Text

    doc = Document("Card", [Section("One", [Text("uses `prm` and **bold**"), Table(["a", "b|c"], [["1", "x|y"]]),
                                            Bullets(["first"]), Quote("said <so>", "the critic"),
                                            Code("x = '```'", "python")]),
                            Section("Two", [Table(["", ""], [["key", "value"]])])])
    md = doc.to_markdown()
    assert md.startswith("# Card\n\n## One\n\nuses `prm` and **bold**")
    assert "| a | b\\|c |" in md and "| 1 | x\\|y |" in md and "> said <so>\n>\n> — the critic" in md
    assert "````python\nx = '```'\n````" in md
    page = doc.to_html()
    assert "<code>prm</code>" in page and "<strong>bold</strong>" in page and "said &lt;so&gt;" in page
    assert '<table class="card-table"><tbody><tr><td>key</td>' in page  # key/value tables: no empty header
    with pytest.raises(KeyError, match="sections: \\['One', 'Two'\\]"):
        doc.section("Three")


def test_caption_stats_counts_lengths_coverage_and_examples() -> None:
    from capnas.tools.report.caption_stats import caption_stats, word_f1

    assert word_f1(["a", "red", "circle"], ["a", "red", "square"]) == pytest.approx(2 / 3)
    generated = {1: "a red circle", 2: "a red circle", 3: ""}
    references = {1: ["a red circle", "red circle at the top"], 2: ["a blue square"], 3: ["a green triangle"],
                  4: ["not generated"]}
    words = ["<pad>", "<bos>", "<eos>", "<unk>", "a", "red", "circle", "blue", "square", "green", "triangle", "at",
             "the", "top"]
    s = caption_stats(generated, references, words, examples=1)
    assert s.images == 3 and s.distinct_captions == 2 and s.empty_captions == 1
    assert s.generated_lengths.max == 3 and s.generated_lengths.min == 0
    assert s.distinct_words == 3 and s.vocab_words == 10
    assert dict(s.never_generated)["square"] == 1 and "red" not in dict(s.never_generated)
    assert s.best[0].image_id == 1 and s.best[0].word_f1 == 1.0 and s.worst[0].word_f1 == 0.0


def test_report_for_an_unknown_run_names_the_journal_and_the_runs(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    proc = _capnas("report", "nope", "--workspace", str(workspace))
    assert proc.returncode == 2
    assert f"no run journal at {workspace / 'journal.sqlite'}" in proc.stderr
    journal = Journal(workspace / "journal.sqlite")
    journal.create_run({"dataset": "shapes"}, {}, run_id="20250102-000000-abcd")
    proc = _capnas("report", "nope", "--workspace", str(workspace))
    assert proc.returncode == 2
    assert "no run 'nope'" in proc.stderr and "20250102-000000-abcd" in proc.stderr


# -- slow: a real run --------------------------------------------------------------------------------------


def _page(built: BuiltRun) -> str:
    return Path(report_once(built)["html"]).read_text(encoding="utf-8")


@pytest.mark.slow
def test_report_page_is_self_contained(built: BuiltRun) -> None:
    files = report_once(built)
    run_root = built.workspace / "runs" / RUN_ID
    assert files["html"] == str(run_root / "report.html")
    assert files["model_card"] == str(run_root / "MODEL_CARD.md")
    assert files["model_dir"] == str(run_root / "model")
    page = _page(built)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?:https?:|//)""", page), "the page must not load anything"
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)


@pytest.mark.slow
def test_report_leaderboard_and_tree_match_the_journal(built: BuiltRun) -> None:
    from capnas.tools.report.model_card import fmt_metric

    journal = Journal(built.workspace / "journal.sqlite")
    board = journal.leaderboard(RUN_ID, "cider")
    page = _page(built)
    table = page.split('<table class="leaderboard">')[1].split("</table>")[0]
    assert re.findall(r'<tr class="[^"]*" data-candidate="([^"]+)"', table) == [c.candidate_id for c in board]
    for cand in board:
        row = table.split(f'data-candidate="{cand.candidate_id}"')[1].split("</tr>")[0]
        for key in ("bleu_1", "bleu_4", "meteor", "rouge_l", "cider"):
            assert f">{fmt_metric(cand.metrics[key])}<" in row, (cand.candidate_id, key)
        assert f">{cand.params:,}<" in row
    best = board[0]
    assert f'<div class="fact"><b>{fmt_metric(best.metrics["cider"])}</b>best val CIDEr</div>' in page
    usage = journal.usage(RUN_ID)
    tokens = sum(u["input_tokens"] + u["output_tokens"] for u in usage.values())
    assert f"<b>{tokens:,}</b>LLM tokens" in page
    # the search tree: every candidate under its parent
    for cand in journal.candidates(RUN_ID):
        assert f'<li data-candidate="{cand.candidate_id}" data-parent="{cand.parent_id or ""}">' in page
    child = page.split(f'<li data-candidate="{built.trained[0]}"')[1]
    assert child.index(f'data-candidate="{built.trained[1]}"') < child.index("</li>")  # nested, not a sibling
    assert "identical to r000" in page  # the duplicate says whose twin it is


@pytest.mark.slow
def test_report_curves_plot_the_journal_curves(built: BuiltRun) -> None:
    journal = Journal(built.workspace / "journal.sqlite")
    page = _page(built)
    for cid in built.trained:
        cand = journal.get_candidate(cid)
        svg = page.split(f'data-candidate="{cid}" data-plot="curve"')[1].split("</svg>")[0]
        loss = " ".join(f"{p['epoch']:g},{p['loss']:.6g}" for p in cand.curve)
        cider = " ".join(f"{p['epoch']:g},{p['val_cider']:.6g}" for p in cand.curve)
        assert f'data-name="train loss" data-values="{loss}"' in svg
        assert f'data-name="val CIDEr" data-values="{cider}"' in svg
    progress = page.split('data-plot="progress"')[1].split("</svg>")[0]
    scored = " ".join(f"{k},{journal.get_candidate(c).metrics['cider']:.6g}" for k, c in enumerate(built.trained))
    assert f'data-name="trained candidate" data-values="{scored}"' in progress


@pytest.mark.slow
def test_report_image_grid_shows_generated_and_reference_captions(built: BuiltRun) -> None:
    import html

    from capnas.tools.data.datasets import load_dataset
    from capnas.tools.report.html_report import GRID_IMAGES

    page = _page(built)
    dataset = load_dataset("shapes:100")
    refs = {item.image_id: item.captions for item in dataset.split("val")}
    for cid in built.trained:
        captions = {e["image_id"]: e["caption"] for e in json.loads(
            (built.workspace / "runs" / RUN_ID / cid / "val_captions.json").read_text())}
        grid = page.split(f'<div class="grid" data-candidate="{cid}">')[1].split('<div class="grid"')[0]
        tiles = re.findall(r'<div class="tile" data-image="(\d+)">(.*?)</ul></div>', grid)
        assert len(tiles) == min(GRID_IMAGES, len(captions))
        for image_id, tile in tiles:
            assert f'<p class="gen">{html.escape(captions[int(image_id)])}</p>' in tile
            assert f"<li>{html.escape(refs[int(image_id)][0])}</li>" in tile


@pytest.mark.slow
def test_report_shows_test_images_of_the_model_scored_on_test(built: BuiltRun) -> None:
    import html

    from capnas.tools.data.datasets import load_dataset
    from capnas.tools.report.html_report import GRID_TEST_IMAGES

    page = _page(built)
    test = Journal(built.workspace / "journal.sqlite").events(RUN_ID, "test_scored")[-1]["payload"]
    generated = json.loads((built.workspace / "runs" / RUN_ID / test["candidate_id"] / "test_captions.json").read_text())
    refs = {item.image_id: item.captions for item in load_dataset("shapes:100").split("test")}
    section = page.split('<section id="test-images-of-the-best-model">')[1].split("</section>")[0]
    assert f"<code>{test['candidate_id']}</code>, chosen on val" in section
    tiles = re.findall(r'<div class="tile" data-image="(\d+)">(.*?)</ul></div>', section)
    # the first images of the split, in its order: none picked for looking good
    assert [int(i) for i, _ in tiles] == [e["image_id"] for e in generated][:GRID_TEST_IMAGES]
    for (image_id, tile), entry in zip(tiles, generated):
        assert 'class="test-image"' in tile
        assert f'<p class="gen">{html.escape(entry["caption"] or "(empty)")}</p>' in tile
        assert f"<li>{html.escape(refs[int(image_id)][0])}</li>" in tile


@pytest.mark.slow
def test_report_shows_each_contract_report(built: BuiltRun) -> None:
    journal = Journal(built.workspace / "journal.sqlite")
    page = _page(built)
    invalid = journal.get_candidate(built.invalid)
    section = page.split(f'<h3 id="cand-{built.invalid}">')[1].split("<h3")[0]
    assert "contract failed" in section
    codes = [v["code"] for v in invalid.contract["violations"]]
    assert "IMP-001" in codes  # `import os`
    for code in codes:
        assert f"<td><code>{code}</code></td>" in section
    assert "<pre>import os</pre>" in section  # the offending line of the candidate file
    for cid in built.trained:
        cand = journal.get_candidate(cid)
        section = page.split(f'<h3 id="cand-{cid}">')[1].split("<h3")[0]
        assert f"contract passed · {cand.contract['params']:,} parameters · {cand.contract['latency_ms']:.2f} ms" \
               in section
    assert '<section id="model-card-of-the-best-model">' in page
    assert f"Model card: {journal.leaderboard(RUN_ID)[0].candidate_id} of run {RUN_ID}" in page


def test_report_of_a_run_without_a_trained_candidate(tmp_path: Path, cache_root: Path) -> None:
    """Every candidate rejected: the page still shows the search and the contract reports; nothing exports."""
    from report_run import INVALID_CODE

    from capnas.contracts.caption_net_v1 import caption_net_v1
    from capnas.tools.data.datasets import load_dataset, prepare_dataset
    from capnas.tools.task import Task
    from capnas.tools.jobs.validation import validate_code

    task = Task(dataset="shapes:20", image_size=16, max_len=8)
    prepared = prepare_dataset(load_dataset(task.dataset), image_size=16, max_len=8, min_count=task.min_count)
    report = validate_code(INVALID_CODE, caption_net_v1(len(prepared.vocab), 16, 8))
    assert report.stage == "static"  # rejected before anything ran
    workspace = tmp_path / "ws"
    journal = Journal(workspace / "journal.sqlite")
    run_id = journal.create_run(task.model_dump(), {"device": "cpu"})
    journal.add_candidate(run_id, INVALID_CODE, round=0, mode="code", candidate_id="c1")
    journal.update_candidate("c1", status="invalid", contract=report.model_dump(mode="json"))
    journal.set_run_status(run_id, "stopped", "time_budget")

    out = tmp_path / "page" / "r.html"
    proc = _capnas("report", run_id, "--workspace", str(workspace), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "no trained candidate in this run" in proc.stderr
    page = out.read_text()
    assert "No candidate finished training." in page and "No trained candidate: no model card." in page
    assert '<li data-candidate="c1" data-parent="">' in page and "<td><code>IMP-001</code></td>" in page
    assert not (workspace / "runs" / run_id / "model").exists() and not (out.parent / "MODEL_CARD.md").exists()
