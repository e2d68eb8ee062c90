"""DINO ViT-S/16 featurizer exactly as FeatUp's ``dino16`` builds it (checkpoint-compatible).

``DinoFeaturizer(images01)`` takes images in **[0, 1]** and applies the ImageNet normalisation itself,
then runs the ViT and returns the patch tokens (CLS dropped) of the last block after the final
LayerNorm, as a (B, 384, H/16, W/16) map, followed by FeatUp's ``ChannelNorm`` when ``use_norm=True``.

The ViT is built from CroCo's blocks (:mod:`met3r_metrics.models.croco`) without RoPE: same parameter
names, LayerNorm eps 1e-6, exact-erf GELU and scaled-dot-product attention as DINO's own blocks.

Parameter names follow the official DINO checkpoint under ``vit.`` (``vit.cls_token``,
``vit.blocks.0.attn.qkv.weight``, ...) and ``channel_norm.{weight,bias}`` for FeatUp's
``model.1.norm.*``. :func:`convert_dino_state_dict` maps the official DINO file; the FeatUp mapping is
beside the JBU in :mod:`met3r_metrics.models.featup`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .croco import Block, PatchEmbed, layer_norm
from .frozen import FrozenMixin, freeze

__all__ = [
    "DinoFeaturizer",
    "VisionTransformer",
    "ChannelNorm",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "checkpoint_filter_fn",
    "convert_dino_state_dict",
    "unwrap_state_dict",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VisionTransformer(nn.Module):
    """DINO's ViT (no head). Defaults: ViT-S/16, trained at 224 (14x14 position grid + CLS).

    State-dict keys equal the official ``dino_deitsmall16_pretrain.pth`` keys (150 at depth 12).
    """

    def __init__(
        self,
        patch_size: int = 16,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        pretrain_grid: int = 14,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.pretrain_grid = pretrain_grid
        # Attribute order = official state_dict order.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pretrain_grid * pretrain_grid, embed_dim))
        self.patch_embed = PatchEmbed(embed_dim, patch_size, 3)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = layer_norm(embed_dim)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def interpolate_pos_encoding(self, h: int, w: int) -> Tensor:
        """Position embedding for an h x w patch grid, (1, 1 + h*w, D), CLS entry first.

        FeatUp/DINO rule: the stored table is used as is only when the grid equals the pretraining grid
        *and* the image is square (i.e. exactly 224x224); otherwise the grid is resized bicubically with
        ``scale_factor=((h + 0.1)/14, (w + 0.1)/14)``. Passing a scale factor (not a size) matters:
        PyTorch then maps output pixel d to source (d + 0.5) * 14/(k + 0.1) - 0.5, not 14/k.
        """
        g = self.pretrain_grid
        if h * w == g * g and h == w:
            return self.pos_embed
        cls_pos, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        grid = grid.reshape(1, g, g, self.embed_dim).permute(0, 3, 1, 2)
        grid = F.interpolate(
            grid, scale_factor=((h + 0.1) / g, (w + 0.1) / g), mode="bicubic", align_corners=False
        )
        if grid.shape[-2:] != (h, w):  # cannot happen for positive h, w; guards a future PyTorch change
            raise RuntimeError(f"pos-embed interpolation gave {tuple(grid.shape[-2:])}, expected {(h, w)}")
        grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, self.embed_dim)
        return torch.cat((cls_pos, grid), dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 3, H, W) normalised, H and W multiples of the patch size -> (B, 1 + h*w, D) after ``norm``."""
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens, _ = self.patch_embed(x)  # (row, col) grid unused: DINO has absolute position embeddings
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        tokens = tokens + self.interpolate_pos_encoding(h, w)
        for blk in self.blocks:
            tokens = blk(tokens, None)  # no RoPE
        return self.norm(tokens)


class ChannelNorm(nn.LayerNorm):
    """FeatUp's ``ChannelNorm``: LayerNorm over the channel axis of a (B, C, h, w) map, eps 1e-5 (default)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__(dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class DinoFeaturizer(FrozenMixin, nn.Module):
    """FeatUp's ``dino16`` featurizer (+ ``ChannelNorm`` when ``use_norm``), taking **[0, 1]** images.

    Args:
        depth: number of ViT blocks (12 for the released ViT-S/16; smaller only for tests).
        use_norm: apply FeatUp's ChannelNorm (LayerNorm over channels, eps 1e-5) to the tokens, as
            ``dino16`` with ``use_norm=True`` (MEt3R's setting) does.
        patch_size, embed_dim, num_heads: ViT-S/16 defaults; the checkpoint fixes them.
        strict_sizes: reproduce the official size limits (default). FeatUp's patch embedding crops the
            last patch row and column when H/16 is odd, after which the official code crashes; with
            ``strict_sizes=True`` such inputs raise a ``ValueError``. With ``False`` odd patch-row
            counts run the plain DINO ViT on the full grid (no crop) -- there is no official reference
            for those sizes.
        frozen: eval mode and ``requires_grad=False``; ``.train()`` is then ignored (stays in eval),
            so a parent module switching to training never changes the features.

    Input: ``images01`` (B, 3, H, W) in [0, 1]; H, W multiples of 16, both >= 32.
    Output: (B, embed_dim, H/16, W/16).
    """

    def __init__(
        self,
        depth: int = 12,
        use_norm: bool = True,
        *,
        patch_size: int = 16,
        embed_dim: int = 384,
        num_heads: int = 6,
        strict_sizes: bool = True,
        frozen: bool = True,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.use_norm = use_norm
        self.strict_sizes = strict_sizes
        self.vit = VisionTransformer(patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads)
        self.channel_norm = ChannelNorm(embed_dim) if use_norm else None
        # Normalisation constants are made per (dtype, device) from the Python floats, not kept as float32
        # buffers: float32-rounded constants cast to float64 shift float64 features by ~2e-7.
        self._norm_consts: dict[tuple[torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}
        if frozen:
            freeze(self)

    @property
    def dim(self) -> int:
        return self.embed_dim

    def check_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` for image sizes the official dino16 path rejects or crashes on."""
        p = self.patch_size
        for name, v in (("height", height), ("width", width)):
            if v % p != 0:
                raise ValueError(f"DinoFeaturizer: image {name} must be a multiple of {p}, got {name}={v}")
            if v < 2 * p:
                raise ValueError(
                    f"DinoFeaturizer: image {name} must be >= {2 * p} (at least 2 patches: the official JBU "
                    f"reflect-pads its first 2x-upsampled map by 3), got {name}={v}"
                )
        if self.strict_sizes and (height // p) % 2 == 1:
            raise ValueError(
                f"DinoFeaturizer: image height / {p} must be even (FeatUp crops the last patch row and column "
                f"when the patch-grid height is odd and then crashes, so no reference exists), got height={height} "
                f"({height // p} patch rows); pass strict_sizes=False to run the plain ViT on the full grid"
            )

    def normalize(self, images01: Tensor) -> Tensor:
        """ImageNet normalisation (x - mean_c) / std_c, as torchvision ``Normalize``."""
        key = (images01.dtype, images01.device)
        if key not in self._norm_consts:
            mk = {"dtype": images01.dtype, "device": images01.device}
            self._norm_consts[key] = (
                torch.tensor(IMAGENET_MEAN, **mk).view(1, 3, 1, 1),
                torch.tensor(IMAGENET_STD, **mk).view(1, 3, 1, 1),
            )
        mean, std = self._norm_consts[key]
        return (images01 - mean) / std

    def tokens(self, images_normalized: Tensor) -> Tensor:
        """FeatUp's 'token' output on an already normalised image: (B, D, H/16, W/16), before ChannelNorm."""
        if images_normalized.dim() != 4 or images_normalized.shape[1] != 3:
            raise ValueError(f"DinoFeaturizer: images must be (B, 3, H, W), got shape {tuple(images_normalized.shape)}")
        height, width = images_normalized.shape[-2:]
        self.check_size(height, width)
        h, w = height // self.patch_size, width // self.patch_size
        out = self.vit(images_normalized)[:, 1:]  # drop CLS
        return out.reshape(out.shape[0], h, w, self.embed_dim).permute(0, 3, 1, 2)

    def forward(self, images01: Tensor) -> Tensor:
        """images01: (B, 3, H, W) in [0, 1] -> low-res features (B, D, H/16, W/16)."""
        feats = self.tokens(self.normalize(images01))
        if self.channel_norm is not None:
            feats = self.channel_norm(feats)
        return feats


# --------------------------------------------------------------------------------------------------
# Checkpoint filter (official DINO keys -> ours)
# --------------------------------------------------------------------------------------------------


def unwrap_state_dict(sd: Mapping[str, object]) -> dict[str, Tensor]:
    """Lightning nesting ``{"state_dict": {...}, "epoch": ..., ...}`` -> flat dict of its tensors."""
    inner = sd.get("state_dict")
    if isinstance(inner, Mapping):
        sd = inner
    return {k: v for k, v in sd.items() if isinstance(v, Tensor)}


def convert_dino_state_dict(sd: Mapping[str, object]) -> dict[str, Tensor]:
    """Official DINO ViT-S/16 checkpoint (``dino_deitsmall16_pretrain.pth``: 150 plain ViT keys) ->
    ``featurizer.vit.*`` names (:class:`~met3r_metrics.models.featup.UpsampledDino` layout; strip
    ``featurizer.`` for a bare :class:`DinoFeaturizer`). Also accepts ``module.``/``backbone.`` prefixed
    training checkpoints; their projection head (``head.*``) is not part of the ViT and is dropped."""
    out: dict[str, Tensor] = {}
    for k, v in unwrap_state_dict(sd).items():
        for pre in ("module.", "backbone."):
            if k.startswith(pre):
                k = k[len(pre) :]
        if k.startswith("head."):
            continue
        out["featurizer.vit." + k] = v
    return out


def checkpoint_filter_fn(sd: Mapping[str, object]) -> dict[str, Tensor]:
    """Official DINO checkpoint -> bare :class:`DinoFeaturizer` names (``vit.*``): :func:`convert_dino_state_dict`
    without the container's ``featurizer.`` prefix."""
    return {k.removeprefix("featurizer."): v for k, v in convert_dino_state_dict(sd).items()}
