"""Real stereo with ground truth: Middlebury 2014 Motorcycle as scikit-image ships it (issue 16).

The pair is scored under its true cameras (the scene's calibration scaled to the shipped resolution, see
tests/known_geometry_scenes.py), with the right image altered in a region, and with the tiny test
networks' geometry instead. RGB distances keep it to about a second per call on CPU; the numbers are
the ones docs/metric.md states ("Known cameras").
"""

from __future__ import annotations

import pytest
import torch
from conftest import golden_path
from known_geometry_scenes import motorcycle

from met3r_metrics import met3r
from met3r_metrics.testing import tiny_met3r_kwargs

pytest.importorskip("skimage", reason="scikit-image (the dev extra) ships the Motorcycle pair")
pytestmark = pytest.mark.usefixtures("one_thread")

ALTERED = (slice(80, 140), slice(150, 210))  # rows, cols of the right image whose colours are inverted
RMSE = {"distance": "rmse", "img_size": None}  # rendered at the input size, radius 0.01 (the default)


@pytest.fixture(scope="module")
def true_pair():
    return motorcycle()


@pytest.fixture(scope="module")
def altered_pair():
    return motorcycle(alter=ALTERED)


def test_true_geometry_is_consistent_and_covers_the_scene(true_pair):
    images, geo, _ = true_pair
    assert images.shape == (1, 2, 3, 224, 368)
    assert 0.80 < geo.valid.float().mean().item() < 0.83  # 81.6 %: ground truth and forward-warp holes
    d = met3r(images, geometry=geo, return_details=True, symmetric=True, **RMSE)
    # measured: forward 0.0361, reverse 0.0262, symmetric 0.0312, overlap 0.900 / 0.890
    assert d.forward_scores.item() == pytest.approx(0.0361, abs=2e-3)
    assert d.reverse_scores.item() == pytest.approx(0.0262, abs=2e-3)
    assert d.overlap.item() == pytest.approx(0.890, abs=5e-3)


def test_altered_right_image_scores_higher_where_it_is_altered(true_pair, altered_pair):
    images, geo, _ = true_pair
    base = met3r(images, geometry=geo, **RMSE).item()
    images2, geo2, (c0, c1) = altered_pair
    d = met3r(images2, geometry=geo2, return_details=True, return_maps=True, **RMSE)
    assert d.pair_scores.item() > base + 0.015  # measured 0.0559 vs 0.0361
    smap, mask = d.score_maps[0, 0], d.overlap_masks[0, 0]
    inside = torch.zeros_like(mask)
    inside[ALTERED[0], c0 : c1 + 1] = True  # where the altered right pixels land in the left view
    region = smap[inside & mask].mean().item()
    rest = smap[~inside & mask].mean().item()
    assert region > 5 * rest  # measured 0.328 in the region's band (the altered pixels and their row band)


def test_a_wrong_pose_scores_worse_than_the_true_one(true_pair):
    from met3r_metrics import KnownGeometry

    images, geo, _ = true_pair
    wrong = KnownGeometry(geo.points, geo.intrinsics, torch.linalg.inv(geo.cam_to_world), geo.valid)
    assert met3r(images, geometry=wrong, **RMSE).item() > met3r(images, geometry=geo, **RMSE).item() + 0.02


def test_network_geometry_of_the_tiny_nets_runs(true_pair, tmp_path_factory):
    images, _, _ = true_pair
    kw = tiny_met3r_kwargs(golden_path(), tmp_path_factory.mktemp("tiny_moto"))
    kw.update(RMSE, radius=0.01)
    d = met3r(images, return_details=True, **kw)
    assert d.settings.geometry == "network" and d.settings.focal_source == "estimate"
    assert torch.isfinite(d.pair_scores).all() and 0 < d.overlap.item() <= 1
