"""The run report as one self-contained HTML page: plots as inline SVG (`capnas.tools.report.svg_chart`), images inline
as base64 PNG data URIs, styles inline, no scripts, no external assets (it opens from a file, a mail attachment
or a CI artifact the same way, with no network).

Sections: run header, leaderboard, learning curves (one plot per trained candidate), validation images with
generated and reference captions for the best models, the first test images of the model scored on test, the
search (progress plot and the tree, candidate → parent, by round), the contract report of every candidate, and
the best model's card.
Every number comes from the journal or from files the tools wrote (`RunData`).
"""

from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path
from typing import Any

from capnas.tools.jobs.training import TEST_CAPTIONS_FILE
from capnas.tools.report.model_card import METRIC_NAMES, fmt_int, fmt_metric
from capnas.tools.report.compare import comparison_table, verdict
from capnas.tools.report.run_data import RunData, curve_points
from capnas.tools.report.summary import METRIC_KEYS, fidelity_text, inherited_text, is_partial
from capnas.tools.report.svg_chart import Series, chart

GRID_MODELS = 3  # best models shown with validation images
GRID_IMAGES = 12  # validation images per model
GRID_REFERENCES = 2  # reference captions shown under each image
GRID_TEST_IMAGES = 8  # test images of the model scored on test
STATUS_COLOURS = {"trained": "#1a7f37", "valid": "#0969da", "generated": "#6e7781", "invalid": "#cf222e",
                  "failed": "#bc4c00", "duplicate": "#8c959f"}

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328; margin: 0;
       background: #f6f8fa; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 20px; margin: 36px 0 10px; border-bottom: 1px solid #d0d7de;
     padding-bottom: 4px; } h3 { font-size: 16px; margin: 20px 0 8px; } h4 { font-size: 15px; margin: 16px 0 6px; }
.sub { color: #59636e; margin: 0 0 16px; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 14px; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #dafbe1; }
code, pre { font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; }
pre { background: #f6f8fa; padding: 8px 10px; overflow-x: auto; border-radius: 6px; }
.status { display: inline-block; padding: 0 6px; border-radius: 10px; color: #fff; font-size: 12px; }
.facts { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.fact { border: 1px solid #d0d7de; border-radius: 6px; padding: 6px 12px; min-width: 120px; }
.fact b { display: block; font-size: 20px; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
.plots figure, figure.progress { margin: 0; border: 1px solid #d0d7de; border-radius: 6px; padding: 6px;
  display: inline-block; } .plots figure { max-width: 380px; } svg.chart { display: block; }
figcaption { font-size: 13px; color: #59636e; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 10px; }
.tile { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px; font-size: 12px; }
.tile img { width: 128px; height: 128px; image-rendering: pixelated; border-radius: 4px; background: #eee;
  display: block; margin: 0 auto; }
.gen { font-weight: 600; margin: 4px 0; } .refs { color: #59636e; margin: 0; padding-left: 16px; }
.refs li.more { list-style: none; font-style: italic; }
ul.tree, ul.tree ul { list-style: none; padding-left: 18px; margin: 2px 0; }
ul.tree li { margin: 2px 0; } ul.tree li::before { content: "└ "; color: #8c959f; }
.round { font-weight: 600; margin-top: 8px; }
blockquote { margin: 8px 0; padding: 6px 12px; border-left: 4px solid #d0d7de; color: #3d444d; white-space: pre-wrap; }
blockquote footer { font-size: 12px; color: #59636e; }
.card { border: 1px solid #d0d7de; border-radius: 8px; padding: 4px 20px 12px; }
.note { color: #59636e; font-size: 13px; }
"""


def write_html_report(data: RunData, path: Path, card: Any = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(data, card), encoding="utf-8")
    return path


def render_html(data: RunData, card: Any = None) -> str:
    sections = [
        _header(data),
        *([_section("Guided against random", _comparison(data))] if data.comparison else []),
        _section("Leaderboard", _leaderboard(data)),
        _section("Learning curves", _curves(data)),
        _section("Validation images of the best models", _grids(data)),
        _section("Test images of the best model", _test_grid(data)),
        _section("Search", _progress(data) + _tree(data)),
        _section("Contract reports", _contract_reports(data)),
        _section("Model card of the best model", f'<div class="card">{card.to_html(3)}</div>' if card is not None
                 else '<p class="note">No trained candidate: no model card.</p>'),
    ]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>capnas run {_e(data.run_id)}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(sections)}</main></body></html>\n")


# -- helpers ---------------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value))


def _section(title: str, body: str) -> str:
    anchor = title.lower().replace(" ", "-")
    return f'<section id="{anchor}"><h2>{_e(title)}</h2>{body}</section>'


def _status(status: str) -> str:
    return f'<span class="status" style="background:{STATUS_COLOURS.get(status, "#6e7781")}">{_e(status)}</span>'


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _metric_name(key: str) -> str:
    return METRIC_NAMES.get(key, key)


# -- sections --------------------------------------------------------------------------------------------


def _header(data: RunData) -> str:
    run, task = data.run, data.task
    counts: dict[str, int] = {}
    for c in data.candidates:
        counts[c.status] = counts.get(c.status, 0) + 1
    usage = data.usage
    tokens = int(sum((u["input_tokens"] or 0) + (u["output_tokens"] or 0) for u in usage.values()))
    cost = sum(u["cost_usd"] or 0.0 for u in usage.values())
    best = data.best
    facts = [("candidates", str(len(data.candidates))), ("trained", str(counts.get("trained", 0))),
             ("invalid", str(counts.get("invalid", 0))), ("failed", str(counts.get("failed", 0))),
             (f"best val {_metric_name(data.objective)}",
              fmt_metric((best.metrics or {}).get(data.objective)) if best else "n/a"),
             ("LLM tokens", fmt_int(tokens)), ("LLM cost", f"${cost:.4f}")]
    budgets = task.get("budgets") or {}
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.get("created_at", 0)))
    return (f"<h1>capnas run <code>{_e(data.run_id)}</code></h1>"
            f'<p class="sub">{_status(run.get("status", "?"))} stop reason: {_e(run.get("stop_reason") or "n/a")} · '
            f"started {_e(created)} · dataset <code>{_e(task.get('dataset'))}</code> at "
            f"{_e(task.get('image_size'))}px, max_len {_e(task.get('max_len'))} · objective val "
            f"{_e(_metric_name(data.objective))} · budgets: {_e(budgets.get('max_candidates', 'n/a'))} candidates, "
            f"{_e(budgets.get('time_budget', 'n/a'))} min, {_e(budgets.get('epochs', 'n/a'))} epochs, "
            f"{_e(budgets.get('train_time_s', 'n/a'))} s training each</p>"
            '<div class="facts">' + "".join(f'<div class="fact"><b>{_e(v)}</b>{_e(k)}</div>' for k, v in facts)
            + "</div>")


def _leaderboard(data: RunData) -> str:
    if not data.board:
        return '<p class="note">No candidate finished training.</p>'
    head = ("<tr><th>rank</th><th>candidate</th><th>round</th><th>mode</th><th>model</th><th>params</th>"
            + "".join(f"<th>{_e(_metric_name(k))}</th>" for k in METRIC_KEYS) + "<th>epochs</th></tr>")
    rows = []
    for rank, c in enumerate(data.board, 1):
        metrics = c.metrics or {}
        rows.append(
            f'<tr class="{"best" if rank == 1 else ""}" data-candidate="{_e(c.candidate_id)}">'
            f'<td class="num">{rank}</td>'
            f'<td><a href="#cand-{_e(c.candidate_id)}"><code>{_e(c.candidate_id)}</code></a></td>'
            f'<td class="num">{_e(c.round)}</td><td>{_e(c.mode)}</td><td>{_e(c.plan or "")}</td>'
            f'<td class="num">{fmt_int(c.params)}</td>'
            + "".join(f'<td class="num">{fmt_metric(metrics.get(k))}</td>' for k in METRIC_KEYS)
            + f'<td class="num">{len(c.curve or [])}{" <small>partial</small>" if is_partial(c) else ""}</td></tr>')
    note = ('<p class="note"><small>partial</small>: scores after a rung below the schedule\'s last; the search did '
            "not promote it further.</p>" if any(is_partial(c) for c in data.board) else "")
    return f'<table class="leaderboard"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>{note}'


def _progress(data: RunData) -> str:
    """The objective of each candidate in the order they were made, with the best so far."""
    ordered = data.candidates
    if not any(c.status == "trained" for c in ordered):
        return ""
    scored, best, best_so_far = [], float("-inf"), []
    for k, c in enumerate(ordered):
        value = (c.metrics or {}).get(data.objective) if c.status == "trained" else None
        if isinstance(value, (int, float)):
            scored.append((k, float(value)))
            best = max(best, value)
        if best > float("-inf"):
            best_so_far.append((k, best))
    floor = min(v for _, v in scored)
    fails = [(k, floor) for k, c in enumerate(ordered) if c.status in ("invalid", "failed")]
    name = _metric_name(data.objective)
    svg = chart([Series("trained candidate", scored, "#0969da", style="points"),
                 Series("best so far", best_so_far, "#1a7f37", style="step", marker="none"),
                 Series("invalid / failed (at the lowest score)", fails, "#cf222e", style="points", marker="cross")],
                x_label="candidate, in the order it was made", y_label=f"val {name}", width=720, height=300,
                x_ticks=[(k, c.candidate_id) for k, c in enumerate(ordered)], css_class="chart progress",
                attrs={"data-plot": "progress"})
    return (f'<figure class="progress">{svg}<figcaption>Validation {_e(name)} of each candidate in the order it '
            "was made; the line is the best so far.</figcaption></figure>")


def _comparison(data: RunData) -> str:
    """The run beside its equal-budget random arm: the verdict, both bests' val and test metrics and spending,
    and the best-so-far val objective of each against candidates trained and against wall time."""
    a, b = data.comparison
    rows = comparison_table(a, b)
    head = "".join(f"<th>{_e(h)}</th>" for h in rows[0])
    body = "".join("<tr>" + f"<td>{_e(r[0])}</td>" + "".join(f'<td class="num">{_e(v)}</td>' for v in r[1:]) + "</tr>"
                   for r in rows[1:])
    name = _metric_name(a.objective)
    colours = ("#0969da", "#bc4c00")
    by_count = chart([Series(x.label, [(n, v) for n, _, v in x.progress], c, style="step") for x, c in zip((a, b), colours)],
                     x_label="candidates trained", y_label=f"best val {name} so far", width=360, height=260,
                     attrs={"data-plot": "compare-candidates"})
    by_time = chart([Series(x.label, [(t / 60, v) for _, t, v in x.progress], c, style="step")
                     for x, c in zip((a, b), colours)],
                    x_label="minutes since the run started", y_label=f"best val {name} so far", width=360, height=260,
                    integer_x=False, attrs={"data-plot": "compare-time"})
    return (f'<p class="verdict">{_e(verdict(a, b))}</p>'
            f'<figure class="compare">{by_count}{by_time}<figcaption>Best validation {_e(name)} so far of each arm, '
            "against candidates trained and against wall time. Both arms had the same budget; each best was chosen "
            "on validation and scored once on test after both searches ended.</figcaption></figure>"
            f'<table class="compare"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')


def _tree(data: RunData) -> str:
    ids = {c.candidate_id for c in data.candidates}
    children: dict[str | None, list[Any]] = {}
    for c in data.candidates:
        parent = c.parent_id if c.parent_id in ids else None
        children.setdefault(parent, []).append(c)

    def node(c: Any) -> str:
        value = (c.metrics or {}).get(data.objective)
        score = f" · {_e(_metric_name(data.objective))} {fmt_metric(value)}" if value is not None else ""
        why = f" · {_e(c.exit_reason)}" if c.exit_reason and c.status != "trained" else ""
        kids = "".join(node(k) for k in children.get(c.candidate_id, []))
        return (f'<li data-candidate="{_e(c.candidate_id)}" data-parent="{_e(c.parent_id or "")}">'
                f'<a href="#cand-{_e(c.candidate_id)}"><code>{_e(c.candidate_id)}</code></a> {_status(c.status)}'
                f" round {_e(c.round)} · {_e(c.plan or '')}{score}{why}"
                + (f"<ul>{kids}</ul>" if kids else "") + "</li>")

    by_round: dict[int, list[Any]] = {}
    for c in children.get(None, []):
        by_round.setdefault(c.round, []).append(c)
    body = "".join(f'<div class="round">round {r}</div><ul class="tree">{"".join(node(c) for c in cs)}</ul>'
                   for r, cs in sorted(by_round.items()))
    return ("<h3>Search tree</h3><p class=\"note\">Each candidate under the parent it was refined from; "
            "candidates without a parent start a new branch in their round.</p>" + (body or "<p>No candidates.</p>"))


def curve_plot(cand: Any) -> str | None:
    """Training loss and validation CIDEr per epoch of one candidate, as inline SVG."""
    points = curve_points(cand)
    if not points:
        return None
    loss = [(p["epoch"], p["loss"]) for p in points if isinstance(p["loss"], (int, float))]
    cider = [(p["epoch"], p["val_cider"]) for p in points if isinstance(p["val_cider"], (int, float))]
    return chart([Series("train loss", loss, "#bc4c00"),
                  Series("val CIDEr", cider, "#0969da", axis="right", marker="square")],
                 x_label="epoch", y_label="train loss", y2_label="val CIDEr",
                 title=f"{cand.candidate_id} ({cand.status})", css_class="chart curve",
                 attrs={"data-candidate": cand.candidate_id, "data-plot": "curve"})


def _curves(data: RunData) -> str:
    figures = []
    for c in data.board + [c for c in data.candidates if c.status == "failed" and c.curve]:
        svg = curve_plot(c)
        if svg is None:
            figures.append(f'<figure><figcaption><code>{_e(c.candidate_id)}</code>: no curve recorded'
                           "</figcaption></figure>")
            continue
        figures.append(f'<figure>{svg}<figcaption><code>{_e(c.candidate_id)}</code> {_status(c.status)} · '
                       f"{len(c.curve or [])} epochs · ended by {_e(c.exit_reason or 'n/a')}<br>{_e(c.plan or '')}"
                       "</figcaption></figure>")
    return (('<p class="note">Mean training loss and validation CIDEr (the trainer scores every epoch with CIDEr; '
             "the leaderboard's full metric set is the best epoch's), best model first.</p>"
             f'<div class="plots">{"".join(figures)}</div>') if figures
            else '<p class="note">No trained candidate.</p>')


def _image_png(pixels: Any) -> bytes:
    """uint8 [3, S, S] tensor -> PNG bytes."""
    from PIL import Image

    array = pixels.permute(1, 2, 0).contiguous().numpy()
    buf = io.BytesIO()
    Image.fromarray(array, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def _tile(uri: str, split: str, image_id: int, generated: str, refs: list[str]) -> str:
    """One image with its generated caption (bold) and the first references."""
    ref_items = "".join(f"<li>{_e(r)}</li>" for r in refs[:GRID_REFERENCES])
    if len(refs) > GRID_REFERENCES:
        ref_items += f'<li class="more">+{len(refs) - GRID_REFERENCES} more</li>'
    return (f'<div class="tile" data-image="{image_id}"><img class="{split}-image" alt="{_e(split)} image '
            f'{image_id}" src="{uri}"><p class="gen">{_e(generated or "(empty)")}</p>'
            f'<ul class="refs">{ref_items}</ul></div>')


def _grids(data: RunData) -> str:
    if data.val_images is None:
        return f'<p class="note">No images: {_e(data.data_error)}</p>'
    index = {image_id: k for k, image_id in enumerate(data.val_image_ids)}
    refs = data.val_references
    parts, cache = [], {}
    for cand in data.board[:GRID_MODELS]:
        arts = data.artifacts(cand)
        shown = [i for i in data.val_image_ids if i in arts.val_captions][:GRID_IMAGES]
        if not shown:
            parts.append(f"<h3><code>{_e(cand.candidate_id)}</code></h3><p class=\"note\">No generated validation "
                         "captions were saved for this candidate.</p>")
            continue
        tiles = []
        for image_id in shown:
            if image_id not in cache:
                cache[image_id] = _png_uri(_image_png(data.val_images[index[image_id]]))
            tiles.append(_tile(cache[image_id], "val", image_id, arts.val_captions[image_id], refs.get(image_id, [])))
        rank = data.rank(cand.candidate_id)
        value = fmt_metric((cand.metrics or {}).get(data.objective))
        parts.append(f'<h3>#{rank} <code>{_e(cand.candidate_id)}</code> · {_e(cand.plan or "")} · val '
                     f'{_e(_metric_name(data.objective))} {value}</h3><p class="note">Generated caption in bold '
                     f"(from {_e(arts.captions_source)}), references below.</p>"
                     f'<div class="grid" data-candidate="{_e(cand.candidate_id)}">{"".join(tiles)}</div>')
    return "".join(parts) or '<p class="note">No trained candidate.</p>'


def _test_grid(data: RunData) -> str:
    """The first test images (split order, not picked) of the model scored on test, after the search."""
    test = data.record.test
    if not test:
        return ('<p class="note">Test split not scored: a run scores its val-chosen best on test once, after its '
                "search has ended.</p>")
    cand = data.candidate(str(test["candidate_id"]))
    arts = data.artifacts(cand)
    images = data.images("test")
    ids = data.image_ids("test")
    shown = [(k, i) for k, i in enumerate(ids) if i in arts.test_captions][:GRID_TEST_IMAGES]
    if images is None or not shown:
        why = data.data_error or f"no {TEST_CAPTIONS_FILE} in the candidate's run dir"
        return f'<p class="note">No test images: {_e(why)}.</p>'
    refs = data.references("test")
    tiles = [_tile(_png_uri(_image_png(images[k])), "test", i, arts.test_captions[i], refs.get(i, []))
             for k, i in shown]
    metrics = test.get("metrics") or {}
    scores = " · ".join(f"{_metric_name(k)} {fmt_metric(metrics[k])}" for k in ("cider", "bleu_4", "meteor")
                        if k in metrics)
    return (f'<p><code>{_e(cand.candidate_id)}</code>, chosen on val, scored once on '
            f"{fmt_int(test.get('n_images'))} test images: {_e(scores)}. The first {len(shown)} test images in "
            "split order (not picked), generated caption in bold, references below.</p>"
            f'<div class="grid" data-split="test">{"".join(tiles)}</div>')


def _tool_calls(calls: list[dict[str, Any]] | None) -> str:
    """The coder's own tool calls for a candidate, in order, each with what it found and its sandbox seconds."""
    if not calls:
        return ""

    def found(call: dict[str, Any]) -> str:
        result = call.get("result") or {}
        if call.get("tool") == "check_contract" and "ok" in result:
            return "passed" if result["ok"] else ", ".join(v.get("code", "?") for v in result.get("violations") or [])
        return str(result.get("exit_reason") or result.get("error") or "")[:80]

    steps = " → ".join(f"{_e(c.get('tool'))} <small>{_e(found(c))} {c.get('sandbox_s') or 0:.1f} s</small>"
                       for c in calls)
    return f"<p class=\"note\">coder's tool calls: {steps}</p>"


def _contract_reports(data: RunData) -> str:
    parts = []
    for c in data.candidates:
        report = c.contract or {}
        violations = report.get("violations") or []
        head = (f'<h3 id="cand-{_e(c.candidate_id)}"><code>{_e(c.candidate_id)}</code> {_status(c.status)} '
                f"<small>round {_e(c.round)} · {_e(c.mode)} · {_e(c.plan or '')}</small></h3>")
        facts = []
        if report:
            facts.append(f"contract {'passed' if report.get('ok') else 'failed'}")
            if report.get("params") is not None:
                facts.append(f"{fmt_int(report.get('params'))} parameters")
            if isinstance(report.get("latency_ms"), (int, float)):
                facts.append(f"{report['latency_ms']:.2f} ms per image")
        if c.repairs:
            facts.append(f"{c.repairs} repair round(s)")
        facts += [_e(t) for t in (fidelity_text(c), inherited_text(c)) if t]
        if c.exit_reason:
            facts.append(f"training ended by {_e(c.exit_reason)}" if c.status in ("trained", "failed")
                         else _e(c.exit_reason))
        body = f"<p>{' · '.join(facts) or 'not validated'}</p>" + _tool_calls(data.record.tool_calls.get(c.candidate_id))
        if violations:
            lines = c.code.splitlines()
            rows = []
            for v in violations:
                line = v.get("line")
                source = (f"<pre>{_e(lines[line - 1].rstrip())}</pre>"
                          if isinstance(line, int) and 0 < line <= len(lines) else "")
                rows.append(f'<tr class="violation"><td><code>{_e(v.get("code", ""))}</code></td>'
                            f'<td class="num">{_e(line if line is not None else "")}</td>'
                            f"<td>{_e(v.get('message', ''))}{source}</td><td>{_e(v.get('hint', ''))}</td></tr>")
            body += ("<table class=\"violations\"><thead><tr><th>code</th><th>line</th><th>found</th><th>hint</th>"
                     f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")
        parts.append(head + body)
    return ('<p class="note">Every candidate with what the validator found; violations carry the clause code, the '
            "line of the candidate file and a hint.</p>" + "".join(parts))
