"""LPIPS (Zhang et al., CVPR 2018) with the AlexNet (or VGG-16) trunk and v0.1 linear layers, spatial map, in plain torch.

What the official MEt3R builds (``LPIPS(spatial=True)``: ``net='alex'``, ``version='0.1'``):

1. inputs (N, 3, H, W) in [-1, 1] are standardised per channel, ``(x - shift) / scale`` with
   shift (-0.030, -0.088, -0.188) and scale (0.458, 0.448, 0.450);
2. the AlexNet ``features`` trunk (torchvision layout, indices 0..11) gives 5 activations, after the
   ReLUs at indices 1, 4, 7, 9, 11 (64, 192, 384, 256, 256 channels);
3. each activation is unit-normalised over channels (``x / (|x| + 1e-10)``), the two images' are
   subtracted and squared, weighted by a 1x1 convolution without bias (the "lin" layers) to one
   channel, and upsampled bilinearly (``align_corners=False``) to (H, W);
4. the map is the sum of the 5 layer maps: (N, 1, H, W). Lower is more similar.

``LPIPS("vgg")`` is lpips' ``net='vgg'`` (the LPIPS default elsewhere; the official MEt3R does not use it): the
torchvision VGG-16 ``features`` trunk (indices 0..29), compared after the ReLUs at 3, 8, 15, 22, 29 (relu1_2 ..
relu5_3: 64, 128, 256, 512, 512 channels), same standardisation, normalisation and linear layers (lpips'
``vgg.pth``). No golden output exists for it: only its keys and shapes are proven.

Checkpoint filter (:func:`convert_lpips_state_dict`): the trunk from torchvision's AlexNet file
(``features.<i>.*``, the classifier dropped), a bare ``features`` state dict (``<i>.*``) or the lpips
module's ``net.slice<k>.<i>.*``; the linear layers as in lpips' ``alex.pth`` (``lin<k>.model.1.weight``).
The same forms for VGG-16 (torchvision's ``vgg16-397923af.pth``); :func:`trunk_of` tells the two apart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LPIPS", "LPIPS_CHANNELS", "LPIPS_NETS", "checkpoint_filter_fn", "convert_lpips_state_dict", "to_official_key",
    "trunk_of",
]

#: Channels of the 5 AlexNet activations LPIPS compares.
LPIPS_CHANNELS = (64, 192, 384, 256, 256)
_TAPS = (1, 4, 7, 9, 11)  # trunk indices whose outputs (after ReLU) are compared
_VGG_CHANNELS = (64, 128, 256, 512, 512)
_VGG_TAPS = (3, 8, 15, 22, 29)
_VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
#: trunk name -> (channels of the 5 compared activations, their trunk indices).
LPIPS_NETS = {"alex": (LPIPS_CHANNELS, _TAPS), "vgg": (_VGG_CHANNELS, _VGG_TAPS)}
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_NORM_EPS = 1e-10


def _alexnet_features() -> nn.Sequential:
    """torchvision's ``AlexNet().features`` layout (same indices, so its weight keys load unchanged)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, stride=2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, stride=2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
    )


def _vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features[:30]`` layout (3x3 convs + ReLU, max pools; the last pool is unused)."""
    layers: list[nn.Module] = []
    cin = 3
    for v in _VGG_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, stride=2))
        else:
            layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU()]
            cin = int(v)
    return nn.Sequential(*layers)


class LPIPS(nn.Module):
    """LPIPS distance map of two image batches; see the module docstring.

    Args:
        net: ``"alex"`` (the official MEt3R's, default) or ``"vgg"``.

    State dict keys: ``trunk.<i>.{weight,bias}`` (torchvision ``features.<i>``) and ``lins.<k>.weight``
    (lpips ``lin<k>.model.1.weight``), shapes (1, C_k, 1, 1).
    """

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in LPIPS_NETS:
            raise ValueError(f"net: expected one of {tuple(LPIPS_NETS)}, got {net!r}")
        self.net = net
        channels, self._taps = LPIPS_NETS[net]
        self.trunk = _alexnet_features() if net == "alex" else _vgg16_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in channels)

    def activations(self, x: Tensor) -> list[Tensor]:
        """The 5 compared activations of ``x`` (N, 3, H, W) in [-1, 1]."""
        shift = torch.tensor(_SHIFT, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        scale = torch.tensor(_SCALE, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        h = (x - shift) / scale
        out = []
        for i, layer in enumerate(self.trunk):
            h = layer(h)
            if i in self._taps:
                out.append(h)
        return out

    def forward(self, x0: Tensor, x1: Tensor, *, per_layer: bool = False) -> Tensor:
        """LPIPS map of ``x0``, ``x1`` (N, 3, H, W) in [-1, 1].

        Returns:
            (N, 1, H, W), or with ``per_layer`` the 5 upsampled layer maps (N, 5, H, W) (their sum is the map).
        """
        if x0.shape != x1.shape or x0.dim() != 4 or x0.shape[1] != 3:
            raise ValueError(f"x0, x1: expected two (N, 3, H, W) tensors of one shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
        n = x0.shape[0]
        layers = []
        for act, lin in zip(self.activations(torch.cat((x0, x1))), self.lins):
            act = act / (act.pow(2).sum(1, keepdim=True).sqrt() + _NORM_EPS)
            d = lin((act[:n] - act[n:]) ** 2)
            layers.append(F.interpolate(d, size=x0.shape[-2:], mode="bilinear", align_corners=False))
        if per_layer:
            return torch.cat(layers, 1)
        total = layers[0]
        for layer in layers[1:]:
            total = total + layer
        return total


_TRUNK = re.compile(r"^(?:features\.|net\.slice[1-5]\.)?(\d+)\.(weight|bias)$")
_LIN = re.compile(r"^lin([0-4])\.model\.1\.weight$")


def convert_lpips_state_dict(state_dict: Mapping[str, Tensor], *, argument: str = "lpips_weights") -> dict[str, Tensor]:
    """Official keys -> :class:`LPIPS` keys (trunk and/or lins; the AlexNet classifier is dropped).

    Accepts torchvision's AlexNet file (``features.<i>.*``, ``classifier.*``), a bare trunk (``<i>.*``),
    lpips' module keys (``net.slice<k>.<i>.*``) and lpips' ``lin<k>.model.1.weight``.

    Raises:
        ValueError: a key of none of these forms (naming ``argument`` and the key).
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("classifier."):
            continue
        m = _TRUNK.match(key)
        if m:
            out[f"trunk.{m.group(1)}.{m.group(2)}"] = value
            continue
        m = _LIN.match(key)
        if m:
            out[f"lins.{m.group(1)}.weight"] = value
            continue
        raise ValueError(
            f"{argument}: expected torchvision AlexNet / VGG-16 keys ('features.<i>.weight'), lpips keys "
            f"('net.slice<k>.<i>.weight', 'lin<k>.model.1.weight'), got key {key!r}"
        )
    return out


#: timm's name for this network's checkpoint filter (what :func:`met3r_metrics.weights.build_frozen` applies).
checkpoint_filter_fn = convert_lpips_state_dict


def trunk_of(state_dict: Mapping[str, Tensor]) -> str:
    """``"vgg"`` if the (official or converted) keys hold a VGG-16 trunk, else ``"alex"``.

    The two torchvision layouts have their convolutions at different indices (AlexNet 0, 3, 6, 8, 10;
    VGG-16 0, 2, 5, 7, ..., 28), so index 2 or 28 means VGG.
    """
    for key in state_dict:
        m = _TRUNK.match(key) or re.match(r"^trunk\.(\d+)\.(weight|bias)$", key)
        if m and int(m.group(1)) in (2, 28):
            return "vgg"
    return "alex"


def to_official_key(key: str) -> str:
    """:class:`LPIPS` key -> its official name (torchvision ``features.<i>.*`` / lpips ``lin<k>.model.1.weight``)."""
    if key.startswith("trunk."):
        return "features." + key[len("trunk."):]
    m = re.match(r"^lins\.(\d)\.weight$", key)
    return f"lin{m.group(1)}.model.1.weight" if m else key
