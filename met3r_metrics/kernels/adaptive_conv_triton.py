"""Triton kernels for the JBU step: the adaptive convolution and the range-kernel logits.

Imported only after :func:`met3r_metrics.kernels.should_use` (or by tests under ``TRITON_INTERPRET=1``):
this module imports ``triton`` at top level.

Adaptive convolution (``adaptive_conv_taps_triton``)::

    out[b, c, y, x] = sum_{i, j} input[b, c, y + i, x + j] * taps[b, i * kw + j, y, x]

One program owns a tile of TILE_H x TILE_W output pixels times BLOCK_C channels of one image; it loops
over the kh*kw taps in the exact path's order (i outer, j inner), accumulates in float32 registers and
writes the output once. Each input element comes from DRAM about once (the 49 shifted reads of a tile
overlap and hit L1/L2), each tap map once per channel block (consecutive programs share a pixel tile,
so those re-reads hit L2). Traffic ~ |input| + |taps| + |out| instead of 49 * 3 * |out| for the
``addcmul_`` loop.

Range logits (``range_logits_triton``)::

    logits[b, i * k + j, y, x] = sum_c padded[b, c, y + i, x + j] * proj[b, c, y, x]

(the 49 shifted dot products of ``JBULearnedRange.range_kernel``, before the temperature and softmax):
one program holds the whole key vector (C <= 64) of a pixel tile in registers and loops over taps.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["adaptive_conv_taps_triton", "range_logits_triton", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Defaults: 32 channels x (4 x 32) pixels, 4 warps -> 32 fp32 accumulators per thread.
DEFAULT_CONV_CONFIG = {"block_c": 32, "tile_h": 4, "tile_w": 32, "num_warps": 4}
DEFAULT_RANGE_CONFIG = {"tile_h": 4, "tile_w": 32, "num_warps": 4}


@triton.jit
def _adaptive_conv_kernel(
    inp_ptr, taps_ptr, out_ptr,
    C, H, W, n_cb, n_tw,
    s_ib, s_ic, s_ih, s_iw,
    s_tb, s_tp, s_th, s_tw,
    s_ob, s_oc, s_oh, s_ow,
    KH: tl.constexpr, KW: tl.constexpr,
    BLOCK_C: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
):
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    # Channel block varies fastest: programs running together share the pixel tile (taps reused in L2).
    cb = pid % n_cb
    tile = pid // n_cb
    ty = tile // n_tw
    tx = tile % n_tw

    offs_c = (cb * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    p = tl.arange(0, TILE_H * TILE_W)
    y = ty * TILE_H + p // TILE_W
    x = tx * TILE_W + p % TILE_W
    mask_p = (y < H) & (x < W)
    mask_c = offs_c < C
    mask = mask_c[:, None] & mask_p[None, :]

    in_base = inp_ptr + b * s_ib + offs_c[:, None] * s_ic
    tap_base = taps_ptr + b * s_tb + y.to(tl.int64) * s_th + x.to(tl.int64) * s_tw
    pix_in = y.to(tl.int64) * s_ih + x.to(tl.int64) * s_iw

    acc = tl.zeros((BLOCK_C, TILE_H * TILE_W), dtype=tl.float32)
    for i in tl.static_range(KH):
        for j in tl.static_range(KW):
            t = tl.load(tap_base + (i * KW + j) * s_tp, mask=mask_p, other=0.0).to(tl.float32)
            v = tl.load(in_base + (pix_in + i * s_ih + j * s_iw)[None, :], mask=mask, other=0.0).to(tl.float32)
            acc += v * t[None, :]

    out_off = b * s_ob + offs_c[:, None] * s_oc + (y.to(tl.int64) * s_oh + x.to(tl.int64) * s_ow)[None, :]
    tl.store(out_ptr + out_off, acc.to(out_ptr.dtype.element_ty), mask=mask)


def adaptive_conv_taps_triton(
    input: torch.Tensor,
    taps: torch.Tensor,
    kh: int,
    kw: int,
    *,
    block_c: int | None = None,
    tile_h: int | None = None,
    tile_w: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """Fused adaptive convolution; same contract as ``adaptive_conv._forward`` (no autograd).

    input (B, C, H_out + kh - 1, W_out + kw - 1), taps (B, kh*kw, H_out, W_out), any strides, dtypes in
    :data:`SUPPORTED_DTYPES`. Returns a contiguous (B, C, H_out, W_out) tensor in the promoted dtype,
    accumulated in float32.
    """
    if input.dtype not in SUPPORTED_DTYPES or taps.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"adaptive_conv_taps_triton: unsupported dtypes {input.dtype}, {taps.dtype}")
    b, c, h_in, w_in = input.shape
    h_out, w_out = h_in - kh + 1, w_in - kw + 1
    if taps.shape != (b, kh * kw, h_out, w_out):
        raise ValueError(f"adaptive_conv_taps_triton: taps {tuple(taps.shape)} != {(b, kh * kw, h_out, w_out)}")
    cfg = DEFAULT_CONV_CONFIG
    block_c = block_c or cfg["block_c"]
    tile_h = tile_h or cfg["tile_h"]
    tile_w = tile_w or cfg["tile_w"]
    num_warps = num_warps or cfg["num_warps"]
    out = torch.empty((b, c, h_out, w_out), dtype=torch.promote_types(input.dtype, taps.dtype), device=input.device)
    if out.numel() == 0:
        return out
    n_cb = triton.cdiv(c, block_c)
    n_tw = triton.cdiv(w_out, tile_w)
    n_th = triton.cdiv(h_out, tile_h)
    grid = (n_cb * n_th * n_tw, b)
    _adaptive_conv_kernel[grid](
        input, taps, out,
        c, h_out, w_out, n_cb, n_tw,
        *input.stride(), *taps.stride(), *out.stride(),
        KH=kh, KW=kw, BLOCK_C=block_c, TILE_H=tile_h, TILE_W=tile_w,
        num_warps=num_warps,
    )
    return out


@triton.jit
def _range_logits_kernel(
    pad_ptr, proj_ptr, out_ptr,
    C, H, W, n_tw,
    s_pb, s_pc, s_ph, s_pw,
    s_qb, s_qc, s_qh, s_qw,
    s_ob, s_op, s_oh, s_ow,
    K: tl.constexpr, BLOCK_C: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
):
    tile = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    ty = tile // n_tw
    tx = tile % n_tw
    offs_c = tl.arange(0, BLOCK_C).to(tl.int64)
    p = tl.arange(0, TILE_H * TILE_W)
    y = (ty * TILE_H + p // TILE_W).to(tl.int64)
    x = (tx * TILE_W + p % TILE_W).to(tl.int64)
    mask_p = (y < H) & (x < W)
    mask = (offs_c < C)[:, None] & mask_p[None, :]

    centre = tl.load(
        proj_ptr + b * s_qb + offs_c[:, None] * s_qc + (y * s_qh + x * s_qw)[None, :], mask=mask, other=0.0
    ).to(tl.float32)
    pad_base = pad_ptr + b * s_pb + offs_c[:, None] * s_pc
    pix = y * s_ph + x * s_pw
    out_base = out_ptr + b * s_ob + y * s_oh + x * s_ow
    for i in tl.static_range(K):
        for j in tl.static_range(K):
            v = tl.load(pad_base + (pix + i * s_ph + j * s_pw)[None, :], mask=mask, other=0.0).to(tl.float32)
            dot = tl.sum(v * centre, axis=0)
            tl.store(out_base + (i * K + j) * s_op, dot.to(out_ptr.dtype.element_ty), mask=mask_p)


def range_logits_triton(
    padded: torch.Tensor,
    proj: torch.Tensor,
    k: int,
    *,
    tile_h: int | None = None,
    tile_w: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """(B, k*k, H, W) logits ``sum_c padded[:, c, y+i, x+j] * proj[:, c, y, x]`` (fp32 accumulation), in the
    promoted dtype. padded: (B, C, H + k - 1, W + k - 1); proj: (B, C, H, W); C <= 64."""
    if padded.dtype not in SUPPORTED_DTYPES or proj.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"range_logits_triton: unsupported dtypes {padded.dtype}, {proj.dtype}")
    b, c, h, w = proj.shape
    if padded.shape != (b, c, h + k - 1, w + k - 1):
        raise ValueError(f"range_logits_triton: padded {tuple(padded.shape)} does not match proj {tuple(proj.shape)}")
    if c > 64:
        raise ValueError(f"range_logits_triton: at most 64 key channels, got {c}")
    cfg = DEFAULT_RANGE_CONFIG
    tile_h = tile_h or cfg["tile_h"]
    tile_w = tile_w or cfg["tile_w"]
    num_warps = num_warps or cfg["num_warps"]
    out = torch.empty((b, k * k, h, w), dtype=torch.promote_types(padded.dtype, proj.dtype), device=proj.device)
    if out.numel() == 0:
        return out
    n_tw = triton.cdiv(w, tile_w)
    grid = (triton.cdiv(h, tile_h) * n_tw, b)
    _range_logits_kernel[grid](
        padded, proj, out,
        c, h, w, n_tw,
        *padded.stride(), *proj.stride(), *out.stride(),
        K=k, BLOCK_C=max(16, triton.next_power_of_2(c)), TILE_H=tile_h, TILE_W=tile_w,
        num_warps=num_warps,
    )
    return out
