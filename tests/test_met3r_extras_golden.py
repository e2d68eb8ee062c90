"""Parity with the official MEt3R's lpips / psnr / ssim distances: ../shared/golden/met3r_extras (RAFT: test_raft_golden.py).

Parity is per pair: the official call mixes the pairs of a batch (SSIM's batch-wide data range,
LPIPS's broadcast), so end to end our score of a pair is compared with the official score of that
pair run alone (``score_single_pair``). The distance stage is also checked on the stored renders and
overlap masks. Tolerances: the golden README section 6, used exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import golden_path
from extras_golden import extras_case as _golden
from extras_golden import extras_meta as _meta
from met3r_metrics import met3r
from met3r_metrics.distances import _ssim_map, masked_mean, pair_data_range, pair_scores
from met3r_metrics.testing import extras_kwargs, recipe_state_dict, tiny_met3r_kwargs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("met3r_extras_weights")


def _sq64() -> torch.Tensor:
    return load_file(str(golden_path("met3r", "inputs.safetensors")))["sq64"]


def _stage(case: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = _golden(case)
    return g["render"][:, 0], g["render"][:, 1], g["overlap_mask"].bool()


CASES = [("L1_mast3r_lpips", "lpips", 2e-4), ("P1_mast3r_psnr", "psnr", 2e-3), ("S1_mast3r_ssim", "ssim", 5e-5)]


@pytest.mark.parametrize("case, distance", [c[:2] for c in CASES])
def test_case_is_what_we_run(case: str, distance: str) -> None:
    meta = _meta()["cases"][case]
    assert meta["inputs"] == "sq64" and meta["constructor_kwargs"]["distance"] == distance
    assert meta["constructor_kwargs"]["img_size"] == 64 and meta["constructor_kwargs"]["rasterizer_kwargs"] == {"radius": 0.04}


@pytest.mark.parametrize("case, distance, atol", CASES)
def test_end_to_end_per_pair(case: str, distance: str, atol: float, tiny_dir: Path) -> None:
    """Public API, official formulas: each pair's score equals the official score of that pair alone."""
    kw = extras_kwargs(golden_path(), tiny_dir, distance=distance)
    det = met3r(_sq64(), return_details=True, **kw)
    assert det.settings.rgb_formulas == "official"
    expected = _golden(case)["score_single_pair"]
    diff = (det.pair_scores[:, 0] - expected).abs().max().item()
    print(f"{case}: max |score - single-pair score| = {diff:.3g} (atol {atol:g})")
    assert diff <= atol


class _GoldenGeometry(torch.nn.Module):
    """A geometry network that returns the golden MASt3R geometry (stored once, in L1) of each input pair:
    the scores then carry no network float noise, which is host-dependent (README, "Machine note")."""

    name = "golden_l1_geometry"

    def forward(self, images1: torch.Tensor, images2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g, x = _golden("L1_mast3r_lpips"), _sq64()
        rows = [int(((x[:, 0] - im).abs().flatten(1).max(1).values == 0).nonzero()[0]) for im in images1]
        pts = torch.stack((g["pred1_pts3d"], g["pred2_pts3d_in_other_view"]), 1)[rows]
        conf = torch.stack((g["pred1_conf"], g["pred2_conf"]), 1)[rows]
        return pts, conf


@pytest.mark.parametrize("case, distance, atol", CASES)
def test_no_batch_mixing_on_fixed_geometry(case: str, distance: str, atol: float, tiny_dir: Path) -> None:
    """Each pair alone scores exactly as in the batch, and as the official code scored it alone.

    With the network's geometry, running a pair alone changes the MASt3R output by host-dependent ulps
    (2.4e-6 here), which SSIM amplifies to 5.2e-5 on S1's third pair, over its 5e-5 atol; the official
    batch mixing this test rules out is ~2e-2. With the golden geometry the comparison is exact."""
    kw = {**extras_kwargs(golden_path(), tiny_dir, distance=distance), "backbone": _GoldenGeometry()}
    kw.pop("backbone_weights")
    batched = met3r(_sq64(), **kw)
    alone = torch.cat([met3r(_sq64()[b : b + 1], **kw) for b in range(3)])
    assert (alone - batched).abs().max().item() <= 1e-7
    assert (alone - _golden(case)["score_single_pair"]).abs().max().item() <= atol


def test_lpips_end_to_end_on_the_golden_geometry(tiny_dir: Path) -> None:
    """Our renders + LPIPS of the golden (batched-run) geometry against the official per-pair masked means of
    that same run (README: ``per_pair_masked_mean``) and its batch-mixed score: atol 1e-5.

    Why not the network end to end at this tolerance: ``score_single_pair`` comes from separate B = 1 official
    runs whose geometry differs from the batched one by ulps, which LPIPS turns into 6.2e-5 on pair 0 (README
    section 6, hence its atol 2e-4 for `score` L1, kept in test_end_to_end_per_pair), and our network geometry
    differs from the golden host's by host-dependent ulps too (README "Machine note"). With the golden geometry
    both are gone: what is left is the render + distance path, whose parity target is the project's 1e-5
    (../met3r README section 5; measured here 1.5e-8, maps bitwise on the overlap). A wrong LPIPS input or
    normalisation constant moves these scores by 1e-4 and more."""
    g = _golden("L1_mast3r_lpips")
    stats = _meta()["cases"]["L1_mast3r_lpips"]["stats"]["formula_checks"]
    kw = {**extras_kwargs(golden_path(), tiny_dir, distance="lpips"), "backbone": _GoldenGeometry()}
    kw.pop("backbone_weights")
    det = met3r(_sq64(), return_details=True, return_maps=True, **kw)
    mask = det.overlap_masks[:, 0]
    assert torch.equal(mask, g["overlap_mask"].bool())
    per_pair = torch.tensor(stats["per_pair_masked_mean"])
    assert (det.pair_scores[:, 0].double() - per_pair).abs().max().item() <= 1e-5
    assert ((det.score_maps[:, 0] - g["score_map"][:, 0]).abs() * mask).max().item() <= 1e-5
    m = mask.float()  # the official (B, 1) batch mixing rebuilt from our (unmasked) maps
    maps = det.score_maps[:, 0]
    mixed = ((maps[:, None] * m[None]).sum((-2, -1)) / (m.sum((-2, -1))[None] + 1e-5)).mean(1)
    assert (mixed - g["score"][:, 0]).abs().max().item() <= 1e-5


def test_psnr_distance_stage() -> None:
    """Official PSNR map 20 log10(255 / (mean_c |a - b| + 1e-5)) and its masked mean: atol 1e-4 dB."""
    g = _golden("P1_mast3r_psnr")
    r1, r2, mask = _stage("P1_mast3r_psnr")
    scores, maps = pair_scores(r1, r2, mask, "psnr", rgb_formulas="official")
    assert (scores - g["score"]).abs().max().item() <= 1e-4
    assert (maps - g["score_map"]).abs().max().item() <= 1e-4
    # identical (here: both uncovered, 0) pixels score 20 log10(2.55e7)
    identical = maps[~(_golden("L1_mast3r_lpips")["coverage"].bool().any(1))]
    assert identical.numel() > 0 and (identical - 148.13080360867912).abs().max().item() <= 1e-4


def test_psnr_standard_form() -> None:
    """rgb_formulas="standard": PSNR in dB (peak 1) of the masked-mean MSE, the README's 17.1 / 16.8 / 18.1 dB."""
    r1, r2, mask = _stage("P1_mast3r_psnr")
    scores, maps = pair_scores(r1, r2, mask, "psnr", rgb_formulas="standard")
    expected = torch.tensor(_meta()["cases"]["P1_mast3r_psnr"]["stats"]["formula_checks"]
                            ["for_contrast_standard_psnr_peak1_on_masked_mse_dB"])
    assert (scores.double() - expected).abs().max().item() <= 1e-4
    assert torch.allclose(maps, ((r1 - r2) ** 2).mean(1))


def test_ssim_distance_stage() -> None:
    """The official SSIM formula (Gaussian 11 x 11, reflect, torchmetrics' constants) on the stored renders.

    The official call infers one data range for the whole batch; with that range our map must equal
    ``ssim_full`` and our score the official score (README: score atol 2e-5, maps >= 99 % within 1e-4,
    all within 2e-3). Per pair, the data range is the pair's own.
    """
    g = _golden("S1_mast3r_ssim")
    r1, r2, mask = _stage("S1_mast3r_ssim")
    batch_range = pair_data_range(r1, r2).max()
    stats = _meta()["cases"]["S1_mast3r_ssim"]["stats"]["formula_checks"]
    assert abs(batch_range.item() - stats["data_range_inferred_over_whole_batch"]) <= 1e-7
    full = _ssim_map(r1, r2, batch_range)
    for ours, exp in ((full, g["ssim_full"]), (full[:, 0], g["score_map"])):
        d = (ours - exp).abs()
        assert (d <= 1e-4).float().mean().item() >= 0.99 and d.max().item() <= 2e-3
    batched = masked_mean(full.mean(1), mask)
    assert (batched - g["score"]).abs().max().item() <= 2e-5
    # per pair (what met3r returns): the pair's own data range
    scores, maps = pair_scores(r1, r2, mask, "ssim", rgb_formulas="official")
    own = torch.stack([masked_mean(_ssim_map(r1[b : b + 1], r2[b : b + 1], pair_data_range(r1[b : b + 1], r2[b : b + 1]))
                                   .mean(1), mask[b : b + 1])[0] for b in range(3)])
    assert torch.allclose(scores, own, atol=1e-7) and maps.shape == (3, 64, 64)
    # the batch-wide range differs from pair 0's own range: the official batched pair 0 is not its score
    assert (g["score"][0] - g["score_single_pair"][0]).abs().item() > 1e-2


def test_ssim_standard_form() -> None:
    """rgb_formulas="standard": data range 1 (equal to the official form exactly when the pair's range is 1)."""
    a = torch.rand(2, 3, 24, 24)
    b = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    a[:, :, 0, 0], a[:, :, 0, 1] = 0.0, 1.0  # pair range exactly 1
    mask = torch.ones(2, 24, 24, dtype=torch.bool)
    std, _ = pair_scores(a, b, mask, "ssim", rgb_formulas="standard")
    off, _ = pair_scores(a, b, mask, "ssim", rgb_formulas="official")
    assert torch.allclose(std, off, atol=1e-7)
    std2, _ = pair_scores(0.5 * a, 0.5 * b, mask, "ssim", rgb_formulas="standard")
    off2, _ = pair_scores(0.5 * a, 0.5 * b, mask, "ssim", rgb_formulas="official")
    assert torch.allclose(off2, off, atol=1e-5)  # official: scale-invariant through the inferred range
    assert (std2 - std).abs().min().item() > 1e-4  # standard: a fixed range
    assert torch.allclose(pair_scores(a, a, mask, "ssim", rgb_formulas="standard")[0], torch.ones(2), atol=1e-5)


def test_standard_forms_end_to_end(tiny_dir: Path) -> None:
    """The paper variant defaults to the standard formulas; the setting is recorded and switchable."""
    kw = tiny_met3r_kwargs(golden_path(), tiny_dir)
    det = met3r(_sq64(), distance="psnr", rgb_formulas="standard", return_details=True, **kw)
    expected = torch.tensor(_meta()["cases"]["P1_mast3r_psnr"]["stats"]["formula_checks"]
                            ["for_contrast_standard_psnr_peak1_on_masked_mse_dB"])
    assert (det.pair_scores[:, 0].double() - expected).abs().max().item() <= 2e-3  # P1's end-to-end tolerance
    assert "rgb_formulas" in det.settings.overrides
    from met3r_metrics import Settings

    assert Settings.paper().rgb_formulas == "standard" and Settings.official().rgb_formulas == "official"
    with pytest.raises(ValueError, match=r"rgb_formulas: expected one of \('official', 'standard'\), got 'peak1'"):
        Settings.official(rgb_formulas="peak1")


def test_lpips_distance_stage(tiny_dir: Path) -> None:
    """LPIPS (AlexNet recipe trunk, shipped v0.1 lins) on the stored renders: maps and layers atol 1e-6.

    Per pair the score is the masked mean of the pair's own map; the official (B, 1) result mixes pairs
    (score[i] = mean_j sum(S_i M_j) / (sum M_j + eps)), reproduced here from our maps to show what it is.
    """
    from met3r_metrics.weights import load_lpips

    g = _golden("L1_mast3r_lpips")
    r1, r2, mask = _stage("L1_mast3r_lpips")
    net = load_lpips(extras_kwargs(golden_path(), tiny_dir, distance="lpips")["lpips_weights"])
    with torch.no_grad():
        scores, maps = pair_scores(r1, r2, mask, "lpips", lpips=net)
        layers = net(2 * r1 - 1, 2 * r2 - 1, per_layer=True)
    assert (maps - g["score_map"][:, 0]).abs().max().item() <= 1e-6
    assert (layers - g["lpips_layers"]).abs().max().item() <= 1e-6
    stats = _meta()["cases"]["L1_mast3r_lpips"]["stats"]["formula_checks"]
    assert (scores.double() - torch.tensor(stats["per_pair_masked_mean"])).abs().max().item() <= 1e-6
    m = mask.float()
    mixed = ((maps[:, None] * m[None]).sum((-2, -1)) / (m.sum((-2, -1))[None] + 1e-5)).mean(1)
    assert (mixed - g["score"][:, 0]).abs().max().item() <= 1e-6


def test_lpips_weights_and_recipe(tiny_dir: Path) -> None:
    """The shipped lins are the released v0.1 layers; the recipe regenerates with its SHA-256; keys map strictly."""
    from met3r_metrics.models.lpips import LPIPS, convert_lpips_state_dict
    from met3r_metrics.weights import LPIPS_LINS_FILE, load_lpips

    shipped = load_file(str(LPIPS_LINS_FILE))
    golden = load_file(str(golden_path("met3r_extras", "lpips_alex_v0.1_lins.safetensors")))
    assert shipped.keys() == golden.keys() and all(torch.equal(shipped[k], golden[k]) for k in golden)
    trunk = recipe_state_dict(golden_path(), "alexnet_features")
    assert sorted(trunk, key=lambda k: int(k.split(".")[0])) == [f"{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")]
    # one network from three key layouts: torchvision file, bare features + lins, lpips module keys
    from_file = load_lpips(extras_kwargs(golden_path(), tiny_dir, distance="lpips")["lpips_weights"])
    slices = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
    lpips_keys = {f"net.slice{slices[int(k.split('.')[0])]}.{k}": v for k, v in trunk.items()} | golden
    for sd in ({**trunk, **golden}, lpips_keys):
        other = load_lpips(sd)
        assert all(torch.equal(a, b) for a, b in zip(from_file.state_dict().values(), other.state_dict().values()))
    assert set(convert_lpips_state_dict(lpips_keys)) == set(LPIPS().state_dict())
    with pytest.raises(ValueError, match=r"lpips_weights: expected torchvision AlexNet / VGG-16 keys .* got key 'conv1.weight'"):
        load_lpips({"conv1.weight": torch.zeros(1)})
    with pytest.raises(RuntimeError, match=r"LPIPS .*missing=2 \[features.10.weight, features.10.bias\]"):
        load_lpips({k: v for k, v in trunk.items() if not k.startswith("10.")})
    with pytest.raises(ValueError, match=r"lpips_weights: expected a registry name \(alexnet_torchvision, vgg16_torchvision\)"):
        load_lpips("alexnet")
    bad = tiny_dir / "bad_recipe" / "met3r_extras"
    bad.mkdir(parents=True, exist_ok=True)
    recipe = json.loads(golden_path("met3r_extras", "weights_recipe.json").read_text())
    recipe["recipes"]["alexnet_features"]["entries"][0]["seed"] += 1
    (bad / "weights_recipe.json").write_text(json.dumps(recipe))
    with pytest.raises(ValueError, match=r"alexnet_features.0.weight: expected SHA-256 88a4d4c6"):
        recipe_state_dict(bad.parent, "alexnet_features")


def test_lpips_settings_and_direction(tiny_dir: Path) -> None:
    from met3r_metrics import MEt3R, Settings
    from met3r_metrics.settings import DISTANCES

    assert DISTANCES["lpips"].higher_is_better is False and DISTANCES["lpips"].lower_bound == 0.0
    m = MEt3R(distance="lpips")
    assert m.higher_is_better is False and m.plot_lower_bound == 0.0
    s = Settings.official(distance="lpips")
    assert s.network_key != s.replace(lpips_weights="x.pth").network_key
    assert not s.uses_features and s.replace(distance="cosine", lpips_weights="x.pth").network_key == Settings.official().network_key
    with pytest.raises(ValueError, match="backbone: expected 'mast3r' or 'raft', got 'dust3r'"):
        extras_kwargs(golden_path(), tiny_dir, backbone="dust3r", distance="cosine")
