"""met3r_metrics.cuda_graphs: the capture/replay rules, proved on CPU with a backend that records like a graph.

The recording backend keeps what a CUDA graph keeps (static input buffers, static output buffers) and
"replays" by recomputing into the static outputs, so stale inputs, overwritten outputs or a key that
misses a shape would all show up here as wrong numbers. The real capture runs in benchmarks/cuda_smoke.py.
"""

from __future__ import annotations

import pytest
import torch

from met3r_metrics import cuda_graphs
from met3r_metrics.cuda_graphs import GraphCache, graphs_for


class _Replay:
    def __init__(self, fn, inputs, outputs):
        self.fn, self.inputs, self.outputs = fn, inputs, outputs

    def replay(self):
        for dst, src in zip(self.outputs, self.fn(*self.inputs)):
            dst.copy_(src)


class RecordingBackend:
    """A CPU stand-in for torch.cuda.CUDAGraph: static buffers in, static buffers out."""

    def __init__(self, fail: bool = False):
        self.fail = fail

    def capture(self, fn, args):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        static = [a.detach().clone() for a in args]
        outputs = tuple(o.clone() for o in fn(*static))  # own buffers (an expanded output cannot be written)
        return cuda_graphs._Captured(_Replay(fn, static, outputs), static, outputs)


def _fn(x, y):
    return (x * 2 + y, x.sum(0))


def test_first_call_eager_second_captures_then_replays_fresh_inputs():
    cache = GraphCache(RecordingBackend())
    for step in range(4):
        x, y = torch.randn(3, 4), torch.randn(3, 4)
        out = cache.run("f", _fn, x, y)
        ref = _fn(x, y)
        assert all(torch.equal(a, b) for a, b in zip(out, ref)), step
    assert (cache.captures, cache.replays) == (1, 3)


def test_returned_outputs_are_not_overwritten_by_later_replays():
    cache = GraphCache(RecordingBackend())
    x = torch.ones(2, 2)
    cache.run("f", _fn, x, x)
    first = cache.run("f", _fn, x, x)[0]
    kept = first.clone()
    cache.run("f", _fn, x * 5, x)
    assert torch.equal(first, kept)


def test_key_separates_shapes_dtypes_and_static_values():
    cache = GraphCache(RecordingBackend())
    calls = []

    def fn(x):
        calls.append(1)
        return (x + len(calls) * 0,)

    for shape in ((2, 3), (3, 2)):
        for _ in range(2):
            cache.run("g", fn, torch.zeros(shape))
    assert cache.captures == 2  # one per shape, each on its second sighting
    for static in ((256, 128), (128, 256)):
        for _ in range(2):
            cache.run("g", fn, torch.zeros(2, 3), static=static)
    assert cache.captures == 4
    for _ in range(2):
        cache.run("g", fn, torch.zeros(2, 3, dtype=torch.float64))
    assert cache.captures == 5


def test_autograd_inputs_run_eagerly_and_keep_their_gradient():
    cache = GraphCache(RecordingBackend())
    x = torch.randn(3, 4, requires_grad=True)
    for _ in range(3):
        out = cache.run("f", _fn, x, torch.zeros(3, 4))[0]
    out.sum().backward()
    assert cache.captures == 0
    assert torch.equal(x.grad, torch.full_like(x, 2.0))


def test_disabled_runs_eagerly():
    cache = GraphCache(RecordingBackend())
    with cuda_graphs.enabled(False):
        for _ in range(3):
            cache.run("f", _fn, torch.ones(1), torch.ones(1))
    assert cache.captures == 0 and cuda_graphs.is_enabled()


def test_failed_capture_warns_once_and_stays_eager():
    cache = GraphCache(RecordingBackend(fail=True))
    x = torch.randn(2)
    cache.run("f", _fn, x, x)
    with pytest.warns(UserWarning, match="capture of 'f' failed"):
        out = cache.run("f", _fn, x, x)
    assert torch.equal(out[0], x * 3)
    out = cache.run("f", _fn, x, x)  # no second warning: the key is eager-only now
    assert cache.captures == 0 and cache.replays == 0


def test_cpu_tensors_are_never_captured_by_the_cuda_backend():
    cache = GraphCache()
    for _ in range(3):
        cache.run("f", _fn, torch.ones(2), torch.ones(2))
    assert cache.captures == 0


def test_scorer_stages_through_recorded_graphs_equal_eager(golden_root, tmp_path):
    """The scorer's encode / decode / features wiring (keys, static shape, clones) gives the eager numbers."""
    from met3r_metrics import met3r
    from met3r_metrics.scorer import get_scorer
    from met3r_metrics.settings import resolve
    from met3r_metrics.testing import tiny_met3r_kwargs

    settings = resolve("official", **{**tiny_met3r_kwargs(golden_root, tmp_path), "img_size": None})
    scorer = get_scorer(settings)
    torch.manual_seed(0)
    sizes = ((2, 3, 3, 64, 64), (1, 3, 3, 64, 96), (2, 3, 3, 64, 64), (1, 3, 3, 96, 64), (1, 3, 3, 64, 96))
    inputs = [torch.rand(*s) * 2 - 1 for s in sizes]
    with cuda_graphs.enabled(False):
        eager = [met3r(x, settings, return_details=True).pair_scores for x in inputs]
    caches = [graphs_for(scorer.stereo), graphs_for(scorer.features)]
    saved = [c.backend for c in caches]
    try:
        for c in caches:
            c.clear()
            c.backend = RecordingBackend()
        graphed = [met3r(x, settings, return_details=True).pair_scores for x in inputs]
        assert sum(c.replays for c in caches) > 0
    finally:
        for c, b in zip(caches, saved):
            c.backend = b
            c.clear()
    for e, g in zip(eager, graphed):
        assert torch.equal(e, g)


def test_splat_rasterizer_through_recorded_graphs_equals_eager():
    """The splat's rasterizer stage (dense pass, keyed by size/radius/K) replays with fresh points."""
    from met3r_metrics.render import rasterize_points
    from met3r_metrics.render.splatting import _rasterize_for_splat

    cache = GraphCache(RecordingBackend())
    gen = torch.Generator().manual_seed(0)
    for step in range(4):
        ndc = torch.rand(2, 300, 3, generator=gen) * 2 - 1
        ndc[..., 2] = ndc[..., 2].abs() + 0.1
        for size, radius in (((16, 16), 0.1), ((12, 20), 0.05)):
            idx, dists = _rasterize_for_splat(ndc, size, radius, 4, graphs=cache)
            ref_idx, _, ref_dists = rasterize_points(ndc, size, radius, 4)
            assert torch.equal(idx, ref_idx) and torch.equal(dists, ref_dists), (step, size)
    assert (cache.captures, cache.replays) == (2, 6)  # one graph per (size, radius), from the second call
