"""What a finished run shows besides its records: the PNG plots (curves, histogram, worst pairs) and the console
headline, which names the variant, the distance and its direction."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from met3r_metrics import io as mio
from met3r_metrics.cli.scoring import score_sequence
from met3r_metrics.settings import Settings

log = logging.getLogger("met3r_eval")


def _curve_labels(pairing: str, gap: int) -> dict[str, str]:
    """Title and x label of sequence_curves.png for the pairing protocol used."""
    if pairing == "first":
        return {"title": "MEt3R per pair with the first frame", "xlabel": "pair index k (frame 0 -> k+1)"}
    if pairing == "all":
        return {"title": "MEt3R per pair (all pairs i < j)", "xlabel": "pair index (pairs (i, j), i < j, in row-major order)"}
    step = "i+1" if gap == 1 else f"i+{gap}"
    return {"title": "MEt3R per consecutive pair" + ("" if gap == 1 else f" (gap {gap})"), "xlabel": f"pair index i (frame i -> {step})"}


def _write_plots(out_dir: Path, merged: list[dict[str, Any]], max_curves: int, settings: Settings) -> None:
    try:
        from met3r_metrics.plotting import plot_score_histogram, plot_sequence_curves
    except ImportError:  # pragma: no cover
        return
    ok = [r for r in merged if r.get("status") == "ok"]
    if not ok:
        return
    try:
        curves = {r["sequence"]: [float("nan") if s is None else s for s in r["pair_scores"]] for r in ok[:max_curves]}
        labels = _curve_labels(settings.pairing, settings.pair_gap)
        plot_sequence_curves(curves, **labels, distance=settings.distance).savefig(out_dir / "sequence_curves.png", dpi=120)
        pair_scores = [float("nan") if s is None else s for r in ok for s in r["pair_scores"]]
        plot_score_histogram(pair_scores, title="MEt3R per pair", distance=settings.distance).savefig(out_dir / "histogram.png", dpi=120)
    except ImportError as err:
        log.warning("plots skipped: %s", err)


def _write_worst_pairs(
    out_dir: Path, merged: list[dict[str, Any]], sources: dict[str, mio.SequenceSource],
    prepare: Any, settings: Settings, scorer: Any, k: int,
) -> None:
    """Recompute the k worst pairs with score maps and draw them (rank 0, after the merge)."""
    from met3r_metrics.plotting import plot_pair_maps

    sign = -1.0 if settings.distance_info.higher_is_better else 1.0  # "worst" = least consistent
    ranked = [
        (sign * s, r["sequence"], tuple(p))
        for r in merged if r.get("status") == "ok" and r["sequence"] in sources
        for p, s in zip(r["pairs"], r["pair_scores"]) if s is not None
    ]
    ranked.sort(key=lambda t: -t[0])
    ranked = ranked[:k]
    if not ranked:
        return
    v1, v2, maps, masks, scores, titles = [], [], [], [], [], []
    for _, name, (i, j) in ranked:
        prepared = prepare(sources[name])
        views = prepared.views
        out = score_sequence(views, [(i, j)], settings, scorer, normalize=True, return_maps=True,
                             geometry=prepared.geometry)
        v1.append(views[i]), v2.append(views[j])
        maps.append(out.score_maps[0]), masks.append(out.masks[0])
        scores.append(out.scores[0]), titles.append(f"{name[:20]} {i}->{j}")
    fig = plot_pair_maps(torch.stack(v1), torch.stack(v2), torch.stack(maps), torch.stack(masks), torch.tensor(scores),
                         titles=titles, distance=settings.distance)
    fig.savefig(out_dir / "worst_pairs.png", dpi=100)


def _score_label(summary: dict[str, Any]) -> str:
    """``official, cosine, lower is better``: the variant, the distance and its direction (a PSNR of 148 is good)."""
    settings = Settings.from_dict(summary["settings"])
    better = "higher" if settings.distance_info.higher_is_better else "lower"
    return f"{summary['variant']}, {settings.distance}, {better} is better"


def _report(summary: dict[str, Any], out_dir: Path) -> None:
    m, ci = summary["met3r"], summary["met3r_ci95"]
    head = "no sequence could be scored" if m is None else f"MEt3R ({_score_label(summary)}) = {m:.5f}"
    if ci:
        head += f"  (95% CI {ci[0]:.5f} .. {ci[1]:.5f})"
    print(
        f"{head}\n  {summary['num_sequences_scored']} sequences, {summary['num_pairs_scored']} pairs scored, "
        f"{summary['num_zero_overlap_pairs']} pairs without overlap, {summary['num_errors']} errors\n  results: {out_dir}",
        flush=True,
    )
