"""CUDA-graph replay of MEt3R's network stages (encoder, decoder + heads, DINO + upsampler).

A scoring step launches thousands of small kernels; on a fast GPU the host cannot issue them as fast as
the GPU runs them. A captured graph replays the same kernels with one launch. It is the same
computation: the same kernels on the same shapes (``tests/test_cuda_graphs.py`` checks the buffer
handling on CPU; ``benchmarks/cuda_smoke.py`` compares graphed and eager scores on a GPU).

How a stage runs through :meth:`GraphCache.run`:

* the key is the stage name, the shapes/dtypes/devices of the tensor arguments and the numerics state
  (autocast dtype, TF32 switches, Triton kernels on/off), so a graph is only replayed for the exact
  program it captured;
* the first call with a key runs eagerly (one-off shapes, such as a last short chunk, never pay a
  capture); the second captures a graph on a side stream and replays it; later calls replay;
* inputs are copied into the graph's static buffers and outputs are cloned out, so a returned tensor is
  never overwritten by a later replay (all graphs share one memory pool, which is safe because each
  replay's outputs are copied before the next replay);
* stages that need autograd (inputs requiring grad with grad enabled) always run eagerly;
* a capture that fails (an op that cannot be captured) marks the key eager-only, with one warning.

Switch off with ``MET3R_DISABLE_CUDA_GRAPHS=1`` (read at each call) or :func:`set_enabled` / :func:`enabled`.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from . import kernels
from .precision import autocast_state, tf32_flags
from .switch import Switch

__all__ = ["GraphCache", "graphs_for", "set_enabled", "is_enabled", "enabled", "MAX_GRAPHS"]

#: The one switch of graph replay (the fused kernels have one of the same kind: met3r_metrics.switch); its
#: methods are the module's functions: ``with enabled(False):`` runs every stage eagerly inside the block.
_SWITCH = Switch("MET3R_DISABLE_CUDA_GRAPHS")
set_enabled, is_enabled, enabled = _SWITCH.set_enabled, _SWITCH.is_enabled, _SWITCH.enabled
#: Graphs kept per cache; past it new keys run eagerly (bounds the number of static buffers).
MAX_GRAPHS = 64


def _numerics_state(device: torch.device) -> tuple:
    """The numerics a captured program depends on: autocast (on, dtype), the TF32 switches, Triton on/off."""
    return (*autocast_state(device), *tf32_flags(), kernels.is_enabled())


class _Captured:
    """One captured program: static inputs, static outputs and the replay handle."""

    def __init__(self, graph: Any, inputs: Sequence[Tensor], outputs: tuple[Tensor, ...]) -> None:
        self.graph, self.inputs, self.outputs = graph, list(inputs), outputs

    def __call__(self, args: Sequence[Tensor]) -> tuple[Tensor, ...]:
        for dst, src in zip(self.inputs, args):
            dst.copy_(src)
        self.graph.replay()
        return tuple(t.clone() for t in self.outputs)


class _CudaBackend:
    """Capture with :class:`torch.cuda.CUDAGraph` on a side stream (warm-up first, as CUDA requires)."""

    def __init__(self) -> None:
        self.pool: Any = None

    def capture(self, fn: Callable[..., tuple[Tensor, ...]], args: Sequence[Tensor]) -> _Captured:
        static = [a.detach().clone() for a in args]
        stream = torch.cuda.Stream(device=static[0].device)
        stream.wait_stream(torch.cuda.current_stream(static[0].device))
        with torch.cuda.stream(stream):
            fn(*static)  # warm-up: lazy init (cuBLAS handles, Triton compiles) must not happen in capture
        torch.cuda.current_stream(static[0].device).wait_stream(stream)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            outputs = fn(*static)
        return _Captured(graph, static, tuple(outputs))


class GraphCache:
    """Per-network cache of captured stages; see the module docstring for the rules."""

    def __init__(self, backend: Any = None) -> None:
        self.backend = backend if backend is not None else _CudaBackend()
        self._graphs: dict[tuple, _Captured | None] = {}  # None: eager-only
        self._seen: set[tuple] = set()
        self._lock = threading.Lock()
        self.captures = 0  # counters, for tests and benchmarks
        self.replays = 0

    def _key(self, name: str, args: Sequence[Tensor], static: tuple) -> tuple:
        return (name, static, tuple((tuple(a.shape), a.dtype, a.device, a.stride()) for a in args),
                _numerics_state(args[0].device))

    def run(
        self, name: str, fn: Callable[..., tuple[Tensor, ...]], *args: Tensor, static: tuple = ()
    ) -> tuple[Tensor, ...]:
        """``fn(*args)`` (a tuple of tensors), replayed from a graph when the rules allow.

        ``fn`` must depend only on its tensor arguments, on ``static`` (hashable values it closes over,
        such as an image size: part of the key) and on fixed state (network weights), and must not
        synchronise with the host.
        """
        if not self._capturable(args):
            return tuple(fn(*args))
        key = self._key(name, args, static)
        with self._lock:
            captured = self._graphs.get(key, False)
            if captured is False:
                if key not in self._seen or len(self._graphs) >= MAX_GRAPHS:
                    self._seen.add(key)
                    captured = None
                else:
                    captured = self._capture(key, fn, args)
            if captured is None:
                return tuple(fn(*args))
            self.replays += 1
            return captured(args)

    def _capturable(self, args: Sequence[Tensor]) -> bool:
        if not is_enabled() or not args or not all(isinstance(a, Tensor) for a in args):
            return False
        if isinstance(self.backend, _CudaBackend) and not all(a.is_cuda for a in args):
            return False
        return not (torch.is_grad_enabled() and any(a.requires_grad for a in args))

    def _capture(self, key: tuple, fn: Callable[..., tuple[Tensor, ...]], args: Sequence[Tensor]) -> _Captured | None:
        try:
            captured = self.backend.capture(fn, args)
        except Exception as err:  # an op that cannot be captured: this key stays eager (same numbers)
            warnings.warn(f"MEt3R: CUDA-graph capture of {key[0]!r} failed, running it eagerly ({err})", stacklevel=4)
            captured = None
        self._graphs[key] = captured
        self.captures += captured is not None
        return captured

    def clear(self) -> None:
        with self._lock:
            self._graphs.clear()
            self._seen.clear()


_CACHES: "weakref.WeakKeyDictionary[torch.nn.Module, GraphCache]" = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def graphs_for(module: torch.nn.Module) -> GraphCache:
    """The graph cache of a (frozen, shared) network: every scorer using ``module`` shares its graphs."""
    with _CACHES_LOCK:
        cache = _CACHES.get(module)
        if cache is None:
            cache = _CACHES[module] = GraphCache()
        return cache
