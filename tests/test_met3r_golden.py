"""End-to-end parity with the official MEt3R (HEAD 3259e41) on the golden cases of ../shared/golden/met3r.

Networks: the tiny random-weight MASt3R/DUSt3R (with MEt3R's fitted heads) and FeatUp dino16 depth 2,
written as ordinary local checkpoints by :func:`met3r_metrics.testing.tiny_met3r_kwargs` and loaded
through the public path (``backbone_weights=`` / ``feature_weights=``). Tolerances: the golden
README section 5, used exactly.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import golden_path
from met3r_metrics import Settings, met3r
from met3r_metrics.scorer import get_scorer
from met3r_metrics.testing import tiny_met3r_kwargs

CASES = {
    # case: (overrides on top of the tiny kwargs, input key, views swapped)
    "a_mast3r_featup_cosine": ({}, "sq64", False),
    "b_dust3r_featup_cosine": ({"backbone": "dust3r"}, "sq64", False),
    "c_mast3r_imgsizeNone_64x96": ({"img_size": None, "radius": 0.01}, "nonsq64x96", False),
    "d1_upsampler_bilinear": ({"upsampler": "bilinear"}, "sq64", False),
    "d2_upsampler_nearest": ({"upsampler": "nearest"}, "sq64", False),
    "d3_distance_mse": ({"distance": "mse"}, "sq64", False),
    "d4_distance_rmse": ({"distance": "rmse"}, "sq64", False),
    "e_mast3r_reversed_pairs": ({}, "sq64", True),
    "f_stereo_fixed_geometry": ({"img_size": None, "radius": 0.01}, "stereo64x96", False),
    "f2_stereo_fixed_geometry_altered": ({"img_size": None, "radius": 0.01}, "stereo64x96_altered", False),
}
FIXED_GEOMETRY = {"f_stereo_fixed_geometry", "f2_stereo_fixed_geometry_altered"}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets: one thread is fastest on shared cores


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("met3r_tiny_weights")


@lru_cache(maxsize=None)
def _golden(case: str) -> dict[str, torch.Tensor]:
    return load_file(str(golden_path("met3r", f"{case}.safetensors")))


@lru_cache(maxsize=None)
def _inputs() -> dict[str, torch.Tensor]:
    return load_file(str(golden_path("met3r", "inputs.safetensors")))


def _case_kwargs(case: str, tiny_dir: Path) -> dict:
    overrides, _, _ = CASES[case]
    backbone = overrides.get("backbone", "mast3r")
    kw = tiny_met3r_kwargs(golden_path(), tiny_dir, backbone=backbone)
    kw.update(overrides)
    return kw


def _images(case: str) -> torch.Tensor:
    _, key, swapped = CASES[case]
    x = _inputs()[key]
    return x[:, [1, 0]] if swapped else x


_RESULTS: dict[str, dict] = {}


def _run(case: str, tiny_dir: Path) -> dict[str, torch.Tensor]:
    """Every intermediate of a case, through the scorer's building blocks (fixed geometry for f/f2)."""
    if case in _RESULTS:
        return _RESULTS[case]
    kw = _case_kwargs(case, tiny_dir)
    scorer = get_scorer(Settings.official(**kw))
    x = _images(case)
    b = x.shape[0]
    frames = x.flatten(0, 1)
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        feats = scorer.frame_features(frames)
        if scorer.settings.uses_features:
            lr = scorer.features.featurizer((frames + 1) / 2)
            out["lr_feats"] = lr.view(b, 2, *lr.shape[1:])
            out["hr_feats"] = feats.view(b, 2, *feats.shape[1:])
        feats = feats.view(b, 2, *feats.shape[1:])
        if case in FIXED_GEOMETRY:
            g = _golden("f_stereo_fixed_geometry")
            pts = torch.stack((g["pred1_pts3d"], g["pred2_pts3d_in_other_view"]), 1)
            conf = torch.stack((g["pred1_conf"], g["pred2_conf"]), 1)
        else:
            pts, conf = scorer.pair_geometry(x[:, 0], x[:, 1])
        out["pts3d"], out["conf"] = pts, conf
        out.update(scorer.render_pairs(pts, conf, feats, return_renders=True))
    _RESULTS[case] = out
    return out


def _tol_ratio(actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> float:
    a, e = actual.detach().double(), expected.double()
    assert a.shape == e.shape, f"shape {tuple(a.shape)} != expected {tuple(e.shape)}"
    return ((a - e).abs() / (rtol * e.abs() + atol)).max().item()


@pytest.mark.parametrize("case", sorted(CASES))
def test_case_matches_cases_json(case: str) -> None:
    meta = json.loads(golden_path("met3r", "cases.json").read_text())["cases"][case]
    overrides, key, swapped = CASES[case]
    assert meta["inputs"] == key and bool(meta["views_swapped"]) == swapped
    assert meta["stats"]["radius"] == pytest.approx(overrides.get("radius", 0.04))
    ck = meta["constructor_kwargs"]
    for name in ("img_size", "upsampler", "distance"):
        if name in ck:
            assert overrides.get(name, 64 if name == "img_size" else None) == ck[name]


@pytest.mark.parametrize("case", sorted(CASES))
def test_score_end_to_end(case: str, tiny_dir: Path) -> None:
    """Public functional API: per-pair scores (atol 1e-5), overlap masks and score maps."""
    g = _golden(case)
    kw = _case_kwargs(case, tiny_dir)
    if case in FIXED_GEOMETRY:
        res = _run(case, tiny_dir)
        scores, masks, maps = res["score"], res["overlap_mask"], res["score_map"]
    else:
        det = met3r(_images(case), return_details=True, return_maps=True, **kw)
        assert det.pairs.tolist() == [[0, 1]]
        scores, masks, maps = det.pair_scores[:, 0], det.overlap_masks[:, 0], det.score_maps[:, 0]
        assert torch.equal(det.sequence_scores, scores)
    diff = (scores - g["score"]).abs().max().item()
    print(f"{case}: max |score diff| = {diff:.3g}")
    assert diff <= 1e-5
    # overlap mask: at most 0.1 % of pixels may differ
    mismatch = (masks.to(torch.uint8) != g["overlap_mask"]).float().mean().item()
    assert mismatch <= 1e-3
    common = masks & g["overlap_mask"].bool()
    d = (maps - g["score_map"]).abs()[common]
    assert (d <= 1e-4).float().mean().item() >= 0.99
    assert d.max().item() <= 1e-2


@pytest.mark.parametrize("case", sorted(CASES))
def test_intermediates(case: str, tiny_dir: Path) -> None:
    g = _golden(case)
    # every tensor cases.json lists for this case is present (and checked below or in test_score_end_to_end)
    listed = set(json.loads(golden_path("met3r", "cases.json").read_text())["cases"][case]["tensors"])
    assert set(g) == listed, f"{case}: golden tensors {sorted(set(g) ^ listed)} differ from cases.json"
    r = _run(case, tiny_dir)
    report = {}
    if "pred1_pts3d" in g:
        for name, ours in (
            ("pred1_pts3d", r["pts3d"][:, 0]), ("pred2_pts3d_in_other_view", r["pts3d"][:, 1]),
            ("pred1_conf", r["conf"][:, 0]), ("pred2_conf", r["conf"][:, 1]),
        ):
            exp = g[name]
            report[name] = _tol_ratio(ours, exp, 1e-4, 1e-5 * exp.abs().max().item())
    if "focal_px" in g:
        report["focal_px"] = _tol_ratio(r["focal_px"], g["focal_px"], 0, 1e-3)
        report["focal_ndc"] = _tol_ratio(r["focal_ndc"], g["focal_ndc"], 0, 2e-5)
    if "lr_feats" in g:
        report["lr_feats"] = _tol_ratio(r["lr_feats"], g["lr_feats"], 1e-5, 2e-5)
    if "hr_feats_norm" in g:
        report["hr_feats_norm"] = _tol_ratio(r["hr_feats"].norm(dim=2), g["hr_feats_norm"], 0, 1e-4)
    if "hr_feats_proj2" in g:
        proj = _inputs()["feature_projection"].double()
        ours = torch.einsum("bkchw,cd->bkdhw", r["hr_feats"].double(), proj)
        report["hr_feats_proj2"] = _tol_ratio(ours, g["hr_feats_proj2"], 0, 5e-5)
    cov_mismatch = (r["coverage"].to(torch.uint8) != g["coverage"]).float().mean().item()
    assert cov_mismatch <= 1e-3, f"coverage differs on {cov_mismatch:.2%} of pixels"
    covered = r["coverage"] & g["coverage"].bool()
    if "render_norm" in g:
        d = (r["renders"].norm(dim=2) - g["render_norm"]).abs()[covered]
        assert (d <= 1e-2).float().mean().item() >= 0.99
    if "render" in g:
        d = (r["renders"] - g["render"]).abs().permute(0, 1, 3, 4, 2)[covered]
        assert (d <= 1e-3).float().mean().item() >= 0.99
    checked = set(report) | ({"coverage", "render_norm", "render"} & set(g))
    # score/overlap_mask/score_map: test_score_end_to_end; score_f64path is informational (README section 4)
    end_to_end = {"score", "score_f64path", "overlap_mask", "score_map"}
    assert set(g) - end_to_end <= checked, f"{case}: unchecked golden tensors {sorted(set(g) - end_to_end - checked)}"
    print(case, {k: round(v, 4) for k, v in report.items()})
    bad = {k: v for k, v in report.items() if not v <= 1.0}
    assert not bad, f"{case}: tolerance ratios > 1 (|diff| / tolerance): {bad}"


def test_symmetric_equals_mean_of_directions(tiny_dir: Path) -> None:
    """The paper's symmetric score 1 - (S12 + S21)/2 = (score_a + score_e) / 2 per pair (README section 3)."""
    kw = _case_kwargs("a_mast3r_featup_cosine", tiny_dir)
    det = met3r(_images("a_mast3r_featup_cosine"), symmetric=True, return_details=True, **kw)
    expected = 0.5 * (_golden("a_mast3r_featup_cosine")["score"] + _golden("e_mast3r_reversed_pairs")["score"])
    assert (det.pair_scores[:, 0] - expected).abs().max().item() <= 1e-5
    assert (det.forward_scores[:, 0] - _golden("a_mast3r_featup_cosine")["score"]).abs().max().item() <= 1e-5
    assert (det.reverse_scores[:, 0] - _golden("e_mast3r_reversed_pairs")["score"]).abs().max().item() <= 1e-5
