"""``MEt3R`` as a ``torchmetrics.Metric``: sum states, DDP reduction, lazily built frozen networks.

States (all ``dist_reduce_fx="sum"``, so ranks with uneven batches reduce exactly):

========================  =====================================================================
``sequence_sum``          sum over sequences of the per-sequence mean (sequences with >= 1 valid pair)
``num_sequences``         number of such sequences
``score_sum``             sum of valid pair scores
``num_pairs``             number of valid pairs
``zero_overlap``          pairs without overlap (NaN, excluded from the means)
``overlap_sum``           sum of overlap fractions over all pairs
``num_pairs_total``       all pairs, valid or not
``num_sequences_total``   all sequences
========================  =====================================================================

With ``return_per_pair=True`` two ``cat`` list states hold every pair score and sequence score.

The frozen networks are not sub-modules: they live in a process-level cache
(:func:`met3r_metrics.scorer.get_scorer`) keyed by settings and device, and the metric keeps a
plain reference. They are therefore not in ``state_dict()``, not moved or broadcast by DDP, and
built once per process, on first ``update``, on the metric's device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from .functional import sequence_means
from .inputs import validate_images
from .scorer import MEt3RScorer, get_scorer
from .settings import resolve_settings

__all__ = ["MEt3R"]

_METRIC_KWARGS = (
    "compute_on_cpu",
    "dist_sync_on_step",
    "process_group",
    "dist_sync_fn",
    "distributed_available_fn",
    "sync_on_compute",
    "compute_with_cache",
)


class MEt3R(Metric):
    """MEt3R multi-view consistency (Asim et al., CVPR 2025); lower is more consistent.

    For each sequence of views (B, V, 3, H, W) the chosen view pairs are scored; the metric is
    the mean over sequences of each sequence's mean pair score (the paper's protocol: consecutive
    pairs in a sliding window, averaged per sequence, then over sequences).

    Args:
        variant: ``"official"`` (default; the official package's defaults: MASt3R, one direction
            ``1 - S(I1, I2)``, 256x256 render) or ``"paper"`` (symmetric ``1 - (S12 + S21)/2``
            with DUSt3R).
        normalize: float inputs in [0, 1] (True) or [-1, 1] (False, default); uint8 is 0..255.
        pairing: ``"consecutive"`` (default), ``"all"`` or ``"first"``.
        return_per_pair: keep every pair score (a ``cat`` state) for :meth:`compute_details`.
        scorer: optional pre-built :class:`~met3r_metrics.scorer.MEt3RScorer` (kept as a plain
            reference, never registered as a sub-module).
        **kwargs: setting overrides (backbone, backbone_weights, feature_backbone,
            feature_weights, upsampler, distance, img_size, symmetric, radius,
            points_per_pixel, nan_on_no_overlap, batch_size, focal_convention, ...) and the usual
            torchmetrics kwargs (sync_on_compute, process_group, dist_sync_fn, ...).

    Example:
        >>> metric = MEt3R()                       # doctest: +SKIP
        >>> metric.update(views)                   # (B, V, 3, H, W) in [-1, 1]
        >>> metric.compute()                       # scalar tensor
    """

    is_differentiable: bool = True
    higher_is_better: bool = False
    full_state_update: bool = False
    plot_lower_bound: float = 0.0

    sequence_sum: Tensor
    num_sequences: Tensor
    score_sum: Tensor
    num_pairs: Tensor
    zero_overlap: Tensor
    overlap_sum: Tensor
    num_pairs_total: Tensor
    num_sequences_total: Tensor

    def __init__(
        self,
        variant: str = "official",
        *,
        normalize: bool = False,
        pairing: str = "consecutive",
        return_per_pair: bool = False,
        scorer: MEt3RScorer | None = None,
        **kwargs: Any,
    ) -> None:
        metric_kwargs = {k: kwargs.pop(k) for k in _METRIC_KWARGS if k in kwargs}
        super().__init__(**metric_kwargs)
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize: expected a bool, got {normalize!r}")
        if not isinstance(return_per_pair, bool):
            raise ValueError(f"return_per_pair: expected a bool, got {return_per_pair!r}")
        if scorer is not None and not isinstance(scorer, MEt3RScorer):
            raise ValueError(f"scorer: expected a MEt3RScorer or None, got {type(scorer).__name__}")
        # with a scorer, its settings are the base that the overrides modify
        base = scorer.settings if scorer is not None and variant == "official" else variant
        self._settings = resolve_settings(base, pairing=pairing, **kwargs)
        self.normalize = normalize
        self.return_per_pair = return_per_pair
        # plain references (object.__setattr__ bypasses nn.Module sub-module registration)
        object.__setattr__(self, "_user_scorer", scorer)
        object.__setattr__(self, "_scorer_ref", None)

        # a fresh default tensor per state: in-place updates must never alias two states
        for name in ("sequence_sum", "score_sum", "overlap_sum"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("num_sequences", "num_pairs", "zero_overlap", "num_pairs_total", "num_sequences_total"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        if return_per_pair:
            self.add_state("pair_scores", default=[], dist_reduce_fx="cat")
            self.add_state("sequence_scores", default=[], dist_reduce_fx="cat")

    # -- settings / networks -----------------------------------------------------------------------
    @property
    def settings(self) -> dict[str, Any]:
        """The resolved settings (JSON-serialisable); put them next to every reported number."""
        return dict(self._settings)

    @property
    def scorer(self) -> MEt3RScorer:
        """The frozen networks on the metric's device (built on first use, cached per process)."""
        user = self.__dict__.get("_user_scorer")
        if user is not None:
            if user.device != self.device:
                raise ValueError(f"scorer: expected a scorer on the metric's device {self.device}, got {user.device}")
            if user.settings != self._settings:
                from .functional import _scorer_for

                user = _scorer_for(user, self._settings, self.device)
            return user
        ref = self.__dict__.get("_scorer_ref")
        if ref is None or ref.device != self.device:
            ref = get_scorer(self._settings, self.device)
            object.__setattr__(self, "_scorer_ref", ref)
        return ref

    def __getstate__(self) -> dict[str, Any]:
        # pickling / deepcopy (Lightning, MetricCollection) must not copy the networks
        state = super().__getstate__()
        state.pop("_scorer_ref", None)
        state.pop("_user_scorer", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_scorer_ref", None)
        self.__dict__.setdefault("_user_scorer", None)

    # -- metric API --------------------------------------------------------------------------------
    def _score(self, images: Tensor) -> dict[str, Tensor]:
        x = validate_images(
            images, normalize=self.normalize, device=self.device,
            even_patch_rows=self._settings["distance"] == "cosine",
        )
        return self.scorer.score_sequences(x)

    def update(self, images: Tensor) -> None:
        """Score the view pairs of a batch of sequences.

        Args:
            images: (B, V, 3, H, W) with V >= 2 on the metric's device; float in [-1, 1]
                (``normalize=False``) / [0, 1] (``normalize=True``), or uint8 0..255.
        """
        out = self._score(images)
        pairs = out["pair_scores"]  # (B, P)
        valid = ~torch.isnan(pairs)
        seq = sequence_means(pairs)
        seq_valid = ~torch.isnan(seq)
        zero = torch.zeros((), dtype=pairs.dtype, device=pairs.device)
        self.score_sum += torch.where(valid, pairs, zero).sum().double()
        self.num_pairs += valid.sum()
        self.sequence_sum += torch.where(seq_valid, seq, zero).sum().double()
        self.num_sequences += seq_valid.sum()
        self.zero_overlap += out["no_overlap"].sum()
        self.overlap_sum += out["overlap"].detach().sum().double()
        self.num_pairs_total += pairs.numel()
        self.num_sequences_total += pairs.shape[0]
        if self.return_per_pair:
            self.pair_scores.append(pairs.reshape(-1))
            self.sequence_scores.append(seq)

    @staticmethod
    def _ratio(num: Tensor, den: Tensor) -> Tensor:
        return torch.where(den > 0, num / den.clamp_min(1), torch.full_like(num, float("nan"))).float()

    def compute(self) -> Tensor:
        """Mean over sequences of the per-sequence mean pair score (NaN pairs excluded; NaN if none)."""
        return self._ratio(self.sequence_sum, self.num_sequences)

    def compute_details(self) -> dict[str, Tensor]:
        """All aggregates, synced across processes like :meth:`compute`.

        Returns:
            ``met3r`` (as :meth:`compute`), ``met3r_pairs`` (mean over valid pairs),
            ``num_pairs`` (valid pairs), ``num_sequences`` (sequences with a score),
            ``zero_overlap`` (pairs without overlap), ``mean_overlap`` (mean overlap fraction
            over all pairs), and with ``return_per_pair``: ``pair_scores`` (all pairs, flat, NaN
            kept) and ``sequence_scores``.
        """
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn,
            process_group=self.process_group,
            should_sync=self._to_sync,
            should_unsync=self._should_unsync,
            distributed_available=self.distributed_available_fn,
        ):
            out = {
                "met3r": self._ratio(self.sequence_sum, self.num_sequences),
                "met3r_pairs": self._ratio(self.score_sum, self.num_pairs),
                "num_pairs": self.num_pairs.clone(),
                "num_sequences": self.num_sequences.clone(),
                "zero_overlap": self.zero_overlap.clone(),
                "mean_overlap": self._ratio(self.overlap_sum, self.num_pairs_total),
            }
            if self.return_per_pair:
                out["pair_scores"] = self._cat(self.pair_scores)
                out["sequence_scores"] = self._cat(self.sequence_scores)
        return out

    def _cat(self, values: Tensor | Sequence[Tensor]) -> Tensor:
        if isinstance(values, Tensor):
            return values.clone()
        if len(values) == 0:
            return torch.zeros(0, device=self.device)
        return dim_zero_cat(list(values)).clone()

    def plot(self, val: Tensor | Sequence[Tensor] | None = None, ax: Any = None) -> Any:
        """Plot a value (default: the current :meth:`compute`) or a sequence of values over time.

        Needs matplotlib (``pip install met3r-metrics[plot]``); returns ``(fig, ax)``.
        """
        return self._plot(val, ax)

    def extra_repr(self) -> str:
        s = self._settings
        return (
            f"variant={s['variant']!r}, backbone={s['backbone']!r}, distance={s['distance']!r}, "
            f"img_size={s['img_size']!r}, symmetric={s['symmetric']}, pairing={s['pairing']!r}"
        )
