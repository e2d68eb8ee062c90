"""Geometry glue: canonical point map, focal votes, NDC focal; real stereo geometry (case f) and a synthetic camera."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import golden_path
from met3r_metrics.distances import masked_mean, pair_scores, score_map
from met3r_metrics.geometry import canonical_pointmap, estimate_focal, focal_to_ndc


def _pinhole(h: int, w: int, f: float, depth: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) points of a pinhole camera with focal f and principal point (W/2, H/2) on the integer grid."""
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.stack(((u - w / 2) * depth / f, (v - h / 2) * depth / f, depth), -1)


def test_focal_of_a_pinhole_camera_is_exact() -> None:
    h, w, f = 32, 48, 40.0
    depth = 1.0 + torch.rand(h, w, dtype=torch.float64)
    pts = _pinhole(h, w, f, depth)[None]
    focal = estimate_focal(pts)
    torch.testing.assert_close(focal, torch.tensor([[f, f]], dtype=torch.float64))


def test_canonical_weights_by_conf_minus_0999() -> None:
    pts = torch.stack((torch.ones(1, 2, 2, 3), 3 * torch.ones(1, 2, 2, 3)), 1)
    conf = torch.stack((torch.full((1, 2, 2), 1.999), torch.full((1, 2, 2), 3.999)), 1)
    torch.testing.assert_close(canonical_pointmap(pts, conf), torch.full((1, 2, 2, 3), (1 + 3 * 3) / 4))


def test_ndc_conventions() -> None:
    f = torch.tensor([[64.0, 32.0]])
    torch.testing.assert_close(focal_to_ndc(f, 32, 64), torch.tensor([[2.0, 2.0]]))
    torch.testing.assert_close(focal_to_ndc(f, 32, 64, "pinhole"), torch.tensor([[4.0, 2.0]]))
    with pytest.raises(ValueError, match="convention"):
        focal_to_ndc(f, 32, 64, "bogus")


@pytest.mark.parametrize("case", ["f_stereo_fixed_geometry", "a_mast3r_featup_cosine", "c_mast3r_imgsizeNone_64x96"])
def test_focal_bitwise_on_golden_geometry(case: str) -> None:
    g = load_file(str(golden_path("met3r", f"{case}.safetensors")))
    pts = torch.stack((g["pred1_pts3d"], g["pred2_pts3d_in_other_view"]), 1)
    conf = torch.stack((g["pred1_conf"], g["pred2_conf"]), 1)
    focal = estimate_focal(canonical_pointmap(pts, conf))
    h, w = pts.shape[2:4]
    assert torch.equal(focal, g["focal_px"])
    assert torch.equal(focal_to_ndc(focal, h, w), g["focal_ndc"])


def test_real_stereo_focal_near_truth() -> None:
    """Middlebury motorcycle at 64x96: true focal 165.8 px; MEt3R's estimate lies within 5 %."""
    g = load_file(str(golden_path("met3r", "f_stereo_fixed_geometry.safetensors")))
    pts = torch.stack((g["pred1_pts3d"], g["pred2_pts3d_in_other_view"]), 1)
    conf = torch.stack((g["pred1_conf"], g["pred2_conf"]), 1)
    focal = estimate_focal(canonical_pointmap(pts, conf))
    assert ((focal - 165.83).abs() / 165.83).max().item() < 0.05


def test_distances() -> None:
    a = torch.rand(2, 3, 8, 8) + 1  # norms >> eps
    mask = torch.ones(2, 8, 8, dtype=torch.bool)
    s, m = pair_scores(a, a, mask, "cosine")
    assert s.abs().max().item() < 1e-5 and m.shape == (2, 8, 8)
    s, _ = pair_scores(a, -a, mask, "cosine")
    assert torch.allclose(s, torch.full((2,), 2.0), atol=1e-4)
    b = a + 0.1
    assert torch.allclose(pair_scores(a, b, mask, "mse")[0], torch.full((2,), 0.01), atol=1e-6)
    assert torch.allclose(pair_scores(a, b, mask, "rmse")[0], torch.full((2,), 0.1), atol=1e-6)
    assert torch.allclose(pair_scores(a, b, mask, "psnr", rgb_formulas="standard")[0], torch.full((2,), 20.0), atol=1e-3)
    official = 20 * math.log10(255 / (0.1 + 1e-5))  # the official formula: |a - b| = 0.1 everywhere
    assert torch.allclose(pair_scores(a, b, mask, "psnr")[0], torch.full((2,), official), atol=1e-3)
    assert torch.allclose(pair_scores(a, a, mask, "ssim")[0], torch.ones(2), atol=1e-5)
    assert pair_scores(a, b, mask, "ssim")[0].max().item() <= 1.0
    # the official masked mean gives 0 on an empty mask
    assert masked_mean(score_map(a, b), torch.zeros(2, 8, 8)).abs().max().item() == 0.0
