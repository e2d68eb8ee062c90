"""CroCo building blocks used by DUSt3R / MASt3R: patch embedding, RoPE2D, ViT encoder and decoder blocks.

Parameter names mirror the official CroCo modules so that official state dicts load with ``strict=True``.
Shapes use B = batch, N = tokens, C = channels, h = heads, d = head dim (C / h).

Numerics follow the official CPU path (see ``spec/dust3r.md`` §6-§7, §14): LayerNorm eps 1e-6, exact-erf GELU,
attention scale applied after ``q @ k^T``, RoPE base 100 with angles computed in float32.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ATTN_IMPLS",
    "Attention",
    "Block",
    "CrossAttention",
    "DecoderBlock",
    "Mlp",
    "PatchEmbed",
    "RoPE2D",
    "RopeTable",
    "apply_rope2d",
    "layer_norm",
    "patch_positions",
    "rope_base_from_pos_embed",
]

#: Attention implementations: ``"sdpa"`` uses ``F.scaled_dot_product_attention`` (fused kernels on GPU; proven
#: inside the golden tolerances, see tests/test_dust3r_golden.py), ``"explicit"`` is the official
#: matmul -> scale -> softmax -> matmul sequence.
ATTN_IMPLS = ("sdpa", "explicit")


def layer_norm(dim: int) -> nn.LayerNorm:
    """LayerNorm with eps 1e-6, as in every CroCo/DUSt3R norm (PyTorch's default 1e-5 costs ~2e-3 relative)."""
    return nn.LayerNorm(dim, eps=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Patch embedding
# ----------------------------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Conv patchifier + (row, col) position grid, equivalent to the official ``PatchEmbedDust3R``.

    ``ManyAR_PatchEmbed`` (training only) has identical parameters; the inference loaders replace it with this one.
    """

    def __init__(self, embed_dim: int, patch_size: int = 16, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """img (B,3,H,W), H and W multiples of ``patch_size`` -> tokens (B, h*w, C) row-major, pos (B, h*w, 2) int64.

        ``pos[..., 0]`` is the patch row (y), ``pos[..., 1]`` the patch column (x).
        """
        B, _, H, W = img.shape
        x = self.proj(img).flatten(2).transpose(1, 2)
        pos = patch_positions(H // self.patch_size, W // self.patch_size, img.device).expand(B, -1, -1)
        return x, pos


def patch_positions(rows: int, cols: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Row-major (row, col) grid of a rows x cols token map, shape (1, rows*cols, 2) int64."""
    ys = torch.arange(rows, device=device)
    xs = torch.arange(cols, device=device)
    return torch.cartesian_prod(ys, xs).view(1, rows * cols, 2)


# ----------------------------------------------------------------------------------------------------------------
# RoPE2D
# ----------------------------------------------------------------------------------------------------------------


class RopeTable(NamedTuple):
    """Per-token rotation factors for one position grid, each (B, 1, N, m) with m = head_dim / 2.

    ``cos_y/sin_y`` rotate the first half of every head (row index), ``cos_x/sin_x`` the second half (column index).
    Computed once per grid and shared by all blocks and heads (the official code recomputes them per call).
    """

    cos_y: torch.Tensor
    sin_y: torch.Tensor
    cos_x: torch.Tensor
    sin_x: torch.Tensor


class RoPE2D(nn.Module):
    """2-D rotary position embedding of CroCo (``pos_embed='RoPE<base>'``), holding no tensors.

    Frequencies per half of size m: w_j = 1 / base^(2j/m), j < m/2, paired rotate-half style (channel j with j + m/2).
    """

    def __init__(self, base: float = 100.0) -> None:
        super().__init__()
        self.base = float(base)

    def table(self, pos: torch.Tensor, head_dim: int, dtype: torch.dtype, length: int | None = None) -> RopeTable:
        """pos (B,N,2) integer (row, col) -> :class:`RopeTable` in ``dtype`` for heads of size ``head_dim``.

        ``length``: an upper bound on ``pos.max() + 1`` known to the caller (``max(rows, cols)`` of a patch grid).
        Without it the bound is read from ``pos``, a host sync that a captured CUDA graph cannot contain; the
        table's used rows do not depend on it (each angle row is ``t * inv_freq`` on its own).
        """
        if head_dim % 4:
            raise ValueError(f"RoPE2D needs head_dim divisible by 4, got head_dim={head_dim}")
        m = head_dim // 2
        # Official fallback: inverse frequencies and angles in float32, then cast to the token dtype before cos/sin.
        # For dtypes below float32 we take cos/sin in float32 and cast the result instead (spec §14.8: casting the
        # angles to fp16 first costs ~1e-2 rotation error); float32/float64 are bit-identical to the official path.
        inv_freq = 1.0 / (self.base ** (torch.arange(0, m, 2, device=pos.device).float() / m))
        if length is None:
            length = int(pos.max()) + 1 if pos.numel() else 1
        t = torch.arange(length, device=pos.device, dtype=torch.float32)
        angles = torch.outer(t, inv_freq)
        trig_dtype = torch.promote_types(dtype, torch.float32)
        angles = torch.cat((angles, angles), dim=-1).to(trig_dtype)
        cos, sin = angles.cos().to(dtype), angles.sin().to(dtype)
        py, px = pos[..., 0], pos[..., 1]
        return RopeTable(
            cos_y=F.embedding(py, cos)[:, None], sin_y=F.embedding(py, sin)[:, None],
            cos_x=F.embedding(px, cos)[:, None], sin_x=F.embedding(px, sin)[:, None],
        )

    @staticmethod
    def apply(x: torch.Tensor, table: RopeTable) -> torch.Tensor:
        """Rotate x (B, heads, N, d) by a :class:`RopeTable` of the same B and N."""
        y, xx = x.chunk(2, dim=-1)
        return torch.cat((_rotate(y, table.cos_y, table.sin_y), _rotate(xx, table.cos_x, table.sin_x)), dim=-1)

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """tokens (B, heads, N, d), pos (B, N, 2) int -> rotated tokens, same shape and dtype."""
        return self.apply(tokens, self.table(pos, tokens.shape[-1], tokens.dtype))


def _rotate(u: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half rotation of u (..., m): out = u*cos + [-u2, u1]*sin."""
    u1, u2 = u.chunk(2, dim=-1)
    return u * cos.to(u.dtype) + torch.cat((-u2, u1), dim=-1) * sin.to(u.dtype)


def apply_rope2d(tokens: torch.Tensor, pos: torch.Tensor, base: float = 100.0) -> torch.Tensor:
    """Functional RoPE2D: tokens (B, heads, N, d), pos (B, N, 2) int (row, col) -> rotated tokens."""
    return RoPE2D(base)(tokens, pos)


# ----------------------------------------------------------------------------------------------------------------
# Attention and blocks
# ----------------------------------------------------------------------------------------------------------------


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, impl: str) -> torch.Tensor:
    """Softmax attention over (B, heads, N, d) tensors; returns (B, heads, Nq, d)."""
    if impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v)
    # Official order: scale after the matmul, explicit softmax in the input dtype.
    attn = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    return attn.softmax(dim=-1) @ v


def _check_impl(impl: str) -> str:
    if impl not in ATTN_IMPLS:
        raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {impl!r}")
    return impl


class Attention(nn.Module):
    """Multi-head self-attention with fused qkv and RoPE on q and k (not v)."""

    def __init__(self, dim: int, num_heads: int, attn_impl: str = "sdpa") -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.attn_impl = _check_impl(attn_impl)

    def forward(self, x: torch.Tensor, rope: RopeTable | None) -> torch.Tensor:
        """x (B,N,C), rope table of x's grid -> (B,N,C)."""
        B, N, C = x.shape
        # Output features are [q | k | v], each split into contiguous per-head chunks.
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if rope is not None:
            q, k = RoPE2D.apply(q, rope), RoPE2D.apply(k, rope)
        out = _attend(q, k, v, self.attn_impl)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class CrossAttention(nn.Module):
    """Multi-head cross-attention with separate q/k/v projections; q rotated on its own grid, k on the memory's."""

    def __init__(self, dim: int, num_heads: int, attn_impl: str = "sdpa") -> None:
        super().__init__()
        self.num_heads = num_heads
        self.projq = nn.Linear(dim, dim)
        self.projk = nn.Linear(dim, dim)
        self.projv = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_impl = _check_impl(attn_impl)

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
        qrope: RopeTable | None, krope: RopeTable | None,
    ) -> torch.Tensor:
        """query (B,Nq,C), key/value (B,Nk,C) -> (B,Nq,C). Nq and Nk may differ (different image sizes)."""
        B, Nq, C = query.shape
        Nk = key.shape[1]
        h, d = self.num_heads, C // self.num_heads
        q = self.projq(query).reshape(B, Nq, h, d).transpose(1, 2)
        k = self.projk(key).reshape(B, Nk, h, d).transpose(1, 2)
        v = self.projv(value).reshape(B, Nk, h, d).transpose(1, 2)
        if qrope is not None:
            q = RoPE2D.apply(q, qrope)
        if krope is not None:
            k = RoPE2D.apply(k, krope)
        out = _attend(q, k, v, self.attn_impl)
        return self.proj(out.transpose(1, 2).reshape(B, Nq, C))


class Mlp(nn.Module):
    """fc1 -> exact-erf GELU -> fc2 (the tanh approximation costs 2-4e-2 relative)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm ViT encoder block: x += Attn(LN1 x); x += MLP(LN2 x)."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, attn_impl: str = "sdpa",
    ) -> None:
        super().__init__()
        self.norm1 = layer_norm(dim)
        self.attn = Attention(dim, num_heads, attn_impl)
        self.norm2 = layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, rope: RopeTable | None) -> torch.Tensor:
        """x (B,N,C) -> (B,N,C)."""
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """CroCo decoder block: self-attention, cross-attention to the LayerNorm'ed other view (norm_y), MLP.

    Registration order (norm1, attn, cross_attn, norm2, norm3, mlp, norm_y) reproduces the official
    ``state_dict()`` key order.
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, attn_impl: str = "sdpa", norm_mem: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = layer_norm(dim)
        self.attn = Attention(dim, num_heads, attn_impl)
        self.cross_attn = CrossAttention(dim, num_heads, attn_impl)
        self.norm2 = layer_norm(dim)
        self.norm3 = layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        # norm_im2_in_dec=True in every official config; False would leave the memory un-normalised.
        self.norm_y = layer_norm(dim) if norm_mem else nn.Identity()

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, xrope: RopeTable | None, yrope: RopeTable | None,
    ) -> torch.Tensor:
        """x (B,Nx,C) own view, y (B,Ny,C) other view (unchanged) -> new x (B,Nx,C)."""
        x = x + self.attn(self.norm1(x), xrope)
        y_ = self.norm_y(y)
        x = x + self.cross_attn(self.norm2(x), y_, y_, xrope, yrope)
        return x + self.mlp(self.norm3(x))


def rope_base_from_pos_embed(pos_embed: str) -> float:
    """'RoPE100' -> 100.0. The absolute 'cosine' embedding (CroCo's default) is not used by any DUSt3R checkpoint."""
    if not isinstance(pos_embed, str) or not pos_embed.startswith("RoPE"):
        raise ValueError(
            f"pos_embed must be 'RoPE<base>' (official checkpoints use 'RoPE100'), got {pos_embed!r}; "
            "the CroCo default 'cosine' does not match any DUSt3R/MASt3R checkpoint"
        )
    base = float(pos_embed[4:])
    if not math.isfinite(base) or base <= 0:
        raise ValueError(f"pos_embed RoPE base must be a positive number, got {pos_embed!r}")
    return base
