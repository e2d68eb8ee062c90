"""Inline SVG charts (curves, histogram, scatter, sparkline): drawn here so the report needs no matplotlib.

Each function returns an ``<svg>`` element as a string; points carry ``<title>`` tooltips (the
sequence's name and value) that a browser shows on hover.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

__all__ = ["line_chart", "histogram", "scatter", "sparkline", "nice_ticks"]

_W, _H, _L, _R, _T, _B = 640, 300, 64, 16, 24, 44  # size and margins (px)
_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0) * 0.1
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.floor(lo / step) * step
    return [round(start + k * step, 12) for k in range(int(math.ceil((hi - start) / step)) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


class _Frame:
    """Maps data to pixels and draws the axes of one chart."""

    def __init__(self, xs: Sequence[float], ys: Sequence[float], *, integer_x: bool = False, square: bool = False):
        xs, ys = [v for v in xs if math.isfinite(v)] or [0.0, 1.0], [v for v in ys if math.isfinite(v)] or [0.0, 1.0]
        if square:
            lo, hi = min(min(xs), min(ys)), max(max(xs), max(ys))
            xs = ys = [lo, hi]
        self.xt, self.yt = nice_ticks(min(xs), max(xs)), nice_ticks(min(ys), max(ys))
        if integer_x:
            self.xt = sorted({int(round(t)) for t in self.xt if t >= 0}) or [0, 1]
        self.x0, self.x1 = min(self.xt[0], min(xs)), max(self.xt[-1], max(xs))
        self.y0, self.y1 = min(self.yt[0], min(ys)), max(self.yt[-1], max(ys))
        if self.x1 == self.x0:
            self.x1 = self.x0 + 1
        if self.y1 == self.y0:
            self.y1 = self.y0 + 1
        self.w = _H + 40 if square else _W

    def px(self, x: float) -> float:
        return _L + (x - self.x0) / (self.x1 - self.x0) * (self.w - _L - _R)

    def py(self, y: float) -> float:
        return _H - _B - (y - self.y0) / (self.y1 - self.y0) * (_H - _T - _B)

    def axes(self, title: str, xlabel: str, ylabel: str) -> list[str]:
        out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{self.w}" height="{_H}" '
               f'viewBox="0 0 {self.w} {_H}" role="img"><title>{escape(title)}</title>',
               f'<text x="{self.w / 2}" y="15" text-anchor="middle" class="ct">{escape(title)}</text>']
        for t in self.xt:
            x = self.px(t)
            out.append(f'<line x1="{x:.1f}" y1="{_T}" x2="{x:.1f}" y2="{_H - _B}" class="grid"/>'
                       f'<text x="{x:.1f}" y="{_H - _B + 14}" text-anchor="middle">{_fmt(t)}</text>')
        for t in self.yt:
            y = self.py(t)
            out.append(f'<line x1="{_L}" y1="{y:.1f}" x2="{self.w - _R}" y2="{y:.1f}" class="grid"/>'
                       f'<text x="{_L - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
        out.append(f'<text x="{(self.w + _L) / 2}" y="{_H - 8}" text-anchor="middle">{escape(xlabel)}</text>'
                   f'<text transform="translate(14,{(_H - _B + _T) / 2}) rotate(-90)" text-anchor="middle">'
                   f'{escape(ylabel)}</text>')
        return out


def _thin(values: Sequence[float | None], max_points: int) -> list[tuple[float, float | None]]:
    """(x, y) points of a curve, at most ``max_points``: long sequences are averaged over bins of
    consecutive pairs (x = the bin's centre), so a 10,000-pair curve stays a few kilobytes."""
    vals = [None if v is None or not math.isfinite(v) else float(v) for v in values]
    if len(vals) <= max_points:
        return list(enumerate(vals))
    size = len(vals) / max_points
    out: list[tuple[float, float | None]] = []
    for k in range(max_points):
        lo, hi = int(k * size), max(int((k + 1) * size), int(k * size) + 1)
        finite = [v for v in vals[lo:hi] if v is not None]
        out.append(((lo + hi - 1) / 2, math.fsum(finite) / len(finite) if finite else None))
    return out


def _runs(values: Sequence[float | None], max_points: int = 600) -> list[list[tuple[float, float]]]:
    """Consecutive finite points (a NaN = no overlap leaves a gap in the curve)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, v in _thin(values, max_points):
        if v is None:
            runs.append([])
        else:
            runs[-1].append((x, v))
    return [r for r in runs if r]


def line_chart(series: Mapping[str, Sequence[float | None]], *, title: str, xlabel: str, ylabel: str,
               mean: Sequence[float | None] | None = None) -> str:
    """Curves of per-pair scores (x = pair index), one per sequence, plus an optional bold mean curve."""
    allv = [float(v) for s in series.values() for v in s if v is not None and math.isfinite(v)]
    length = max((len(s) for s in series.values()), default=1)
    f = _Frame([0, max(length - 1, 1)], allv, integer_x=True)
    out = f.axes(title, xlabel, ylabel)
    for k, (name, values) in enumerate(series.items()):
        colour = _COLOURS[k % len(_COLOURS)]
        for run in _runs(values):
            pts = " ".join(f"{f.px(x):.1f},{f.py(y):.1f}" for x, y in run)
            out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.2" class="curve">'
                       f'<title>{escape(name)}</title></polyline>')
    if mean is not None:
        for run in _runs(mean):
            pts = " ".join(f"{f.px(x):.1f},{f.py(y):.1f}" for x, y in run)
            out.append(f'<polyline points="{pts}" fill="none" stroke="#000" stroke-width="2.5"><title>mean</title></polyline>')
    return "".join(out) + "</svg>"


def histogram(values: Sequence[float], *, title: str, xlabel: str, bins: int = 30) -> str:
    """Histogram of the finite ``values``, with the mean as a dashed line."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        f = _Frame([0, 1], [0, 1])
        return "".join(f.axes(title + " (no finite value)", xlabel, "count")) + "</svg>"
    lo, hi = min(vals), max(vals)
    if hi == lo:
        lo, hi = lo - 0.5 * (abs(lo) or 1) * 0.01, hi + 0.5 * (abs(hi) or 1) * 0.01
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in vals:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    f = _Frame([lo, hi], [0, max(counts)])
    out = f.axes(title, xlabel, "count")
    for k, c in enumerate(counts):
        if c:
            x0, x1 = f.px(lo + k * width), f.px(lo + (k + 1) * width)
            out.append(f'<rect x="{x0:.1f}" y="{f.py(c):.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
                       f'height="{f.py(0) - f.py(c):.1f}" class="bar"><title>{_fmt(lo + k * width)} .. '
                       f'{_fmt(lo + (k + 1) * width)}: {c}</title></rect>')
    m = math.fsum(vals) / len(vals)
    out.append(f'<line x1="{f.px(m):.1f}" y1="{_T}" x2="{f.px(m):.1f}" y2="{_H - _B}" stroke="#000" '
               f'stroke-dasharray="4 3"><title>mean {_fmt(m)}</title></line>')
    return "".join(out) + "</svg>"


def scatter(points: Sequence[tuple[float, float, str]], *, title: str, xlabel: str, ylabel: str) -> str:
    """One dot per (x, y, name), on square axes with the diagonal y = x (equal scores)."""
    f = _Frame([p[0] for p in points], [p[1] for p in points], square=True)
    out = f.axes(title, xlabel, ylabel)
    lo, hi = max(f.x0, f.y0), min(f.x1, f.y1)
    out.append(f'<line x1="{f.px(lo):.1f}" y1="{f.py(lo):.1f}" x2="{f.px(hi):.1f}" y2="{f.py(hi):.1f}" '
               f'stroke="#888" stroke-dasharray="4 3"><title>equal scores</title></line>')
    for x, y, name in points:
        out.append(f'<circle cx="{f.px(x):.1f}" cy="{f.py(y):.1f}" r="3.5" class="dot">'
                   f'<title>{escape(name)}: {_fmt(x)} vs {_fmt(y)}</title></circle>')
    return "".join(out) + "</svg>"


def sparkline(values: Sequence[float | None], *, width: int = 120, height: int = 24, lo: float | None = None,
              hi: float | None = None) -> str:
    """A tiny curve of one sequence's pair scores for its table row (shared ``lo``/``hi`` keep rows comparable)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return ""
    lo = min(vals) if lo is None else lo
    hi = max(vals) if hi is None else hi
    span, n = (hi - lo) or 1.0, max(len(values) - 1, 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="spark" width="{width}" height="{height}">']
    for run in _runs(values, max_points=width):
        pts = " ".join(f"{x / n * (width - 2) + 1:.1f},{height - 1 - (y - lo) / span * (height - 2):.1f}" for x, y in run)
        out.append(f'<polyline points="{pts}" fill="none" stroke="#1f77b4" stroke-width="1"/>')
    return "".join(out) + "</svg>"
