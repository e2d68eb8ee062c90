"""Triton kernel for MEt3R's front-to-back alpha compositing (``render.alpha_composite``).

Imported only after :func:`met3r_metrics.kernels.should_use` (or by tests under ``TRITON_INTERPRET=1``).

The caller passes the per-slot weights w[p, k] = T_k * a_k (``render.composite_weights``, the exact path's
torch expressions; K passes over B*H*W scalars: negligible), so this module depends on torch and triton
only. The kernel does, for a block of BLOCK_M pixels x BLOCK_C channels, ``acc += w[p, k] * f[idx[p, k], c]``
for k = 0..K-1 (the exact path's order; float32 accumulation), sets every channel of pixels whose slot 0 is
empty to the background, and writes the (B, H, W, C) channels-last buffer once. No sort, no host sync.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


__all__ = ["alpha_composite_triton", "SUPPORTED_DTYPES"]

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
DEFAULT_CONFIG = {"block_m": 32, "block_c": 128, "num_warps": 4}


@triton.jit
def _composite_kernel(
    idx_ptr, w_ptr, feat_ptr, out_ptr,
    M, C, background,
    s_im, s_ik, s_wm, s_wk, s_fn, s_fc,
    K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    offs_c = (pid_c * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    mask_m = offs_m < M
    mask_c = offs_c < C

    acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
    first = tl.full((BLOCK_M,), -1, dtype=tl.int64)
    for k in tl.static_range(K):
        ik = tl.load(idx_ptr + offs_m * s_im + k * s_ik, mask=mask_m, other=-1).to(tl.int64)
        wk = tl.load(w_ptr + offs_m * s_wm + k * s_wk, mask=mask_m, other=0.0).to(tl.float32)
        if k == 0:
            first = ik
        valid = ik >= 0
        f = tl.load(
            feat_ptr + ik[:, None] * s_fn + offs_c[None, :] * s_fc,
            mask=valid[:, None] & mask_c[None, :],
            other=0.0,
        ).to(tl.float32)
        acc += wk[:, None] * f
    acc = tl.where((first >= 0)[:, None], acc, background)
    tl.store(
        out_ptr + offs_m[:, None] * C + offs_c[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=mask_m[:, None] & mask_c[None, :],
    )


def alpha_composite_triton(
    idx: torch.Tensor,
    weights: torch.Tensor,
    features: torch.Tensor,
    background: float = -10000.0,
    *,
    block_m: int | None = None,
    block_c: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """``sum_k weights[..., k] * features[idx[..., k]]`` with background where slot 0 is empty (no autograd).

    Args:
        idx: (B, H, W, K) packed point indices, -1 for empty slots.
        weights: (B, H, W, K) or (B*H*W, K) compositing weights (``render.composite_weights``).
        features: (B, N, C) or packed (B*N, C), float32/float16/bfloat16.
        background: value of every channel of a pixel whose slot 0 is empty.

    Returns:
        (B, C, H, W) permuted view of a channels-last (B, H, W, C) buffer in the features' dtype, as
        ``render.alpha_composite``. Float32 accumulation for every dtype.
    """
    if idx.dim() != 4 or weights.numel() != idx.numel():
        raise ValueError(
            f"idx and weights must be (B, H, W, K) and (B*H*W, K), got {tuple(idx.shape)} and {tuple(weights.shape)}"
        )
    if features.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"alpha_composite_triton: unsupported feature dtype {features.dtype}")
    B, H, W, K = idx.shape
    C = features.shape[-1]
    feats = features.reshape(-1, C)
    M = B * H * W
    idx2 = idx.reshape(M, K)
    w = weights.reshape(M, K)
    if w.dtype not in SUPPORTED_DTYPES:
        w = w.float()
    out = torch.empty((M, C), dtype=feats.dtype, device=feats.device)
    if M > 0 and C > 0:
        cfg = DEFAULT_CONFIG
        block_m = block_m or cfg["block_m"]
        block_c = block_c or min(cfg["block_c"], max(16, triton.next_power_of_2(C)))
        num_warps = num_warps or cfg["num_warps"]
        grid = (triton.cdiv(M, block_m), triton.cdiv(C, block_c))
        _composite_kernel[grid](
            idx2, w, feats, out,
            M, C, float(background),
            *idx2.stride(), *w.stride(), *feats.stride(),
            K=K, BLOCK_M=block_m, BLOCK_C=block_c,
            num_warps=num_warps,
        )
    return out.view(B, H, W, C).permute(0, 3, 1, 2)
