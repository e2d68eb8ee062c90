"""RAFT optical flow (Teed & Deng, ECCV 2020), the ``raft_large`` configuration, in plain torch.

Checkpoint-compatible with torchvision's ``raft_large`` state dict (``Raft_Large_Weights.C_T_SKHT_V2``, what
``raft_large(pretrained=True)`` loads and the official MEt3R's ``backbone="raft"`` calls): the module tree and
parameter names below are torchvision's, so its file loads with ``strict=True`` and no key mapping.

Forward ``(image1, image2)`` (N, 3, H, W) in [-1, 1] (what the official MEt3R passes; torchvision's weights
expect that range), H and W multiples of 8 and at least 128:

1. feature encoder (instance norm, no affine) on both images, context encoder (batch norm, eval
   statistics) on image 1; both downsample by 8 to 256 channels. The context splits into the GRU's
   initial hidden state (``tanh`` of the first 128 channels) and the context input (``relu`` of the rest);
2. all-pairs correlation ``<f1(p), f2(q)> / sqrt(256)`` between the 1/8 feature maps, average-pooled 3 times
   into a 4-level pyramid;
3. 12 updates: look up a 9 x 9 window (radius 4) of every level around the current target ``coords1``
   (bilinear, zeros outside, ``align_corners=True``), encode it with the current flow (motion encoder), run
   two separable ConvGRUs (1x5 then 5x1) on ``[context, motion]``, add the flow head's delta to ``coords1``;
4. after every update the 1/8 flow is upsampled x8 by the learned convex combination of its 3 x 3
   neighbourhood (mask head, softmax over the 9 weights, times 0.25 before the softmax).

Returns the list of the 12 upsampled flows (N, 2, H, W), channel 0 = x, channel 1 = y, in pixels: the flow
maps a pixel p of image 1 to p + flow(p) in image 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .frozen import FrozenMixin

__all__ = ["RAFT", "RAFT_MIN_SIDE", "checkpoint_filter_fn", "convert_raft_state_dict", "raft_large"]

#: The correlation pyramid pools the 1/8 feature maps 3 times and needs >= 2 values per side at the
#: coarsest level: 8 * 2 * 2**3 = 128 px (torchvision refuses smaller inputs the same way).
RAFT_MIN_SIDE = 128
_DOWNSAMPLE = 8
_LEVELS = 4
_RADIUS = 4
_HIDDEN = 128


class _ConvNormReLU(nn.Sequential):
    """conv (bias) -> norm -> ReLU, as torchvision's ``Conv2dNormActivation`` (keys ``0.*``, ``1.*``).

    ``norm``: ``"instance"`` (no parameters), ``"batch"`` or ``None``; ``relu=False`` drops the activation.
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, norm: str | None = None, relu: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2, bias=True)]
        if norm == "instance":
            layers.append(nn.InstanceNorm2d(cout))  # affine=False, no running stats: nothing in the state dict
        elif norm == "batch":
            layers.append(nn.BatchNorm2d(cout))
        if relu:
            layers.append(nn.ReLU())
        super().__init__(*layers)


class _ResidualBlock(nn.Module):
    """Two 3x3 conv-norm-relu with a skip (a strided 1x1 conv-norm when the block downsamples)."""

    def __init__(self, cin: int, cout: int, norm: str, stride: int) -> None:
        super().__init__()
        self.convnormrelu1 = _ConvNormReLU(cin, cout, 3, stride, norm)
        self.convnormrelu2 = _ConvNormReLU(cout, cout, 3, 1, norm)
        self.downsample = nn.Identity() if stride == 1 else _ConvNormReLU(cin, cout, 1, stride, norm, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        y = self.convnormrelu2(self.convnormrelu1(x))
        return F.relu(self.downsample(x) + y)


class _Encoder(nn.Module):
    """7x7/2 stem, three stages of 2 residual blocks (strides 1, 2, 2), 1x1 projection: (N, 3, H, W) ->
    (N, 256, H/8, W/8). ``norm``: instance (feature encoder) or batch (context encoder)."""

    def __init__(self, norm: str, layers: tuple[int, ...] = (64, 64, 96, 128, 256)) -> None:
        super().__init__()
        self.convnormrelu = _ConvNormReLU(3, layers[0], 7, 2, norm)
        for i, stride in enumerate((1, 2, 2), start=1):
            cin, cout = layers[i - 1], layers[i]
            setattr(self, f"layer{i}", nn.Sequential(_ResidualBlock(cin, cout, norm, stride),
                                                     _ResidualBlock(cout, cout, norm, 1)))
        self.conv = nn.Conv2d(layers[3], layers[4], 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.convnormrelu(x)
        return self.conv(self.layer3(self.layer2(self.layer1(x))))


class _MotionEncoder(nn.Module):
    """Correlation features (N, 324, h, w) + flow (N, 2, h, w) -> motion features (N, 128, h, w): 126
    learned channels with the raw flow appended."""

    def __init__(self, corr_channels: int) -> None:
        super().__init__()
        self.convcorr1 = _ConvNormReLU(corr_channels, 256, 1)
        self.convcorr2 = _ConvNormReLU(256, 192, 3)
        self.convflow1 = _ConvNormReLU(2, 128, 7)
        self.convflow2 = _ConvNormReLU(128, 64, 3)
        self.conv = _ConvNormReLU(192 + 64, 128 - 2, 3)

    def forward(self, flow: Tensor, corr: Tensor) -> Tensor:
        c = self.convcorr2(self.convcorr1(corr))
        f = self.convflow2(self.convflow1(flow))
        return torch.cat((self.conv(torch.cat((c, f), 1)), flow), 1)


class _ConvGRU(nn.Module):
    """Convolutional GRU cell: h' = (1 - z) h + z tanh(W_q [r h, x])."""

    def __init__(self, inputs: int, hidden: int, kernel: tuple[int, int], padding: tuple[int, int]) -> None:
        super().__init__()
        self.convz = nn.Conv2d(hidden + inputs, hidden, kernel, padding=padding)
        self.convr = nn.Conv2d(hidden + inputs, hidden, kernel, padding=padding)
        self.convq = nn.Conv2d(hidden + inputs, hidden, kernel, padding=padding)

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        hx = torch.cat((h, x), 1)
        z = torch.sigmoid(self.convz(hx))
        r = torch.sigmoid(self.convr(hx))
        q = torch.tanh(self.convq(torch.cat((r * h, x), 1)))
        return (1 - z) * h + z * q


class _RecurrentBlock(nn.Module):
    """Horizontal (1x5) then vertical (5x1) ConvGRU."""

    def __init__(self, inputs: int, hidden: int) -> None:
        super().__init__()
        self.convgru1 = _ConvGRU(inputs, hidden, (1, 5), (0, 2))
        self.convgru2 = _ConvGRU(inputs, hidden, (5, 1), (2, 0))

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        return self.convgru2(self.convgru1(h, x), x)


class _FlowHead(nn.Module):
    def __init__(self, cin: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, 2, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(F.relu(self.conv1(x)))


class _UpdateBlock(nn.Module):
    def __init__(self, corr_channels: int, context: int, hidden: int) -> None:
        super().__init__()
        self.motion_encoder = _MotionEncoder(corr_channels)
        self.recurrent_block = _RecurrentBlock(context + 128, hidden)
        self.flow_head = _FlowHead(hidden, 256)

    def forward(self, h: Tensor, context: Tensor, corr: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
        motion = self.motion_encoder(flow, corr)
        h = self.recurrent_block(h, torch.cat((context, motion), 1))
        return h, self.flow_head(h)


class _MaskPredictor(nn.Module):
    """Hidden state -> (N, 8*8*9, h, w) convex-upsampling logits, scaled by 0.25 (as trained)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.convrelu = _ConvNormReLU(hidden, 256, 3)
        self.conv = nn.Conv2d(256, _DOWNSAMPLE * _DOWNSAMPLE * 9, 1)

    def forward(self, h: Tensor) -> Tensor:
        return 0.25 * self.conv(self.convrelu(h))


def _coords_grid(n: int, h: int, w: int, device: torch.device) -> Tensor:
    """(n, 2, h, w) float32 pixel coordinates, channel 0 = x (column), 1 = y (row)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack((xs, ys)).float()[None].repeat(n, 1, 1, 1)


def _sample_pixels(img: Tensor, xy: Tensor) -> Tensor:
    """Bilinear sample of ``img`` (M, C, H, W) at absolute pixel coordinates ``xy`` (M, h, w, 2), zeros
    outside, ``align_corners=True`` (pixel centres at -1 and 1)."""
    h, w = img.shape[-2:]
    x, y = xy.split(1, dim=-1)
    x = 2 * x / (w - 1) - 1
    if h > 1:
        y = 2 * y / (h - 1) - 1
    return F.grid_sample(img, torch.cat((x, y), -1), mode="bilinear", align_corners=True)


class _CorrPyramid:
    """The all-pairs correlation volume of one image pair batch and its window lookup."""

    def __init__(self, fmap1: Tensor, fmap2: Tensor) -> None:
        n, c, h, w = fmap1.shape
        corr = torch.matmul(fmap1.view(n, c, h * w).transpose(1, 2), fmap2.view(n, c, h * w))
        # one (h, w) correlation image per pixel of image 1, pooled into the coarser levels
        corr = (corr / torch.sqrt(torch.tensor(c))).reshape(n * h * w, 1, h, w)
        self.levels = [corr]
        for _ in range(_LEVELS - 1):
            corr = F.avg_pool2d(corr, kernel_size=2, stride=2)
            self.levels.append(corr)
        side = torch.linspace(-_RADIUS, _RADIUS, 2 * _RADIUS + 1)
        # offsets (side, side, 2); as torchvision (and the original RAFT), the first window axis moves x:
        # the trained weights depend on this channel order
        self.delta = torch.stack(torch.meshgrid(side, side, indexing="ij"), -1).to(fmap1.device)[None]

    def lookup(self, coords: Tensor) -> Tensor:
        """coords (n, 2, h, w) in 1/8 pixels -> correlation features (n, 4 * 81, h, w)."""
        n, _, h, w = coords.shape
        centre = coords.permute(0, 2, 3, 1).reshape(n * h * w, 1, 1, 2)
        out = []
        for corr in self.levels:
            out.append(_sample_pixels(corr, centre + self.delta).view(n, h, w, -1))
            centre = centre / 2
        return torch.cat(out, -1).permute(0, 3, 1, 2).contiguous()


def _convex_upsample(flow: Tensor, mask: Tensor) -> Tensor:
    """(n, 2, h, w) flow at 1/8 + (n, 576, h, w) logits -> (n, 2, 8h, 8w): each fine pixel is a softmax-weighted
    combination of the 3 x 3 coarse neighbours of its cell (flow scaled to fine pixels)."""
    n, c, h, w = flow.shape
    f = _DOWNSAMPLE
    weights = torch.softmax(mask.view(n, 1, 9, f, f, h, w), dim=2)
    patches = F.unfold(f * flow, kernel_size=3, padding=1).view(n, c, 9, 1, 1, h, w)
    up = (weights * patches).sum(2)  # (n, c, f, f, h, w)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(n, c, f * h, f * w)


class RAFT(FrozenMixin, nn.Module):
    """torchvision's ``raft_large``: see the module docstring. Batch norm stays in eval mode once frozen.

    State dict: torchvision's keys exactly (``feature_encoder.*``, ``context_encoder.*``, ``update_block.*``,
    ``mask_predictor.*``; 169 tensors including batch norm's ``num_batches_tracked``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.feature_encoder = _Encoder("instance")
        self.context_encoder = _Encoder("batch")
        corr_channels = _LEVELS * (2 * _RADIUS + 1) ** 2
        self.update_block = _UpdateBlock(corr_channels, 256 - _HIDDEN, _HIDDEN)
        self.mask_predictor = _MaskPredictor(_HIDDEN)

    def forward(self, image1: Tensor, image2: Tensor, num_flow_updates: int = 12) -> list[Tensor]:
        """(N, 3, H, W) x 2 in [-1, 1] -> ``num_flow_updates`` flows (N, 2, H, W), the last is the estimate.

        Raises:
            ValueError: images of different shapes, sides below 128 or not multiples of 8.
        """
        check_raft_input(image1, image2)
        n, _, h, w = image1.shape
        fmap1, fmap2 = self.feature_encoder(torch.cat((image1, image2))).chunk(2)
        corr = _CorrPyramid(fmap1, fmap2)
        hidden, context = self.context_encoder(image1).split([_HIDDEN, 256 - _HIDDEN], dim=1)
        hidden, context = torch.tanh(hidden), F.relu(context)
        coords0 = _coords_grid(n, h // _DOWNSAMPLE, w // _DOWNSAMPLE, image1.device)
        coords1 = coords0.clone()
        flows = []
        for _ in range(num_flow_updates):
            coords1 = coords1.detach()  # RAFT: no gradient through the lookup position
            hidden, delta = self.update_block(hidden, context, corr.lookup(coords1), coords1 - coords0)
            coords1 = coords1 + delta
            flows.append(_convex_upsample(coords1 - coords0, self.mask_predictor(hidden)))
        return flows


def check_raft_input(image1: Tensor, image2: Tensor) -> None:
    """Refuse what RAFT cannot run on, naming the argument.

    Raises:
        ValueError: not (N, 3, H, W), different shapes, a side below :data:`RAFT_MIN_SIDE` or not a multiple of 8.
    """
    for name, img in (("image1", image1), ("image2", image2)):
        if img.dim() != 4 or img.shape[1] != 3:
            raise ValueError(f"{name}: expected a (N, 3, H, W) tensor, got shape {tuple(img.shape)}")
    if image1.shape != image2.shape:
        raise ValueError(f"image2: expected the shape of image1 {tuple(image1.shape)}, got {tuple(image2.shape)}")
    h, w = image1.shape[-2:]
    if min(h, w) < RAFT_MIN_SIDE or h % _DOWNSAMPLE or w % _DOWNSAMPLE:
        raise ValueError(
            f"image1: expected H and W multiples of {_DOWNSAMPLE} and >= {RAFT_MIN_SIDE} (RAFT's correlation "
            f"pyramid), got {h}x{w}"
        )


def raft_large() -> RAFT:
    """An uninitialised ``raft_large`` (load a state dict into it; see :func:`met3r_metrics.weights.load_raft`)."""
    return RAFT()


# --------------------------------------------------------------------------------------------------
# Checkpoint filter (torchvision keys, possibly prefixed -> ours)
# --------------------------------------------------------------------------------------------------

_ROOTS = ("feature_encoder.", "context_encoder.", "update_block.", "mask_predictor.")


def convert_raft_state_dict(raw: Mapping[str, Any], *, argument: str = "backbone_weights") -> dict[str, torch.Tensor]:
    """torchvision ``raft_large`` keys (possibly prefixed ``module.`` / ``model.``) -> :class:`RAFT` keys (the same).

    Raises:
        ValueError: no RAFT key in ``raw`` (e.g. a DUSt3R file passed as RAFT weights), naming ``argument``.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        k = str(key)
        for prefix in ("module.", "model."):
            if k.startswith(prefix) and k[len(prefix):].startswith(_ROOTS):
                k = k[len(prefix):]
        if isinstance(value, torch.Tensor):
            out[k] = value
    if not any(k.startswith(_ROOTS) for k in out):
        some = ", ".join(list(map(str, raw))[:3])
        raise ValueError(
            f"{argument}: expected torchvision raft_large weights (keys feature_encoder.*, update_block.*, ...), "
            f"got a checkpoint with keys {some} ..."
        )
    return out


#: timm's name for this network's checkpoint filter (what :func:`met3r_metrics.weights.build_frozen` applies).
checkpoint_filter_fn = convert_raft_state_dict
