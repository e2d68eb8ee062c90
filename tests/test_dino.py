"""DINO featurizer / FeatUp loading: strict key mapping, checkpoint formats, size errors, frozen state,
plain upsamplers and bfloat16 autocast."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
import torch.nn.functional as F
from conftest import golden_path
from safetensors.torch import load_file

from met3r_metrics.models.dino import DinoFeaturizer
from met3r_metrics.models.featup import (
    InterpolateUpsampler,
    JBUStack,
    UpsampledDino,
    build_upsampler,
    to_official_key,
)
from met3r_metrics.weights import load_dino_featurizer, load_featup_dino


@pytest.fixture(scope="module")
def official_d2() -> dict[str, torch.Tensor]:
    """Depth-2 state dict under the official FeatUp names (float16 storage, exact in float32)."""
    return {k: v.float() for k, v in load_file(str(golden_path("featup", "dino16_d2_weights.safetensors"))).items()}


@pytest.fixture(scope="module")
def image_32x48() -> torch.Tensor:
    return load_file(str(golden_path("featup", "dino16_d2_case_32x48.safetensors")))["image"]


@pytest.fixture(scope="module")
def reference(official_d2) -> UpsampledDino:
    return load_featup_dino(official_d2, depth=2)


# ----------------------------------------------------------------------------------------- strict keys


def test_full_size_state_dict_matches_official_key_list() -> None:
    spec = json.loads(golden_path("featup", "dino16_use_norm_state_dict_keys.json").read_text())
    with torch.device("meta"):
        model = UpsampledDino(DinoFeaturizer(depth=12, use_norm=True), JBUStack(384))
    ours = [(to_official_key(k), list(v.shape)) for k, v in model.state_dict().items()]
    official = [(e["key"], e["shape"]) for e in spec["keys"]]
    assert ours == official  # names, shapes and order
    assert len(ours) == spec["num_tensors"] == 194
    assert sum(v.numel() for v in model.state_dict().values()) == spec["num_elements"]


def _lightning_ckpt(official: dict[str, torch.Tensor], with_vit: bool = True) -> dict:
    sd = {k: v for k, v in official.items() if with_vit or not k.startswith("model.0.model.")}
    # Training-only parts FeatUp's hub loader drops.
    sd["downsampler.attention_net.1.weight"] = torch.zeros(1, 384)
    sd["downsampler.attention_net.1.bias"] = torch.zeros(1)
    sd["downsampler.w"] = torch.zeros(16, 16)
    sd["downsampler.b"] = torch.zeros(16, 16)
    sd["scale_net.net.weight"] = torch.zeros(1, 384, 1, 1)
    sd["scale_net.net.bias"] = torch.zeros(1)
    return {"epoch": 3, "global_step": 1000, "state_dict": sd, "optimizer_states": [], "lr_schedulers": []}


def test_lightning_ckpt_file_loads_strictly(tmp_path, official_d2, reference, image_32x48) -> None:
    path = tmp_path / "dino16_jbu_stack_cocostuff.ckpt"
    torch.save(_lightning_ckpt(official_d2), path)
    model = load_featup_dino(path, depth=None)  # depth read from the checkpoint
    assert len(model.featurizer.vit.blocks) == 2
    with torch.no_grad():
        torch.testing.assert_close(model(image_32x48), reference(image_32x48), atol=0, rtol=0)


def test_ckpt_without_vit_takes_dino_checkpoint(tmp_path, official_d2, reference, image_32x48) -> None:
    ckpt, dino = tmp_path / "jbu.ckpt", tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(_lightning_ckpt(official_d2, with_vit=False), ckpt)
    # dino_deitsmall16_pretrain.pth is a flat state dict of the plain ViT keys.
    prefix = "model.0.model."
    torch.save({k[len(prefix) :]: v for k, v in official_d2.items() if k.startswith(prefix)}, dino)
    model = load_featup_dino(ckpt, depth=2, dino_source=dino)
    with torch.no_grad():
        torch.testing.assert_close(model(image_32x48), reference(image_32x48), atol=0, rtol=0)
    # DINO-only featurizer from the same file: equals the FeatUp featurizer's pre-ChannelNorm tokens.
    feat = load_dino_featurizer(dino, depth=2)
    assert feat.channel_norm is None
    with torch.no_grad():
        ref = reference.featurizer
        torch.testing.assert_close(feat(image_32x48), ref.tokens(ref.normalize(image_32x48)), atol=0, rtol=0)


def test_strict_load_names_missing_and_unexpected_keys(official_d2) -> None:
    broken = dict(official_d2)
    del broken["upsampler.up3.range_temp"]
    broken["upsampler.extra.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match=r"upsampler\.up3\.range_temp.*upsampler\.extra\.weight"):
        load_featup_dino(broken, depth=2)
    # Depth-2 weights into a depth-1 model: the 12 tensors of block 1 are unexpected, reported by official name.
    with pytest.raises(RuntimeError, match=r"missing=0 .*unexpected=12 \[model\.0\.model\.blocks\.1\."):
        load_featup_dino(official_d2, depth=1)

def test_pickled_objects_are_stubbed_not_unpickled(tmp_path, official_d2) -> None:
    """weights_only=True refuses the foreign object; the restricted reader stubs it (never calling it) and
    warns. Tensors needing a foreign class still fail (tests/test_safe_load.py)."""
    from met3r_metrics.weights import CheckpointStubWarning

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": official_d2, "hyper_parameters": _Opaque()}, path)
    with pytest.warns(CheckpointStubWarning, match="_Opaque"):
        model = load_featup_dino(path, depth=2)
    assert model.state_dict().keys() == load_featup_dino(official_d2, depth=2).state_dict().keys()


class _Opaque:
    pass


class _ForeignTensor(torch.Tensor):
    pass


def test_refused_feature_checkpoint_names_argument_and_file(tmp_path, official_d2) -> None:
    """Weights needing a foreign class are refused in one line naming the metric's argument and the file,
    with no advice to switch weights_only off."""
    from met3r_metrics.networks import _load_features

    sd = dict(official_d2)
    sd["upsampler.up1.range_temp"] = sd["upsampler.up1.range_temp"].as_subclass(_ForeignTensor)
    path = tmp_path / "subclass.ckpt"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(pickle.UnpicklingError) as excinfo:
        _load_features("featup", str(path), torch.device("cpu"))
    msg = str(excinfo.value)
    assert msg.startswith(f"feature_weights: expected a checkpoint whose tensors need no foreign class, received {path}:")
    assert f"{__name__}._ForeignTensor" in msg and "\n" not in msg and "weights_only=False" not in msg


def test_offline_error_names_file_and_prefetch_command(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from met3r_metrics.weights import WeightsNotFoundError

    with pytest.raises(WeightsNotFoundError, match=r"jbu_stack_cocostuff\.ckpt.*met3r-download featup_dino16_jbu"):
        load_featup_dino()
    with pytest.raises(WeightsNotFoundError, match=r"no_norm.*met3r-download featup_dino16_jbu_no_norm"):
        load_featup_dino(use_norm=False, download=False)
    with pytest.raises(WeightsNotFoundError, match=r"dino_deitsmall16_pretrain\.pth.*met3r-download dino_vits16"):
        load_dino_featurizer()
    with pytest.raises(ValueError, match="source="):
        load_featup_dino("not_a_registry_name")


def test_registry_files_in_torch_hub_cache_load(tmp_path, monkeypatch, official_d2, reference, image_32x48) -> None:
    """Tiny official-layout files placed where a download lands (torch hub cache) load through the registry
    name, the default source and the official URL, offline; the ViT comes from the cached DINO .pth when the
    FeatUp file has none; the no_norm file (no ChannelNorm keys) loads with use_norm=False."""
    from met3r_metrics.weights import CHECKPOINTS

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpts = tmp_path / "hub" / "checkpoints"
    (ckpts / "no_norm").mkdir(parents=True)
    prefix = "model.0.model."
    torch.save(_lightning_ckpt(official_d2, with_vit=False), ckpts / "dino16_jbu_stack_cocostuff.ckpt")
    torch.save({k[len(prefix) :]: v for k, v in official_d2.items() if k.startswith(prefix)},
               ckpts / "dino_deitsmall16_pretrain.pth")
    no_norm = {k: v for k, v in official_d2.items() if not k.startswith("model.1.norm.")}
    torch.save(_lightning_ckpt(no_norm), ckpts / "no_norm" / "dino16_jbu_stack_cocostuff.ckpt")

    with torch.no_grad():
        expected = reference(image_32x48)
        for source in (None, "featup_dino16_jbu", CHECKPOINTS["featup_dino16_jbu"].url):
            model = load_featup_dino(source, depth=2)
            assert not model.training and not any(p.requires_grad for p in model.parameters())
            torch.testing.assert_close(model(image_32x48), expected, atol=0, rtol=0)
        plain = load_featup_dino(use_norm=False, depth=2)
        assert plain.featurizer.channel_norm is None
        ref = reference.featurizer
        torch.testing.assert_close(plain.featurizer(image_32x48), ref.tokens(ref.normalize(image_32x48)),
                                   atol=0, rtol=0)
        dino = load_dino_featurizer(depth=2)
        torch.testing.assert_close(dino(image_32x48), ref.tokens(ref.normalize(image_32x48)), atol=0, rtol=0)


def test_layer_norm_eps() -> None:
    """ViT LayerNorms eps 1e-6 (DINO), ChannelNorm eps 1e-5 (FeatUp); the float64 goldens also catch a swap."""
    feat = DinoFeaturizer(depth=2, use_norm=True)
    vit_norms = [m for m in feat.vit.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(vit_norms) == 2 * 2 + 1 and all(m.eps == 1e-6 for m in vit_norms)
    assert feat.channel_norm.eps == 1e-5


# ------------------------------------------------------------------------------------ sizes and state


@pytest.mark.parametrize(
    ("hw", "match"),
    [
        ((32, 40), r"width must be a multiple of 16, got width=40"),
        ((24, 32), r"height must be a multiple of 16, got height=24"),
        ((16, 32), r"height must be >= 32.*got height=16"),
        ((32, 16), r"width must be >= 32.*got width=16"),
        ((48, 64), r"height / 16 must be even.*got height=48"),
    ],
)
def test_rejects_sizes_the_official_code_rejects(reference, hw, match) -> None:
    with pytest.raises(ValueError, match=match):
        reference(torch.rand(1, 3, *hw))


def test_odd_patch_rows_opt_in() -> None:
    feat = DinoFeaturizer(depth=1, strict_sizes=False)
    assert feat(torch.rand(1, 3, 48, 64)).shape == (1, 384, 3, 4)


def test_jbu_rejects_too_small_lr_feats() -> None:
    with pytest.raises(ValueError, match=r"lr_feats height and width must be >= 2.*\(1, 3\)"):
        JBUStack(8)(torch.rand(1, 8, 1, 3), torch.rand(1, 3, 16, 48))


def test_frozen_and_eval_by_default(reference) -> None:
    for module in (reference, DinoFeaturizer(depth=1), JBUStack(8)):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
    up = JBUStack(8)
    up.train()  # a parent calling .train() must not switch the Dropout2d layers on
    assert not up.training and not up.up1.range_proj[2].training
    x, g = torch.rand(1, 8, 2, 2), torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(up(x, g), up(x, g), atol=0, rtol=0)
    assert JBUStack(8, frozen=False).train().training
    try:  # a loaded container keeps both frozen parts in eval whatever its parent does
        reference.train()
        assert not reference.featurizer.training and not reference.upsampler.up4.fixup_proj[2].training
    finally:
        reference.eval()


# ---------------------------------------------------------------------------------------- upsamplers


@pytest.mark.parametrize("name", ["nearest", "bilinear", "bicubic"])
def test_plain_upsamplers(name) -> None:
    up = build_upsampler(name)
    assert isinstance(up, InterpolateUpsampler) and list(up.parameters()) == []
    lr, guid = torch.randn(2, 384, 2, 3), torch.rand(2, 3, 32, 48)
    out = up(lr, guid)
    kwargs = {} if name == "nearest" else {"align_corners": False}
    torch.testing.assert_close(out, F.interpolate(lr, (32, 48), mode=name, **kwargs), atol=0, rtol=0)


def test_build_upsampler_names() -> None:
    assert isinstance(build_upsampler("featup"), JBUStack)
    assert isinstance(build_upsampler("JBU", dim=16), JBUStack)
    with pytest.raises(ValueError, match="name='lanczos'"):
        build_upsampler("lanczos")


# ------------------------------------------------------------------------------------------ bfloat16

# Measured on the golden depth-2 random weights, 32x48, CPU autocast bf16 vs float32 (torch 2.13):
# lr max abs 0.0209 (|lr| <= 4.3), hr max abs 0.0155 (|hr| <= 3.7), per-pixel 1 - cos(hr) <= 9.8e-6.
# 256x256: lr 0.034, hr 0.0164, 1 - cos <= 8.4e-6 (1 and 2 threads agree). Bounds below: 2-3x headroom.
BF16_BOUNDS = {"lr_abs": 0.05, "hr_abs": 0.035, "hr_one_minus_cos": 3e-5}


def test_bf16_autocast_within_measured_bound(reference, image_32x48) -> None:
    img = image_32x48[:1]
    with torch.no_grad():
        lr = reference.featurizer(img)
        hr = reference.upsampler(lr, img)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lr_b = reference.featurizer(img)
            hr_b = reference.upsampler(lr_b, img)
    assert hr_b.shape == hr.shape
    assert (lr_b.float() - lr).abs().max() <= BF16_BOUNDS["lr_abs"]
    assert (hr_b.float() - hr).abs().max() <= BF16_BOUNDS["hr_abs"]
    one_minus_cos = 1 - F.cosine_similarity(hr_b.float(), hr, dim=1)
    assert one_minus_cos.max() <= BF16_BOUNDS["hr_one_minus_cos"]
