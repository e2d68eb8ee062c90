"""Opt-in ``torch.compile`` of MEt3R's transformer blocks (fewer kernel launches, fused elementwise work).

The ViT blocks of DUSt3R/MASt3R (24 encoder + 2 x 12 decoder) and of DINO are where most of the many
small kernels come from (RoPE, LayerNorm, GELU, residual adds). Compiling each block, not the whole
pipeline, keeps the host-synchronising parts (RoPE tables, rasterizer compaction) out of the graphs and
lets identical blocks share one compiled graph. Numbers change only by float rounding (see
``tests/test_compile.py`` and benchmarks/README.md for the measured deviation and speed).

Networks are cached per process (:func:`met3r_metrics.scorer.get_scorer`), so compiling a scorer's
networks affects every metric and functional call that shares them in this process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch import nn

__all__ = ["compile_networks", "transformer_blocks"]


def transformer_blocks(scorer: nn.Module) -> Iterator[nn.Module]:
    """The repeated blocks of a :class:`~met3r_metrics.scorer.MEt3RScorer`'s stereo and DINO networks."""
    stereo = scorer.stereo
    for name in ("enc_blocks", "dec_blocks", "dec_blocks2"):
        yield from getattr(stereo, name, ())
    featurizer = getattr(getattr(scorer, "features", None), "featurizer", None)
    if featurizer is not None:
        yield from featurizer.vit.blocks


def compile_networks(scorer: nn.Module, **compile_kwargs: Any) -> nn.Module:
    """Compile every transformer block of ``scorer`` in place with ``nn.Module.compile(**compile_kwargs)``.

    Args:
        scorer: a :class:`~met3r_metrics.scorer.MEt3RScorer` (e.g. ``metric.scorer``).
        **compile_kwargs: forwarded to ``torch.compile`` (e.g. ``mode="max-autotune-no-cudagraphs"``,
            ``dynamic=False``, or ``backend="aot_eager"`` for a compile-free check).

    Returns:
        ``scorer`` (same object). The first call per input shape pays the compilation time.
    """
    for block in transformer_blocks(scorer):
        block.compile(**compile_kwargs)
    return scorer
