"""FeatUp's ``AdaptiveConv`` op in plain PyTorch: a per-pixel, channel-shared cross-correlation.

``out[b, c, h, w] = sum_{i, j} filters[b, h, w, i, j] * input[b, c, h + i, w + j]``  ("valid", no flip).

The official op is a CUDA/C++ extension. Here it is computed as I*J shifted-slice accumulations
(``out += filters[..., i, j] * input[..., i:i+H, j:j+W]``, i outer, j inner: the official summation
order) with in-place ``addcmul_`` into the output, so no ``(B, C, I*J, H, W)`` unfold tensor and no
per-tap temporary is ever allocated in the forward: the only new memory is the output itself
(see docs/features.md for the measurement). The backward is explicit, also slice by slice, and gives
the mathematically correct filter gradient (the official CUDA ``grad_filters`` only writes 7 of 49 taps).

Half/bfloat16 inputs are accumulated in float32 and the result cast back (the official CUDA kernel
accumulates float16 in float16; bfloat16 is not supported there).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import kernels

__all__ = ["adaptive_conv", "adaptive_conv_taps", "AdaptiveConvFunction"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _check(input: Tensor, taps: Tensor, kh: int, kw: int) -> tuple[int, int]:
    if input.dim() != 4:
        raise ValueError(f"adaptive_conv: input must be (B, C, H_in, W_in), got shape {tuple(input.shape)}")
    if taps.dim() != 4 or taps.shape[1] != kh * kw:
        raise ValueError(
            f"adaptive_conv: filters must have {kh * kw} taps per pixel, got shape {tuple(taps.shape)}"
        )
    b, _, h_in, w_in = input.shape
    h_out, w_out = h_in - kh + 1, w_in - kw + 1
    if taps.shape[0] != b or taps.shape[2] != h_out or taps.shape[3] != w_out:
        raise ValueError(
            "adaptive_conv: filters must be (B, H_out, W_out, I, J) with H_out = H_in - I + 1 and "
            f"W_out = W_in - J + 1; input {tuple(input.shape)} needs B={b}, H_out={h_out}, W_out={w_out}, "
            f"got taps of shape {tuple(taps.shape)} (as (B, I*J, H_out, W_out))"
        )
    return h_out, w_out


def _forward(input: Tensor, taps: Tensor, kh: int, kw: int) -> Tensor:
    """taps: (B, kh*kw, H_out, W_out), any strides. Returns (B, C, H_out, W_out) in the promoted dtype."""
    h_out, w_out = _check(input, taps, kh, kw)
    out_dtype = torch.promote_types(input.dtype, taps.dtype)
    b, c = input.shape[:2]
    out = input.new_zeros((b, c, h_out, w_out), dtype=_acc_dtype(out_dtype))
    for i in range(kh):
        for j in range(kw):
            # (B, 1, H, W) tap broadcast over channels; in-place -> no temporary of size B*C*H*W.
            out.addcmul_(input[:, :, i : i + h_out, j : j + w_out], taps[:, None, i * kw + j])
    return out if out.dtype == out_dtype else out.to(out_dtype)


class AdaptiveConvFunction(torch.autograd.Function):
    """Autograd wrapper with a slice-wise backward (same contract as FeatUp's ``AdaptiveConv``)."""

    @staticmethod
    def forward(ctx, input: Tensor, taps: Tensor, kh: int, kw: int) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(input, taps)
        ctx.kernel = (kh, kw)
        return _forward(input, taps, kh, kw)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        input, taps = ctx.saved_tensors
        kh, kw = ctx.kernel
        h_out, w_out = grad_out.shape[-2:]
        grad_input = grad_taps = None
        if ctx.needs_input_grad[0]:
            # gi[b, c, y, x] = sum_{i,j} g[b, c, y-i, x-j] * f[b, y-i, x-j, i, j]
            gi = torch.zeros(input.shape, dtype=_acc_dtype(input.dtype), device=input.device)
            for i in range(kh):
                for j in range(kw):
                    gi[:, :, i : i + h_out, j : j + w_out].addcmul_(grad_out, taps[:, None, i * kw + j])
            grad_input = gi.to(input.dtype)
        if ctx.needs_input_grad[1]:
            # gf[b, h, w, i, j] = sum_c g[b, c, h, w] * input[b, c, h+i, w+j]
            acc = _acc_dtype(taps.dtype)
            gf = torch.empty(taps.shape, dtype=acc, device=taps.device)
            for i in range(kh):
                for j in range(kw):
                    prod = grad_out * input[:, :, i : i + h_out, j : j + w_out]
                    gf[:, i * kw + j] = prod.sum(1, dtype=acc)
            grad_taps = gf.to(taps.dtype)
        return grad_input, grad_taps, None, None


def adaptive_conv_taps(input: Tensor, taps: Tensor, kernel_size: int | tuple[int, int] = 7) -> Tensor:
    """Adaptive convolution with filters given tap-major.

    Args:
        input: (B, C, H_in, W_in), already padded by the caller.
        taps: (B, I*J, H_out, W_out) with tap index p = i*J + j (the layout the JBU kernel is computed in,
            so the JBU needs no permuted copy). H_out = H_in - I + 1, W_out = W_in - J + 1.
        kernel_size: I (= J) or (I, J).

    Returns:
        (B, C, H_out, W_out).

    Path: with autograd needed (grad mode on and an input requiring grad) -> :class:`AdaptiveConvFunction`
    (exact PyTorch forward and backward). Otherwise, when :func:`met3r_metrics.kernels.should_use` holds
    (CUDA tensors, triton importable, ``MET3R_DISABLE_TRITON`` != "1", switch on) and both dtypes are
    float32 -> the fused Triton kernel (float32 accumulation, same tap order; equal to
    the exact path up to float32 rounding; contiguous output). Else the exact PyTorch ``_forward``.
    """
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    if torch.is_grad_enabled() and (input.requires_grad or taps.requires_grad):
        return AdaptiveConvFunction.apply(input, taps, kh, kw)
    if input.is_cuda and _use_triton(input, taps):
        _check(input, taps, kh, kw)
        return kernels.triton_module("adaptive_conv_triton").adaptive_conv_taps_triton(input, taps, kh, kw)
    return _forward(input, taps, kh, kw)


def _use_triton(input: Tensor, taps: Tensor) -> bool:
    return input.dtype in _TRITON_DTYPES and taps.dtype in _TRITON_DTYPES and kernels.should_use(input, taps)


# float32 features only: on an H100 the kernel ran 0.6x the exact path's speed on bfloat16 features
# (benchmarks/kernels_gpu.py, conv_bf16); MEt3R's JBU sees float32 features even under bf16 autocast.
_TRITON_DTYPES = (torch.float32,)


def adaptive_conv(input: Tensor, filters: Tensor) -> Tensor:
    """FeatUp's ``AdaptiveConv.apply(input, filters)`` contract.

    Args:
        input: (B, C, H_in, W_in).
        filters: (B, H_out, W_out, I, J) with I == J, H_out + I - 1 == H_in, W_out + J - 1 == W_in.

    Returns:
        (B, C, H_out, W_out): ``sum_{i,j} filters[b, h, w, i, j] * input[b, c, h + i, w + j]``.
    """
    if filters.dim() != 5 or filters.shape[3] != filters.shape[4]:
        raise ValueError(f"adaptive_conv: filters must be (B, H_out, W_out, I, I), got shape {tuple(filters.shape)}")
    b, h, w, kh, kw = filters.shape
    # A permuted view (no copy): (B, I*J, H, W) with p = i*J + j.
    taps = filters.reshape(b, h, w, kh * kw).permute(0, 3, 1, 2)
    return adaptive_conv_taps(input, taps, (kh, kw))
