"""backbone="raft": RAFT-large, the official warp / mask / score, against ../shared/golden/met3r_extras (R1, R2, F1, F2).

Parity is per pair: the official call gives every pair the batch mean (its (B, 1, h, w) mask broadcasts to
(B, B, 1, h, w)), so our score of a pair is compared with the official score of that pair run alone
(``score_single_pair``), and the official batch-mixed value is rebuilt from our maps and masks
(:func:`met3r_metrics.flow.official_batch_mixed_score`) and compared with ``score``. The fixed-flow cases feed the
stored flow to the warp/score function, pinning it independently of the network. Tolerances: README section 6.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import golden_path
from extras_golden import extras_case as _golden
from extras_golden import extras_meta as _meta
from met3r_metrics import Settings, met3r
from met3r_metrics.flow import flow_pair_scores, official_batch_mixed_score, warp_backward
from met3r_metrics.scorer import MEt3RScorer
from met3r_metrics.testing import extras_kwargs, recipe_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def wdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("raft_weights")


def _checks(case: str) -> dict:
    return _meta()["cases"][case]["stats"]["formula_checks"]


@lru_cache(maxsize=None)
def _sq128() -> torch.Tensor:
    return load_file(str(golden_path("met3r_extras", "inputs.safetensors")))["sq128"]


def _signed(x: torch.Tensor) -> torch.Tensor:
    """The official [-1, 1] -> [0, 1] -> [-1, 1] round trip (RAFT's and the RGB distances' inputs)."""
    return 2 * ((x + 1) / 2) - 1


@pytest.fixture(scope="module")
def raft(wdir: Path):
    from met3r_metrics.weights import load_raft

    return load_raft(extras_kwargs(golden_path(), wdir, backbone="raft", distance="cosine")["backbone_weights"])


@pytest.fixture(scope="module")
def cosine_scorer(wdir: Path) -> MEt3RScorer:
    kw = extras_kwargs(golden_path(), wdir, backbone="raft", distance="cosine")
    return MEt3RScorer.from_settings(Settings.official(**kw))


# ---------------------------------------------------------------------------------------------- network


def test_recipe_weights_load_strictly_with_torchvision_keys(wdir: Path, raft) -> None:
    """169 recipe tensors (SHA-256 checked on regeneration) == our state dict, key for key, in order."""
    sd = recipe_state_dict(golden_path(), "raft_large")
    assert len(sd) == 169
    assert list(raft.state_dict()) == list(sd)
    assert all(torch.equal(raft.state_dict()[k], v) for k, v in sd.items())
    assert not any(p.requires_grad for p in raft.parameters()) and not raft.training
    raft.train()  # a parent entering training must not switch batch norm to batch statistics
    assert not raft.context_encoder.convnormrelu[1].training


def test_flow_matches_golden(raft) -> None:
    """RAFT on sq128 vs the official flow: last estimate atol 5e-4 px, first atol 1e-4 px (README section 6)."""
    x = _signed(_sq128())
    with torch.no_grad():
        flows = raft(x[:, 0], x[:, 1])
    g = _golden("R1_raft_featup_cosine")
    assert len(flows) == 12
    d_last = (flows[-1] - g["flow"]).abs().max().item()
    d_first = (flows[0] - g["flow_iter1"]).abs().max().item()
    print(f"flow: max diff {d_last:.3g} px (atol 5e-4), flow_iter1 {d_first:.3g} px (atol 1e-4)")
    assert d_last <= 5e-4 and d_first <= 1e-4
    # per pair: a pair's flow does not depend on its batch
    with torch.no_grad():
        alone = raft(x[1:2, 0], x[1:2, 1])[-1]
    assert (alone - flows[-1][1:2]).abs().max().item() <= 5e-4


def test_raft_refuses_small_inputs(raft) -> None:
    x = torch.zeros(1, 3, 120, 128)
    with pytest.raises(ValueError, match=r"^image1: expected H and W multiples of 8 and >= 128 .*got 120x128$"):
        raft(x, x)
    with pytest.raises(ValueError, match=r"^image2: expected the shape of image1"):
        raft(torch.zeros(1, 3, 128, 128), torch.zeros(1, 3, 136, 128))


# ---------------------------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("case, distance", [("R1_raft_featup_cosine", "cosine"), ("R2_raft_mse", "mse")])
def test_end_to_end_per_pair(case: str, distance: str, wdir: Path) -> None:
    """Public API: each pair's score == the official single-pair score (atol 1e-5); the official batch mean
    rebuilt from our maps and masks == the official batched score (atol 1e-5); the mask is all ones."""
    meta = _meta()["cases"][case]
    assert meta["constructor_kwargs"].get("distance", "cosine") == distance and meta["inputs"] == "sq128"
    kw = extras_kwargs(golden_path(), wdir, backbone="raft", distance=distance)
    det = met3r(_sq128(), return_details=True, return_maps=True, **kw)
    g = _golden(case)
    assert det.settings.backbone == "raft" and det.settings.flow_mask == "official"
    diff = (det.pair_scores[:, 0] - g["score_single_pair"]).abs().max().item()
    print(f"{case}: max |score - single-pair score| = {diff:.3g} (atol 1e-5)")
    assert diff <= 1e-5
    maps, masks = det.score_maps[:, 0], det.overlap_masks[:, 0]
    assert torch.equal(masks, g["warp_mask"][:, 0].bool()) and bool(masks.all())
    mixed = official_batch_mixed_score(maps, masks)
    assert mixed.shape == g["score"].shape == (3, 1)
    assert (mixed - g["score"]).abs().max().item() <= 1e-5
    assert (det.overlap == 1).all() and not det.no_overlap.any()


def test_cosine_features_and_warp(cosine_scorer: MEt3RScorer) -> None:
    """R1 renders (view 1's features, warped view 2's): norms atol 1e-4, projections atol 5e-5."""
    out = cosine_scorer.score_sequences(_sq128(), return_renders=True)
    g = _golden("R1_raft_featup_cosine")
    proj = load_file(str(golden_path("met3r", "inputs.safetensors")))["feature_projection"].double()
    renders = out["renders"][:, 0]  # (B, 2, C, H, W)
    for k, name in ((0, "view1"), (1, "warped")):
        assert (renders[:, k].norm(dim=1) - g[f"{name}_norm"]).abs().max().item() <= 1e-4
        p = torch.einsum("bchw,cd->bdhw", renders[:, k].double(), proj.reshape(renders.shape[2], -1)).float()
        assert (p - g[f"{name}_proj2"]).abs().max().item() <= 5e-5


# ---------------------------------------------------------------------------------------------- fixed flow


def test_fixed_flow_cosine(cosine_scorer: MEt3RScorer) -> None:
    """F1: the stored flow through the warp/score function; the same per-pair and batch-mixed numbers."""
    g = _golden("F1_fixedflow_cosine")
    x = _sq128()
    with torch.no_grad():
        f1, f2 = cosine_scorer.frame_features(x[:, 0]), cosine_scorer.frame_features(x[:, 1])
    out = flow_pair_scores(f1, f2, g["flow"], "cosine")
    assert (out["score"] - g["score_single_pair"]).abs().max().item() <= 1e-5
    assert (official_batch_mixed_score(out["score_map"], out["mask"]) - g["score"]).abs().max().item() <= 1e-5
    assert torch.equal(out["mask"], g["warp_mask"][:, 0].bool())
    assert (out["warped"].norm(dim=1) - g["warped_norm"]).abs().max().item() <= 1e-4
    proj = load_file(str(golden_path("met3r", "inputs.safetensors")))["feature_projection"].double()
    p = torch.einsum("bchw,cd->bdhw", out["warped"].double(), proj.reshape(f1.shape[1], -1)).float()
    assert (p - g["warped_proj2"]).abs().max().item() <= 5e-5


def test_fixed_flow_psnr() -> None:
    """F2: PSNR on the warp path with [-1, 1] images: score atol 0.05 dB, map atol 2e-3 dB where < 100 dB,
    warped atol 1e-5; and the in_bounds mask keeps exactly the README's fractions (before the clamp)."""
    g = _golden("F2_fixedflow_psnr")
    x = _signed(_sq128())
    out = flow_pair_scores(x[:, 0], x[:, 1], g["flow"], "psnr", rgb_formulas="official")
    d = (out["score"] - g["score_single_pair"]).abs().max().item()
    print(f"F2: max |score - single-pair score| = {d:.3g} dB (atol 0.05)")
    assert d <= 0.05
    assert (official_batch_mixed_score(out["score_map"], out["mask"]) - g["score"]).abs().max().item() <= 0.05
    low = g["score_map"] < 100
    assert (out["score_map"] - g["score_map"])[low].abs().max().item() <= 2e-3
    assert (out["warped"] - g["warped"]).abs().max().item() <= 1e-5
    assert bool(out["mask"].all())
    _, inb = warp_backward(x[:, 1], g["flow"], mask="in_bounds")
    assert inb.float().mean((1, 2)).tolist() == _checks("F2_fixedflow_psnr")["warp_mask_fraction_if_computed_before_clamp"]


def test_in_bounds_mask_on_the_network_flow() -> None:
    """R1's flow: before the clamp the README keeps 81.1 / 86.1 / 86.1 % of the pixels (exactly)."""
    g = _golden("R1_raft_featup_cosine")
    _, inb = warp_backward(_sq128()[:, 1], g["flow"], mask="in_bounds")
    assert inb.float().mean((1, 2)).tolist() == _checks("R1_raft_featup_cosine")["warp_mask_fraction_if_computed_before_clamp"]


# ---------------------------------------------------------------------------------------------- settings


def test_paper_variant_masks_out_of_view_pixels(wdir: Path) -> None:
    """variant="paper" (flow_mask="in_bounds", RGB in [0, 1], symmetric): each direction is the masked mean over the
    in-bounds pixels; the forward direction of mse is the official map / 4 over that mask."""
    kw = extras_kwargs(golden_path(), wdir, backbone="raft", distance="mse")
    det = met3r(_sq128(), "paper", return_details=True, return_maps=True, **kw)
    s = det.settings
    assert (s.flow_mask, s.flow_rgb_range, s.symmetric) == ("in_bounds", "unit", True)
    g = _golden("R2_raft_mse")
    fractions = torch.tensor(_checks("R2_raft_mse")["warp_mask_fraction_if_computed_before_clamp"])
    mask = det.overlap_masks[:, 0]
    # our flow differs from the official one by <= 5e-4 px: a pixel or two may change sides of the border
    assert (mask.float().mean((1, 2)) - fractions).abs().max().item() <= 5 / 128**2
    expected = (g["score_map"] / 4 * mask).sum((1, 2)) / (mask.sum((1, 2)) + 1e-5)
    assert (det.forward_scores[:, 0] - expected).abs().max().item() <= 1e-5
    # the reverse direction is the swapped pair's forward score
    swapped = met3r(_sq128().flip(1), "paper", return_details=True, **kw)
    assert (det.reverse_scores - swapped.forward_scores).abs().max().item() <= 1e-6
    assert torch.allclose(det.pair_scores, 0.5 * (det.forward_scores + det.reverse_scores))


def test_settings_and_refusals(wdir: Path) -> None:
    s = Settings.official(backbone="raft")
    assert s.uses_flow and s.flow_mask == "official" and s.flow_rgb_range == "signed"
    assert Settings.official(backbone="RAFT_large").backbone == "raft"
    assert Settings.paper(backbone="raft").overrides == ("backbone",)
    with pytest.raises(ValueError, match=r"^flow_mask: expected one of \('official', 'in_bounds'\), got 'inside'$"):
        Settings.official(flow_mask="inside")
    with pytest.raises(ValueError, match=r"^flow_rgb_range: expected one of \('signed', 'unit'\), got '01'$"):
        Settings.official(flow_rgb_range="01")
    assert s.frame_size_error(128, 128) is None and s.replace(distance="mse").frame_size_error(136, 136) is None
    assert s.frame_size_error(136, 128) is not None  # DINO features: H a multiple of 32
    kw = extras_kwargs(golden_path(), wdir, backbone="raft", distance="mse")
    with pytest.raises(ValueError, match=r"^images: expected .*>= 128 \(backbone='raft'.*got 64x64"):
        met3r(torch.zeros(1, 2, 3, 64, 64), **kw)
    with pytest.raises(ValueError, match=r"^backbone: expected 'mast3r' or 'raft', got 'dust3r'$"):
        extras_kwargs(golden_path(), wdir, backbone="dust3r", distance="mse")
    with pytest.raises(ValueError, match=r"^backbone_weights: expected torchvision raft_large weights"):
        met3r(_sq128(), **{**kw, "backbone_weights": extras_kwargs(golden_path(), wdir, backbone="raft",
                                                                   distance="cosine")["feature_weights"]})


def test_registry_entry_and_offline_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from met3r_metrics.weights import CHECKPOINTS, RAFT_CHECKPOINT, WeightsNotFoundError, load_raft

    info = CHECKPOINTS[RAFT_CHECKPOINT]
    assert info.kind == "raft" and info.url == "https://download.pytorch.org/models/raft_large_C_T_SKHT_V2-ff5fadd5.pth"
    assert info.sha256 == "ff5fadd5" and "BSD-3-Clause" in info.licence
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch_hub"))
    with pytest.raises(WeightsNotFoundError, match=r"`met3r-download raft_large_torchvision`.*backbone_weights="):
        load_raft(download=False)
    # a torchvision file in torch hub's cache (what torchvision itself downloaded) is used
    ckpt = tmp_path / "torch_hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save(recipe_state_dict(golden_path(), "raft_large"), ckpt / info.cache_name)
    net = load_raft(download=False)
    assert torch.equal(net.update_block.flow_head.conv2.bias, recipe_state_dict(golden_path(), "raft_large")
                       ["update_block.flow_head.conv2.bias"])


class _ShiftFlow(torch.nn.Module):
    """A stand-in flow network: a constant flow (dx, dy) for every pixel, recording its calls."""

    def __init__(self, dx: float, dy: float) -> None:
        super().__init__()
        self.shift, self.calls = (dx, dy), []
        self.p = torch.nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> list[torch.Tensor]:
        self.calls.append((image1.clone(), image2.clone()))
        n, _, h, w = image1.shape
        flow = torch.tensor(self.shift, dtype=image1.dtype).view(1, 2, 1, 1).expand(n, 2, h, w)
        return [flow.clone()]


def test_scorer_flow_path_masks_directions_and_empty_pairs() -> None:
    """The scorer's RAFT path with a known flow: a flow leaving the image everywhere is an empty pair (NaN,
    counted) under in_bounds and fully valid under official; symmetric scores run the flow on (b, a)."""
    x = _sq128()[:1]
    out_of_view = _ShiftFlow(500.0, 0.0)
    for mask, expect_empty in (("in_bounds", True), ("official", False)):
        sc = MEt3RScorer(Settings.official(backbone="raft", distance="mse", flow_mask=mask), None, None,
                         flow=out_of_view)
        res = sc.score_sequences(x, return_maps=True)
        assert bool(res["no_overlap"][0, 0]) is expect_empty
        assert bool(torch.isnan(res["pair_scores"][0, 0])) is expect_empty
        assert res["overlap"][0, 0].item() == (0.0 if expect_empty else 1.0)
    # a shift by (-12, -4) keeps (128 - 12) * (128 - 4) pixels in view 2; mse on [0, 1] ("unit") is 1/4 of signed
    shift = _ShiftFlow(-12.0, -4.0)
    base = Settings.official(backbone="raft", distance="mse", flow_mask="in_bounds")
    signed = MEt3RScorer(base, None, None, flow=shift).score_sequences(x)
    unit = MEt3RScorer(base.replace(flow_rgb_range="unit"), None, None, flow=shift).score_sequences(x)
    assert signed["overlap"][0, 0].item() == (116 * 124) / 128**2
    assert abs(unit["pair_scores"].item() - signed["pair_scores"].item() / 4) <= 1e-6
    # symmetric: the reverse direction asks the network for the flow from view 2 to view 1
    shift.calls.clear()
    sym = MEt3RScorer(base.replace(symmetric=True), None, None, flow=shift).score_sequences(x)
    image1, image2 = shift.calls[0]  # one chunk holding the directed pairs (0, 1) and (1, 0)
    assert torch.equal(image1[0], image2[1]) and torch.equal(image1[1], image2[0])
    assert torch.allclose(sym["pair_scores"], 0.5 * (sym["forward_scores"] + sym["reverse_scores"]))
