"""MEt3R Metric + functional API on the tiny networks: states, pairing, symmetric batching, NaN pairs, grads."""

from __future__ import annotations

import copy
import io
import json
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import golden_path
from met3r_metrics import MEt3R, MEt3RScorer, Settings, met3r
from met3r_metrics.functional import SequenceScores
from met3r_metrics.scorer import get_scorer
from met3r_metrics.testing import tiny_met3r_kwargs


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets: one thread is fastest on shared cores


@pytest.fixture(scope="module")
def kw(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return tiny_met3r_kwargs(golden_path(), tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def seqs() -> torch.Tensor:
    """(2, 3, 3, 64, 64) in [-1, 1]: views of the golden canvas (overlapping shifts)."""
    x = load_file(str(golden_path("met3r", "inputs.safetensors")))["sq64"]  # (3, 2, 3, 64, 64)
    return torch.stack([torch.stack([x[0, 0], x[1, 1], x[2, 1]]), torch.stack([x[1, 1], x[0, 0], x[2, 1]])])


def _counting_scorer(kw: dict, **overrides) -> tuple[MEt3RScorer, dict]:
    """A scorer sharing the cached networks, counting frames through features / encoder and decoded pairs."""
    base = get_scorer(Settings.official(**kw))
    sc = MEt3RScorer(Settings.official(**{**kw, **overrides}), base.stereo, base.features)
    counts = {"features": 0, "encode": 0, "decode": 0, "decode_calls": 0}
    stage = sc.geometry_source()  # the stereo stage the scorer's loop runs (met3r_metrics.stages.geometry)
    feat, enc, dec = sc.frame_features, stage.encode, stage.decode

    def frame_features(x):
        counts["features"] += x.shape[0]
        return feat(x)

    def encode(x):
        counts["encode"] += x.shape[0]
        return enc(x)

    def decode(t1, p1, t2, p2, shape):
        counts["decode"] += t1.shape[0]
        counts["decode_calls"] += 1
        return dec(t1, p1, t2, p2, shape)

    sc.frame_features, stage.encode, stage.decode = frame_features, encode, decode
    return sc, counts


def test_metric_equals_functional_and_state_dict_is_tiny(kw: dict, seqs: torch.Tensor) -> None:
    ref = met3r(seqs, **kw)
    assert ref.shape == (2,) and torch.isfinite(ref).all() and (ref > 0).all() and (ref < 1).all()
    metric = MEt3R(**kw, return_per_pair=True)
    metric.update(seqs[:1])
    metric.update(seqs[1:])
    torch.testing.assert_close(metric.compute(), ref.mean(), atol=1e-6, rtol=0)
    det = metric.compute_details()
    assert set(det) == {"met3r", "met3r_pairs", "num_pairs", "num_sequences", "zero_overlap", "mean_overlap",
                        "pair_scores", "sequence_scores"}
    assert det["num_pairs"].item() == 4 and det["num_sequences"].item() == 2 and det["zero_overlap"].item() == 0
    full = met3r(seqs, return_details=True, **kw)
    torch.testing.assert_close(det["pair_scores"], full.pair_scores.flatten(), atol=1e-6, rtol=0)
    torch.testing.assert_close(det["met3r_pairs"], full.pair_scores.mean(), atol=1e-6, rtol=0)
    torch.testing.assert_close(det["mean_overlap"], full.overlap.mean(), atol=1e-6, rtol=0)
    # networks are not sub-modules: nothing but the (non-persistent) states, no parameters
    assert len(metric.state_dict()) == 0 and len(list(metric.parameters())) == 0
    assert len(list(metric.children())) == 0
    buf = io.BytesIO()
    torch.save(metric.state_dict(), buf)
    assert buf.tell() < 2000
    # pickling / deepcopy do not copy the networks
    assert len(pickle.dumps(metric)) < 50_000
    clone = copy.deepcopy(metric)
    torch.testing.assert_close(clone.compute(), metric.compute())
    json.dumps(metric.settings.to_dict())
    assert metric.settings.img_size == 64 and metric.settings.variant == "official"
    metric.reset()
    assert metric.num_pairs.item() == 0 and metric.pair_scores == []


def test_consecutive_frames_encoded_once(kw: dict, seqs: torch.Tensor) -> None:
    sc, counts = _counting_scorer(kw, batch_size=1)  # worst case for caching: one pair per chunk
    ref = met3r(seqs, **kw)
    out = met3r(seqs, scorer=sc)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    assert counts["features"] == 6 and counts["encode"] == 6  # B * V frames, not 2 * B * P
    assert counts["decode"] == 4


def test_symmetric_one_batch_features_once(kw: dict, seqs: torch.Tensor) -> None:
    sc, counts = _counting_scorer(kw, symmetric=True)
    det = met3r(seqs, scorer=sc, symmetric=True, return_details=True)
    assert counts["features"] == 6 and counts["encode"] == 6
    assert counts["decode"] == 8 and counts["decode_calls"] == 1  # both orders of all 4 pairs in one batch
    torch.testing.assert_close(det.pair_scores, 0.5 * (det.forward_scores + det.reverse_scores))
    fwd = met3r(seqs, return_details=True, **kw).pair_scores
    rev = met3r(seqs.flip(1), return_details=True, **kw).pair_scores.flip(1)
    torch.testing.assert_close(det.forward_scores, fwd, atol=1e-6, rtol=0)
    torch.testing.assert_close(det.reverse_scores, rev, atol=1e-6, rtol=0)
    # the paper variant is the symmetric one
    assert Settings.paper().symmetric


@pytest.mark.parametrize("pairing, pairs", [
    ("consecutive", [[0, 1], [1, 2]]), ("first", [[0, 1], [0, 2]]), ("all", [[0, 1], [0, 2], [1, 2]]),
])
def test_pairings(kw: dict, seqs: torch.Tensor, pairing: str, pairs: list) -> None:
    det = met3r(seqs, pairing=pairing, return_details=True, return_maps=True, **kw)
    assert isinstance(det, SequenceScores) and det.pairs.tolist() == pairs
    p = len(pairs)
    assert det.pair_scores.shape == (2, p) and det.overlap.shape == (2, p)
    assert det.score_maps.shape == (2, p, 64, 64) and det.overlap_masks.dtype == torch.bool
    torch.testing.assert_close(det.sequence_scores, det.pair_scores.mean(1))
    torch.testing.assert_close(det.overlap, det.overlap_masks.float().mean((-2, -1)))
    assert det.settings.pairing == pairing


def test_input_conventions_agree(kw: dict, seqs: torch.Tensor) -> None:
    u8 = ((seqs + 1) * 127.5).round().to(torch.uint8)
    signed = u8.float() / 127.5 - 1
    ref = met3r(signed, **kw)
    torch.testing.assert_close(met3r(u8, **kw), ref)
    torch.testing.assert_close(met3r(u8.float() / 255, normalize=True, **kw), ref, atol=1e-5, rtol=0)
    metric = MEt3R(normalize=True, **kw)
    metric.update(u8.float() / 255)
    torch.testing.assert_close(metric.compute(), ref.mean(), atol=1e-5, rtol=0)


def test_input_errors(kw: dict, seqs: torch.Tensor) -> None:
    metric = MEt3R(**kw)
    with pytest.raises(ValueError, match="images.*V >= 2"):
        metric.update(seqs[:, :1])
    with pytest.raises(ValueError, match=r"images.*values in \[-1, 1\]"):
        metric.update(seqs * 3)
    with pytest.raises(ValueError, match="images.*metric's device"):
        metric.update(seqs.to("meta"))
    with pytest.raises(ValueError, match="images: expected H a multiple of 32"):
        met3r(torch.zeros(1, 2, 3, 48, 64), **kw)
    with pytest.raises(ValueError, match=r"MEt3R: unknown argument\(s\) \['bogus'\]; expected Settings fields"):
        MEt3R(**kw, bogus=1)
    meta = MEt3R(**kw).to("meta")  # the first line names the argument, no "Tensor.item() ... meta tensors"
    with pytest.raises(ValueError, match="^images: expected a tensor with data, got a tensor on the meta device$"):
        meta.update(seqs.to("meta"))


def _no_overlap_scorer(kw: dict, bad_calls: set[int], **overrides) -> MEt3RScorer:
    """batch_size=1; the decode calls in ``bad_calls`` return geometry behind the camera (nothing renders)."""
    base = get_scorer(Settings.official(**kw))
    sc = MEt3RScorer(Settings.official(**{**kw, "batch_size": 1, **overrides}), base.stereo, base.features)
    stage = sc.geometry_source()  # the stereo stage the scorer's loop runs (met3r_metrics.stages.geometry)
    dec, calls = stage.decode, [0]

    def decode(*args):
        pts, conf = dec(*args)
        calls[0] += 1
        if calls[0] in bad_calls:
            pts = pts * torch.tensor([1.0, 1.0, -1.0])
        return pts, conf

    stage.decode = decode
    return sc


def test_no_overlap_is_nan_counted_and_excluded(kw: dict, seqs: torch.Tensor) -> None:
    x = seqs[:1]  # pairs (0, 1), (1, 2)
    good = met3r(x, return_details=True, **kw).pair_scores[0]
    metric = MEt3R(scorer=_no_overlap_scorer(kw, {2}), return_per_pair=True)
    metric.update(x)
    det = metric.compute_details()
    assert det["zero_overlap"].item() == 1 and det["num_pairs"].item() == 1
    assert torch.isnan(det["pair_scores"][1]) and abs(det["pair_scores"][0] - good[0]) < 1e-6
    torch.testing.assert_close(metric.compute(), good[0], atol=1e-6, rtol=0)
    # nothing valid at all -> NaN, still counted
    metric = MEt3R(scorer=_no_overlap_scorer(kw, {1, 2}))
    metric.update(x)
    assert torch.isnan(metric.compute()) and metric.compute_details()["zero_overlap"].item() == 2
    # the official behaviour: 0 (= "perfect") for an empty mask
    sc = _no_overlap_scorer(kw, {2}, nan_on_no_overlap=False)
    det = met3r(x, scorer=sc, return_details=True)
    assert det.pair_scores[0, 1].item() == 0.0 and det.no_overlap[0].tolist() == [False, True]
    torch.testing.assert_close(det.sequence_scores[0], good[0] / 2, atol=1e-6, rtol=0)


def test_chunking_does_not_change_scores(kw: dict, seqs: torch.Tensor) -> None:
    a = met3r(seqs, pairing="all", batch_size=1, return_details=True, **kw).pair_scores
    b = met3r(seqs, pairing="all", batch_size=64, return_details=True, **kw).pair_scores
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_gradients_reach_images(kw: dict, seqs: torch.Tensor) -> None:
    # one pair keeps the backward through FeatUp + the renderer cheap
    x = seqs[:1, :2].clone().requires_grad_(True)
    assert met3r(x, **kw).requires_grad
    metric = MEt3R(**kw)  # through the Metric's forward (is_differentiable)
    value = metric(x)
    assert value.requires_grad
    value.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert MEt3R.is_differentiable and not MEt3R.higher_is_better and not MEt3R.full_state_update


def test_rgb_distances_run(kw: dict, seqs: torch.Tensor) -> None:
    mse = met3r(seqs, distance="mse", **kw)
    psnr = met3r(seqs, distance="psnr", **kw)
    ssim = met3r(seqs, distance="ssim", **kw)
    assert (mse > 0).all() and (psnr > 5).all() and ((ssim > -1) & (ssim < 1)).all()


def test_plot(kw: dict, seqs: torch.Tensor) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    metric = MEt3R(**kw)
    metric.update(seqs)
    fig, ax = metric.plot()
    assert isinstance(fig, Figure) and ax in fig.axes
    fig, ax = metric.plot([metric.compute(), metric.compute()])
    assert isinstance(fig, Figure) and len(ax.get_lines()) >= 1


def test_import_has_no_side_effects() -> None:
    code = (
        "import sys, torch\n"
        "s = torch.random.get_rng_state(); tf32 = torch.backends.cuda.matmul.allow_tf32\n"
        "import met3r_metrics\n"
        "from met3r_metrics import MEt3R, met3r, MEt3RScorer, Settings\n"
        "import met3r_metrics.functional, met3r_metrics.testing\n"
        "assert torch.equal(s, torch.random.get_rng_state())\n"
        "assert tf32 == torch.backends.cuda.matmul.allow_tf32\n"
        "assert 'lightning' not in sys.modules and 'pytorch_lightning' not in sys.modules\n"
        "assert met3r_metrics.functional.met3r is met3r\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_bf16_precision_is_opt_in_and_close(kw: dict, seqs: torch.Tensor) -> None:
    x = seqs[:1, :2]
    ref = met3r(x, **kw)
    # a caller's autocast does not leak into the default (fp32) path
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(met3r(x, **kw), ref)
    low = met3r(x, precision="bf16", **kw)
    assert low.dtype == torch.float32 and (low - ref).abs().max().item() < 0.05


def _layer_dtypes(kw: dict, x: torch.Tensor, precision: str) -> dict[str, set]:
    """Output dtypes of every Linear / Conv2d inside the networks during one met3r call, per network part."""
    sc = get_scorer(Settings.official(**kw, precision=precision))
    seen: dict[str, set] = {}
    hooks = []
    for top, net in (("stereo", sc.stereo), ("features", sc.features)):
        for name, mod in net.named_modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
                part = f"{top}.{name.split('.')[0]}"  # e.g. stereo.enc_blocks, features.upsampler
                hooks.append(mod.register_forward_hook(lambda m, i, o, p=part: seen.setdefault(p, set()).add(o.dtype)))
    try:
        met3r(x, precision=precision, **kw)
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_bf16_precision_runs_the_networks_in_bfloat16(kw: dict, seqs: torch.Tensor) -> None:
    """precision='bf16': encoder, decoder, DINO and the JBU upsampler compute in bfloat16 (autocast); the
    DPT heads stay float32 (autocast off, as officially); precision='fp32' computes everything in float32."""
    x = seqs[:1, :2]
    nets = ("stereo.patch_embed", "stereo.enc_blocks", "stereo.decoder_embed", "stereo.dec_blocks",
            "stereo.dec_blocks2", "features.featurizer", "features.upsampler")
    heads = ("stereo.downstream_head1", "stereo.downstream_head2")
    low, full = _layer_dtypes(kw, x, "bf16"), _layer_dtypes(kw, x, "fp32")
    assert set(low) == set(full) == set(nets + heads)
    assert {p: low[p] for p in nets} == {p: {torch.bfloat16} for p in nets}
    assert {p: low[p] for p in heads} == {p: {torch.float32} for p in heads}
    assert all(d == {torch.float32} for d in full.values()), full


def test_radius_and_points_per_pixel_knobs_reach_the_renderer(kw: dict, seqs: torch.Tensor) -> None:
    """Both splatting knobs are forwarded (golden cases cover radius 0.04 vs 0.01 end to end)."""
    x = seqs[:1, :2]
    ref = met3r(x, return_details=True, **kw)
    one = met3r(x, return_details=True, **{**kw, "points_per_pixel": 1})
    small = met3r(x, return_details=True, **{**kw, "radius": 0.02})
    assert one.settings.points_per_pixel == 1 and "points_per_pixel" in one.settings.overrides
    assert small.settings.radius == 0.02 and ref.settings.radius == 0.04
    # K = 1 keeps only the nearest point per pixel: same coverage, different composite
    torch.testing.assert_close(one.overlap, ref.overlap)
    assert (one.pair_scores - ref.pair_scores).abs().max().item() > 1e-5  # float noise <= 3.2e-6 (golden README)
    # a smaller splat covers fewer pixels
    assert (small.overlap < ref.overlap).all()


def test_networks_built_lazily_once_per_process(kw: dict, seqs: torch.Tensor) -> None:
    from met3r_metrics import networks as networks_mod

    shared = get_scorer(Settings.official(**kw))  # the tiny networks, built (or cached) here
    settings = {**kw, "radius": 0.05}  # a settings key no other test has cached
    n_scorers, n_nets = len(networks_mod._SCORERS), len(networks_mod._NETWORKS)
    official = MEt3R()  # default registry weights: constructing must not load (or download) anything
    a, b = MEt3R(**settings), MEt3R(**settings)
    assert (len(networks_mod._SCORERS), len(networks_mod._NETWORKS)) == (n_scorers, n_nets)
    assert all(m.__dict__["_scorer_ref"] is None for m in (official, a, b))  # nothing built yet
    a.update(seqs[:1])
    assert len(networks_mod._SCORERS) == n_scorers + 1  # one new scorer, networks reused from the cache
    assert len(networks_mod._NETWORKS) == n_nets
    assert b.scorer is a.scorer and a.scorer.device == a.device
    assert a.scorer.stereo is shared.stereo and a.scorer.features is shared.features


def test_scorer_returns_renders_consistent_with_maps(kw: dict, seqs: torch.Tensor) -> None:
    sc = get_scorer(Settings.official(**kw))
    x = seqs[:1]  # pairs (0, 1), (1, 2)
    out = sc.score_sequences(x, return_maps=True, return_renders=True)
    r = out["renders"]
    assert r.shape == (1, 2, 2, 384, 64, 64)
    mask = out["overlap_masks"]
    # the official cosine map recomputed from the returned renders
    cos = (r[:, :, 0] * r[:, :, 1]).sum(2) / (r[:, :, 0].norm(dim=2) * r[:, :, 1].norm(dim=2) + 1e-5)
    torch.testing.assert_close((1 - cos)[mask], out["score_maps"][mask], atol=1e-5, rtol=0)
    # outside the overlap mask at least one render is 0 (non-covered pixels zeroed, as officially)
    empty = (r.abs().sum(3) == 0)
    assert (empty[:, :, 0] | empty[:, :, 1])[~mask].all() and not empty[:, :, 0][mask].any()
