"""AdaptiveConv (FeatUp's per-pixel 7x7 op): golden values, gradients, formulations, and memory.

Memory is measured with a TorchDispatchMode that sees every ATen op and tracks the storages allocated
inside the region and when they die (peak of live bytes). ``python tests/test_adaptive_conv.py`` prints
the numbers quoted in docs/features.md.
"""

from __future__ import annotations

import weakref

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from met3r_metrics.models.adaptive_conv import adaptive_conv, adaptive_conv_taps
from met3r_metrics.models.featup import JBULearnedRange

TOL = {torch.float64: {"atol": 1e-6, "rtol": 1e-6}, torch.float32: {"atol": 2e-5, "rtol": 1e-5}}


class PeakMemory(TorchDispatchMode):
    """Peak bytes of tensor storages allocated inside the ``with`` block (a storage is live while any
    tensor viewing it is alive). Inputs created before the block are not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: dict[int, int] = {}
        self.refs: dict[int, int] = {}
        self.known: set[int] = set()
        self.current = 0
        self.peak = 0

    def _release(self, ptr: int) -> None:
        self.refs[ptr] -= 1
        if self.refs[ptr] == 0:
            self.current -= self.sizes.pop(ptr)
            del self.refs[ptr]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for t in tree_flatten((args, kwargs))[0]:
            if isinstance(t, torch.Tensor):
                self.known.add(t.untyped_storage().data_ptr())
        out = func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr not in self.sizes:
                if ptr in self.known:  # a view of (or in-place result on) a pre-existing tensor
                    continue
                self.sizes[ptr], self.refs[ptr] = storage.nbytes(), 0
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
            self.refs[ptr] += 1
            weakref.finalize(t, self._release, ptr)
        return out


def unfold_adaptive_conv(x: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """The unfold formulation (spec 4.4): materialises (B, C, I*J, H, W)."""
    b, h, w, kh, kw = filters.shape
    cols = F.unfold(x, (kh, kw)).view(b, x.shape[1], kh * kw, h, w)
    return torch.einsum("bcphw,bhwp->bchw", cols, filters.reshape(b, h, w, kh * kw))


@pytest.fixture(scope="module")
def op_golden():
    from conftest import golden_path

    return load_file(str(golden_path("featup", "adaptive_conv_op.safetensors")))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_op_golden_forward_and_grads(op_golden, dtype: torch.dtype) -> None:
    g = op_golden
    x = g["input"].to(dtype).clone().requires_grad_(True)
    f = g["filters"].to(dtype).clone().requires_grad_(True)
    out = adaptive_conv(x, f)
    out.backward(g["grad_output"].to(dtype))
    torch.testing.assert_close(out, g["output"].to(dtype), **TOL[dtype])
    torch.testing.assert_close(x.grad, g["grad_input"].to(dtype), **TOL[dtype])
    # The correct filter gradient (CPU C++ op); the official CUDA kernel writes only 7 of the 49 taps.
    torch.testing.assert_close(f.grad, g["grad_filters"].to(dtype), **TOL[dtype])


def test_gradcheck_non_square_kernel3() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    f = torch.randn(2, 4, 6, 3, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(adaptive_conv, (x, f))


def test_matches_unfold_formulation() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 13, 17, dtype=torch.float64, generator=gen)
    f = torch.randn(2, 7, 11, 7, 7, dtype=torch.float64, generator=gen)
    torch.testing.assert_close(adaptive_conv(x, f), unfold_adaptive_conv(x, f), atol=1e-12, rtol=1e-12)


def test_low_precision_accumulates_in_fp32() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 20, 20, generator=gen)
    f = torch.rand(1, 14, 14, 7, 7, generator=gen)
    ref = adaptive_conv(x.double(), f.double())
    out = adaptive_conv(x.bfloat16(), f.bfloat16())
    assert out.dtype == torch.bfloat16
    # Only input/output bf16 rounding remains (the 49-term sum itself is exact-ish in fp32).
    ref_rounded = adaptive_conv(x.bfloat16().double(), f.bfloat16().double())
    torch.testing.assert_close(out.double(), ref_rounded, atol=0, rtol=2**-8)
    assert (out.double() - ref).abs().max() < 0.1 * ref.abs().max()


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="filters must be"):
        adaptive_conv(torch.zeros(1, 2, 10, 10), torch.zeros(1, 5, 5, 7, 7))
    with pytest.raises(ValueError, match=r"\(B, H_out, W_out, I, I\)"):
        adaptive_conv(torch.zeros(1, 2, 10, 10), torch.zeros(1, 4, 4, 7, 5))


# ---------------------------------------------------------------------------------------------- memory


def op_memory(
    size: int = 256, channels: int = 384, with_unfold: bool = False, with_filters: bool = True
) -> dict[str, int]:
    """Peak bytes allocated by one call at size x size output, batch 1 (no grad)."""
    x = torch.randn(1, channels, size + 6, size + 6)
    taps = torch.rand(1, 49, size, size)
    filters = taps.permute(0, 2, 3, 1).reshape(1, size, size, 7, 7).contiguous()
    res = {"output_bytes": channels * size * size * 4}
    with torch.no_grad():
        with PeakMemory() as m:
            out = adaptive_conv_taps(x, taps, 7)
        res["ours_taps"] = m.peak
        del out
        if with_filters:
            with PeakMemory() as m:
                out = adaptive_conv(x, filters)  # official (B, H, W, 7, 7) layout: a permuted view, no copy
            res["ours_filters"] = m.peak
            del out
        if with_unfold:  # slow and 4.9 GB at 256x256x384: only for the docs numbers
            with PeakMemory() as m:
                out = unfold_adaptive_conv(x, filters)
            res["unfold"] = m.peak
    return res


def official_structured_step(layer: JBULearnedRange, source: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
    """One JBU step computed the way the official code structures it: range kernel through an
    ``Unfold(7)`` of the 32-channel projection (B, 32*49, GH, GW), op allocating only its output."""
    gh, gw = guidance.shape[-2:]
    proj = layer.range_proj(guidance)
    queries = F.unfold(F.pad(proj, (3, 3, 3, 3), mode="reflect"), 7).reshape(proj.shape[0], proj.shape[1], 49, gh, gw)
    logits = torch.einsum("bcphw,bchw->bphw", queries, proj) * torch.exp(layer.range_temp).clamp(1e-4, 1e4)
    k = torch.softmax(logits, 1) * layer.spatial_kernel().view(1, -1, 1, 1)
    k = k / k.sum(1, keepdim=True).clamp(min=1e-7)
    k = k + 0.1 * layer.fixup_proj(torch.cat([k, guidance], 1))
    hr = F.pad(F.interpolate(source, (gh, gw), mode="bicubic", align_corners=False), (3, 3, 3, 3), mode="reflect")
    return adaptive_conv_taps(hr, k, 7)  # allocates only its output, like the official CUDA/C++ op


def jbu_step_memory(size: int = 256, channels: int = 384) -> dict[str, int]:
    """Peak bytes of the last JBU step (size/2 -> size), batch 1, ours vs official structure."""
    gen = torch.Generator().manual_seed(0)
    layer = JBULearnedRange().eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    source = torch.randn(1, channels, size // 2, size // 2, generator=gen)
    guidance = torch.rand(1, 3, size, size, generator=gen)
    res = {}
    with torch.no_grad():
        with PeakMemory() as m:
            ours = layer(source, guidance)
        res["ours"] = m.peak
        with PeakMemory() as m:
            ref = official_structured_step(layer, source, guidance)
        res["official_structure"] = m.peak
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    return res


def test_op_memory_256_is_only_its_output() -> None:
    mem = op_memory(256, 384, with_filters=False)
    # The official CUDA/C++ op allocates exactly its output; ours allocates nothing more.
    assert mem["ours_taps"] == mem["output_bytes"]


def test_unfold_formulation_memory_small() -> None:
    mem = op_memory(32, 8, with_unfold=True)
    assert mem["ours_taps"] == mem["ours_filters"] == mem["output_bytes"]
    assert mem["unfold"] >= 49 * mem["output_bytes"]


def test_jbu_step_memory_256_below_official() -> None:
    # The saving is in the range kernel, which does not depend on C: 16 channels keep the test fast.
    mem = jbu_step_memory(256, 16)
    assert mem["ours"] < mem["official_structure"]


if __name__ == "__main__":
    MB = 2**20
    for name, res in (("op", op_memory(with_unfold=True)), ("jbu step 128->256", jbu_step_memory())):
        print(name, {k: f"{v / MB:.1f} MiB" for k, v in res.items()})
