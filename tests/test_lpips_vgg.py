"""LPIPS with the VGG-16 trunk (lpips' ``net='vgg'``): key and shape compatibility only (no golden exists; the
official MEt3R uses AlexNet). Checked: torchvision's ``vgg16`` ``features`` keys and lpips' module keys load
strictly, the classifier is dropped, the shipped v0.1 VGG linear layers have lpips' shapes, and the map
behaves as a distance (0 on identical inputs, symmetric, one map per pair)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from met3r_metrics.models.lpips import LPIPS, LPIPS_NETS, convert_lpips_state_dict, trunk_of
from met3r_metrics.weights import CHECKPOINTS
from met3r_metrics.weights.lpips import LPIPS_LINS_FILES, load_lpips

# torchvision vgg16().features: conv (weight, bias) at these indices, with (out, in) channels
_VGG_CONVS = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256), 14: (256, 256),
              17: (512, 256), 19: (512, 512), 21: (512, 512), 24: (512, 512), 26: (512, 512), 28: (512, 512)}


def _torchvision_vgg16_file() -> dict[str, torch.Tensor]:
    """A state dict laid out as torchvision's vgg16-397923af.pth (random values, small classifier stand-in)."""
    g = torch.Generator().manual_seed(0)
    sd: dict[str, torch.Tensor] = {}
    for i, (cout, cin) in _VGG_CONVS.items():
        sd[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2 / (9 * cin)) ** 0.5
        sd[f"features.{i}.bias"] = torch.randn(cout, generator=g) * 0.05
    sd["classifier.0.weight"] = torch.zeros(4, 4)  # dropped
    return sd


def test_shipped_vgg_lins_have_lpips_shapes() -> None:
    lins = load_file(str(LPIPS_LINS_FILES["vgg"]))
    channels, taps = LPIPS_NETS["vgg"]
    assert channels == (64, 128, 256, 512, 512) and taps == (3, 8, 15, 22, 29)
    assert {k: tuple(v.shape) for k, v in lins.items()} == {f"lin{k}.model.1.weight": (1, c, 1, 1)
                                                             for k, c in enumerate(channels)}
    assert all(bool((v >= 0).all()) for v in lins.values())  # lpips clamps its linear weights at 0 in training
    assert CHECKPOINTS["vgg16_torchvision"].url == "https://download.pytorch.org/models/vgg16-397923af.pth"


def test_torchvision_vgg16_keys_load_strictly() -> None:
    sd = _torchvision_vgg16_file()
    assert trunk_of(sd) == "vgg" and trunk_of({"features.10.weight": torch.zeros(1)}) == "alex"
    net = load_lpips(sd)
    assert net.net == "vgg" and len(net.trunk) == 30
    assert set(net.state_dict()) == {f"trunk.{i}.{p}" for i in _VGG_CONVS for p in ("weight", "bias")} | {
        f"lins.{k}.weight" for k in range(5)}
    assert torch.equal(net.trunk[28].weight, sd["features.28.weight"])
    assert torch.equal(net.lins[3].weight, load_file(str(LPIPS_LINS_FILES["vgg"]))["lin3.model.1.weight"])
    # lpips' own module keys (net.slice<k>.<i>.*, global indices) give the same network
    slices = lambda i: 1 + sum(i > t for t in (3, 8, 15, 22))  # noqa: E731
    lpips_keys = {f"net.slice{slices(int(k.split('.')[1]))}.{k.split('.', 1)[1]}": v
                  for k, v in sd.items() if k.startswith("features.")}
    other = load_lpips(lpips_keys)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))
    with pytest.raises(RuntimeError, match=r"LPIPS-vgg .*missing=2 \[features.28.weight, features.28.bias\]"):
        load_lpips({k: v for k, v in sd.items() if not k.startswith("features.28.")})
    assert set(convert_lpips_state_dict(sd)) == {k for k in LPIPS("vgg").state_dict() if k.startswith("trunk.")}


def test_vgg_map_is_a_per_pair_distance() -> None:
    net = load_lpips(_torchvision_vgg16_file())
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 3, 64, 48, generator=g) * 2 - 1, torch.rand(2, 3, 64, 48, generator=g) * 2 - 1
    with torch.no_grad():
        d = net(a, b)
        layers = net(a, b, per_layer=True)
        alone = net(a[1:], b[1:])
    assert d.shape == (2, 1, 64, 48) and layers.shape == (2, 5, 64, 48)
    assert torch.allclose(layers.sum(1, keepdim=True), d, atol=1e-6)
    assert net(a, a).abs().max().item() == 0.0 and d.min().item() > 0.0
    assert torch.allclose(net(b, a), d, atol=1e-6) and torch.allclose(alone, d[1:], atol=1e-6)
    with pytest.raises(ValueError, match=r"^net: expected one of \('alex', 'vgg'\), got 'squeeze'$"):
        LPIPS("squeeze")
