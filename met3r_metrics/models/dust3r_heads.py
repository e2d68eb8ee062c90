"""The output heads of DUSt3R / MASt3R and their post-processing (spec §11, §12), checkpoint-compatible.

Each head receives the decoder list ``[enc, blk_1, ..., dec_norm(blk_L)]`` and the image size and returns
channel-last outputs: ``pts3d`` (B,H,W,3), ``conf`` (B,H,W) [+ MASt3R ``desc`` (B,H,W,d), ``desc_conf``].
Attribute names are the official ones (``proj``, ``dpt``, ``head_local_features``), so the state dict keys match.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .croco import Mlp
from .dpt import DPTHeadAdapter

__all__ = ["CatMLPDPTPts3dDesc", "DPTPts3d", "LinearPts3d", "Mode", "TrueShape", "reg_dense_conf", "reg_dense_depth", "reg_desc"]

Mode = Sequence[Any]  # (name, vmin, vmax), e.g. ('exp', 1, inf)
TrueShape = tuple[int, int]


# ----------------------------------------------------------------------------------------------------------------
# Post-processing (spec §11, §12)
# ----------------------------------------------------------------------------------------------------------------


def reg_dense_depth(xyz: torch.Tensor, mode: Mode) -> torch.Tensor:
    """Map raw (...,3) outputs to points. 'exp': keep the direction, remap the norm d to expm1(d)."""
    name, vmin, vmax = mode
    if not (vmin == -math.inf and vmax == math.inf):
        raise ValueError(f"depth_mode bounds must be (-inf, inf) (official assertion), got {tuple(mode)!r}")
    if name == "linear":
        return xyz
    d = xyz.norm(dim=-1, keepdim=True)
    xyz = xyz / d.clamp(min=1e-8)
    if name == "square":
        return xyz * d.square()
    if name == "exp":
        return xyz * torch.expm1(d)  # expm1, not exp - 1: precise for small d
    raise ValueError(f"depth_mode: expected 'linear', 'square' or 'exp', received {name!r}")


def reg_dense_conf(x: torch.Tensor, mode: Mode) -> torch.Tensor:
    """Map a raw confidence channel. 'exp': vmin + min(exp(x), vmax - vmin); 'sigmoid': (vmax-vmin)*sigmoid + vmin."""
    name, vmin, vmax = mode
    if name == "exp":
        return vmin + x.exp().clamp(max=vmax - vmin)
    if name == "sigmoid":
        return (vmax - vmin) * torch.sigmoid(x) + vmin
    raise ValueError(f"conf_mode: expected 'exp' or 'sigmoid', received {name!r}")


def reg_desc(desc: torch.Tensor, mode: str) -> torch.Tensor:
    """MASt3R descriptors: L2-normalised over the last dim with no epsilon (official) when mode contains 'norm'."""
    if "norm" in mode:
        return desc / desc.norm(dim=-1, keepdim=True)
    raise ValueError(f"desc_mode: expected a mode containing 'norm' (official: 'norm'), received {mode!r}")


def _postprocess(
    out: torch.Tensor, depth_mode: Mode, conf_mode: Mode | None,
    desc_dim: int | None = None, desc_mode: str = "norm", two_confs: bool = False, desc_conf_mode: Mode | None = None,
) -> dict[str, torch.Tensor]:
    """Raw head map (B,C,H,W) -> dict of channel-last outputs."""
    fmap = out.permute(0, 2, 3, 1)
    res = {"pts3d": reg_dense_depth(fmap[..., 0:3], depth_mode)}
    if conf_mode is not None:
        res["conf"] = reg_dense_conf(fmap[..., 3], conf_mode)
    if desc_dim is not None:
        start = 3 + int(conf_mode is not None)
        res["desc"] = reg_desc(fmap[..., start : start + desc_dim], desc_mode)
        if two_confs:
            res["desc_conf"] = reg_dense_conf(fmap[..., start + desc_dim], desc_conf_mode or conf_mode)
        else:
            res["desc_conf"] = res["conf"].clone()
    return res


# ----------------------------------------------------------------------------------------------------------------
# Heads (each receives the decoder list [enc, blk_1, ..., dec_norm(blk_L)] and the image size)
# ----------------------------------------------------------------------------------------------------------------


class LinearPts3d(nn.Module):
    """``head_type='linear'``: Linear(D -> C*P*P) on the last token map, then pixel_shuffle(P)."""

    def __init__(self, dec_dim: int, patch_size: int, depth_mode: Mode, conf_mode: Mode | None) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.depth_mode, self.conf_mode = depth_mode, conf_mode
        self.proj = nn.Linear(dec_dim, (3 + int(bool(conf_mode))) * patch_size**2)

    def forward(
        self, decout: Sequence[torch.Tensor], image_size: TrueShape, descriptors: bool = True
    ) -> dict[str, torch.Tensor]:
        H, W = image_size
        tokens = decout[-1]
        B = tokens.shape[0]
        feat = self.proj(tokens).transpose(-1, -2).reshape(B, -1, H // self.patch_size, W // self.patch_size)
        return _postprocess(F.pixel_shuffle(feat, self.patch_size), self.depth_mode, self.conf_mode)


class DPTPts3d(nn.Module):
    """``head_type='dpt'``: the DPT adapter under the official attribute name ``dpt``."""

    def __init__(
        self, dim_tokens: Sequence[int], hooks: Sequence[int], depth_mode: Mode, conf_mode: Mode | None,
        **dpt_widths: Any,
    ) -> None:
        super().__init__()
        self.depth_mode, self.conf_mode = depth_mode, conf_mode
        self.dpt = DPTHeadAdapter(dim_tokens, hooks, num_channels=3 + int(bool(conf_mode)), **dpt_widths)

    def forward(
        self, decout: Sequence[torch.Tensor], image_size: TrueShape, descriptors: bool = True
    ) -> dict[str, torch.Tensor]:
        return _postprocess(self.dpt(decout, image_size), self.depth_mode, self.conf_mode)


class CatMLPDPTPts3dDesc(nn.Module):
    """MASt3R ``head_type='catmlp+dpt'``: DPT for pts3d/conf + an MLP on concat(enc, last dec) for descriptors.

    The MLP maps (B, S, E+D) -> (B, S, (desc_dim + two_confs) * P*P), pixel-shuffled to (B, desc_dim [+1], H, W).
    """

    def __init__(
        self, enc_dim: int, dec_dim: int, hooks: Sequence[int], patch_size: int, desc_dim: int,
        depth_mode: Mode, conf_mode: Mode | None, desc_mode: str, two_confs: bool, desc_conf_mode: Mode | None,
        **dpt_widths: Any,
    ) -> None:
        super().__init__()
        self.patch_size, self.desc_dim = patch_size, desc_dim
        self.depth_mode, self.conf_mode = depth_mode, conf_mode
        self.desc_mode, self.two_confs, self.desc_conf_mode = desc_mode, two_confs, desc_conf_mode
        self.dpt = DPTHeadAdapter(
            [enc_dim, dec_dim, dec_dim, dec_dim], hooks, num_channels=3 + int(bool(conf_mode)), **dpt_widths
        )
        idim = enc_dim + dec_dim
        self.head_local_features = Mlp(idim, int(4 * idim), (desc_dim + int(two_confs)) * patch_size**2)

    def forward(
        self, decout: Sequence[torch.Tensor], image_size: TrueShape, descriptors: bool = True
    ) -> dict[str, torch.Tensor]:
        """``descriptors=False`` skips the local-feature MLP (MEt3R uses only pts3d and conf)."""
        H, W = image_size
        raw = self.dpt(decout, image_size)  # no postprocess yet: the descriptors are appended first
        if not descriptors:
            return _postprocess(raw, self.depth_mode, self.conf_mode)
        cat = torch.cat([decout[0], decout[-1]], dim=-1)
        B = cat.shape[0]
        local = self.head_local_features(cat).transpose(-1, -2)
        local = F.pixel_shuffle(local.reshape(B, -1, H // self.patch_size, W // self.patch_size), self.patch_size)
        return _postprocess(
            torch.cat([raw, local], dim=1), self.depth_mode, self.conf_mode,
            desc_dim=self.desc_dim, desc_mode=self.desc_mode, two_confs=self.two_confs,
            desc_conf_mode=self.desc_conf_mode,
        )
