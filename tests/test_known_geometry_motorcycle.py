"""Real stereo with ground truth: Middlebury 2014 Motorcycle as scikit-image ships it (issue 16).

The pair is scored under its true cameras (the scene's calibration scaled to the shipped resolution, see
tests/known_geometry_scenes.py), with the right image altered in a region, and with the tiny test
networks' geometry instead. RGB distances keep it to about a second per call on CPU.

Two kinds of checks. Physical expectations, which hold for any correct implementation: the true geometry
scores lower than every altered one (depth off by 10 %, the right camera moved 4 mm, an inverted pose), and
an altered image region scores high where its points land. Regression values (REGRESSION): this
implementation's own measurements of the scene (torch 2.13, CPU; the numbers docs/metric.md states under
"Known cameras"), not independent ground truth; they only catch a change of the numbers.
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
#: Regression values: measured by this implementation (not independent expectations; see the module docstring).
REGRESSION = {"valid": 0.816, "forward": 0.0361, "reverse": 0.0262, "overlap": 0.890, "altered": 0.0559,
              "altered_region": 0.328}


@pytest.fixture(scope="module")
def true_pair():
    return motorcycle()


@pytest.fixture(scope="module")
def true_scores(true_pair):
    images, geo, _ = true_pair
    return met3r(images, geometry=geo, return_details=True, symmetric=True, **RMSE)


@pytest.fixture(scope="module")
def altered_pair():
    return motorcycle(alter=ALTERED)


def test_true_geometry_is_consistent_and_covers_the_scene(true_pair, true_scores):
    images, geo, _ = true_pair
    assert images.shape == (1, 2, 3, 224, 368)
    # regression values (ground truth and forward-warp holes; symmetric score 0.0312, overlaps 0.900 / 0.890)
    assert geo.valid.float().mean().item() == pytest.approx(REGRESSION["valid"], abs=1.4e-2)
    d = true_scores
    assert d.forward_scores.item() == pytest.approx(REGRESSION["forward"], abs=2e-3)
    assert d.reverse_scores.item() == pytest.approx(REGRESSION["reverse"], abs=2e-3)
    assert d.overlap.item() == pytest.approx(REGRESSION["overlap"], abs=5e-3)


def test_altered_right_image_scores_higher_where_it_is_altered(true_scores, altered_pair):
    images2, geo2, (c0, c1) = altered_pair
    d = met3r(images2, geometry=geo2, return_details=True, return_maps=True, **RMSE)
    # physical: altered colours under the true cameras score higher, and where they land
    assert d.pair_scores.item() > true_scores.forward_scores.item() + 0.015
    smap, mask = d.score_maps[0, 0], d.overlap_masks[0, 0]
    inside = torch.zeros_like(mask)
    inside[ALTERED[0], c0 : c1 + 1] = True  # where the altered right pixels land in the left view
    region = smap[inside & mask].mean().item()
    rest = smap[~inside & mask].mean().item()
    assert region > 5 * rest
    # regression values
    assert d.pair_scores.item() == pytest.approx(REGRESSION["altered"], abs=2e-3)
    assert region == pytest.approx(REGRESSION["altered_region"], abs=1e-2)


def _altered_geometry(geo, how: str):
    from met3r_metrics import KnownGeometry

    points, poses = geo.points, geo.cam_to_world
    if how.startswith("depth"):  # both depth maps off by 10 % (points are in their own camera frames)
        points = points * (0.9 if how == "depth-10%" else 1.1)
    elif how == "right camera 4 mm up":  # about 1 px of vertical misalignment at the scene's depth
        poses = poses.clone()
        poses[0, 1, 1, 3] -= 4.0
    else:  # a world-to-camera matrix passed by mistake
        poses = torch.linalg.inv(poses)
    return KnownGeometry(points, geo.intrinsics, poses, geo.valid)


@pytest.mark.parametrize("how", ["depth-10%", "depth+10%", "right camera 4 mm up", "inverted pose"])
def test_true_geometry_scores_lower_than_altered_geometry(true_pair, true_scores, how):
    """Physical: the true cameras align the two images best, in each direction (measured 0.036 / 0.026
    against 0.05-0.14)."""
    images, geo, _ = true_pair
    d = met3r(images, geometry=_altered_geometry(geo, how), return_details=True, symmetric=True, **RMSE)
    assert d.forward_scores.item() > true_scores.forward_scores.item() + 0.01
    assert d.reverse_scores.item() > true_scores.reverse_scores.item() + 0.01


def test_network_geometry_of_the_tiny_nets_runs(true_pair, tmp_path_factory):
    images, _, _ = true_pair
    kw = tiny_met3r_kwargs(golden_path(), tmp_path_factory.mktemp("tiny_moto"))
    kw.update(RMSE, radius=0.01)
    d = met3r(images, return_details=True, **kw)
    assert d.settings.geometry == "network" and d.settings.focal_source == "estimate"
    assert torch.isfinite(d.pair_scores).all() and 0 < d.overlap.item() <= 1
