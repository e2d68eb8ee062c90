"""report.html of one met3r-eval run: headline with its interval and settings, the sortable sequence
table, curves and histograms, the worst pairs' pictures."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from html import escape
from typing import Any

import numpy as np

from met3r_metrics.settings import DISTANCES

from .charts import histogram, line_chart, sparkline
from .html import cell, fmt_number, key_value_table, page, sortable_table
from .stats import RESAMPLES, SEED, bootstrap_interval
from .worst_pairs import PairPictures

__all__ = ["run_report_html", "score_name"]


def score_name(distance: str) -> str:
    """'MEt3R (lower is more consistent)' for cosine, 'MEt3R (PSNR (dB), higher ...)' for the others."""
    info = DISTANCES.get(distance, DISTANCES["cosine"])
    name = "MEt3R" if distance == "cosine" else f"MEt3R ({info.label})"
    return f"{name}, {'higher' if info.higher_is_better else 'lower'} is more consistent"


def _nums(values: Sequence[Any]) -> list[float | None]:
    return [None if v is None or not math.isfinite(float(v)) else float(v) for v in values]


def _headline(summary: dict[str, Any], scores: list[float]) -> str:
    m = summary.get("met3r")
    variant = escape(str(summary.get("variant", "")))
    if m is None:
        return '<p class="headline">no sequence got a score</p>'
    iv = bootstrap_interval(scores, RESAMPLES, SEED)
    ci = summary.get("met3r_ci95") or ([iv.low, iv.high] if iv.low is not None else None)
    ci_text = (f" <span class='muted'>95% CI [{ci[0]:.5f}, {ci[1]:.5f}]</span>" if ci else
               " <span class='muted'>(one sequence: no interval)</span>")
    return (f'<p class="headline" id="headline">MEt3R ({variant}) = {m:.5f}{ci_text}</p>'
            f'<p class="muted">{escape(str(summary.get("ci95_method", iv.method())))}; mean over '
            f'{summary.get("num_sequences_scored", 0)} sequences of each sequence\'s mean over its pairs</p>')


def _counts(summary: dict[str, Any]) -> str:
    items = [("sequences scored", summary.get("num_sequences_scored")), ("pairs scored", summary.get("num_pairs_scored")),
             ("pairs without overlap (NaN, excluded)", summary.get("num_zero_overlap_pairs")),
             ("sequences without any score", summary.get("num_sequences_without_score")),
             ("errors", summary.get("num_errors")), ("pair mean", fmt_number(summary.get("pair_mean"))),
             ("mean overlap", fmt_number(summary.get("mean_overlap"), 3))]
    return key_value_table(items)


def _settings(summary: dict[str, Any]) -> str:
    s = dict(summary.get("settings", {}))
    items = [(f"metric.{k}", v) for k, v in sorted(s.items())]
    items += [(f"data.{k}", v) for k, v in sorted(summary.get("data", {}).items()) if k != "decoders"]
    items += [("package_version", summary.get("package_version")), ("torch_version", summary.get("torch_version"))]
    return key_value_table(items)


def _sequence_table(records: Sequence[dict[str, Any]]) -> str:
    pair_vals = [v for r in records if r.get("status") == "ok" for v in _nums(r.get("pair_scores", [])) if v is not None]
    lo, hi = (min(pair_vals), max(pair_vals)) if pair_vals else (0.0, 1.0)
    rows, classes = [], []
    for r in records:
        ok = r.get("status") == "ok"
        overlaps = [v for v in _nums(r.get("overlap", [])) if v is not None]
        rows.append("".join([
            cell(r["sequence"]),
            cell(r.get("score") if ok else None, numeric=True),
            cell(len(r.get("pairs", [])) if ok else None, numeric=True),
            cell(r.get("num_zero_overlap") if ok else None, numeric=True),
            cell(sum(overlaps) / len(overlaps) if overlaps else None, numeric=True, digits=3),
            cell(r.get("num_frames") if ok else None, numeric=True),
            cell(r.get("status", "")),
            cell(r.get("error", "")),
            cell(None, html=sparkline(_nums(r.get("pair_scores", [])), lo=lo, hi=hi) if ok else ""),
        ]))
        classes.append("" if ok else "error")
    headers = [("sequence", False), ("score", True), ("pairs", True), ("zero-overlap pairs", True),
               ("mean overlap", True), ("frames", True), ("status", False), ("error", False), ("pair scores", False)]
    return sortable_table(headers, rows, table_id="sequences", row_classes=classes)


def _curves(records: Sequence[dict[str, Any]], max_curves: int, ylabel: str) -> str:
    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        return ""
    series = {r["sequence"]: _nums(r["pair_scores"]) for r in ok[:max_curves]}
    length = max(len(v) for v in series.values())
    stacked = np.full((len(series), length), np.nan)
    for k, v in enumerate(series.values()):
        stacked[k, : len(v)] = [np.nan if x is None else x for x in v]
    with warnings.catch_warnings():  # all-NaN columns (no overlap anywhere) are expected
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = [None if not np.isfinite(x) else float(x) for x in np.nanmean(stacked, axis=0)]
    shown = f"first {len(series)} of {len(ok)} sequences" if len(ok) > len(series) else f"{len(series)} sequences"
    return line_chart(series, title=f"per-pair score along each sequence ({shown}) and their mean",
                      xlabel="pair index", ylabel=ylabel, mean=mean if len(series) > 1 else None)


def _pairs_section(pictures: Sequence[PairPictures], note: str | None) -> str:
    out = ["<h2>Worst pairs</h2>"]
    if note:
        out.append(f'<p class="note">{escape(note)}</p>')
    for p in pictures:
        ov = "" if p.overlap is None else f", overlap {p.overlap:.0%}"
        figs = "".join(f'<figure><img src="{uri}" alt="{escape(label)}"><figcaption>{escape(label)}</figcaption></figure>'
                       for label, uri in p.pictures.items())
        out.append(f'<div class="pair"><p><b>{escape(p.sequence)}</b> frames {p.i} &rarr; {p.j}: score {p.score:.5f}'
                   f'{ov} <span class="muted">(rescored now: {p.rescored:.5f})</span></p>{figs}</div>')
    return "".join(out)


def run_report_html(
    summary: dict[str, Any], records: Sequence[dict[str, Any]], *, title: str, pictures: Sequence[PairPictures] = (),
    pictures_note: str | None = None, max_curves: int = 50,
) -> str:
    """The whole report page of one run (``summary.json`` + ``sequences.jsonl`` records + worst-pair pictures)."""
    distance = str(summary.get("settings", {}).get("distance", "cosine"))
    ylabel = score_name(distance)
    scores = [float(r["score"]) for r in records
              if r.get("status") == "ok" and r.get("score") is not None and math.isfinite(r["score"])]
    pair_scores = [v for r in records if r.get("status") == "ok" for v in _nums(r["pair_scores"]) if v is not None]
    body = [f"<h1>{escape(title)}</h1>", f'<p class="muted">{escape(ylabel)}</p>', _headline(summary, scores),
            _counts(summary), "<h2>Sequences</h2>",
            '<p class="muted">Click a column header to sort. Pairs without overlap are NaN: excluded from the '
            "means and counted.</p>", f'<div class="scroll">{_sequence_table(records)}</div>',
            "<h2>Distributions</h2>", '<div class="charts">', _curves(records, max_curves, ylabel),
            histogram(pair_scores, title="pair scores", xlabel=ylabel),
            histogram(scores, title="sequence scores", xlabel=ylabel), "</div>",
            _pairs_section(pictures, pictures_note), "<h2>Settings</h2>", _settings(summary)]
    return page(title, "\n".join(body))
