"""Features are computed a few frames at a time and stored channels-last: same numbers, no layout copy."""

from __future__ import annotations

import torch

from met3r_metrics import met3r
from met3r_metrics.stages import features as features_mod
from met3r_metrics.scorer import get_scorer
from met3r_metrics.settings import resolve
from met3r_metrics.testing import tiny_met3r_kwargs


def test_feature_frames_per_call_do_not_change_the_scores(golden_root, tmp_path, monkeypatch):
    settings = resolve("official", **tiny_met3r_kwargs(golden_root, tmp_path))
    x = torch.rand(2, 5, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    monkeypatch.setattr(features_mod, "FEATURE_FRAMES", 1000)
    whole = met3r(x, settings, return_details=True).pair_scores
    calls = []
    features = get_scorer(settings).features
    hook = features.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        monkeypatch.setattr(features_mod, "FEATURE_FRAMES", 3)
        chunked = met3r(x, settings, return_details=True).pair_scores
    finally:
        hook.remove()
    assert max(calls) == 3 and sum(calls) == 10  # every frame once, at most 3 per call
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)  # batching noise only


def test_frame_features_are_float32_and_channels_last(golden_root, tmp_path):
    sc = get_scorer(resolve("official", **tiny_met3r_kwargs(golden_root, tmp_path)))
    frames = torch.rand(6, 3, 64, 64) * 2 - 1
    f = sc.frame_features(frames)
    assert f.shape == (6, 384, 64, 64) and f.dtype == torch.float32
    assert f.permute(0, 2, 3, 1).is_contiguous()  # the points layout splatting reads is a view
    ref = sc.features((frames + 1) / 2)
    torch.testing.assert_close(f, ref, rtol=0, atol=1e-6)
