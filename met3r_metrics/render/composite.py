"""Front-to-back alpha compositing with MEt3R's weights (PyTorch3D ``AlphaCompositor`` semantics).

sum_k T_k a_k f_k, a_k = 1 - d_k / r^2, T_{k+1} = T_k (1 - a_k); background where no point hit. The exact
PyTorch path is the reference; a fused Triton kernel (:mod:`met3r_metrics.kernels`) runs where it may.
"""

from __future__ import annotations

import torch

from .. import kernels

__all__ = ["alpha_composite", "composite_weights"]


def alpha_composite(
    idx: torch.Tensor,
    dists: torch.Tensor,
    features: torch.Tensor,
    radius: float,
    background: float = -10000.0,
    *,
    block_rows: int | None = None,
) -> torch.Tensor:
    """Front-to-back alpha compositing with MEt3R's weights (PyTorch3D ``AlphaCompositor`` semantics).

    out_c = sum_k T_k * a_k * f_c(idx_k), a_k = 1 - dists_k / (r * r), T_0 = 1, T_{k+1} = T_k * (1 - a_k),
    unnormalised; float order (T * a) * f, accumulated k = 0, 1, ... as PyTorch3D's CPU kernel does.
    Every channel of a pixel whose slot 0 is empty is set to ``background``; nowhere else.

    Args:
        idx: (B, H, W, K) packed indices, -1 for empty slots (filled contiguously from slot 0).
        dists: (B, H, W, K) squared NDC distances.
        features: (B, N, C) per point, or packed (B * N, C). Gradients flow to them (and to dists).
        radius: the rasterization radius (NDC).
        background: value of every channel where no point hit.
        block_rows: pixels composited per block (cache blocking); default: whole image on accelerators,
            ~2 MiB of features per block on CPU. Results do not depend on it.

    Returns:
        (B, C, H, W) in the features' dtype. It is a permuted view of a channels-last (B, H, W, C) buffer
        (``torch.channels_last`` memory format); call ``.contiguous()`` if NCHW storage is needed.

    Host sync: one, to read the number of filled pixels per slot (K integers).

    Path: when :func:`met3r_metrics.kernels.should_use` holds (CUDA tensors, triton importable, no autograd
    needed, ``MET3R_DISABLE_TRITON`` != "1", switch on) and the features are float32/float16/bfloat16, a fused
    Triton kernel (same weights, same k order, float32 accumulation, no host sync; ``block_rows`` ignored;
    equal up to float32 rounding). Otherwise the exact PyTorch code below (bit-exact to PyTorch3D on CPU).
    """
    if idx.dim() != 4 or dists.shape != idx.shape:
        raise ValueError(f"idx and dists must both be (B, H, W, K), got {tuple(idx.shape)} and {tuple(dists.shape)}")
    B, H, W, K = idx.shape
    C = features.shape[-1]
    M = B * H * W
    if features.is_cuda and features.dtype in (torch.float32, torch.float16, torch.bfloat16):
        if kernels.should_use(idx, dists, features):
            weights = composite_weights(idx.reshape(M, K), dists, radius)
            return kernels.triton_module("composite_triton").alpha_composite_triton(idx, weights, features, background)
    feats = features.reshape(-1, C)
    idx2 = idx.reshape(M, K).long()
    valid = idx2 >= 0
    w = composite_weights(idx2, dists, radius).to(feats.dtype)

    # Slots fill contiguously, so sorting pixels by hit count makes "slot k filled" a prefix of the order.
    count = valid.sum(1)
    order = torch.argsort(count, descending=True, stable=True)
    filled = (count[None, :] > torch.arange(K, device=count.device)[:, None]).sum(1).tolist()  # host sync
    idx_o = idx2.index_select(0, order)
    w_o = w.index_select(0, order)
    if block_rows is None:
        block_rows = max(256, (1 << 19) // max(1, C)) if feats.device.type == "cpu" else max(1, M)

    out = torch.empty((M, C), dtype=feats.dtype, device=feats.device)
    bg = torch.tensor(background, dtype=feats.dtype, device=feats.device)
    for s in range(0, M, block_rows):
        e = min(M, s + block_rows)
        acc = torch.zeros((e - s, C), dtype=feats.dtype, device=feats.device)
        for k in range(K):
            ek = min(e, filled[k])
            if ek <= s:
                break
            # (T * a) * f, then added to the running sum: the kernel's rounding order.
            term = feats.index_select(0, idx_o[s:ek, k]) * w_o[s:ek, k, None]
            acc[: ek - s] += term
        if filled[0] < e:  # pixels no point hit: every channel is the background
            acc[max(0, filled[0] - s) :] = bg
        out.index_copy_(0, order[s:e], acc)
    return out.view(B, H, W, C).permute(0, 3, 1, 2)


def composite_weights(idx2: torch.Tensor, dists: torch.Tensor, radius: float) -> torch.Tensor:
    """Front-to-back weights T_k * a_k (M, K) in the dists' dtype, 0 on empty slots.

    idx2: (M, K) packed indices (-1 empty); dists: (M, K) or (B, H, W, K) squared NDC distances.
    """
    M, K = idx2.shape
    valid = idx2 >= 0
    # MEt3R's expression: float32 division by the Python float r*r (do not rewrite as a multiplication).
    alpha = (1 - dists / (radius * radius)).reshape(M, K)
    # T updated only on filled slots, as the kernel's `continue` does.
    T = torch.ones(M, dtype=alpha.dtype, device=alpha.device)
    weights = []
    for k in range(K):
        a = alpha[:, k]
        weights.append(T * a)
        T = torch.where(valid[:, k], T * (1 - a), T)
    return torch.where(valid, torch.stack(weights, dim=1), 0.0)
