"""DPT head of DUSt3R / MASt3R (the official ``DPTOutputAdapter_fix``), checkpoint-compatible.

Turns four token maps taken from the decoder list into a dense (B, num_channels, H, W) map. The official
widths are feature_dim 256, last_dim 128, layer_dims (96, 192, 384, 768); they are constructor parameters so
that the reduced-width golden configs can be built too. See ``spec/dust3r.md`` §9-§10.

Key-name note: the official module registers each ``scratch.layer{N}_rn`` conv a second time as
``scratch.layer_rn.{N-1}``; this module does the same, so ``state_dict()`` carries both names exactly like the
official one (filling a name a checkpoint lacks is the DUSt3R checkpoint filter,
:func:`met3r_metrics.models.dust3r.map_official_state_dict`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DPTHeadAdapter", "dpt_hooks"]

#: The head hard-codes 16-pixel patches, independently of the network's patch size (official behaviour).
DPT_PATCH = 16


def dpt_hooks(dec_depth: int) -> list[int]:
    """Indices into the decoder list [encoder output, block 1, ..., block L] that feed the DPT: [0, L/2, 3L/4, L]."""
    if dec_depth <= 9:
        raise ValueError(f"the DPT head needs dec_depth > 9 (official assertion), got dec_depth={dec_depth}")
    return [0, dec_depth * 2 // 4, dec_depth * 3 // 4, dec_depth]


class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x)))), 3x3 convs with bias, no BatchNorm."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Not in place: the skip must see the original x.
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FeatureFusionBlock(nn.Module):
    """a (+ RCU1(skip)) -> RCU2 -> bilinear x2 (align_corners=True) -> 1x1 out_conv.

    ``out_conv`` is registered first to reproduce the official key order.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """x (B,F,h,w), optional skip (B,F,h,w) -> (B,F,2h,2w)."""
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class _Scratch(nn.Module):
    """Container named like the official ``scratch``: layer{1..4}_rn (+ alias list layer_rn) and refinenet{1..4}."""

    def __init__(self, layer_dims: Sequence[int], feature_dim: int) -> None:
        super().__init__()
        convs = [nn.Conv2d(c, feature_dim, 3, padding=1, bias=False) for c in layer_dims]
        self.layer1_rn, self.layer2_rn, self.layer3_rn, self.layer4_rn = convs
        self.layer_rn = nn.ModuleList(convs)  # same modules again: the official alias names
        self.refinenet1 = FeatureFusionBlock(feature_dim)
        self.refinenet2 = FeatureFusionBlock(feature_dim)
        self.refinenet3 = FeatureFusionBlock(feature_dim)
        # refinenet4 only ever gets one input, so its resConfUnit1 exists (checkpoint keys) but is unused.
        self.refinenet4 = FeatureFusionBlock(feature_dim)


class DPTHeadAdapter(nn.Module):
    """Official ``DPTOutputAdapter_fix`` (regression head, no cls token, 16-px patches).

    Args:
        dim_tokens: channels of the four hooked token maps, [E, D, D, D].
        hooks: indices into the decoder list, see :func:`dpt_hooks`.
        num_channels: output channels (3 + has_conf).
        feature_dim, last_dim, layer_dims: widths (official 256, 128, (96, 192, 384, 768)).
    """

    def __init__(
        self,
        dim_tokens: Sequence[int],
        hooks: Sequence[int],
        num_channels: int = 4,
        feature_dim: int = 256,
        last_dim: int = 128,
        layer_dims: Sequence[int] = (96, 192, 384, 768),
    ) -> None:
        super().__init__()
        if len(dim_tokens) != 4 or len(hooks) != 4 or len(layer_dims) != 4:
            raise ValueError(
                "DPT head needs exactly 4 hooks, 4 token widths and 4 layer_dims, received "
                f"hooks={list(hooks)}, dim_tokens={list(dim_tokens)}, layer_dims={list(layer_dims)}"
            )
        self.hooks = list(hooks)
        self.scratch = _Scratch(layer_dims, feature_dim)
        self.head = nn.Sequential(
            nn.Conv2d(feature_dim, feature_dim // 2, 3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(feature_dim // 2, last_dim, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(last_dim, num_channels, 1),
        )
        d0, d1, d2, d3 = layer_dims
        # Reassemble: level 0 at 4x, level 1 at 2x, level 2 at 1x, level 3 at 1/2x (ceil) the token grid.
        self.act_postprocess = nn.ModuleList([
            nn.Sequential(nn.Conv2d(dim_tokens[0], d0, 1), nn.ConvTranspose2d(d0, d0, 4, stride=4)),
            nn.Sequential(nn.Conv2d(dim_tokens[1], d1, 1), nn.ConvTranspose2d(d1, d1, 2, stride=2)),
            nn.Sequential(nn.Conv2d(dim_tokens[2], d2, 1)),
            nn.Sequential(nn.Conv2d(dim_tokens[3], d3, 1), nn.Conv2d(d3, d3, 3, stride=2, padding=1)),
        ])

    def forward(self, decout: Sequence[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        """decout: list of (B, h*w, C_k) token maps; image_size (H, W) -> raw map (B, num_channels, H, W)."""
        H, W = image_size
        nh, nw = H // DPT_PATCH, W // DPT_PATCH
        layers = []
        for k, hook in enumerate(self.hooks):
            t = decout[hook]
            x = t.transpose(1, 2).reshape(t.shape[0], t.shape[2], nh, nw)  # row-major tokens -> (B,C,nh,nw)
            layers.append(self.scratch.layer_rn[k](self.act_postprocess[k](x)))
        s = self.scratch
        # The dust3r "fix": crop path4 back to level-2 size (odd token grids make ceil(n/2)*2 = n+1).
        path = s.refinenet4(layers[3])[:, :, : layers[2].shape[2], : layers[2].shape[3]]
        path = s.refinenet3(path, layers[2])
        path = s.refinenet2(path, layers[1])
        path = s.refinenet1(path, layers[0])
        return self.head(path)
