"""Input contract (as torchmetrics LPIPS) and settings resolution: errors name argument, expected and got."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from met3r_metrics.inputs import validate_images as _validate
from met3r_metrics.settings import VARIANTS, Settings, make_pairs, resolve

RGB = Settings.official(distance="mse")  # patch-multiple sizes only (the DINO rule is tested below)


def validate_images(images, settings: Settings = RGB, **kwargs):
    return _validate(images, settings, **kwargs)


def _imgs(*shape: int, lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
    return torch.rand(*shape) * (hi - lo) + lo


def test_float_signed_passthrough() -> None:
    x = _imgs(2, 3, 3, 32, 48)
    y = validate_images(x)
    assert y.dtype == torch.float32 and torch.equal(y, x)


def test_normalize_maps_unit_range() -> None:
    x = _imgs(1, 2, 3, 32, 32, lo=0.0)
    torch.testing.assert_close(validate_images(x, normalize=True), x * 2 - 1)


def test_uint8_is_0_255() -> None:
    x = torch.tensor([0, 255], dtype=torch.uint8).repeat(1, 2, 3, 32, 16)
    y = validate_images(x, normalize=True)  # normalize does not matter for uint8
    assert y.min().item() == -1.0 and y.max().item() == 1.0


def test_half_precision_accepted() -> None:
    assert validate_images(_imgs(1, 2, 3, 32, 32).half()).dtype == torch.float32


@pytest.mark.parametrize(
    "shape, match",
    [
        ((2, 3, 32, 32), "5-d tensor"),
        ((1, 1, 3, 32, 32), "V >= 2"),
        ((1, 2, 4, 32, 32), "3 colour channels"),
        ((1, 2, 3, 40, 32), "H a multiple of 16"),
        ((1, 2, 3, 32, 24), "W a multiple of 16"),
        ((1, 2, 3, 16, 32), ">= 32"),
        ((0, 2, 3, 32, 32), "B >= 1"),
    ],
)
def test_bad_shapes(shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        validate_images(torch.zeros(shape))
    assert str(err.value).startswith("images: expected ") and ", got " in str(err.value)


def test_bad_values() -> None:
    x = _imgs(1, 2, 3, 32, 32)
    x[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="images: expected finite values, got NaN or inf"):
        validate_images(x)
    x[0, 0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="images: expected finite values, got NaN or inf"):
        validate_images(x)
    with pytest.raises(ValueError, match=r"values in \[-1, 1\].*got values in"):
        validate_images(_imgs(1, 2, 3, 32, 32, lo=0, hi=255))
    with pytest.raises(ValueError, match=r"values in \[0, 1\].*normalize=False"):
        validate_images(_imgs(1, 2, 3, 32, 32), normalize=True)
    with pytest.raises(ValueError, match="floating point or uint8"):
        validate_images(torch.zeros(1, 2, 3, 32, 32, dtype=torch.int32))
    with pytest.raises(ValueError, match="torch.Tensor"):
        validate_images([[0.0]])  # type: ignore[arg-type]


def test_tiny_overshoot_is_clamped() -> None:
    x = _imgs(1, 2, 3, 32, 32)
    x[0, 0, 0, 0, 0] = 1.00001
    assert validate_images(x).max().item() == 1.0


def test_device_mismatch_and_meta_tensors() -> None:
    with pytest.raises(ValueError, match="images: expected a tensor on the metric's device meta, got a tensor on cpu"):
        validate_images(_imgs(1, 2, 3, 32, 32), device=torch.device("meta"))
    with pytest.raises(ValueError, match="^images: expected a tensor with data, got a tensor on the meta device$"):
        validate_images(torch.zeros(1, 2, 3, 32, 32, device="meta"))


def test_dino_features_need_even_patch_rows() -> None:
    x = _imgs(1, 2, 3, 48, 64)
    assert validate_images(x).shape == x.shape  # RGB distance: 48 = 3 patch rows is fine
    for up in ("featup", "bilinear"):  # the featurizer, not the upsampler, needs it
        with pytest.raises(ValueError, match="images: expected H a multiple of 32"):
            _validate(x, Settings.official(upsampler=up))


def test_gradient_passes() -> None:
    x = _imgs(1, 2, 3, 32, 32, lo=0).requires_grad_(True)
    validate_images(x, normalize=True).sum().backward()
    assert torch.all(x.grad == 2)


# --- settings ----------------------------------------------------------------------------------


def test_variants() -> None:
    off, pap = Settings.official(), Settings.paper()
    assert off.backbone == "mast3r_512_catmlpdpt_metric" and not off.symmetric
    assert off.img_size == 256 and off.distance == "cosine" and off.upsampler == "featup"
    assert off.radius == 0.01 and off.points_per_pixel == 10 and off.pairing == "consecutive"
    assert pap.backbone == "dust3r_512_dpt" and pap.symmetric
    assert off.overrides == () and pap.variant == "paper" and pap.overrides == ()
    assert Settings() == off and VARIANTS["paper"]() == pap
    json.dumps(off.to_dict())


def test_overrides_aliases_and_round_trip() -> None:
    s = Settings.paper(backbone="mast3r", img_size=None, symmetric=False, radius=0.04)
    assert s.backbone == "mast3r_512_catmlpdpt_metric" and s.img_size is None
    assert s.overrides == ("backbone", "img_size", "symmetric", "radius")
    assert Settings.from_dict(json.loads(s.to_json())) == s  # JSON round trip, exactly
    assert Settings.official(img_size=[64, 96]).img_size == (64, 96)
    assert Settings.official(img_size=(64, 96)).to_dict()["img_size"] == [64, 96]
    assert resolve(s, radius=0.02) == s.replace(radius=0.02)
    assert resolve(None, base=s) is s and resolve(None) == Settings.official()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.radius = 1.0  # type: ignore[misc]
    assert hash(s) == hash(Settings.from_dict(s.to_dict()))  # usable as a cache key


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"variant": "nope"}, "variant: expected one of ['official', 'paper'], got 'nope'"),
        ({"distance": "vgg"}, "distance: expected one of ('cosine', 'mse', 'rmse', 'psnr', 'ssim', 'lpips'), got 'vgg'"),
        ({"rgb_formulas": "peak1"}, "rgb_formulas: expected one of ('official', 'standard'), got 'peak1'"),
        ({"lpips_weights": 3}, "lpips_weights: expected None, a registry name, a repo id or a local path (str / PathLike), got 3"),
        ({"upsampler": "cubic"}, "upsampler: expected one of ('featup', 'nearest', 'bilinear', 'bicubic'), got 'cubic'"),
        ({"pairing": "random"}, "pairing: expected one of ('consecutive', 'all', 'first'), got 'random'"),
        ({"img_size": 0}, "img_size: expected None, an int or a pair (h, w) of ints in [1, 8192], got 0"),
        ({"radius": -1.0}, "radius: expected a finite float in (0, 2], got -1.0"),
        ({"radius": float("inf")}, "radius: expected a finite float in (0, 2], got inf"),
        ({"cosine_eps": float("inf")}, "cosine_eps: expected a finite float in [0, 1], got inf"),
        ({"mask_eps": float("inf")}, "mask_eps: expected a finite float in [0, 1], got inf"),
        ({"points_per_pixel": 0}, "points_per_pixel: expected an int in [1, 150], got 0"),
        ({"points_per_pixel": 10**9}, "points_per_pixel: expected an int in [1, 150], got 1000000000"),
        ({"batch_size": 0}, "batch_size: expected an int in [1, 65536], got 0"),
        ({"batch_size": -3}, "batch_size: expected an int in [1, 65536], got -3"),
        ({"pair_gap": 0}, "pair_gap: expected an int in [1, 1000000], got 0"),
        ({"pairing": "all", "pair_gap": 2}, "pair_gap: expected 1 with pairing='all' (a gap applies to consecutive pairs), got 2"),
        ({"precision": "fp16"}, "precision: expected one of ('fp32', 'tf32', 'bf16'), got 'fp16'"),
        ({"symmetric": 1}, "symmetric: expected a bool, got 1"),
        ({"feature_backbone": "dinov2"}, "feature_backbone: expected one of ('dino16',), got 'dinov2'"),
    ],
)
def test_bad_settings_name_field_expected_and_got(kwargs: dict, message: str) -> None:
    variant = kwargs.pop("variant", "official")
    with pytest.raises(ValueError) as err:
        Settings.from_variant(variant, **kwargs)
    assert str(err.value) == message


def test_unknown_setting() -> None:
    with pytest.raises(ValueError, match=r"unknown MEt3R setting\(s\) \['not_a_knob'\]"):
        Settings.official(not_a_knob=1)


def test_pairs() -> None:
    assert make_pairs(4, "consecutive") == [(0, 1), (1, 2), (2, 3)]
    assert make_pairs(5, "consecutive", 2) == [(0, 2), (1, 3), (2, 4)]
    assert make_pairs(4, "first") == [(0, 1), (0, 2), (0, 3)]
    assert make_pairs(4, "all") == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert make_pairs(2, "all") == [(0, 1)] and make_pairs(1) == [] and make_pairs(2, "consecutive", 2) == []
    assert Settings.official(pair_gap=3).pairs(5) == [(0, 3), (1, 4)]
    with pytest.raises(ValueError, match="num_views"):
        make_pairs(-1)


def test_frame_size_rule_is_one_rule() -> None:
    """DINO features need H a multiple of 32 whatever the upsampler; the RGB distances only patch multiples."""
    for up in ("featup", "bilinear", "nearest", "bicubic"):
        s = Settings.official(upsampler=up)
        assert s.height_multiple == 32 and "H a multiple of 32" in s.frame_size_error(48, 64)
    rgb = Settings.official(distance="mse")
    assert rgb.height_multiple == 16 and rgb.frame_size_error(48, 64) is None
    assert rgb.frame_size_error(48, 40) is not None and rgb.frame_size_error(16, 64) is not None
