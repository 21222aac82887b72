"""Small line and scatter charts as inline SVG text, for the HTML report: no plotting library, no fonts or
scripts to load, crisp at any zoom, and every plotted value readable from the page (`data-*` attributes).

    svg = chart([Series("train loss", [(1, 3.2), (2, 2.9)], "#bc4c00")],
                x_label="epoch", y_label="train loss", title="c01: small_cnn + gru")
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Literal

FONT = 'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif"'


@dataclass
class Series:
    name: str
    points: list[tuple[float, float]]
    color: str
    axis: Literal["left", "right"] = "left"
    style: Literal["line", "step", "points"] = "line"
    marker: Literal["circle", "square", "cross", "none"] = "circle"


@dataclass
class Axis:
    lo: float
    hi: float
    ticks: list[float] = field(default_factory=list)

    def at(self, value: float, start: float, length: float) -> float:
        """Pixel position of `value` on an axis drawn from `start` over `length` pixels (may be negative)."""
        span = self.hi - self.lo
        return start + (value - self.lo) / span * length if span else start + length / 2


def nice_ticks(lo: float, hi: float, count: int = 5) -> Axis:
    """An axis covering [lo, hi] with about `count` ticks at 1, 2 or 5 times a power of ten."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first, last = math.floor(lo / step) * step, math.ceil(hi / step) * step
    n = int(round((last - first) / step))
    return Axis(first, last, [first + k * step for k in range(n + 1)])


def tick_label(value: float, step: float) -> str:
    if step >= 1 and float(value).is_integer():
        return str(int(value))
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 2
    return f"{value:.{min(decimals, 6)}f}"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def chart(series: list[Series], *, x_label: str, y_label: str, y2_label: str | None = None,
          title: str | None = None, x_ticks: list[tuple[float, str]] | None = None, width: int = 380,
          height: int = 240, integer_x: bool = True, css_class: str = "chart", attrs: dict[str, str] | None = None,
          ) -> str:
    """One SVG chart. Series on the "right" axis get their own scale (`y2_label`). `x_ticks` replaces the
    numeric x ticks with (position, label) pairs, drawn rotated. Empty series are skipped; with none left the
    chart still draws its axes and says "no data"."""
    series = [s for s in series if s.points]
    left_pad, right_pad = 58, (56 if any(s.axis == "right" for s in series) else 16)
    legend = len(series) > 1
    top_pad = (24 if title else 8) + (16 if legend else 4)
    bottom_pad = 62 if x_ticks else 44
    plot_w, plot_h = width - left_pad - right_pad, height - top_pad - bottom_pad
    xs = [x for s in series for x, _ in s.points] or [0.0, 1.0]
    if x_ticks:
        xs += [x for x, _ in x_ticks]
    x_lo, x_hi = min(xs), max(xs)
    if integer_x or x_ticks:
        xaxis = Axis(x_lo - 0.5, x_hi + 0.5, [])
        if not x_ticks:
            step = max(1, math.ceil((x_hi - x_lo + 1) / 8))
            xaxis.ticks = [float(v) for v in range(int(x_lo), int(x_hi) + 1, step)]
    else:
        xaxis = nice_ticks(x_lo, x_hi)

    def axis_for(side: str) -> Axis | None:
        ys = [y for s in series if s.axis == side for _, y in s.points]
        return nice_ticks(min(ys), max(ys)) if ys else None

    left, right = axis_for("left") or nice_ticks(0.0, 1.0), axis_for("right")

    def px(x: float) -> float:
        return xaxis.at(x, left_pad, plot_w)

    def py(axis: Axis, y: float) -> float:
        return axis.at(y, top_pad + plot_h, -plot_h)

    extra = "".join(f' {_e(k)}="{_e(v)}"' for k, v in (attrs or {}).items())
    out = [f'<svg class="{_e(css_class)}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title or y_label)}"{extra}>',
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>']
    if title:
        out.append(f'<text x="{width / 2:.1f}" y="16" text-anchor="middle" font-size="12" {FONT} '
                   f'fill="#1f2328">{_e(title)}</text>')
    # grid and y ticks
    left_step = left.ticks[1] - left.ticks[0] if len(left.ticks) > 1 else 1.0
    for t in left.ticks:
        y = py(left, t)
        out.append(f'<line x1="{left_pad}" x2="{left_pad + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eaeef2"/>')
        out.append(f'<text x="{left_pad - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10" {FONT} '
                   f'fill="#59636e">{_e(tick_label(t, left_step))}</text>')
    if right is not None:
        right_step = right.ticks[1] - right.ticks[0] if len(right.ticks) > 1 else 1.0
        for t in right.ticks:
            y = py(right, t)
            out.append(f'<text x="{left_pad + plot_w + 6}" y="{y + 4:.1f}" font-size="10" {FONT} '
                       f'fill="#59636e">{_e(tick_label(t, right_step))}</text>')
    # x ticks
    if x_ticks:
        for x, label in x_ticks:
            X, Y = px(x), top_pad + plot_h + 10
            out.append(f'<text x="{X:.1f}" y="{Y:.1f}" text-anchor="end" font-size="9" {FONT} fill="#59636e" '
                       f'transform="rotate(-45 {X:.1f} {Y:.1f})">{_e(label)}</text>')
    else:
        x_step = xaxis.ticks[1] - xaxis.ticks[0] if len(xaxis.ticks) > 1 else 1.0
        for t in xaxis.ticks:
            X = px(t)
            out.append(f'<line x1="{X:.1f}" x2="{X:.1f}" y1="{top_pad + plot_h}" y2="{top_pad + plot_h + 4}" '
                       'stroke="#8c959f"/>')
            out.append(f'<text x="{X:.1f}" y="{top_pad + plot_h + 16}" text-anchor="middle" font-size="10" {FONT} '
                       f'fill="#59636e">{_e(tick_label(t, x_step))}</text>')
    # frame and axis labels
    out.append(f'<rect x="{left_pad}" y="{top_pad}" width="{plot_w}" height="{plot_h}" fill="none" '
               'stroke="#8c959f"/>')
    out.append(f'<text x="{left_pad + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle" font-size="11" {FONT} '
               f'fill="#1f2328">{_e(x_label)}</text>')
    cy = top_pad + plot_h / 2
    left_colour = next((s.color for s in series if s.axis == "left"), "#1f2328")
    out.append(f'<text x="14" y="{cy:.1f}" text-anchor="middle" font-size="11" {FONT} fill="{left_colour}" '
               f'transform="rotate(-90 14 {cy:.1f})">{_e(y_label)}</text>')
    if right is not None and y2_label:
        right_colour = next(s.color for s in series if s.axis == "right")
        X = width - 10
        out.append(f'<text x="{X}" y="{cy:.1f}" text-anchor="middle" font-size="11" {FONT} fill="{right_colour}" '
                   f'transform="rotate(90 {X} {cy:.1f})">{_e(y2_label)}</text>')
    # data
    for s in series:
        axis = right if s.axis == "right" and right is not None else left
        pts = [(px(x), py(axis, y)) for x, y in s.points]
        values = " ".join(f"{x:g},{y:.6g}" for x, y in s.points)
        out.append(f'<g class="series" data-name="{_e(s.name)}" data-values="{_e(values)}">')
        if s.style in ("line", "step") and len(pts) > 1:
            if s.style == "step":
                stepped = [pts[0]]
                for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
                    stepped += [(x1, y0), (x1, y1)]
                pts_line = stepped
            else:
                pts_line = pts
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts_line)
            out.append(f'<polyline points="{path}" fill="none" stroke="{s.color}" stroke-width="2"/>')
        for x, y in pts:
            out.append(_marker(s.marker, x, y, s.color))
        out.append("</g>")
    if not series:
        out.append(f'<text x="{left_pad + plot_w / 2:.1f}" y="{cy:.1f}" text-anchor="middle" font-size="12" {FONT} '
                   'fill="#8c959f">no data</text>')
    # legend: one row above the plot
    if legend:
        lx, ly = float(left_pad), top_pad - 8
        for s in series:
            out.append(_marker(s.marker if s.marker != "none" else "square", lx + 3, ly - 3, s.color))
            out.append(f'<text x="{lx + 10:.1f}" y="{ly + 1}" font-size="10" {FONT} fill="#1f2328">{_e(s.name)}</text>')
            lx += 24 + 5.6 * len(s.name)
    out.append("</svg>")
    return "".join(out)


def _marker(kind: str, x: float, y: float, color: str) -> str:
    if kind == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.2" fill="{color}"/>'
    if kind == "square":
        return f'<rect x="{x - 3:.1f}" y="{y - 3:.1f}" width="6" height="6" fill="{color}"/>'
    if kind == "cross":
        return (f'<path d="M{x - 4:.1f},{y - 4:.1f}L{x + 4:.1f},{y + 4:.1f}M{x - 4:.1f},{y + 4:.1f}'
                f'L{x + 4:.1f},{y - 4:.1f}" stroke="{color}" stroke-width="2"/>')
    return ""
