"""DINO dino16 featurizer + FeatUp JBU stack against ../shared/golden/featup (official code, random weights).

Tolerances are the golden README's, unchanged: float64 atol = rtol = 1e-6; float32 (CPU) atol 2e-5, rtol 1e-5.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from met3r_metrics.models.featup import JBUStack, UpsampledDino
from met3r_metrics.weights import load_featup_dino
from conftest import golden_path

TOL = {torch.float64: {"atol": 1e-6, "rtol": 1e-6}, torch.float32: {"atol": 2e-5, "rtol": 1e-5}}
DTYPES = [torch.float32, torch.float64]
CASES = ["32x32", "32x48", "224x224", "256x256"]


def _close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    torch.testing.assert_close(actual, expected.to(dtype), **TOL[dtype], msg=lambda m: f"{what}: {m}")


@pytest.fixture(scope="module")
def models() -> dict[torch.dtype, UpsampledDino]:
    # Loads through the public loader: official key names, float16 storage, strict.
    path = golden_path("featup", "dino16_d2_weights.safetensors")
    return {dt: load_featup_dino(path, depth=2, dtype=dt) for dt in DTYPES}


@pytest.fixture(scope="module")
def cases() -> dict[str, dict[str, torch.Tensor]]:
    return {c: load_file(str(golden_path("featup", f"dino16_d2_case_{c}.safetensors"))) for c in CASES}


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp64"])
@pytest.mark.parametrize("case", CASES)
def test_featurizer_golden(models, cases, case: str, dtype: torch.dtype) -> None:
    g, feat = cases[case], models[dtype].featurizer
    image = g["image"].to(dtype)
    h, w = image.shape[-2] // 16, image.shape[-1] // 16
    with torch.no_grad():
        _close(feat.vit.interpolate_pos_encoding(h, w), g["pos_embed_interp"], dtype, "pos_embed_interp")
        if "lr_feats_prenorm" in g:
            _close(feat.tokens(feat.normalize(image)), g["lr_feats_prenorm"], dtype, "lr_feats_prenorm")
        _close(feat(image), g["lr_feats"], dtype, "lr_feats")


def test_no_interpolation_at_224(models) -> None:
    vit = models[torch.float32].featurizer.vit
    assert vit.interpolate_pos_encoding(14, 14) is vit.pos_embed


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp64"])
def test_hr_feats_32x48_golden(models, cases, dtype: torch.dtype) -> None:
    g, model = cases["32x48"], models[dtype]
    with torch.no_grad():
        hr = model(g["image"].to(dtype))
    assert hr.shape == (2, 384, 32, 48)
    _close(hr[0:1, :128], g["hr_feats_b0_ch0to127"], dtype, "hr_feats_b0_ch0to127")


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp64"])
def test_hr_feats_256_golden(models, cases, dtype: torch.dtype) -> None:
    g, model = cases["256x256"], models[dtype]
    image = g["image"].to(dtype)
    with torch.no_grad():
        lr = model.featurizer(image)
        hr = model.upsampler(lr, image)  # MEt3R convention: guidance = the [0, 1] image
    assert hr.shape == (1, 384, 256, 256)
    _close(lr, g["lr_feats"], dtype, "lr_feats")
    _close(hr.norm(dim=1), g["hr_feats_l2norm"], dtype, "hr_feats_l2norm")


# ---------------------------------------------------------------------------------------------- JBU only


@pytest.fixture(scope="module")
def jbu_golden() -> dict[str, torch.Tensor]:
    return load_file(str(golden_path("featup", "jbu_stack_c16.safetensors")))


def _jbu(g: dict[str, torch.Tensor], dtype: torch.dtype) -> JBUStack:
    m = JBUStack(16)
    m.load_state_dict({k[len("upsampler.") :]: v for k, v in g.items() if k.startswith("upsampler.")}, strict=True)
    return m.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp64"])
def test_jbu_step1_intermediates(jbu_golden, dtype: torch.dtype) -> None:
    g = jbu_golden
    up = _jbu(g, dtype).up1
    with torch.no_grad():
        guid = F.adaptive_avg_pool2d(g["guidance"].to(dtype), (6, 10))
        _close(guid, g["up1_small_guidance"], dtype, "up1_small_guidance")
        _close(up.spatial_kernel().view(7, 7), g["up1_spatial_kernel"], dtype, "up1_spatial_kernel")
        rk = up.range_kernel(guid)
        _close(rk, g["up1_range_kernel"], dtype, "up1_range_kernel")
        k = rk * up.spatial_kernel().view(1, -1, 1, 1)
        k = k / k.sum(1, keepdim=True).clamp(min=1e-7)
        _close(k, g["up1_combined_kernel_normalized"], dtype, "up1_combined_kernel_normalized")
        final = up.kernel(guid).permute(0, 2, 3, 1).reshape(2, 6, 10, 7, 7)  # [b, y, x, i, j]
        _close(final, g["up1_combined_kernel_final"], dtype, "up1_combined_kernel_final")
        bic = F.interpolate(g["source"].to(dtype), (6, 10), mode="bicubic", align_corners=False)
        _close(bic, g["up1_hr_source_bicubic"], dtype, "up1_hr_source_bicubic")


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "fp64"])
def test_jbu_stack_golden(jbu_golden, dtype: torch.dtype) -> None:
    g = jbu_golden
    m = _jbu(g, dtype)
    src, guid = g["source"].to(dtype), g["guidance"].to(dtype)
    with torch.no_grad():
        s = src
        for name, up in zip(("source_2", "source_4", "source_8"), (m.up1, m.up2, m.up3)):
            s = up(s, F.adaptive_avg_pool2d(guid, (2 * s.shape[-2], 2 * s.shape[-1])))
            _close(s, g[name], dtype, name)
        out = m.upsample(src, guid)  # raw stack output, 16h x 16w regardless of the 50x70 guidance
        _close(out, g["output"], dtype, "output")
        _close(m.upsample(src, g["guidance_small"].to(dtype)), g["output_small_guidance"], dtype, "output_small")
        # forward() adds MEt3R's bilinear resize to the guidance size.
        resized = m(src, guid)
        assert resized.shape == (2, 16, 50, 70)
        torch.testing.assert_close(resized, F.interpolate(out, (50, 70), mode="bilinear", align_corners=False))
