"""Triton kernel for the JBU step's x2 bicubic upsampling, written straight into the reflect-padded layout.

Imported only after :func:`met3r_metrics.kernels.should_use` (or by tests under ``TRITON_INTERPRET=1``):
this module imports ``triton`` at top level.

``bicubic2x_reflect_pad(source, pad)`` equals::

    F.pad(F.interpolate(source, (2h, 2w), mode="bicubic", align_corners=False), (pad,) * 4, mode="reflect")

for a float32 source (B, C, h, w). It follows PyTorch's CUDA ``upsample_bicubic2d`` arithmetic:

* source coordinate ``real = 0.5 * (o + 0.5) - 0.5`` (cubic: not clamped at 0), ``in = floor(real)``,
  ``t = real - in``; for exact x2, even ``o = 2m`` -> ``in = m - 1, t = 0.75``; odd ``o = 2m + 1`` ->
  ``in = m, t = 0.25``. Each of the 4 taps ``in - 1 + k`` is clamped to ``[0, size - 1]``.
* cubic convolution with ``A = -0.75``; for ``t`` in {0.25, 0.75} every coefficient is exact in float32
  (t = 0.25: -0.10546875, 0.87890625, 0.26171875, -0.03515625; t = 0.75: the same reversed), so the
  constants below equal PyTorch's ``get_cubic_upsample_coefficients`` bit for bit.
* for each of the 4 source rows, interpolate along x (``x0*c0 + x1*c1 + x2*c2 + x3*c3``, left to right),
  then interpolate the 4 row values along y in the same order, in float32.

Only FMA contraction may differ in the last bits from the CUDA op (both compilers contract by default).

One program owns a TILE_H x TILE_W tile of the padded output of one (b, c) plane; the padded index maps to
the unpadded one by reflection (-1 -> 1, n -> n - 2), then to 4 clamped source rows / columns. The 16 loads
per output pixel are gathers from a plane that stays in L1/L2 (tiles of one plane run next to each other),
so DRAM traffic is ~ |source| + |padded output| (one write, no intermediate unpadded tensor).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["bicubic2x_reflect_pad", "DEFAULT_CONFIG", "COEFFS_T025"]

DEFAULT_CONFIG = {"tile_h": 8, "tile_w": 64, "num_warps": 4}

# Cubic convolution coefficients (A = -0.75) for t = 0.25; t = 0.75 uses them reversed (literals in the kernel).
COEFFS_T025 = (-0.10546875, 0.87890625, 0.26171875, -0.03515625)


@triton.jit
def _axis_taps(p, PAD: tl.constexpr, n_out, n_in):
    """Padded output indices p -> (4 clamped source indices, 4 float32 coefficients)."""
    u = p - PAD
    u = tl.where(u < 0, -u, u)
    u = tl.where(u >= n_out, 2 * (n_out - 1) - u, u)
    m = u // 2
    odd = (u - 2 * m) == 1
    base = tl.where(odd, m, m - 1)  # floor(real)
    i0 = tl.minimum(tl.maximum(base - 1, 0), n_in - 1)
    i1 = tl.minimum(tl.maximum(base, 0), n_in - 1)
    i2 = tl.minimum(tl.maximum(base + 1, 0), n_in - 1)
    i3 = tl.minimum(tl.maximum(base + 2, 0), n_in - 1)
    # odd: t = 0.25 -> (C0, C1, C2, C3); even: t = 0.75 -> (C3, C2, C1, C0)
    w0 = tl.where(odd, -0.10546875, -0.03515625).to(tl.float32)
    w1 = tl.where(odd, 0.87890625, 0.26171875).to(tl.float32)
    w2 = tl.where(odd, 0.26171875, 0.87890625).to(tl.float32)
    w3 = tl.where(odd, -0.03515625, -0.10546875).to(tl.float32)
    return i0, i1, i2, i3, w0, w1, w2, w3


@triton.jit
def _row(src_row, c0, c1, c2, c3, wx0, wx1, wx2, wx3):
    x0 = tl.load(src_row + c0[None, :])
    x1 = tl.load(src_row + c1[None, :])
    x2 = tl.load(src_row + c2[None, :])
    x3 = tl.load(src_row + c3[None, :])
    return x0 * wx0[None, :] + x1 * wx1[None, :] + x2 * wx2[None, :] + x3 * wx3[None, :]


@triton.jit
def _bicubic2x_pad_kernel(
    src_ptr, out_ptr,
    C, h, w, HP, WP, n_tiles, n_tw,
    s_sb, s_sc, s_sh, s_sw,
    s_ob, s_oc, s_oh,
    PAD: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
):
    pid = tl.program_id(0)
    # Tiles of one plane are consecutive programs (the plane stays in L2).
    tile = pid % n_tiles
    plane = (pid // n_tiles).to(tl.int64)
    b = plane // C
    c = plane % C
    ty = tile // n_tw
    tx = tile % n_tw

    py = ty * TILE_H + tl.arange(0, TILE_H)
    px = tx * TILE_W + tl.arange(0, TILE_W)
    r0, r1, r2, r3, wy0, wy1, wy2, wy3 = _axis_taps(py, PAD, 2 * h, h)
    c0, c1, c2, c3, wx0, wx1, wx2, wx3 = _axis_taps(px, PAD, 2 * w, w)
    c0 = c0.to(tl.int64) * s_sw
    c1 = c1.to(tl.int64) * s_sw
    c2 = c2.to(tl.int64) * s_sw
    c3 = c3.to(tl.int64) * s_sw

    base = src_ptr + b * s_sb + c * s_sc
    v0 = _row(base + (r0.to(tl.int64) * s_sh)[:, None], c0, c1, c2, c3, wx0, wx1, wx2, wx3)
    v1 = _row(base + (r1.to(tl.int64) * s_sh)[:, None], c0, c1, c2, c3, wx0, wx1, wx2, wx3)
    v2 = _row(base + (r2.to(tl.int64) * s_sh)[:, None], c0, c1, c2, c3, wx0, wx1, wx2, wx3)
    v3 = _row(base + (r3.to(tl.int64) * s_sh)[:, None], c0, c1, c2, c3, wx0, wx1, wx2, wx3)
    out = v0 * wy0[:, None] + v1 * wy1[:, None] + v2 * wy2[:, None] + v3 * wy3[:, None]

    mask = (py < HP)[:, None] & (px < WP)[None, :]
    out_off = b * s_ob + c * s_oc + py.to(tl.int64)[:, None] * s_oh + px[None, :]
    tl.store(out_ptr + out_off, out, mask=mask)


def bicubic2x_reflect_pad(
    source: torch.Tensor,
    pad: int = 3,
    *,
    tile_h: int | None = None,
    tile_w: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """``F.pad(F.interpolate(source, scale x2, mode="bicubic", align_corners=False), (pad,) * 4, "reflect")``.

    source: float32 (B, C, h, w), any strides; ``0 <= pad < 2h`` and ``pad < 2w`` (F.pad's reflect rule).
    Returns a contiguous float32 (B, C, 2h + 2 pad, 2w + 2 pad) tensor. No autograd.
    """
    if source.dtype != torch.float32:
        raise TypeError(f"bicubic2x_reflect_pad: float32 source only, got {source.dtype}")
    if source.dim() != 4:
        raise ValueError(f"bicubic2x_reflect_pad: source must be (B, C, h, w), got {tuple(source.shape)}")
    b, c, h, w = source.shape
    if h < 1 or w < 1 or pad < 0 or pad >= 2 * h or pad >= 2 * w:
        raise ValueError(f"bicubic2x_reflect_pad: reflect pad {pad} needs pad < 2h, 2w (h={h}, w={w})")
    cfg = DEFAULT_CONFIG
    tile_h = tile_h or cfg["tile_h"]
    tile_w = tile_w or cfg["tile_w"]
    num_warps = num_warps or cfg["num_warps"]
    hp, wp = 2 * h + 2 * pad, 2 * w + 2 * pad
    out = torch.empty((b, c, hp, wp), dtype=torch.float32, device=source.device)
    if out.numel() == 0:
        return out
    n_tw = triton.cdiv(wp, tile_w)
    n_tiles = triton.cdiv(hp, tile_h) * n_tw
    grid = (n_tiles * b * c,)
    _bicubic2x_pad_kernel[grid](
        source, out,
        c, h, w, hp, wp, n_tiles, n_tw,
        *source.stride(),
        out.stride(0), out.stride(1), out.stride(2),
        PAD=pad, TILE_H=tile_h, TILE_W=tile_w,
        num_warps=num_warps,
    )
    return out
