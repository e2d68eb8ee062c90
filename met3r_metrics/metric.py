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
A last state, ``settings_digest`` (a constant ``uint8`` digest of the settings and ``normalize``,
``dist_reduce_fx="max"``), makes the states of two differently configured MEt3R metrics differ, so a
``MetricCollection`` never puts them in one compute group (it merges metrics whose states are equal
after the first update, e.g. V=2 with ``pairing="consecutive"`` and ``"first"``).

The frozen networks are not sub-modules: they live in a process-level cache
(:func:`met3r_metrics.scorer.get_scorer`) keyed by settings and device, and the metric keeps a
plain reference. They are therefore not in ``state_dict()``, not moved or broadcast by DDP, and
built once per process, on first ``update``, on the metric's device.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from .functional import custom_networks, given_geometry_defaults, score_views
from .known_geometry import KnownGeometry
from .scorer import MEt3RScorer, get_scorer
from .settings import DISTANCES, FIELDS, Settings, resolve

__all__ = ["MEt3R"]

# torchmetrics.Metric's own keyword arguments (everything else is a Settings field)
_METRIC_KWARGS = (
    "compute_on_cpu",
    "dist_sync_on_step",
    "process_group",
    "dist_sync_fn",
    "distributed_available_fn",
    "sync_on_compute",
    "compute_with_cache",
)


class _FromDistance:
    """A read-only attribute taken from the metric's ``settings.distance_info`` (class: the default distance's)."""

    def __init__(self, field: str) -> None:
        self.field = field

    def __get__(self, obj: Any, owner: type) -> Any:
        info = DISTANCES["cosine"] if obj is None else obj._settings.distance_info
        return getattr(info, self.field)


class MEt3R(Metric):
    """MEt3R multi-view consistency (Asim et al., CVPR 2025); lower is more consistent.

    For each sequence of views (B, V, 3, H, W) the chosen view pairs are scored; the metric is
    the mean over sequences of each sequence's mean pair score (the paper's protocol: consecutive
    pairs in a sliding window, averaged per sequence, then over sequences).

    Args:
        variant: ``"official"`` (the official package's defaults: MASt3R, one direction
            ``1 - S(I1, I2)``, 256x256 render), ``"paper"`` (symmetric ``1 - (S12 + S21)/2`` with
            DUSt3R), a :class:`~met3r_metrics.Settings`, or ``None`` (default): ``scorer``'s settings
            when a scorer is given, else ``"official"``.
        normalize: float inputs in [0, 1] (True) or [-1, 1] (False, default); uint8 is 0..255.
        return_per_pair: keep every pair score (a ``cat`` state) for :meth:`compute_details`.
        scorer: optional pre-built :class:`~met3r_metrics.scorer.MEt3RScorer` (kept as a plain
            reference, never registered as a sub-module); settings choosing other networks are refused.
        **kwargs: fields of :class:`~met3r_metrics.Settings` (pairing, backbone, backbone_weights,
            img_size, symmetric, radius, distance, batch_size, precision, ...) and the usual
            torchmetrics kwargs (sync_on_compute, process_group, dist_sync_fn, ...). ``backbone`` /
            ``feature_backbone`` may be your own callable / ``nn.Module`` (kept as a plain reference,
            not in ``state_dict()``, never moved: put it on the metric's device yourself), recorded as
            ``"custom:<name>"``. ``geometry="given"``: every ``update`` takes ``geometry=`` (known cameras).

    ``higher_is_better``, ``plot_lower_bound`` and ``plot_upper_bound`` follow ``distance``: PSNR
    and SSIM are similarities (higher is better), cosine / mse / rmse / lpips dissimilarities.

    Example:
        >>> metric = MEt3R()                       # doctest: +SKIP
        >>> metric.update(views)                   # doctest: +SKIP
        >>> metric.compute()                       # doctest: +SKIP
    """

    is_differentiable: bool = True
    full_state_update: bool = False

    # per instance, from the distance (torchmetrics makes these read-only attributes); on the class,
    # the default distance's (cosine: lower is better, range [0, 2])
    higher_is_better = _FromDistance("higher_is_better")
    plot_lower_bound = _FromDistance("lower_bound")
    plot_upper_bound = _FromDistance("upper_bound")

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
        variant: str | Settings | None = None,
        *,
        normalize: bool = False,
        return_per_pair: bool = False,
        scorer: MEt3RScorer | None = None,
        **kwargs: Any,
    ) -> None:
        unknown = sorted(set(kwargs) - set(FIELDS) - set(_METRIC_KWARGS))
        if unknown:
            raise ValueError(
                f"MEt3R: unknown argument(s) {unknown}; expected Settings fields {list(FIELDS)} "
                f"or torchmetrics arguments {list(_METRIC_KWARGS)}"
            )
        metric_kwargs = {k: kwargs.pop(k) for k in _METRIC_KWARGS if k in kwargs}
        super().__init__(**metric_kwargs)
        kwargs, networks = custom_networks(given_geometry_defaults(kwargs), scorer)
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize: expected a bool, got {normalize!r}")
        if not isinstance(return_per_pair, bool):
            raise ValueError(f"return_per_pair: expected a bool, got {return_per_pair!r}")
        if scorer is not None and not isinstance(scorer, MEt3RScorer):
            raise ValueError(f"scorer: expected a MEt3RScorer or None, got {type(scorer).__name__}")
        self._settings = resolve(variant, base=scorer.settings if scorer is not None else None, **kwargs)
        if scorer is not None:
            scorer.with_settings(self._settings)  # refuse other networks now, not at the first update
        self.normalize = normalize
        self.return_per_pair = return_per_pair
        # plain references (object.__setattr__ bypasses nn.Module sub-module registration)
        object.__setattr__(self, "_user_scorer", scorer)
        object.__setattr__(self, "_scorer_ref", None)
        object.__setattr__(self, "_networks", networks)  # the user's networks (plain references)

        # a fresh default tensor per state: in-place updates must never alias two states
        for name in ("sequence_sum", "score_sum", "overlap_sum"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("num_sequences", "num_pairs", "zero_overlap", "num_pairs_total", "num_sequences_total"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        if return_per_pair:
            self.add_state("pair_scores", default=[], dist_reduce_fx="cat")
            self.add_state("sequence_scores", default=[], dist_reduce_fx="cat")
        # constant per configuration: keeps MetricCollection from merging differently configured metrics
        digest = hashlib.sha256(f"{self._settings.to_json(sort_keys=True)} normalize={normalize}".encode()).digest()
        self.add_state("settings_digest", default=torch.tensor(list(digest[:16]), dtype=torch.uint8), dist_reduce_fx="max")

    # -- settings / networks -----------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        """The settings that make the numbers (``.to_dict()`` for JSON); report them with every number."""
        return self._settings

    @property
    def scorer(self) -> MEt3RScorer:
        """The frozen networks on the metric's device (built on first use, cached per process)."""
        user = self.__dict__.get("_user_scorer")
        if user is not None:
            if user.device != self.device:
                raise ValueError(f"scorer: expected a scorer on the metric's device {self.device}, got {user.device}")
            return user.with_settings(self._settings)
        ref = self.__dict__.get("_scorer_ref")
        if ref is None or ref.device != self.device:
            networks = self.__dict__.get("_networks") or {}
            # a user's networks: a scorer of this metric's own, never the per-process cache (keyed by name)
            ref = MEt3RScorer.from_settings(self._settings, self.device, **networks) if networks else get_scorer(
                self._settings, self.device)
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
        self.__dict__.setdefault("_networks", {})

    # -- metric API --------------------------------------------------------------------------------
    def update(self, images: Tensor, geometry: KnownGeometry | None = None) -> None:
        """Score the view pairs of a batch of sequences.

        Args:
            images: (B, V, 3, H, W) with V >= 2 on the metric's device; float in [-1, 1]
                (``normalize=False``) / [0, 1] (``normalize=True``), or uint8 0..255.
            geometry: with ``geometry="given"`` settings (``MEt3R(geometry="given")``), the
                :class:`~met3r_metrics.KnownGeometry` (B, V, H, W) of these views on the metric's device.
        """
        if geometry is not None and self._settings.geometry != "given":
            raise ValueError(
                "geometry: expected None for a metric with geometry='network' (build MEt3R(geometry='given') to "
                f"score given cameras: its settings then record it), got {type(geometry).__name__}"
            )
        # the user's scorer / networks, or None: the front door then takes the per-process cache
        custom = self.__dict__.get("_user_scorer") is not None or bool(self.__dict__.get("_networks"))
        user = self.scorer if custom else None
        out = score_views(images, self._settings, normalize=self.normalize, device=self.device, scorer=user,
                          geometry=geometry)
        pairs = out.pair_scores  # (B, P)
        valid = ~torch.isnan(pairs)
        seq = out.sequence_scores
        seq_valid = ~torch.isnan(seq)
        zero = torch.zeros((), dtype=pairs.dtype, device=pairs.device)
        self.score_sum += torch.where(valid, pairs, zero).sum().double()
        self.num_pairs += valid.sum()
        self.sequence_sum += torch.where(seq_valid, seq, zero).sum().double()
        self.num_sequences += seq_valid.sum()
        self.zero_overlap += out.no_overlap.sum()
        self.overlap_sum += out.overlap.detach().sum().double()
        self.num_pairs_total += pairs.numel()
        self.num_sequences_total += pairs.shape[0]
        if self.return_per_pair:
            self.pair_scores.append(pairs.reshape(-1))
            self.sequence_scores.append(seq)

    def _ratio(self, num: Tensor, den: Tensor) -> Tensor:
        # in the metric's dtype (float32 unless set_dtype), as torchmetrics' own aggregators
        num = num.to(torch.float64)
        return torch.where(den > 0, num / den.clamp_min(1), torch.full_like(num, float("nan"))).to(self.dtype)

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
            f"variant={s.variant!r}, backbone={s.backbone!r}, distance={s.distance!r}, "
            f"img_size={s.img_size!r}, symmetric={s.symmetric}, pairing={s.pairing!r}"
        )
