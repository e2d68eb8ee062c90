"""DUSt3R / MASt3R networks vs the official goldens in ../shared/golden/dust3r (tiny configs, all cases).

Tolerances are exactly those of the golden README §6: float32 rtol 1e-4 / atol 1e-5*max (+1e-4 for desc);
float64 rtol 1e-6 / atol 1e-7*max against ``ref64.*``. Both attention paths (SDPA and explicit) are tested.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conftest import golden_path
from dust3r_golden_utils import (
    CASES,
    CONFIGS,
    REF64_CASE,
    compare_outputs,
    f32_tolerance,
    golden_config,
    golden_inputs,
    golden_meta,
    golden_outputs,
    golden_weights,
    single_thread,  # noqa: F401  (autouse fixture)
    tolerance_ratio,
)
from met3r_metrics.models.croco import ATTN_IMPLS, apply_rope2d
from met3r_metrics.models.dust3r import AsymmetricCroCo3DStereo, AsymmetricMASt3R, build_stereo_model

_MODELS: dict[tuple[str, str], AsymmetricCroCo3DStereo] = {}


def golden_model(cfg: str, attn_impl: str = "sdpa", dtype: torch.dtype = torch.float32) -> AsymmetricCroCo3DStereo:
    """Tiny model with golden weights, strict load, eval, cached per (cfg, impl); returned in ``dtype``."""
    key = (cfg, attn_impl)
    if key not in _MODELS:
        model = build_stereo_model(golden_config(cfg), attn_impl=attn_impl)
        model.load_state_dict(golden_weights(cfg), strict=True)
        _MODELS[key] = model.eval().requires_grad_(False)
    return _MODELS[key].to(dtype)


def views(case: str, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    inp = golden_inputs()
    return inp[f"{case}.view1.img"].to(dtype), inp[f"{case}.view2.img"].to(dtype)


# ------------------------------------------------------------------------------------------------ RoPE2D


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rope2d_golden(dtype):
    data = load_file(str(golden_path("dust3r", "rope2d.safetensors")))
    out = apply_rope2d(data["tokens"].to(dtype), data["positions"], base=100.0)
    assert out.dtype == dtype and out.shape == data["out_f32"].shape
    # float32: the official fallback in float32 (observed bitwise); float64 vs out_f32: atol 1e-6 (README §2).
    atol = 1e-6 if dtype == torch.float64 else 1e-7
    torch.testing.assert_close(out.double(), data["out_f32"].double(), rtol=0, atol=atol)


# ------------------------------------------------------------------------------------------------ construction


@pytest.mark.parametrize("cfg", CONFIGS)
def test_state_dict_matches_golden_keys(cfg):
    meta = golden_meta(cfg)
    model = golden_model(cfg)
    expected_cls = AsymmetricMASt3R if meta["model_class"] == "AsymmetricMASt3R" else AsymmetricCroCo3DStereo
    assert type(model) is expected_cls
    sd = model.state_dict()
    assert [(k, list(v.shape)) for k, v in sd.items()] == [(e["key"], e["shape"]) for e in meta["state_dict"]]
    assert sum(p.numel() for p in model.parameters()) == meta["num_parameters"]


# ------------------------------------------------------------------------------------------------ outputs


@pytest.mark.parametrize("attn_impl", ATTN_IMPLS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cfg", CONFIGS)
def test_outputs_float32(cfg, case, attn_impl):
    model = golden_model(cfg, attn_impl)
    img1, img2 = views(case)
    with torch.no_grad():
        res1, res2 = model(img1, img2)
    assert set(res1) == set(res2) - {"pts3d_in_other_view"} | {"pts3d"}
    expected_keys = {"pts3d", "conf"} | ({"desc", "desc_conf"} if cfg.startswith("mast3r") else set())
    assert set(res1) == expected_keys
    for res in (res1, res2):
        assert all(v.dtype == torch.float32 for v in res.values())
    assert res1["pts3d"].shape == (img1.shape[0], *img1.shape[-2:], 3)
    assert res2["pts3d_in_other_view"].shape == (img2.shape[0], *img2.shape[-2:], 3)
    compare_outputs(res1, res2, cfg, case)


@pytest.mark.parametrize("attn_impl", ATTN_IMPLS)
@pytest.mark.parametrize("cfg", CONFIGS)
def test_outputs_float64(cfg, attn_impl):
    model = golden_model(cfg, attn_impl, torch.float64)
    try:
        img1, img2 = views(REF64_CASE, torch.float64)
        with torch.no_grad():
            res1, res2 = model(img1, img2)
        assert res1["pts3d"].dtype == torch.float64
        ratios = compare_outputs(res1, res2, cfg, REF64_CASE, ref64=True)
        n_expected = 8 if cfg.startswith("mast3r") else 4
        assert len(ratios) == n_expected
    finally:
        model.float()


@pytest.mark.parametrize("case", CASES)
def test_positions_match_golden(case):
    model = golden_model("dust3r_linear_tiny")
    out = golden_outputs("dust3r_linear_tiny")
    img1, img2 = views(case)
    with torch.no_grad():
        _, pos1, shape1 = model.encode(img1)
        _, pos2, shape2 = model.encode(img2)
    assert torch.equal(pos1, out[f"{case}.pos1"]) and torch.equal(pos2, out[f"{case}.pos2"])
    assert shape1 == tuple(img1.shape[-2:]) and shape2 == tuple(img2.shape[-2:])


@pytest.mark.parametrize("cfg", CONFIGS)
def test_decoder_lists_and_heads_sq64(cfg):
    """Intermediates: encoder+decoder lists equal the golden ``decout``; golden decouts through the heads alone
    reproduce the outputs."""
    model = golden_model(cfg)
    out = golden_outputs(cfg)
    depth = golden_meta(cfg)["constructor_kwargs"]["dec_depth"]
    img1, img2 = views("sq64")
    with torch.no_grad():
        t1, p1, s1 = model.encode(img1)
        t2, p2, s2 = model.encode(img2)
        dec1, dec2 = model.decode(t1, p1, t2, p2)
        for v, dec in (("1", dec1), ("2", dec2)):
            assert len(dec) == depth + 1
            for k, tensor in enumerate(dec):
                expected = out[f"sq64.decout{v}.{k}"]
                rtol, atol = f32_tolerance("decout", expected)
                assert tolerance_ratio(tensor, expected, rtol, atol) <= 1.0, f"decout{v}.{k}"
        gold1 = [out[f"sq64.decout1.{k}"] for k in range(depth + 1)]
        gold2 = [out[f"sq64.decout2.{k}"] for k in range(depth + 1)]
        res1, res2 = model.run_heads(gold1, s1, gold2, s2)
    compare_outputs(res1, res2, cfg, "sq64")


# ------------------------------------------------------------------------------------------------ split API


@pytest.mark.parametrize("case", ["sq64", "mixed48x80_80x48"])
def test_split_api_equals_forward(case):
    model = golden_model("mast3r_catmlpdpt_tiny")
    img1, img2 = views(case)
    with torch.no_grad():
        ref1, ref2 = model(img1, img2)
        enc1, enc2 = model.encode(img1), model.encode(img2)  # encoded once each, reusable for many pairs
        res1, res2 = model.decode_heads(*enc1, *enc2)
        # Official-style true_shape: (B, 2) int tensor with identical rows.
        shape1 = torch.tensor([enc1[2]] * img1.shape[0])
        alt1, _ = model.decode_heads(enc1[0], enc1[1], shape1, *enc2)
    for ref, res in ((ref1, res1), (ref2, res2)):
        assert ref.keys() == res.keys()
        for k in ref:
            # Joint vs separate encoding of same-size views: GEMM-blocking noise only (README §6).
            torch.testing.assert_close(res[k], ref[k], rtol=1e-5, atol=1e-5)
    for k in res1:
        torch.testing.assert_close(alt1[k], res1[k], rtol=0, atol=0)
    compare_outputs(res1, res2, "mast3r_catmlpdpt_tiny", case)


@pytest.mark.parametrize("cfg", ["mast3r_catmlpdpt_tiny", "dust3r_dpt_tiny"])
def test_descriptors_off_keeps_points_and_conf(cfg):
    """MEt3R skips MASt3R's descriptor MLP: pts3d/conf must be bitwise those of the full heads."""
    model = golden_model(cfg)
    img1, img2 = views("sq64")
    with torch.no_grad():
        enc1, enc2 = model.encode(img1), model.encode(img2)
        full1, full2 = model.decode_heads(*enc1, *enc2)
        lite1, lite2 = model.decode_heads(*enc1, *enc2, descriptors=False)
    assert set(lite1) == {"pts3d", "conf"} and set(lite2) == {"pts3d_in_other_view", "conf"}
    for full, lite in ((full1, lite1), (full2, lite2)):
        for k in lite:
            assert torch.equal(full[k], lite[k]), k


def test_official_view_dicts_accepted():
    model = golden_model("dust3r_linear_tiny")
    img1, img2 = views("sq64")
    with torch.no_grad():
        a1, a2 = model({"img": img1, "instance": [""]}, {"img": img2, "instance": [""]})
        b1, b2 = model(img1, img2)
    assert all(torch.equal(a1[k], b1[k]) for k in a1) and all(torch.equal(a2[k], b2[k]) for k in a2)


def test_backbone_under_autocast_keeps_float32_heads():
    """Heads run with autocast off in float32, as officially; the bf16 backbone stays close to float32."""
    model = golden_model("dust3r_linear_tiny")
    img1, img2 = views("sq64")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        res1, res2 = model(img1, img2)
    assert res1["pts3d"].dtype == torch.float32 and res2["conf"].dtype == torch.float32
    expected = golden_outputs("dust3r_linear_tiny")["sq64.pred1.conf"]
    assert (res1["conf"] - expected).abs().max() < 0.1 * expected.abs().max()


# ------------------------------------------------------------------------------------------------ bad inputs


def test_size_not_multiple_of_16_names_argument():
    model = golden_model("dust3r_linear_tiny")
    good = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"img1.*multiples of 16.*received H=50, W=64"):
        model(torch.zeros(1, 3, 50, 64), good)
    with pytest.raises(ValueError, match=r"img2.*multiples of 16.*received H=64, W=72"):
        model(good, torch.zeros(1, 3, 64, 72))
    with pytest.raises(ValueError, match=r"img:.*received H=8, W=8"):
        model.encode(torch.zeros(1, 3, 8, 8))


def test_other_bad_inputs():
    model = golden_model("dust3r_linear_tiny")
    good = torch.zeros(2, 3, 64, 64)
    with pytest.raises(ValueError, match=r"img1: expected shape \(B,3,H,W\), received \(2, 1, 64, 64\)"):
        model(torch.zeros(2, 1, 64, 64), good)
    with pytest.raises(ValueError, match=r"same batch size, received 1 and 2"):
        model(torch.zeros(1, 3, 64, 64), good)
    with pytest.raises(ValueError, match=r"img2: expected a floating-point tensor"):
        model(good, torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    with torch.no_grad():
        tok, pos, shape = model.encode(good)
        with pytest.raises(ValueError, match=r"shape1: .* matching the 16 tokens, received \(48, 80\)"):
            model.decode_heads(tok, pos, (48, 80), tok, pos, shape)
        mixed = torch.tensor([[64, 64], [48, 80]])
        with pytest.raises(ValueError, match=r"shape2: all samples of one view must share one"):
            model.decode_heads(tok, pos, shape, tok, pos, mixed)


def test_bad_configs():
    with pytest.raises(ValueError, match="pos_embed must be 'RoPE<base>'"):
        build_stereo_model({"head_type": "linear"})  # official default pos_embed='cosine' is not a checkpoint
    with pytest.raises(ValueError, match="dec_depth > 9"):
        build_stereo_model({
            "pos_embed": "RoPE100", "head_type": "dpt", "dec_depth": 8, "enc_embed_dim": 32, "enc_depth": 1,
            "enc_num_heads": 2, "dec_embed_dim": 32, "dec_num_heads": 2,
        })
    with pytest.raises(TypeError):
        build_stereo_model({"pos_embed": "RoPE100", "no_such_kwarg": 1})
    with pytest.raises(ValueError, match="img_size must be a multiple"):
        build_stereo_model({"pos_embed": "RoPE100", "img_size": 100})


def test_bad_modes_name_argument_expected_and_received():
    from met3r_metrics.models.dpt import DPTHeadAdapter
    from met3r_metrics.models.dust3r import reg_dense_conf, reg_dense_depth, reg_desc

    x = torch.zeros(1, 2, 2, 3)
    with pytest.raises(ValueError, match=r"depth_mode: expected 'linear', 'square' or 'exp', received 'cube'"):
        reg_dense_depth(x, ("cube", -float("inf"), float("inf")))
    with pytest.raises(ValueError, match=r"conf_mode: expected 'exp' or 'sigmoid', received 'tanh'"):
        reg_dense_conf(x[..., 0], ("tanh", 1, float("inf")))
    with pytest.raises(ValueError, match=r"desc_mode: expected a mode containing 'norm'.*received 'raw'"):
        reg_desc(x, "raw")
    with pytest.raises(ValueError, match=r"exactly 4 hooks.*received hooks=\[0, 1, 2\]"):
        DPTHeadAdapter(dim_tokens=[8, 8, 8, 8], hooks=[0, 1, 2])


def test_official_dpt_widths_run_on_odd_grid():
    """Official DPT widths (256/128/(96,192,384,768)) on a 3x5 token grid (path4 crop), narrow backbone."""
    config = {
        "pos_embed": "RoPE100", "head_type": "catmlp+dpt", "output_mode": "pts3d+desc24", "two_confs": True,
        "desc_conf_mode": ("exp", 0, float("inf")), "enc_embed_dim": 64, "enc_depth": 1, "enc_num_heads": 4,
        "dec_embed_dim": 48, "dec_depth": 12, "dec_num_heads": 4, "landscape_only": False,
    }
    torch.manual_seed(0)
    model = build_stereo_model(config).eval()
    with torch.no_grad():
        res1, res2 = model(torch.rand(1, 3, 48, 80) * 2 - 1, torch.rand(1, 3, 80, 48) * 2 - 1)
    assert res1["pts3d"].shape == (1, 48, 80, 3) and res1["desc"].shape == (1, 48, 80, 24)
    assert res2["pts3d_in_other_view"].shape == (1, 80, 48, 3) and res2["desc_conf"].shape == (1, 80, 48)
    assert all(torch.isfinite(v).all() for r in (res1, res2) for v in r.values())
