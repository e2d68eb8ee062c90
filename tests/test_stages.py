"""The stages of met3r_metrics/stages/ called one by one give exactly the scorer's numbers (each entry point
can be timed alone), and the rules that now live in one place (distance direction, custom-network checks,
the switch, the TF32 setter) hold."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import golden_path
from met3r_metrics import Settings, precision
from met3r_metrics.distances import HIGHER_IS_BETTER, pair_scores
from met3r_metrics.networks import _load_lpips, check_custom_networks
from met3r_metrics.scorer import MEt3RScorer, get_scorer
from met3r_metrics.settings import DISTANCES
from met3r_metrics.stages.distance import score_pairs
from met3r_metrics.stages.features import frame_features
from met3r_metrics.stages.geometry import StereoGeometry
from met3r_metrics.stages.splat import points_layout, splat_pairs
from met3r_metrics.switch import Switch
from met3r_metrics.testing import extras_kwargs, tiny_met3r_kwargs


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> MEt3RScorer:
    return get_scorer(Settings.paper(**tiny_met3r_kwargs(golden_path(), tmp_path_factory.mktemp("tiny"))))


def test_stages_one_by_one_equal_the_scorer(scorer: MEt3RScorer) -> None:
    x = load_file(str(golden_path("met3r", "inputs.safetensors")))["sq64"][:, :2].transpose(0, 1)  # (2, 3, ...)
    s = scorer.settings  # paper: symmetric, so both directions of (0, 1) and (1, 2)
    out = scorer.score_sequences(x[:1])
    frames = x[0]
    stage = StereoGeometry(scorer.stereo, s.precision)
    states = stage.frame_states(frames, [(0, v) for v in range(3)])
    feats = frame_features(frames, scorer.features)
    directed = [(0, 1), (1, 0), (1, 2), (2, 1)]
    geo = stage.pairs([states[a] for a, _ in directed], [states[b] for _, b in directed])
    sp = splat_pairs(geo.points, geo.conf, points_layout([feats[a] for a, _ in directed],
                                                         [feats[b] for _, b in directed]), s)
    got = score_pairs(sp["renders"][:, 0], sp["renders"][:, 1], sp["mask"], s)["score"]
    # the scorer's chunking (batch_size) batches the same per-pair arithmetic: float32 batching noise only
    torch.testing.assert_close(got[0::2], out["forward_scores"][0], rtol=0, atol=1e-6)
    torch.testing.assert_close(got[1::2], out["reverse_scores"][0], rtol=0, atol=1e-6)
    assert bool((got > 0).all())


@pytest.mark.parametrize("distance", sorted(DISTANCES))
def test_higher_is_better_is_the_direction_the_formula_has(distance: str, tmp_path) -> None:
    """Identical renders score best: higher for similarities, lower for dissimilarities (one table, two users)."""
    lpips = None
    if distance == "lpips":  # the random-weight AlexNet trunk of golden/met3r_extras
        lpips = _load_lpips(extras_kwargs(golden_path(), tmp_path, distance="lpips")["lpips_weights"], torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    mask = torch.ones(2, 64, 64, dtype=torch.bool)
    same, _ = pair_scores(a, a, mask, distance, lpips=lpips)
    other, _ = pair_scores(a, b, mask, distance, lpips=lpips)
    assert bool((same > other).all()) == HIGHER_IS_BETTER[distance] == DISTANCES[distance].higher_is_better


def test_custom_network_checks_name_the_argument() -> None:
    s = Settings.official(backbone="custom:mine")
    with pytest.raises(TypeError, match=r"^backbone: expected a callable / nn.Module network, got int"):
        check_custom_networks(s, 3, None)
    with pytest.raises(ValueError, match=r"^backbone: 'custom:mine' names a user's network"):
        check_custom_networks(s, None, None)
    with pytest.raises(ValueError, match=r"^geometry_net: expected None for backbone='mast3r_512_catmlpdpt_metric'"):
        check_custom_networks(Settings.official(), lambda a, b: None, None)
    with pytest.raises(ValueError, match=r"^geometry_net: expected None for backbone="):
        MEt3RScorer(Settings.official(distance="rmse"), None, None, geometry_net=lambda a, b: None)


def test_one_switch_reads_its_variable_at_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    sw = Switch("MET3R_TEST_SWITCH")
    monkeypatch.setenv("MET3R_TEST_SWITCH", "1")
    assert not sw.is_enabled()
    monkeypatch.delenv("MET3R_TEST_SWITCH")
    with sw.enabled(False):
        assert not sw.is_enabled()
        with sw.enabled(True):
            assert sw.is_enabled()
        assert not sw.is_enabled()
    assert sw.is_enabled()


def test_set_tf32_goes_through_the_running_api() -> None:
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    saved = matmul.fp32_precision, conv.fp32_precision
    try:
        for flag in (True, False):
            precision.set_tf32(flag)
            want = "tf32" if flag else "ieee"
            assert (matmul.fp32_precision, conv.fp32_precision) == (want, want)
            assert precision.tf32_flags() == (flag, flag)
    finally:
        matmul.fp32_precision, conv.fp32_precision = saved


def test_the_loop_runs_the_scorer_class_s_stereo_stage(scorer: MEt3RScorer) -> None:
    """benchmarks/synthetic.py swaps the stereo stage for one with a smooth synthetic surface: the scorer's
    loop must run that stage (its geometry, not the network's), else the benchmarks time the wrong scene."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.synthetic import SyntheticGeometryScorer, smooth_surface_pair

    x = load_file(str(golden_path("met3r", "inputs.safetensors")))["sq64"][:, :2].transpose(0, 1)[:1, :2]
    synthetic = SyntheticGeometryScorer(scorer.settings.replace(symmetric=False), scorer.stereo, scorer.features)
    out = synthetic.score_sequences(x)
    got = out["pair_scores"]
    pts, conf = smooth_surface_pair(1, 64, 64, torch.device("cpu"))
    feats = synthetic.frame_features(x[0])
    want = synthetic.render_pairs(pts, conf, points_layout([feats[0]], [feats[1]]))
    torch.testing.assert_close(got[0], want["score"], rtol=0, atol=1e-6)
    torch.testing.assert_close(out["overlap"][0], want["overlap"], rtol=0, atol=0)
    plain = scorer.with_settings(synthetic.settings).score_sequences(x)
    assert (out["overlap"] - plain["overlap"]).abs().max() > 0.01  # another scene: another overlap
