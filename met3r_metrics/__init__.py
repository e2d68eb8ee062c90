"""met3r-metrics: the MEt3R multi-view consistency metric (arXiv 2501.06336) in plain PyTorch.

Public names::

    from met3r_metrics import MEt3R            # torchmetrics.Metric (DDP-synced sum states)
    from met3r_metrics import met3r            # functional: (B, V, 3, H, W) -> (B,) scores
    from met3r_metrics import MEt3RScorer      # nn.Module owning the frozen networks
    from met3r_metrics import Settings         # every knob: one frozen, validated dataclass (variants:
                                               # Settings.official(), Settings.paper())
    from met3r_metrics import KnownGeometry    # known cameras: from_depth / from_points -> geometry=

Importing this package has no side effects: no RNG seeding, no TF32 switching, no downloads.
The public names are loaded on first access (PEP 562), so ``import met3r_metrics`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "MEt3R": ("met3r_metrics.metric", "MEt3R"),
    "met3r": ("met3r_metrics.functional", "met3r"),
    "SequenceScores": ("met3r_metrics.functional", "SequenceScores"),
    "MEt3RScorer": ("met3r_metrics.scorer", "MEt3RScorer"),
    "get_scorer": ("met3r_metrics.scorer", "get_scorer"),
    "Settings": ("met3r_metrics.settings", "Settings"),
    "score_views": ("met3r_metrics.functional", "score_views"),
    "VARIANTS": ("met3r_metrics.settings", "VARIANTS"),
    "KnownGeometry": ("met3r_metrics.known_geometry", "KnownGeometry"),
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from met3r_metrics.functional import SequenceScores, met3r, score_views
    from met3r_metrics.known_geometry import KnownGeometry
    from met3r_metrics.metric import MEt3R
    from met3r_metrics.scorer import MEt3RScorer, get_scorer
    from met3r_metrics.settings import VARIANTS, Settings


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'met3r_metrics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
