"""Plotting functions return figures and work headless."""

import math

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from met3r_metrics.plotting import plot_pair_maps, plot_score_histogram, plot_sequence_curves


def test_plot_pair_maps_rows_and_save(tmp_path):
    g = torch.Generator().manual_seed(0)
    n, h, w = 3, 32, 48
    v1 = torch.rand(n, 3, h, w, generator=g)
    v2 = torch.rand(n, 3, h, w, generator=g)
    smaps = torch.rand(n, 16, 24, generator=g)  # render res may differ from input res
    masks = torch.rand(n, 16, 24, generator=g) > 0.3
    masks[2] = False  # a pair without overlap
    scores = torch.tensor([0.1, 0.2, math.nan])
    fig = plot_pair_maps(v1, v2, smaps, masks, scores, titles=["a", "b", "c"])
    assert len(fig.axes) == n * 4 + 1  # + colorbar
    assert "no overlap" in fig.axes[8].get_ylabel()
    out = tmp_path / "maps.png"
    fig.savefig(out)
    assert out.stat().st_size > 1000


def test_plot_pair_maps_checks_shapes():
    with pytest.raises(ValueError, match="batch sizes differ"):
        plot_pair_maps(torch.rand(2, 3, 8, 8), torch.rand(1, 3, 8, 8), torch.rand(2, 8, 8), torch.ones(2, 8, 8))


def test_curves_and_histogram(tmp_path):
    curves = {"s0": [0.1, 0.2, float("nan")], "s1": np.array([0.3, 0.25])}
    fig = plot_sequence_curves(curves, title="T", xlabel="X")
    ax = fig.axes[0]
    assert (ax.get_title(), ax.get_xlabel()) == ("T", "X") and "MEt3R" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["s0", "s1", "mean"]
    assert len(ax.lines) == 3 and np.allclose(ax.lines[2].get_ydata()[:2], [0.2, 0.225])  # mean over sequences
    fig.savefig(tmp_path / "c.png")  # draws: ticks are final
    assert all(float(t).is_integer() for t in ax.get_xticks())  # pair indices
    fig = plot_score_histogram([0.1, 0.2, float("nan"), 0.3])
    ax = fig.axes[0]
    assert "1 without overlap" in ax.get_title() and ax.get_ylabel() == "count"
    fig.savefig(tmp_path / "h.png")  # draws: ticks are final
    assert all(float(t).is_integer() for t in ax.get_yticks())  # counts, not 0.5 steps
