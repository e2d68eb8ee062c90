"""The bridge between ``met3r-eval`` and the metric: settings, one scorer per process, pair batches.

Pairs are scored as independent ``(b, 2, 3, H, W)`` batches, so a sequence's numbers do not
depend on the batch size or on how sequences are spread over processes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["PRECISIONS", "PairBatchScorer", "PairResults", "precision_context"]

PRECISIONS = ("fp32", "tf32", "bf16")


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """fp32: TF32 off (pinned numbers); tf32: TF32 matmuls/convs; bf16: TF32 on as well (the networks'
    bfloat16 autocast is the scorer's own ``precision="bf16"`` setting, see :class:`PairBatchScorer`).

    The global TF32 switches are restored on exit: the CLI must not leave side effects behind
    when it is called in-process (tests, notebooks).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"runtime.precision must be one of {PRECISIONS}, got {precision!r}")
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    tf32 = precision in ("tf32", "bf16")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@dataclass
class PairResults:
    """Scores of a list of pairs: ``scores``/``overlap`` (P,) with NaN = no overlap; maps optional."""

    scores: list[float]
    overlap: list[float]
    score_maps: torch.Tensor | None = None
    masks: torch.Tensor | None = None


class PairBatchScorer:
    """Owns the frozen networks of one process and scores the frame pairs of a sequence.

    A sequence goes to :meth:`met3r_metrics.scorer.MEt3RScorer.score_sequences` in chunks of
    ``pairs_per_call`` pairs (each frame is encoded once per chunk); inside, the networks run on
    ``batch_size`` directed pairs at a time.  Pair scores do not depend on either number.
    """

    #: pairs per scorer call: bounds the per-pair maps the scorer holds, sets progress granularity
    pairs_per_call = 64

    def __init__(
        self,
        variant: str,
        overrides: dict[str, Any],
        device: torch.device,
        precision: str = "fp32",
        batch_size: int = 8,
    ) -> None:
        from met3r_metrics.settings import resolve_settings

        self.variant = variant
        self.overrides = dict(overrides)
        if batch_size and "batch_size" not in self.overrides:
            self.overrides["batch_size"] = max(1, int(batch_size))
        if precision == "bf16" and self.overrides.get("precision") is None:
            # the scorer shields its networks from outside autocast; bf16 is its own setting
            self.overrides["precision"] = "bf16"
        self.settings: dict[str, Any] = resolve_settings(variant, **self.overrides)
        self.device = device
        self.precision = precision
        self._scorer: Any = None

    @property
    def scorer(self) -> Any:
        """The frozen networks, built on first use (a rank with nothing to do never builds them)."""
        if self._scorer is None:
            from met3r_metrics.scorer import get_scorer

            self._scorer = get_scorer(self.settings, self.device)
        return self._scorer

    @torch.no_grad()
    def score_pairs(
        self,
        views: torch.Tensor,
        pairs: Sequence[tuple[int, int]],
        *,
        return_maps: bool = False,
        progress: Any = None,
    ) -> PairResults:
        """Score ``pairs`` of ``views`` ``(V, 3, H, W)`` float in [0, 1]."""
        scores: list[float] = []
        overlap: list[float] = []
        maps: list[torch.Tensor] = []
        masks: list[torch.Tensor] = []
        images = (views.to(self.device, torch.float32) * 2 - 1).unsqueeze(0)  # scorer takes [-1, 1]
        for start in range(0, len(pairs), self.pairs_per_call):
            chunk = [tuple(map(int, p)) for p in pairs[start : start + self.pairs_per_call]]
            with precision_context(self.precision, self.device):
                out = self.scorer.score_sequences(images, chunk, return_maps=return_maps)
            scores.extend(float(x) for x in out["pair_scores"][0].float().cpu())
            overlap.extend(float(x) for x in out["overlap"][0].float().cpu())
            if return_maps:
                maps.append(out["score_maps"][0].float().cpu())
                masks.append(out["overlap_masks"][0].float().cpu())
            if progress is not None:
                progress.update(len(chunk))
        return PairResults(
            scores=scores,
            overlap=overlap,
            score_maps=torch.cat(maps) if maps else None,
            masks=torch.cat(masks) if masks else None,
        )


def finite_mean(values: Sequence[float]) -> float | None:
    """Mean of the finite values (NaN = zero-overlap pairs are excluded), ``None`` if none."""
    finite = [v for v in values if math.isfinite(v)]
    return math.fsum(finite) / len(finite) if finite else None
