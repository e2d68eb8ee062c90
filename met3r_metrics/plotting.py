"""Pictures of MEt3R results: per-pair score maps, per-sequence score curves, score histograms.

matplotlib is an optional dependency (``pip install met3r-metrics[plot]``); it is imported inside
each function so that importing :mod:`met3r_metrics` never needs it.  Every function returns a
:class:`matplotlib.figure.Figure` and never calls ``plt.show()``, so it works headless (Agg) and
the caller decides where the figure goes (file, TensorBoard, W&B).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.figure import Figure

__all__ = ["plot_pair_maps", "plot_sequence_curves", "plot_score_histogram"]


def _require_matplotlib() -> Any:
    """Import matplotlib lazily with a helpful error; use a non-interactive figure factory."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plotting needs matplotlib: pip install 'met3r-metrics[plot]'"
        ) from err
    del matplotlib
    return Figure


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _image_hwc(img: np.ndarray) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) clipped, as imshow wants it."""
    return np.clip(np.transpose(img, (1, 2, 0)), 0.0, 1.0)


def score_label(distance: str = "cosine") -> str:
    """Axis label of a MEt3R score with ``distance``, saying which direction is more consistent."""
    from met3r_metrics.settings import DISTANCES

    info = DISTANCES[distance]
    name = "MEt3R" if distance == "cosine" else f"MEt3R ({info.label})"
    return f"{name} ({'higher' if info.higher_is_better else 'lower'} is more consistent)"


def plot_pair_maps(
    view1: torch.Tensor,
    view2: torch.Tensor,
    score_maps: torch.Tensor,
    masks: torch.Tensor,
    scores: torch.Tensor | Sequence[float] | None = None,
    *,
    titles: Sequence[str] | None = None,
    vmax: float | None = None,
    cmap: str = "magma",
    panel_size: float = 2.4,
    distance: str = "cosine",
) -> "Figure":
    """One row per pair: view 1, view 2, score map (masked-out pixels grey), overlap mask.

    Args:
        view1: ``(N, 3, H, W)`` first images of the pairs, values in [0, 1].
        view2: ``(N, 3, H, W)`` second images, values in [0, 1].
        score_maps: ``(N, h, w)`` per-pixel values of ``distance`` (``1 - cos`` for MEt3R); may be
            at the render resolution rather than the input resolution.
        masks: ``(N, h, w)`` overlap masks (nonzero = both renders covered the pixel).
        scores: ``(N,)`` per-pair scores for the row titles; NaN is shown as "no overlap".
        titles: optional row labels (e.g. ``"seq3 4->5"``), prepended to the score.
        vmax: upper end of the score-map colour scale; default: the 99th percentile of the
            unmasked pixels of all rows (shared so rows are comparable), at least 1e-6.
        cmap: colour map of the score maps.
        panel_size: inches per panel.
        distance: the settings' distance (colour-bar label and scale start).

    Returns:
        A matplotlib Figure with ``N`` rows and 4 columns.
    """
    Figure = _require_matplotlib()
    v1, v2 = _to_numpy(view1), _to_numpy(view2)
    smaps, msk = _to_numpy(score_maps), _to_numpy(masks)
    if v1.ndim == 3:  # a single pair is accepted without the batch dim
        v1, v2, smaps, msk = v1[None], v2[None], smaps[None], msk[None]
    n = v1.shape[0]
    if not (v2.shape[0] == smaps.shape[0] == msk.shape[0] == n):
        raise ValueError(
            f"batch sizes differ: view1 {v1.shape}, view2 {v2.shape}, "
            f"score_maps {smaps.shape}, masks {msk.shape}"
        )
    from met3r_metrics.settings import DISTANCES

    info = DISTANCES[distance]
    vmin = info.lower_bound if info.lower_bound is not None else 0.0
    sc = None if scores is None else _to_numpy(scores).reshape(-1)
    valid = msk > 0
    if vmax is None:
        covered = smaps[valid & np.isfinite(smaps)]
        vmax = float(np.percentile(covered, 99)) if covered.size else 1.0
        vmax = max(vmax, vmin + 1e-6)

    fig = Figure(figsize=(4 * panel_size, max(n, 1) * panel_size), layout="constrained")
    axes = fig.subplots(max(n, 1), 4, squeeze=False)
    import matplotlib as mpl

    # Masked-out pixels drawn in neutral grey so "no overlap" never reads as "consistent".
    colormap = mpl.colormaps[cmap].with_extremes(bad=(0.6, 0.6, 0.6))
    image = None
    for r in range(n):
        ax1, ax2, ax3, ax4 = axes[r]
        ax1.imshow(_image_hwc(v1[r]))
        ax2.imshow(_image_hwc(v2[r]))
        shown = np.ma.masked_array(smaps[r], mask=~valid[r] | ~np.isfinite(smaps[r]))
        image = ax3.imshow(shown, cmap=colormap, vmin=vmin, vmax=vmax)
        ax4.imshow(valid[r].astype(np.float32), cmap="gray", vmin=0.0, vmax=1.0)
        label = titles[r] if titles is not None else f"pair {r}"
        if sc is not None:
            value = sc[r]
            label += " - no overlap" if not math.isfinite(value) else f" - MEt3R {value:.4f}"
        ax1.set_ylabel(label, fontsize=8)
        if r == 0:
            for ax, name in zip((ax1, ax2, ax3, ax4), ("view 1", "view 2", "score map", "overlap")):
                ax.set_title(name, fontsize=9)
        ax4.set_xlabel(f"overlap {valid[r].mean():.0%}", fontsize=8)
        for ax in (ax1, ax2, ax3, ax4):
            ax.set_xticks([])
            ax.set_yticks([])
    if image is not None:
        fig.colorbar(image, ax=axes[:, 2].tolist(), shrink=0.8, label=info.label)
    return fig


def plot_sequence_curves(
    curves: Mapping[str, Sequence[float]] | Mapping[str, np.ndarray],
    *,
    max_legend: int = 10,
    title: str = "MEt3R per consecutive pair",
    xlabel: str = "pair index (frame i -> i+1)",
    distance: str = "cosine",
) -> "Figure":
    """Per-sequence score curves, like the paper's per-frame plots.

    Args:
        curves: sequence name -> per-pair scores in pair order (NaN = no overlap, left as a gap).
        max_legend: show a legend only up to this many sequences (it becomes noise beyond).
        title: axes title.
        xlabel: x-axis label.
        distance: the settings' distance (y label and which direction is more consistent).
    """
    Figure = _require_matplotlib()
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    all_values: list[np.ndarray] = []
    for name, values in curves.items():
        y = np.asarray(values, dtype=np.float64).reshape(-1)
        all_values.append(y)
        ax.plot(np.arange(len(y)), y, marker="." if len(y) < 50 else None, lw=1, label=str(name))
    # The mean curve over sequences (where lengths allow) is what the paper plots.
    if len(all_values) > 1:
        length = max(len(v) for v in all_values)
        stacked = np.full((len(all_values), length), np.nan)
        for k, v in enumerate(all_values):
            stacked[k, : len(v)] = v
        with warnings.catch_warnings():  # all-NaN columns are expected (no overlap)
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(stacked, axis=0)
        ax.plot(np.arange(length), mean, color="black", lw=2.5, label="mean")
    ax.set_xlabel(xlabel)
    ax.xaxis.get_major_locator().set_params(integer=True)  # pair indices: no 0.5 ticks
    ax.set_ylabel(score_label(distance))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if 0 < len(curves) <= max_legend:
        ax.legend(fontsize=7)
    return fig


def plot_score_histogram(
    scores: Sequence[float] | np.ndarray | torch.Tensor,
    *,
    bins: int = 30,
    title: str = "MEt3R distribution",
    xlabel: str | None = None,
    distance: str = "cosine",
) -> "Figure":
    """Histogram of scores (NaN = zero-overlap pairs are dropped and counted in the title);
    the x label defaults to :func:`score_label` of ``distance``."""
    Figure = _require_matplotlib()
    values = _to_numpy(scores).reshape(-1).astype(np.float64)
    finite = values[np.isfinite(values)]
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    if finite.size:
        ax.hist(finite, bins=bins, color="tab:blue", alpha=0.8)
        ax.axvline(float(finite.mean()), color="black", ls="--", label=f"mean {finite.mean():.4f}")
        ax.legend(fontsize=8)
    n_nan = int(values.size - finite.size)
    ax.set_title(title + (f" ({n_nan} without overlap)" if n_nan else ""))
    ax.set_xlabel(xlabel if xlabel is not None else score_label(distance))
    ax.set_ylabel("count")
    ax.yaxis.get_major_locator().set_params(integer=True)  # counts: no 0.5 ticks
    ax.grid(alpha=0.3)
    return fig
