"""Input contract (as torchmetrics LPIPS) and settings resolution: errors name argument, expected and got."""

from __future__ import annotations

import json

import pytest
import torch

from met3r_metrics.inputs import validate_images
from met3r_metrics.settings import VARIANTS, make_pairs, resolve_settings


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


def test_device_mismatch() -> None:
    with pytest.raises(ValueError, match="images: expected a tensor on the metric's device meta, got a tensor on cpu"):
        validate_images(_imgs(1, 2, 3, 32, 32), device=torch.device("meta"))


def test_gradient_passes() -> None:
    x = _imgs(1, 2, 3, 32, 32, lo=0).requires_grad_(True)
    validate_images(x, normalize=True).sum().backward()
    assert torch.all(x.grad == 2)


# --- settings ----------------------------------------------------------------------------------


def test_variants() -> None:
    off, pap = resolve_settings("official"), resolve_settings("paper")
    assert off["backbone"] == "mast3r_512_catmlpdpt_metric" and not off["symmetric"]
    assert off["img_size"] == 256 and off["distance"] == "cosine" and off["upsampler"] == "featup"
    assert off["radius"] == 0.01 and off["points_per_pixel"] == 10 and off["pairing"] == "consecutive"
    assert pap["backbone"] == "dust3r_512_dpt" and pap["symmetric"]
    assert off["overrides"] == [] and pap["variant"] == "paper"
    json.dumps(off)


def test_overrides_and_aliases() -> None:
    s = resolve_settings("paper", backbone="mast3r", img_size=None, symmetric=False, radius=0.04)
    assert s["backbone"] == "mast3r_512_catmlpdpt_metric" and s["img_size"] is None
    assert s["overrides"] == ["backbone", "img_size", "radius", "symmetric"]
    assert resolve_settings(s) == s  # idempotent on resolved settings
    assert resolve_settings("official", img_size=(64, 96))["img_size"] == [64, 96]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"variant": "nope"}, "variant"),
        ({"distance": "lpips"}, "distance"),
        ({"upsampler": "cubic"}, "upsampler"),
        ({"pairing": "random"}, "pairing"),
        ({"img_size": 0}, "img_size"),
        ({"radius": -1.0}, "radius"),
        ({"points_per_pixel": 0}, "points_per_pixel"),
        ({"symmetric": 1}, "symmetric"),
        ({"feature_backbone": "dinov2"}, "feature_backbone"),
        ({"not_a_knob": 1}, "unknown MEt3R setting"),
    ],
)
def test_bad_settings(kwargs: dict, match: str) -> None:
    variant = kwargs.pop("variant", "official")
    with pytest.raises(ValueError, match=match):
        resolve_settings(variant, **kwargs)


def test_pairs() -> None:
    assert make_pairs(4, "consecutive") == [(0, 1), (1, 2), (2, 3)]
    assert make_pairs(4, "first") == [(0, 1), (0, 2), (0, 3)]
    assert make_pairs(4, "all") == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert make_pairs(2, "all") == [(0, 1)]
    with pytest.raises(ValueError, match="num_views"):
        make_pairs(1)


def test_variants_table_is_not_mutated() -> None:
    before = json.dumps(VARIANTS, sort_keys=True)
    resolve_settings("official", img_size=32)
    assert json.dumps(VARIANTS, sort_keys=True) == before
