"""FeatUp's JBU upsampler stack (``jbu_stack``) in plain PyTorch, plain interpolation upsamplers, the
DINO + upsampler container of MEt3R's feature path (``dino16`` + JBU, FeatUp hub ``use_norm=True``) and
its checkpoint filter (official FeatUp keys -> ours).

Conventions (MEt3R's, which differ from FeatUp's own ``UpsampledBackbone.forward``):

* the featurizer gets the ImageNet-normalised image (``DinoFeaturizer`` normalises internally, it takes
  [0, 1] images);
* the JBU guidance is the **[0, 1]** image itself;
* after the stack, features are resized bilinearly to the guidance size (an identity for dino16,
  whose JBU output is already 16h x 16w = H x W).

State-dict names: ``JBUStack`` uses the official ``upsampler.*`` names (without the ``upsampler.``
prefix). :func:`convert_featup_state_dict` maps official keys as ``model.0.model.* -> featurizer.vit.*``,
``model.1.norm.* -> featurizer.channel_norm.*``, ``upsampler.* -> upsampler.*``.

Loading checkpoints (registry names, URLs, files) is :mod:`met3r_metrics.weights`' job
(:func:`met3r_metrics.weights.load_featup_dino`); this module never reads files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import kernels
from ..settings import UPSAMPLERS
from .adaptive_conv import adaptive_conv_taps
from .dino import DinoFeaturizer, convert_dino_state_dict, unwrap_state_dict
from .frozen import FrozenMixin, freeze

__all__ = [
    "JBULearnedRange",
    "JBUStack",
    "InterpolateUpsampler",
    "build_upsampler",
    "UpsampledDino",
    "checkpoint_filter_fn",
    "convert_featup_state_dict",
    "convert_dino_state_dict",
    "checkpoint_vit_depth",
    "to_official_key",
]


# --------------------------------------------------------------------------------------------------
# JBU
# --------------------------------------------------------------------------------------------------


class JBULearnedRange(nn.Module):
    """One x2 joint-bilateral upsampling step (FeatUp ``JBULearnedRange``, radius 3 -> 7x7 taps).

    Tap p = i*7 + j corresponds to offset (i - 3, j - 3). Parameter names are FeatUp's.
    """

    def __init__(self, guidance_dim: int = 3, key_dim: int = 32, radius: int = 3) -> None:
        super().__init__()
        self.radius = radius
        self.diameter = 2 * radius + 1
        taps = self.diameter**2
        # Attribute order = official state_dict order.
        self.range_temp = nn.Parameter(torch.tensor(0.0))  # log temperature of the range softmax
        self.sigma_spatial = nn.Parameter(torch.tensor(1.0))
        self.range_proj = nn.Sequential(
            nn.Conv2d(guidance_dim, key_dim, 1), nn.GELU(), nn.Dropout2d(0.1), nn.Conv2d(key_dim, key_dim, 1)
        )
        # Input channels: the 49 kernel taps first, then the guidance (FeatUp concatenates in this order).
        self.fixup_proj = nn.Sequential(
            nn.Conv2d(taps + guidance_dim, taps, 1), nn.GELU(), nn.Dropout2d(0.1), nn.Conv2d(taps, taps, 1)
        )

    def spatial_kernel(self) -> Tensor:
        """(49,) Gaussian over offsets in radius units (linspace(-1, 1, 7)), sigma squared."""
        # FeatUp builds the offsets in float32 (default dtype); keep that rounding (it shows in float64),
        # then cast to the parameter dtype (FeatUp's promotion to float32 breaks .half()).
        d = torch.linspace(-1, 1, self.diameter, dtype=torch.float32, device=self.sigma_spatial.device)
        d = d.to(self.sigma_spatial.dtype)
        d2 = (d[:, None] ** 2 + d[None, :] ** 2).reshape(-1)
        return torch.exp(-d2 / (2 * self.sigma_spatial**2))

    def range_kernel(self, guidance: Tensor) -> Tensor:
        """(B, 49, GH, GW) softmax over taps of tau * <proj(g) neighbour, proj(g) centre>.

        Computed tap by tap on shifted slices of the reflect-padded projection, so the (B, 32*49, GH, GW)
        unfold tensor of the official code is never built.

        Path: the 49 logits come from a fused Triton kernel (one read of the projection, float32
        accumulation) when :func:`met3r_metrics.kernels.should_use` holds (CUDA, triton importable, no
        autograd needed, ``MET3R_DISABLE_TRITON`` != "1", switch on), the projection is float32/16/bf16 and
        has <= 64 channels; otherwise the exact PyTorch loop. Temperature and softmax are torch in both.
        """
        proj = self.range_proj(guidance)
        gh, gw = proj.shape[-2:]
        r, k = self.radius, self.diameter
        padded = F.pad(proj, (r, r, r, r), mode="reflect")
        if proj.is_cuda and _use_triton_range(padded, proj):
            logits = kernels.triton_module("adaptive_conv_triton").range_logits_triton(padded, proj, k)
        else:
            logits = torch.stack(
                [(padded[:, :, i : i + gh, j : j + gw] * proj).sum(1) for i in range(k) for j in range(k)], dim=1
            )
        temp = torch.exp(self.range_temp).clamp(min=1e-4, max=1e4)
        return torch.softmax(logits * temp, dim=1)

    def kernel(self, guidance: Tensor) -> Tensor:
        """Final per-pixel kernel (B, 49, GH, GW), tap-major (after the fixup; not renormalised)."""
        k = self.range_kernel(guidance) * self.spatial_kernel().view(1, -1, 1, 1)
        k = k / k.sum(1, keepdim=True).clamp(min=1e-7)
        return k + 0.1 * self.fixup_proj(torch.cat([k, guidance.to(k.dtype)], dim=1))

    def forward(self, source: Tensor, guidance: Tensor) -> Tensor:
        """source (B, C, h, w), guidance (B, 3, GH, GW) -> (B, C, GH, GW).

        Path of the bicubic upsampling + reflect padding: a fused Triton kernel writing the padded
        (B, C, GH + 6, GW + 6) tensor directly (same arithmetic as CUDA ``upsample_bicubic2d``; FMA
        contraction may change last bits) when :func:`met3r_metrics.kernels.should_use` holds (CUDA,
        triton importable, no autograd needed, ``MET3R_DISABLE_TRITON`` != "1", switch on), the source is
        float32 and the step is exactly x2 (GH == 2h, GW == 2w); otherwise the exact
        ``F.interpolate(bicubic)`` + ``F.pad(reflect)``.
        """
        gh, gw = guidance.shape[-2:]
        kernel = self.kernel(guidance)
        if source.is_cuda and _use_triton_bicubic(source, gh, gw, self.radius):
            hr = kernels.triton_module("bicubic_triton").bicubic2x_reflect_pad(source, self.radius)
        else:
            hr = F.interpolate(source, (gh, gw), mode="bicubic", align_corners=False)
            hr = F.pad(hr, (self.radius,) * 4, mode="reflect")
        return adaptive_conv_taps(hr, kernel, self.diameter)


def _use_triton_bicubic(source: Tensor, gh: int, gw: int, pad: int) -> bool:
    if source.dim() != 4 or source.dtype != torch.float32:
        return False
    h, w = source.shape[-2:]
    exact2x = gh == 2 * h and gw == 2 * w and 0 <= pad < min(gh, gw)
    return exact2x and kernels.should_use(source)


def _use_triton_range(padded: Tensor, proj: Tensor) -> bool:
    ok = (torch.float32, torch.float16, torch.bfloat16)
    return proj.dtype in ok and padded.dtype in ok and proj.shape[1] <= 64 and kernels.should_use(padded, proj)


def _check_pair(lr_feats: Tensor, guidance: Tensor, who: str) -> None:
    if lr_feats.dim() != 4:
        raise ValueError(f"{who}: lr_feats must be (B, C, h, w), got shape {tuple(lr_feats.shape)}")
    if guidance.dim() != 4:
        raise ValueError(f"{who}: guidance must be (B, 3, H, W), got shape {tuple(guidance.shape)}")
    if guidance.shape[0] != lr_feats.shape[0]:
        raise ValueError(
            f"{who}: guidance batch size must equal lr_feats batch size {lr_feats.shape[0]}, got {guidance.shape[0]}"
        )


class JBUStack(FrozenMixin, nn.Module):
    """FeatUp's ``JBUStack``: 4 x2 JBU steps guided by the image, then ``s + 0.1 * conv1x1(s)``.

    Args:
        dim: feature channels (384 for dino16).
        frozen: eval mode, ``requires_grad=False``, ``.train()`` ignored (the stack has Dropout2d layers).

    ``forward(lr_feats, guidance)``: lr_feats (B, C, h, w) with h, w >= 2; guidance (B, 3, H, W) in
    [0, 1] (MEt3R's convention) -> (B, C, H, W). Each step pools the *original* guidance with
    ``adaptive_avg_pool2d`` to twice the current size; the stack output is 16h x 16w and is then
    resized bilinearly to (H, W) as MEt3R does (skipped when the sizes already agree, where it is an
    identity). :meth:`upsample` returns the raw 16h x 16w stack output.
    """

    def __init__(self, dim: int = 384, *, frozen: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.up1 = JBULearnedRange()
        self.up2 = JBULearnedRange()
        self.up3 = JBULearnedRange()
        self.up4 = JBULearnedRange()
        self.fixup_proj = nn.Sequential(nn.Dropout2d(0.2), nn.Conv2d(dim, dim, 1))
        if frozen:
            freeze(self)

    def upsample(self, lr_feats: Tensor, guidance: Tensor) -> Tensor:
        """Raw stack output (B, C, 16h, 16w), whatever the guidance size (as FeatUp)."""
        _check_pair(lr_feats, guidance, "JBUStack")
        h, w = lr_feats.shape[-2:]
        if h < 2 or w < 2:
            raise ValueError(
                "JBUStack: lr_feats height and width must be >= 2 (the first step reflect-pads a 2h x 2w map "
                f"by 3), got (h, w)=({h}, {w})"
            )
        x = lr_feats
        for up in (self.up1, self.up2, self.up3, self.up4):
            g = F.adaptive_avg_pool2d(guidance, (2 * x.shape[-2], 2 * x.shape[-1]))
            x = up(x, g)
        return x + 0.1 * self.fixup_proj(x)

    def forward(self, lr_feats: Tensor, guidance: Tensor) -> Tensor:
        out = self.upsample(lr_feats, guidance)
        size = tuple(guidance.shape[-2:])
        if tuple(out.shape[-2:]) != size:
            out = F.interpolate(out, size, mode="bilinear", align_corners=False)
        return out


class InterpolateUpsampler(nn.Module):
    """Guidance-free upsampler: ``F.interpolate(lr_feats, guidance.shape[-2:], mode)`` (MEt3R's
    ``nearest`` / ``bilinear`` / ``bicubic`` options; align_corners=False). No parameters."""

    def __init__(self, mode: str, dim: int = 384) -> None:
        super().__init__()
        if mode not in ("nearest", "bilinear", "bicubic"):
            raise ValueError(f"InterpolateUpsampler: mode must be nearest, bilinear or bicubic, got mode={mode!r}")
        self.mode = mode
        self.dim = dim
        self.eval()

    def forward(self, lr_feats: Tensor, guidance: Tensor) -> Tensor:
        _check_pair(lr_feats, guidance, "InterpolateUpsampler")
        kwargs = {} if self.mode == "nearest" else {"align_corners": False}
        return F.interpolate(lr_feats, tuple(guidance.shape[-2:]), mode=self.mode, **kwargs)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


def build_upsampler(name: str, dim: int = 384) -> nn.Module:
    """``"featup"``/``"jbu"`` -> :class:`JBUStack` (random init; trained weights come with
    :func:`met3r_metrics.weights.load_featup_dino`); ``"nearest"``/``"bilinear"``/``"bicubic"`` -> :class:`InterpolateUpsampler`.
    All have ``forward(lr_feats (B, C, h, w), guidance (B, 3, H, W)) -> (B, C, H, W)``."""
    key = name.lower()
    if key in ("featup", "jbu", "jbu_stack"):
        return JBUStack(dim)
    if key in ("nearest", "bilinear", "bicubic"):
        return InterpolateUpsampler(key, dim)
    raise ValueError(f"build_upsampler: name must be one of {', '.join(UPSAMPLERS)} (or jbu), got name={name!r}")


# --------------------------------------------------------------------------------------------------
# Container
# --------------------------------------------------------------------------------------------------


class UpsampledDino(nn.Module):
    """``featurizer`` (DINO ViT-S/16 [+ ChannelNorm]) and ``upsampler`` (JBU stack or interpolation).

    ``forward(images01 (B, 3, H, W) in [0, 1]) -> hr_feats (B, 384, H, W)`` computes MEt3R's
    ``upsampler(featurizer(norm(x01)), x01)``.
    """

    def __init__(self, featurizer: DinoFeaturizer, upsampler: nn.Module) -> None:
        super().__init__()
        self.featurizer = featurizer
        self.upsampler = upsampler

    def forward(self, images01: Tensor) -> Tensor:
        return self.upsampler(self.featurizer(images01), images01)


# --------------------------------------------------------------------------------------------------
# Checkpoint filter (official FeatUp keys -> ours)
# --------------------------------------------------------------------------------------------------

_DROPPED = ("scale_net", "downsampler")  # training-only parts of FeatUp's JBUFeatUp Lightning module
_VIT_PREFIXES = ("model.0.model.", "model.model.")  # use_norm=True names, hub no_norm names


def convert_featup_state_dict(sd: Mapping[str, Any]) -> dict[str, Tensor]:
    """FeatUp checkpoint (``{,no_norm/}dino16_jbu_stack_cocostuff.ckpt`` or the same keys flat) ->
    :class:`UpsampledDino` names.

    Unwraps ``state_dict`` nesting, drops ``scale_net*``/``downsampler*`` keys, maps
    ``model.0.model.`` (or ``model.model.``) -> ``featurizer.vit.``, ``model.1.norm.`` ->
    ``featurizer.channel_norm.``; ``upsampler.*`` stays. Keys already in our naming pass through.
    Any other key is kept as is, so a strict load reports it.
    """
    out: dict[str, Tensor] = {}
    for k, v in unwrap_state_dict(sd).items():
        if any(d in k for d in _DROPPED):
            continue
        for pre in _VIT_PREFIXES:
            if k.startswith(pre):
                k = "featurizer.vit." + k[len(pre) :]
                break
        else:
            if k.startswith("model.1.norm."):
                k = "featurizer.channel_norm." + k[len("model.1.norm.") :]
        out[k] = v
    return out


#: timm's name for this network's checkpoint filter (what :func:`met3r_metrics.weights.build_frozen` applies).
checkpoint_filter_fn = convert_featup_state_dict


def to_official_key(key: str) -> str:
    """Inverse of the :class:`UpsampledDino` key mapping (our name -> FeatUp ``use_norm=True`` name)."""
    if key.startswith("featurizer.vit."):
        return "model.0.model." + key[len("featurizer.vit.") :]
    if key.startswith("featurizer.channel_norm."):
        return "model.1.norm." + key[len("featurizer.channel_norm.") :]
    return key


def checkpoint_vit_depth(sd: Mapping[str, Tensor]) -> int:
    """Number of ViT blocks in a converted state dict (``featurizer.vit.blocks.N.*``)."""
    ids = {int(k.split(".")[3]) for k in sd if k.startswith("featurizer.vit.blocks.")}
    if not ids:
        raise ValueError(
            "depth: expected an int, or None with a checkpoint holding ViT blocks (featurizer.vit.blocks.N.*), "
            "got depth=None and a checkpoint without any"
        )
    return max(ids) + 1

