"""DUSt3R (``AsymmetricCroCo3DStereo``) and MASt3R (``AsymmetricMASt3R``) inference, checkpoint-compatible.

A pair of images goes through a shared ViT encoder, a two-branch decoder (each branch cross-attends to the
other view, both updated in parallel) and one head per view. Outputs follow the official forward:

* view 1: ``pts3d`` (B,H1,W1,3), ``conf`` (B,H1,W1) [+ MASt3R ``desc`` (B,H1,W1,d), ``desc_conf`` (B,H1,W1)];
* view 2: ``pts3d_in_other_view`` (B,H2,W2,3) (view 2's points in view 1's camera frame), ``conf`` [+ desc...].

Images are (B,3,H,W) in [-1, 1] (the official ``ImgNorm``), H and W multiples of 16. The two views may have
different sizes; within one view all samples share one size.

Split API (the metric encodes each frame once and decodes many pairs)::

    tok1, pos1, shape1 = model.encode(img1)
    tok2, pos2, shape2 = model.encode(img2)
    res1, res2 = model.decode_heads(tok1, pos1, shape1, tok2, pos2, shape2)

``true_shape`` is the (H, W) of the encoded images as a tuple of ints. ``decode_heads`` also accepts the
official form, an int tensor (B, 2) of per-sample (H, W) rows; all rows must be equal (the official loaders
use ``landscape_only=False``, which asserts the same). Outputs always keep each input's own orientation, i.e.
the ``landscape_only=False`` behaviour, whatever the config says (the constructor default True would transpose
genuine portrait inputs; the official loaders never use it).

Spec: ``shared/spec/dust3r.md``. Written from that spec; no official code is used.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .croco import (
    ATTN_IMPLS,
    Attention,
    Block,
    CrossAttention,
    DecoderBlock,
    PatchEmbed,
    RoPE2D,
    layer_norm,
    rope_base_from_pos_embed,
)
from .dpt import dpt_hooks
from .dust3r_heads import (
    CatMLPDPTPts3dDesc,
    DPTPts3d,
    LinearPts3d,
    Mode,
    TrueShape,
    reg_dense_conf,
    reg_dense_depth,
    reg_desc,
)

__all__ = [
    "AsymmetricCroCo3DStereo",
    "AsymmetricMASt3R",
    "build_stereo_model",
    "checkpoint_filter_fn",
    "map_official_state_dict",
    "reg_dense_conf",
    "reg_dense_depth",
    "reg_desc",
]

_PATCH_EMBED_CLASSES = ("PatchEmbedDust3R", "ManyAR_PatchEmbed")


# ----------------------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------------------


def _mode(value: Mode | None) -> tuple | None:
    """JSON lists -> tuples; numbers stay numbers (JSON 'Infinity' arrives as float inf)."""
    return None if value is None else tuple(value)


class AsymmetricCroCo3DStereo(nn.Module):
    """DUSt3R. Keyword arguments and defaults mirror the official constructor, so an official config or
    ``--model`` string means the same here.

    Note the official *defaults* are not the released checkpoints' settings (ViT-B sizes, pos_embed 'cosine'):
    always pass the full config (see :data:`met3r_metrics.weights.CHECKPOINTS`). Only 'RoPE<base>' position
    embeddings are supported, as used by every released checkpoint.

    Non-official extras: ``dpt_feature_dim``, ``dpt_last_dim``, ``dpt_layer_dims`` (DPT widths, official 256, 128,
    (96,192,384,768)) and ``attn_impl`` ('sdpa' or 'explicit'). Accepted and ignored: ``freeze``, ``mask_ratio``
    (training only), ``landscape_only`` (outputs always keep the input orientation, see module docstring),
    ``patch_embed_cls`` (both official classes have the same parameters; inference uses PatchEmbedDust3R).
    """

    def __init__(
        self,
        *,
        output_mode: str = "pts3d",
        head_type: str = "linear",
        depth_mode: Mode = ("exp", -math.inf, math.inf),
        conf_mode: Mode | None = ("exp", 1, math.inf),
        freeze: str = "none",
        landscape_only: bool = True,
        patch_embed_cls: str = "PatchEmbedDust3R",
        img_size: int | Sequence[int] = 224,
        patch_size: int = 16,
        mask_ratio: float = 0.9,
        enc_embed_dim: int = 768,
        enc_depth: int = 12,
        enc_num_heads: int = 12,
        dec_embed_dim: int = 512,
        dec_depth: int = 8,
        dec_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        norm_im2_in_dec: bool = True,
        pos_embed: str = "cosine",
        dpt_feature_dim: int = 256,
        dpt_last_dim: int = 128,
        dpt_layer_dims: Sequence[int] = (96, 192, 384, 768),
        attn_impl: str = "sdpa",
    ) -> None:
        super().__init__()
        if patch_embed_cls not in _PATCH_EMBED_CLASSES:
            raise ValueError(f"patch_embed_cls must be one of {_PATCH_EMBED_CLASSES}, got {patch_embed_cls!r}")
        sizes = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if any(s % patch_size for s in sizes):
            raise ValueError(f"img_size must be a multiple of patch_size={patch_size}, got img_size={img_size!r}")
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}")
        for name, dim, heads in (("enc", enc_embed_dim, enc_num_heads), ("dec", dec_embed_dim, dec_num_heads)):
            if dim % heads or (dim // heads) % 4:
                raise ValueError(
                    f"{name}_embed_dim / {name}_num_heads must be an integer head dim divisible by 4 (RoPE2D), "
                    f"got {dim} / {heads}"
                )
        self.patch_size = patch_size
        self.img_size = sizes
        self.output_mode, self.head_type = output_mode, head_type
        self.depth_mode, self.conf_mode = _mode(depth_mode), _mode(conf_mode)
        self.landscape_only = landscape_only
        self.enc_head_dim = enc_embed_dim // enc_num_heads
        self.dec_head_dim = dec_embed_dim // dec_num_heads
        self.rope = RoPE2D(rope_base_from_pos_embed(pos_embed))

        # Registration order reproduces the official state_dict() key order.
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_embed_dim))  # CroCo leftover, unused at inference
        self.patch_embed = PatchEmbed(enc_embed_dim, patch_size)
        self.enc_blocks = nn.ModuleList(
            Block(enc_embed_dim, enc_num_heads, mlp_ratio, attn_impl) for _ in range(enc_depth)
        )
        self.enc_norm = layer_norm(enc_embed_dim)
        self.decoder_embed = nn.Linear(enc_embed_dim, dec_embed_dim)
        self.dec_blocks = nn.ModuleList(
            DecoderBlock(dec_embed_dim, dec_num_heads, mlp_ratio, attn_impl, norm_im2_in_dec) for _ in range(dec_depth)
        )
        self.dec_norm = layer_norm(dec_embed_dim)
        self.dec_blocks2 = nn.ModuleList(
            DecoderBlock(dec_embed_dim, dec_num_heads, mlp_ratio, attn_impl, norm_im2_in_dec) for _ in range(dec_depth)
        )
        self._dpt_widths = {
            "feature_dim": dpt_feature_dim, "last_dim": dpt_last_dim, "layer_dims": tuple(dpt_layer_dims),
        }
        self.downstream_head1 = self._make_head(enc_embed_dim, dec_embed_dim, dec_depth)
        self.downstream_head2 = self._make_head(enc_embed_dim, dec_embed_dim, dec_depth)

    # -- construction -------------------------------------------------------------------------------------------

    def _make_head(self, enc_dim: int, dec_dim: int, dec_depth: int) -> nn.Module:
        if self.output_mode != "pts3d":
            raise NotImplementedError(f"DUSt3R output_mode {self.output_mode!r} (only 'pts3d')")
        if self.head_type == "linear":
            return LinearPts3d(dec_dim, self.patch_size, self.depth_mode, self.conf_mode)
        if self.head_type == "dpt":
            hooks = dpt_hooks(dec_depth)
            return DPTPts3d([enc_dim, dec_dim, dec_dim, dec_dim], hooks, self.depth_mode, self.conf_mode,
                            **self._dpt_widths)
        raise NotImplementedError(f"head_type {self.head_type!r} (DUSt3R supports 'linear' and 'dpt')")

    def set_attn_impl(self, attn_impl: str) -> "AsymmetricCroCo3DStereo":
        """Switch every attention layer between 'sdpa' and 'explicit' (official op order); returns self."""
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}")
        for m in self.modules():
            if isinstance(m, (Attention, CrossAttention)):
                m.attn_impl = attn_impl
        return self

    # -- split API ----------------------------------------------------------------------------------------------

    def check_images(self, img: torch.Tensor, name: str = "img") -> None:
        """Raise ValueError (naming ``name``) unless img is a float (B,3,H,W) tensor with H, W multiples of P."""
        if not isinstance(img, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor of shape (B,3,H,W), received {type(img).__name__}")
        if img.ndim != 4 or img.shape[1] != 3:
            raise ValueError(f"{name}: expected shape (B,3,H,W), received {tuple(img.shape)}")
        if not img.is_floating_point():
            raise ValueError(f"{name}: expected a floating-point tensor in [-1, 1], received dtype {img.dtype}")
        H, W = img.shape[-2:]
        P = self.patch_size
        if H < P or W < P or H % P or W % P:
            raise ValueError(
                f"{name}: height and width must be positive multiples of {P} (the patch size), "
                f"received H={H}, W={W}"
            )

    def encode(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, TrueShape]:
        """img (B,3,H,W) in [-1,1] -> tokens (B,N,E) after enc_norm, pos (B,N,2) int64 (row, col), (H, W).

        N = (H/16)*(W/16), row-major.
        """
        self.check_images(img, "img")
        x, pos = self.patch_embed(img)
        P = self.patch_size
        rope = self.rope.table(pos, self.enc_head_dim, x.dtype, length=max(img.shape[-2] // P, img.shape[-1] // P))
        for blk in self.enc_blocks:
            x = blk(x, rope)
        return self.enc_norm(x), pos, (int(img.shape[-2]), int(img.shape[-1]))

    def decode(
        self, tokens1: torch.Tensor, pos1: torch.Tensor, tokens2: torch.Tensor, pos2: torch.Tensor,
        shapes: tuple[TrueShape, TrueShape] | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Two-branch decoder. Returns per view [enc (B,N,E), blk_1 .. blk_{L-1} (B,N,D), dec_norm(blk_L)].

        Both branches of layer i read the layer i-1 tokens of both views (a parallel, not sequential, update).
        ``shapes``: the views' (H, W) when the positions are their patch grids (then no host sync).
        """
        if tokens1.shape[0] != tokens2.shape[0]:
            raise ValueError(
                f"tokens1 and tokens2 must have the same batch size, received {tokens1.shape[0]} and {tokens2.shape[0]}"
            )
        f1, f2 = self.decoder_embed(tokens1), self.decoder_embed(tokens2)
        P = self.patch_size
        len1, len2 = (max(h // P, w // P) for h, w in shapes) if shapes is not None else (None, None)
        r1 = self.rope.table(pos1, self.dec_head_dim, f1.dtype, length=len1)
        r2 = self.rope.table(pos2, self.dec_head_dim, f2.dtype, length=len2)
        out1, out2 = [tokens1], [tokens2]
        for blk1, blk2 in zip(self.dec_blocks, self.dec_blocks2):
            f1, f2 = blk1(f1, f2, r1, r2), blk2(f2, f1, r2, r1)
            out1.append(f1)
            out2.append(f2)
        out1[-1], out2[-1] = self.dec_norm(out1[-1]), self.dec_norm(out2[-1])
        return out1, out2

    def _true_shape(self, shape: Any, tokens: torch.Tensor, name: str) -> TrueShape:
        """Accept (H, W) or an official (B,2) int tensor with identical rows; check it matches the token count."""
        if isinstance(shape, torch.Tensor):
            rows = shape.reshape(-1, 2)
            if not bool((rows == rows[0]).all()):
                raise ValueError(f"{name}: all samples of one view must share one (H, W), received {rows.tolist()}")
            shape = rows[0].tolist()
        H, W = (int(v) for v in shape)
        P = self.patch_size
        if H % P or W % P or (H // P) * (W // P) != tokens.shape[1]:
            raise ValueError(
                f"{name}: (H, W) must be multiples of {P} matching the {tokens.shape[1]} tokens, received ({H}, {W})"
            )
        return H, W

    def run_heads(
        self, decout1: Sequence[torch.Tensor], shape1: TrueShape, decout2: Sequence[torch.Tensor], shape2: TrueShape,
        *, descriptors: bool = True,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Heads on decoder lists. Like the official code they run with autocast off, in the heads' own dtype
        (float32 for a float32 model, even if the backbone ran in bf16/fp16 under autocast).
        ``descriptors=False`` leaves out MASt3R's ``desc``/``desc_conf`` (and their MLP's cost)."""
        dtype = next(self.downstream_head1.parameters()).dtype
        device_type = decout1[0].device.type
        with torch.autocast(device_type=device_type, enabled=False):
            res1 = self.downstream_head1([t.to(dtype) for t in decout1], shape1, descriptors)
            res2 = self.downstream_head2([t.to(dtype) for t in decout2], shape2, descriptors)
        res2["pts3d_in_other_view"] = res2.pop("pts3d")
        return res1, res2

    def decode_heads(
        self,
        tokens1: torch.Tensor, pos1: torch.Tensor, shape1: TrueShape | torch.Tensor,
        tokens2: torch.Tensor, pos2: torch.Tensor, shape2: TrueShape | torch.Tensor,
        *, descriptors: bool = True,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Decoder + heads on two encoded views (outputs of :meth:`encode`) -> (res1, res2) as :meth:`forward`.
        ``descriptors=False``: MASt3R's descriptor head is skipped (pts3d and conf are unchanged)."""
        shape1 = self._true_shape(shape1, tokens1, "shape1")
        shape2 = self._true_shape(shape2, tokens2, "shape2")
        # pos are the encoder's patch grids of shape1/shape2 (as from :meth:`encode`), so the shapes bound them
        decout1, decout2 = self.decode(tokens1, pos1, tokens2, pos2, (shape1, shape2))
        return self.run_heads(decout1, shape1, decout2, shape2, descriptors=descriptors)

    def forward(
        self, img1: torch.Tensor | Mapping[str, Any], img2: torch.Tensor | Mapping[str, Any],
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """img1 (B,3,H1,W1), img2 (B,3,H2,W2) in [-1,1] -> (res1, res2); official view dicts ({'img': ...}) accepted.

        Same-size views are encoded in one batch (as the official code does), different sizes separately.
        The official symmetrization shortcut is not used: every sample is encoded (numerically the same).
        """
        img1 = img1["img"] if isinstance(img1, Mapping) else img1
        img2 = img2["img"] if isinstance(img2, Mapping) else img2
        self.check_images(img1, "img1")
        self.check_images(img2, "img2")
        if img1.shape[0] != img2.shape[0]:
            raise ValueError(
                f"img1 and img2 must have the same batch size, received {img1.shape[0]} and {img2.shape[0]}"
            )
        if img1.shape[-2:] == img2.shape[-2:]:
            tokens, pos, shape = self.encode(torch.cat((img1, img2), dim=0))
            t1, t2 = tokens.chunk(2, dim=0)
            p1, p2 = pos.chunk(2, dim=0)
            s1 = s2 = shape
        else:
            t1, p1, s1 = self.encode(img1)
            t2, p2, s2 = self.encode(img2)
        return self.decode_heads(t1, p1, s1, t2, p2, s2)


class AsymmetricMASt3R(AsymmetricCroCo3DStereo):
    """MASt3R: DUSt3R backbone with the ``catmlp+dpt`` head adding ``desc`` and ``desc_conf``.

    Extra official kwargs: ``desc_mode`` ('norm'), ``two_confs``, ``desc_conf_mode`` (None = same as conf_mode).
    """

    def __init__(
        self, *, desc_mode: str = "norm", two_confs: bool = False, desc_conf_mode: Mode | None = None, **kwargs: Any,
    ) -> None:
        # Stored before super().__init__ builds the heads through _make_head.
        self._mast3r = {"desc_mode": desc_mode, "two_confs": bool(two_confs), "desc_conf_mode": _mode(desc_conf_mode)}
        super().__init__(**kwargs)
        self.desc_mode, self.two_confs, self.desc_conf_mode = desc_mode, bool(two_confs), _mode(desc_conf_mode)

    def _make_head(self, enc_dim: int, dec_dim: int, dec_depth: int) -> nn.Module:
        if self.head_type != "catmlp+dpt":
            return super()._make_head(enc_dim, dec_dim, dec_depth)
        if not self.output_mode.startswith("pts3d+desc"):
            raise ValueError(f"catmlp+dpt needs output_mode 'pts3d+desc<dim>', got {self.output_mode!r}")
        desc_dim = int(self.output_mode[len("pts3d+desc"):])
        return CatMLPDPTPts3dDesc(
            enc_dim, dec_dim, dpt_hooks(dec_depth), self.patch_size, desc_dim,
            self.depth_mode, self.conf_mode, **self._mast3r, **self._dpt_widths,
        )


_MAST3R_ONLY_KEYS = ("desc_mode", "two_confs", "desc_conf_mode")


def build_stereo_model(
    config: Mapping[str, Any], *, model_class: str | None = None, attn_impl: str | None = None,
) -> AsymmetricCroCo3DStereo:
    """Build DUSt3R or MASt3R from official constructor kwargs (an HF ``config.json`` dict, a parsed ``--model``
    string, or a golden JSON's ``constructor_kwargs``).

    Also accepted in ``config``: ``dpt_head_overrides`` = {feature_dim, last_dim, layer_dims} (as in the golden
    JSONs) and ``model_class``. The class is MASt3R when ``model_class`` says so, or when the head is
    ``catmlp+dpt`` / a MASt3R-only key is present. Unknown keys raise TypeError (nothing is silently ignored).
    Parameters are left at their (random) init; load weights with :mod:`met3r_metrics.weights`.
    """
    kwargs = dict(config)
    overrides = kwargs.pop("dpt_head_overrides", None) or {}
    for key, value in overrides.items():
        if key not in ("feature_dim", "last_dim", "layer_dims"):
            raise TypeError(f"unknown dpt_head_overrides key {key!r}")
        kwargs[f"dpt_{key}"] = value
    cls_name = model_class or kwargs.pop("model_class", None)
    kwargs.pop("model_class", None)
    if cls_name is None:
        is_mast3r = str(kwargs.get("head_type", "")).startswith("catmlp") or any(k in kwargs for k in _MAST3R_ONLY_KEYS)
        cls_name = "AsymmetricMASt3R" if is_mast3r else "AsymmetricCroCo3DStereo"
    classes = {"AsymmetricCroCo3DStereo": AsymmetricCroCo3DStereo, "AsymmetricMASt3R": AsymmetricMASt3R}
    if cls_name not in classes:
        raise ValueError(f"model_class must be one of {sorted(classes)}, got {cls_name!r}")
    if attn_impl is not None:
        kwargs["attn_impl"] = attn_impl
    return classes[cls_name](**kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint filter (official keys -> ours)
# ----------------------------------------------------------------------------------------------------------------

_ALIAS_NEW = re.compile(r"^(?P<p>.*\.scratch\.)layer(?P<n>[1-4])_rn\.weight$")
_ALIAS_OLD = re.compile(r"^(?P<p>.*\.scratch\.)layer_rn\.(?P<i>[0-3])\.weight$")


def map_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The one key mapping: DPT alias names ``scratch.layer{N}_rn.weight`` <-> ``scratch.layer_rn.{N-1}.weight``.

    The official DPT registers each of these convs under both names. ``.pth`` state dicts hold both; safetensors
    files (``save_model`` / ``PyTorchModelHubMixin``) keep only ``layer{N}_rn``. Whichever name is missing is
    filled from the other (same tensor object); if both are present they must be equal. Nothing else is renamed.
    """
    out = dict(state_dict)
    for key in list(state_dict):
        m = _ALIAS_NEW.match(key)
        other = f"{m['p']}layer_rn.{int(m['n']) - 1}.weight" if m else None
        if other is None:
            m = _ALIAS_OLD.match(key)
            other = f"{m['p']}layer{int(m['i']) + 1}_rn.weight" if m else None
        if other is None:
            continue
        if other not in out:
            out[other] = out[key]
        elif out[other] is not out[key] and not _same_values(out[other], out[key]):
            raise ValueError(f"alias keys {key!r} and {other!r} hold different tensors")
    return out


#: timm's name for this network's checkpoint filter (what :func:`met3r_metrics.weights.build_frozen` applies).
checkpoint_filter_fn = map_official_state_dict


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    if a.is_meta or b.is_meta:  # no values to compare (shape-only checks)
        return True
    return torch.equal(a, b)
