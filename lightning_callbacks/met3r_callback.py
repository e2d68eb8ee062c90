"""Lightning callback: sample views from the model being trained, log MEt3R next to your other metrics.

During validation the callback asks the generator for multi-view samples (``sample_fn`` or the
LightningModule's ``sample_views``), feeds them to a callback-owned :class:`met3r_metrics.MEt3R` and
to any torchmetrics metrics you pass (``metrics={"fid": FrechetInceptionDistance(normalize=True)}``),
and at the end of the validation epoch logs ``val/met3r``, ``val/met3r_zero_overlap``,
``val/met3r_mean_overlap`` and ``val/<name>`` for each of your metrics, plus a PNG figure of a few
sampled pairs with their score maps and overlap masks. It is a thin client: MEt3R goes through the
metric's own front door (the same validated path as ``met3r()`` and ``met3r-eval``).

Why the metrics live on the callback (and not on the LightningModule):

* DDP wraps only the LightningModule. MEt3R's frozen networks (~0.7 B weights) as a sub-module of
  the DDP-wrapped module would be broadcast by DDP at construction.
* Lightning saves ``pl_module.state_dict()`` in checkpoints; the callback keeps no checkpoint
  state at all, so checkpoints do not grow.

Distributed semantics: every rank samples views for its own shard of the validation data and
updates its local metric states. ``compute()`` of a torchmetrics metric all-gathers and reduces the
states across ranks (``sync_on_compute=True``), so afterwards every rank holds the *same*, already
global value. It is logged on every rank (so ``ModelCheckpoint`` / ``EarlyStopping`` monitoring
``val/met3r`` agree on all ranks) with ``sync_dist=True, reduce_fx="max"``: the maximum of equal
values is that value, bit for bit (a mean could round, a sum would multiply by the world size).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from torch import Tensor
from torchmetrics import Metric

from met3r_metrics.inputs import to_unit_range

__all__ = ["MEt3RCallback"]

SampleFn = Callable[[LightningModule, Any, int], Tensor]
RealFn = Callable[[Any], Tensor]
_MET3R_KEYS = ("met3r", "met3r_zero_overlap", "met3r_mean_overlap")


def _first_tensor(obj: Any) -> Tensor | None:
    """First tensor found in a (nested) mapping / sequence, depth first; None if there is none."""
    if isinstance(obj, Tensor):
        return obj
    if isinstance(obj, Mapping):
        obj = list(obj.values())
    if isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):
        for item in obj:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _rank_quota(total: int, world_size: int, rank: int) -> int:
    """Share of ``total`` samples for ``rank`` so that the shares add up to exactly ``total``."""
    return total // world_size + (1 if rank < total % world_size else 0)


def _takes_real(metric: Metric) -> bool:
    """Whether ``metric.update`` has a ``real`` argument (FID, KID, MiFID: real and generated images)."""
    return "real" in inspect.signature(metric.update).parameters


def _default_fid(required: bool) -> dict[str, Metric]:
    """torchmetrics' Inception FID when its dependency (torch-fidelity) is installed."""
    import importlib.util

    if importlib.util.find_spec("torch_fidelity") is None:
        if required:
            raise ModuleNotFoundError(
                "fid=True: torchmetrics' default Inception FID needs torch-fidelity (`pip install torch-fidelity`) "
                "and its weights; or pass your own, e.g. metrics={'fid': FrechetInceptionDistance(feature=..., normalize=True)}"
            )
        rank_zero_info("MEt3RCallback: torch-fidelity is not installed, so no default FID is logged (pass metrics=...)")
        return {}
    from torchmetrics.image.fid import FrechetInceptionDistance

    try:
        return {"fid": FrechetInceptionDistance(normalize=True)}
    except Exception as err:  # noqa: BLE001 - offline: URLError; a cut download: RuntimeError; name FID either way
        why = (f"torchmetrics' default Inception FID could not load its Inception weights ({type(err).__name__}: "
               f"{err}); torch-fidelity downloads them once (pt_inception-2015-12-05) into torch hub's cache, "
               f"{torch.hub.get_dir()}: run once with network access or copy the file there")
        if required:
            raise RuntimeError(f"fid=True: {why}; or pass fid=False, or your own metrics={{'fid': ...}}") from err
        rank_zero_warn(f"MEt3RCallback: no default FID is logged: {why}. Pass fid=False to silence this, or "
                       "metrics={'fid': ...} for your own")
        return {}


@rank_zero_only
def _log_settings(trainer: Trainer, key: str, settings: dict[str, Any]) -> None:
    for logger in trainer.loggers:
        logger.log_hyperparams({key: settings})


class MEt3RCallback(Callback):
    """Log MEt3R (multi-view consistency) of generated views during validation, next to your metrics.

    How views are obtained, per validation batch (dataloader ``dataloader_idx`` only):

    * ``sample_fn(pl_module, batch, batch_idx) -> Tensor (B, V, 3, H, W)`` if given, else
    * ``pl_module.sample_views(batch) -> Tensor (B, V, 3, H, W)``.

    Known cameras: with ``metric_kwargs={"geometry": "given"}`` either returns a pair
    ``(views, met3r_metrics.KnownGeometry)``, the cameras (and depth) the views were generated for;
    MEt3R then scores them under those cameras instead of a geometry network's.

    If neither exists, :meth:`setup` raises a ``TypeError`` before training starts. Sampling runs
    under ``torch.no_grad()`` and the trainer's precision context (like ``validation_step``); the
    metrics run in float32 with autocast disabled.

    Value range of views (and of real images): float in [-1, 1] by default (``normalize=False``,
    the MEt3R/official convention), float in [0, 1] with ``normalize=True``, or uint8 0..255.

    Your metrics get the generated views flattened to ``(B*V, 3, H, W)`` float images in [0, 1]
    (configure them for that, e.g. ``FrechetInceptionDistance(normalize=True)``); a metric whose
    ``update`` takes ``real`` (FID, KID) also gets the real images of the batch with ``real=True``.
    Real images come from ``real_fn(batch)``; by default ``batch[real_key]`` for a mapping batch
    with that key, otherwise the first tensor in the batch. They may be ``(B, 3, H, W)`` or
    ``(B, V, 3, H, W)``, in the same value range as the views.

    Args:
        sample_fn: ``(pl_module, batch, batch_idx) -> (B, V, 3, H, W)``; default
            ``pl_module.sample_views(batch)``.
        real_fn: ``batch -> (B, 3, H, W)`` or ``(B, V, 3, H, W)`` real images for metrics that take them.
        real_key: batch key used by the default ``real_fn`` for mapping batches.
        metrics: your torchmetrics metrics to log next to MEt3R, by log name (``{"fid": FID(...)}``).
        fid: ``None`` (default): add torchmetrics' Inception FID as ``fid`` when torch-fidelity is
            installed; ``True``: require it; ``False``: no default FID.
        metric_kwargs: keyword arguments of :class:`met3r_metrics.MEt3R` (``variant``, ``pairing``,
            ``backbone_weights``, ``img_size``, ``symmetric``, ...). ``normalize`` is this callback's.
        normalize: value range of views and real images (see above).
        every_n_epochs: evaluate when ``(current_epoch + 1) % every_n_epochs == 0`` during
            ``fit`` (Lightning's ``check_val_every_n_epoch`` convention); always under ``validate``.
        limit_batches: at most this many validation batches per rank per evaluation (None: all).
        max_samples: at most this many sampled sequences per evaluation *in total over all
            ranks* (rank r gets ``max_samples // world_size`` plus one of the remainder).
        log_prefix: prefix of the logged keys (``"val/"`` gives ``val/met3r``, ``val/fid``, ...).
        dataloader_idx: the validation dataloader whose batches are used.
        num_plot_pairs: pairs shown in the per-epoch figure (0 disables pictures).
        plot_dir: where figures go when no logger accepts images; default
            ``<trainer.log_dir or default_root_dir>/met3r``. Files: ``epoch_XXX.png``.
        run_on_sanity_check: also evaluate during the sanity-check validation (off by default).

    The MEt3R networks are built on ``pl_module.device`` when fitting starts (or at the first
    evaluation) and stay there (met3r_metrics caches them per process and device) until
    ``met3r_metrics.scorer.clear_scorer_cache()``.
    """

    def __init__(
        self,
        sample_fn: SampleFn | None = None,
        real_fn: RealFn | None = None,
        *,
        real_key: str = "images",
        metrics: Mapping[str, Metric] | None = None,
        fid: bool | None = None,
        metric_kwargs: Mapping[str, Any] | None = None,
        normalize: bool = False,
        every_n_epochs: int = 1,
        limit_batches: int | None = None,
        max_samples: int | None = None,
        log_prefix: str = "val/",
        dataloader_idx: int = 0,
        num_plot_pairs: int = 4,
        plot_dir: str | Path | None = None,
        run_on_sanity_check: bool = False,
    ) -> None:
        super().__init__()
        for name, fn in (("sample_fn", sample_fn), ("real_fn", real_fn)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name}: expected a callable or None, got {type(fn).__name__}")
        for name, value, low in (("every_n_epochs", every_n_epochs, 1), ("limit_batches", limit_batches, 1),
                                 ("max_samples", max_samples, 1), ("num_plot_pairs", num_plot_pairs, 0)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ValueError(f"{name}: expected an int >= {low}{'' if name in ('every_n_epochs', 'num_plot_pairs') else ' or None'}, got {value!r}")
        if fid not in (None, True, False):
            raise ValueError(f"fid: expected None, True or False, got {fid!r}")
        metric_kwargs = dict(metric_kwargs or {})
        if "normalize" in metric_kwargs and metric_kwargs["normalize"] != normalize:
            raise ValueError(
                f"metric_kwargs['normalize']: expected it unset (the callback's normalize={normalize} also "
                f"converts images for your metrics and pictures), got {metric_kwargs['normalize']!r}"
            )
        metric_kwargs["normalize"] = normalize
        self.metrics: dict[str, Metric] = self._check_metrics(metrics or {})
        if fid is True and "fid" in self.metrics:
            raise ValueError("fid: expected False or None when metrics already holds 'fid', got True")
        self.sample_fn = sample_fn
        self.real_fn = real_fn
        self.real_key = real_key
        self.fid = fid
        self.metric_kwargs = metric_kwargs
        self.normalize = normalize
        self.every_n_epochs = every_n_epochs
        self.limit_batches = limit_batches
        self.max_samples = max_samples
        self.log_prefix = log_prefix
        self.dataloader_idx = dataloader_idx
        self.num_plot_pairs = num_plot_pairs
        self.plot_dir = Path(plot_dir) if plot_dir is not None else None
        self.run_on_sanity_check = run_on_sanity_check

        from met3r_metrics import MEt3R

        # Settings are validated now (a bad knob fails at construction); networks are built later.
        self.met3r_metric = MEt3R(**self.metric_kwargs)
        self._defaults_added = False
        # Per-evaluation bookkeeping (reset in on_validation_epoch_start).
        self._active = False
        self._batches_seen = 0
        self._samples_seen = 0
        self._sample_quota: int | None = None
        self._plot_views: list[Tensor] = []
        self._plot_geometry: list[Any] = []
        # Results of the last evaluation, for users and tests (identical on all ranks).
        self.last_results: dict[str, float] = {}
        self.last_figure_path: Path | None = None
        self._figure_dir: Path | None = None

    @staticmethod
    def _check_metrics(metrics: Mapping[str, Metric]) -> dict[str, Metric]:
        if not isinstance(metrics, Mapping):
            raise TypeError(f"metrics: expected a mapping of log names to torchmetrics metrics, got {type(metrics).__name__}")
        for name, metric in metrics.items():
            if not isinstance(name, str) or not name or name in _MET3R_KEYS:
                raise ValueError(f"metrics: expected log names other than {_MET3R_KEYS}, got {name!r}")
            if not isinstance(metric, Metric):
                raise TypeError(f"metrics[{name!r}]: expected a torchmetrics.Metric, got {type(metric).__name__}")
            if getattr(metric, "normalize", True) is False:
                raise ValueError(
                    f"metrics[{name!r}]: expected normalize=True (the callback feeds float images in [0, 1]), got normalize=False"
                )
        return dict(metrics)

    # ------------------------------------------------------------------ keys
    @property
    def state_key(self) -> str:
        # Several MEt3R callbacks (e.g. two variants) may coexist in one Trainer; they must log
        # under different prefixes anyway, so the prefix identifies the callback.
        return self._generate_state_key(log_prefix=self.log_prefix)

    def _key(self, name: str) -> str:
        return f"{self.log_prefix}{name}"

    @property
    def log_keys(self) -> dict[str, str]:
        """Logged keys: ``met3r``, ``met3r_zero_overlap``, ``met3r_mean_overlap`` and one per metric."""
        return {n: self._key(n) for n in (*_MET3R_KEYS, *self.metrics)}

    @property
    def settings(self) -> Any:
        """The :class:`met3r_metrics.Settings` of the logged MEt3R (``.to_dict()`` for JSON)."""
        return self.met3r_metric.settings

    @property
    def fid_metric(self) -> Metric | None:
        """``metrics["fid"]``, if any."""
        return self.metrics.get("fid")

    # ------------------------------------------------------------------ setup
    def _resolve_sampler(self, pl_module: LightningModule) -> SampleFn:
        if self.sample_fn is not None:
            return self.sample_fn
        method = getattr(pl_module, "sample_views", None)
        if callable(method):
            return lambda module, batch, batch_idx: module.sample_views(batch)
        raise TypeError(
            f"MEt3RCallback needs generated views: pass MEt3RCallback(sample_fn=fn) with "
            f"fn(pl_module, batch, batch_idx) -> Tensor (B, V, 3, H, W), or define "
            f"{type(pl_module).__name__}.sample_views(self, batch) -> Tensor (B, V, 3, H, W)."
        )

    def _add_default_metrics(self) -> None:
        if not self._defaults_added and self.fid is not False and "fid" not in self.metrics:
            self.metrics.update(_default_fid(required=self.fid is True))
        self._defaults_added = True

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage not in (TrainerFn.FITTING, TrainerFn.VALIDATING):
            return
        self._resolve_sampler(pl_module)  # fail now, not mid-epoch
        self._add_default_metrics()
        if self.num_plot_pairs > 0:
            # trainer.log_dir is a collective under DDP (broadcast from rank 0): resolve it here,
            # on every rank, never inside the rank-zero-only plotting branch.
            self._figure_dir = self.plot_dir or Path(trainer.log_dir or trainer.default_root_dir) / "met3r"
        # A MEt3R number only means something with the settings that made it: record them once
        # per run as hyperparameters (hparams.yaml for CSV/TensorBoard, the run config for W&B).
        _log_settings(trainer, self._key("met3r_settings"), self.settings.to_dict())

    def _to_device(self, device: torch.device) -> None:
        """Move the metrics to ``device`` and build MEt3R's frozen networks there.

        Built with inference mode switched off: validation runs under ``torch.inference_mode``,
        and networks created there would hold inference tensors, unusable with autograd by any
        later user of met3r_metrics' per-process network cache.
        """
        self.met3r_metric.to(device)
        for metric in self.metrics.values():
            metric.to(device)
        with torch.inference_mode(False), torch.no_grad():
            _ = self.met3r_metric.scorer  # property: builds (or fetches) the networks on device

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # pl_module is on its final device now: missing weights fail here, not after the first epoch.
        self._to_device(pl_module.device)

    # ------------------------------------------------------------------ per evaluation
    def _should_run(self, trainer: Trainer) -> bool:
        if trainer.sanity_checking:
            return self.run_on_sanity_check
        if trainer.state.fn == TrainerFn.FITTING:
            return (trainer.current_epoch + 1) % self.every_n_epochs == 0
        return trainer.state.fn == TrainerFn.VALIDATING

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._active = self._should_run(trainer)
        if not self._active:
            return
        self._add_default_metrics()  # e.g. setup() overridden or skipped by a custom loop
        self._batches_seen = 0
        self._samples_seen = 0
        self._plot_views = []
        self._plot_geometry = []
        self._sample_quota = (
            None if self.max_samples is None else _rank_quota(self.max_samples, trainer.world_size, trainer.global_rank)
        )
        self._to_device(pl_module.device)  # the metrics are the callback's: they follow pl_module by hand
        self.met3r_metric.reset()
        for metric in self.metrics.values():
            metric.reset()  # FID keeps its real statistics when reset_real_features=False

    def _wants_real_images(self) -> bool:
        for metric in self.metrics.values():
            if not _takes_real(metric):
                continue
            if getattr(metric, "reset_real_features", True):
                return True
            if int(getattr(metric, "real_features_num_samples", 0)) == 0:
                return True  # the first evaluation fills the kept real statistics
        return False

    def _real_images(self, batch: Any) -> Tensor:
        """Real images of ``batch``: ``(B, 3, H, W)`` or ``(B, V, 3, H, W)`` (not yet flattened)."""
        if self.real_fn is not None:
            real = self.real_fn(batch)
        elif isinstance(batch, Mapping) and self.real_key in batch:
            real = batch[self.real_key]
        else:
            real = _first_tensor(batch)
        if not isinstance(real, Tensor) or real.ndim not in (4, 5) or real.shape[-3] != 3:
            shape = tuple(real.shape) if isinstance(real, Tensor) else type(real).__name__
            raise ValueError(
                f"real images: expected a tensor (B, 3, H, W) or (B, V, 3, H, W), got {shape}; "
                "pass MEt3RCallback(real_fn=...) or real_key=..."
            )
        return real

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._active or dataloader_idx != self.dataloader_idx:
            return
        if self.limit_batches is not None and self._batches_seen >= self.limit_batches:
            return
        remaining = None if self._sample_quota is None else self._sample_quota - self._samples_seen
        if remaining is not None and remaining <= 0:
            return
        self._batches_seen += 1

        sampler = self._resolve_sampler(pl_module)
        with torch.no_grad(), trainer.strategy.precision_plugin.val_step_context():
            views, geometry = _split_sample(sampler(pl_module, batch, batch_idx))
        real = self._real_images(batch) if self._wants_real_images() else None
        if remaining is not None and views.shape[0] > remaining:
            # Keep the real images of the same batch rows when they line up with the samples.
            if real is not None and real.shape[0] == views.shape[0]:
                real = real[:remaining]
            views = views[:remaining]
            geometry = None if geometry is None else geometry[:remaining]
        self._samples_seen += views.shape[0]
        self._update_metrics(views, real, pl_module.device, geometry)

        if trainer.is_global_zero and self.num_plot_pairs > 0:
            stored = sum(v.shape[0] for v in self._plot_views)
            if stored < self.num_plot_pairs:
                self._plot_views.append(views[: self.num_plot_pairs - stored].detach().cpu())
                if geometry is not None:
                    self._plot_geometry.append(geometry[: self.num_plot_pairs - stored].to("cpu"))

    def _update_metrics(self, views: Tensor, real: Tensor | None, device: torch.device, geometry: Any = None) -> None:
        """Metric updates in float32 with autocast off (mixed precision must not leak in)."""
        views = views.detach().to(device)
        if views.dtype != torch.uint8:
            views = views.float()
        if geometry is not None:
            geometry = geometry.to(device)
        with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
            # the front door validates shape, range and size (and the geometry against the views)
            self.met3r_metric.update(views, geometry=geometry)
            if not self.metrics:
                return
            fake = to_unit_range(views.reshape(-1, *views.shape[-3:]), self.normalize)
            real01 = None if real is None else to_unit_range(real.detach().to(device).reshape(-1, *real.shape[-3:]), self.normalize)
            for metric in self.metrics.values():
                if _takes_real(metric):
                    metric.update(fake, real=False)
                    if real01 is not None:
                        metric.update(real01, real=True)
                else:
                    metric.update(fake)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._active:
            return
        device = pl_module.device
        with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
            # compute() synchronises the states over all ranks (collectives: every rank must reach
            # them, so nothing here may be rank-conditional).
            details = self.met3r_metric.compute_details()
            values: dict[str, Any] = {
                "met3r": details["met3r"],
                "met3r_zero_overlap": details["zero_overlap"],
                "met3r_mean_overlap": details["mean_overlap"],
            }
            values.update({name: metric.compute() for name, metric in self.metrics.items()})
        self.last_results = {}
        for name, value in values.items():
            value = torch.as_tensor(value).detach().to(device=device, dtype=torch.float32)
            self.last_results[name] = float(value)
            # Already global after compute(); "max" of equal values is exact (see module docstring).
            pl_module.log(self._key(name), value, on_step=False, on_epoch=True, sync_dist=True, reduce_fx="max")

        if trainer.is_global_zero and self._plot_views:
            from met3r_metrics import KnownGeometry

            geometry = KnownGeometry.cat(self._plot_geometry) if self._plot_geometry else None
            self._log_figure(trainer, torch.cat(self._plot_views), geometry)
        self._plot_views = []
        self._plot_geometry = []

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._active = False

    # ------------------------------------------------------------------ pictures
    def _pair_maps(self, views: Tensor, geometry: Any = None) -> dict[str, Tensor]:
        """Score maps of the first ``num_plot_pairs`` pairs of ``views`` (S, V, 3, H, W), rank 0 only.

        Returns view1 / view2 ``(N, 3, H, W)`` in [0, 1], score_maps / masks ``(N, h, w)``,
        scores ``(N,)`` and ``titles``. Uses the metric's own settings and (already built) networks.
        """
        from met3r_metrics.functional import score_views

        metric = self.met3r_metric
        device = metric.device
        frames, pairs = list(range(views.shape[1])), None
        if views.shape[0] >= self.num_plot_pairs:
            # One pair per sample is enough: score only each sample's first pair (pictures must stay cheap).
            frames = list(metric.settings.pairs(views.shape[1])[0])
            views, pairs = views[: self.num_plot_pairs][:, frames], [(0, 1)]
            if geometry is not None:
                geometry = geometry[: self.num_plot_pairs].index_views(frames)
        views = views.to(device)
        if views.dtype != torch.uint8:
            views = views.float()
        if geometry is not None:
            geometry = geometry.to(device)
        with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
            out = score_views(views, metric.settings, normalize=metric.normalize, scorer=metric.scorer,
                              pairs=pairs, return_maps=True, geometry=geometry)
        pair_idx = out.pairs.to("cpu")  # (P, 2) into `views`
        num_seq, num_pairs = out.pair_scores.shape
        # First pair of every sequence first, then second pairs, ...: variety across samples.
        order = [(s, p) for p in range(num_pairs) for s in range(num_seq)][: self.num_plot_pairs]
        seq = torch.tensor([s for s, _ in order])
        pid = torch.tensor([p for _, p in order])
        unit = to_unit_range(views.cpu(), self.normalize)
        named = lambda p, k: frames[int(pair_idx[p, k])]  # noqa: E731 - frame index in the sampled sequence
        return {
            "view1": unit[seq, pair_idx[pid, 0]],
            "view2": unit[seq, pair_idx[pid, 1]],
            "score_maps": out.score_maps.cpu()[seq, pid],
            "masks": out.overlap_masks.cpu()[seq, pid],
            "scores": out.pair_scores.cpu()[seq, pid],
            "titles": [f"sample {s} views {named(p, 0)}->{named(p, 1)}" for s, p in order],
        }

    def _log_figure(self, trainer: Trainer, views: Tensor, geometry: Any = None) -> None:
        try:
            from met3r_metrics.plotting import plot_pair_maps

            maps = self._pair_maps(views, geometry)
            fig = plot_pair_maps(
                maps["view1"], maps["view2"], maps["score_maps"], maps["masks"], maps["scores"],
                titles=maps["titles"], distance=self.settings.distance,
            )
        except ImportError as err:  # matplotlib is optional
            rank_zero_warn(f"MEt3RCallback: no figure ({err})")
            return
        tag = self._key("met3r_pairs")
        step = trainer.global_step
        sent = False
        for logger in trainer.loggers:
            sent |= _send_figure(logger, tag, fig, step)
        if not sent or self.plot_dir is not None:
            root = self._figure_dir or Path(trainer.default_root_dir) / "met3r"
            root.mkdir(parents=True, exist_ok=True)
            path = root / f"epoch_{trainer.current_epoch:03d}.png"
            fig.savefig(path, dpi=100)
            self.last_figure_path = path


def _split_sample(sample: Any) -> tuple[Tensor, Any]:
    """``views`` or ``(views, KnownGeometry)`` from a sampler -> (views, geometry or None)."""
    from met3r_metrics import KnownGeometry

    geometry = None
    if isinstance(sample, (tuple, list)) and len(sample) == 2 and isinstance(sample[1], KnownGeometry):
        sample, geometry = sample
    if not isinstance(sample, Tensor):
        raise ValueError(
            "sample_fn / sample_views: expected a tensor (B, V, 3, H, W) or a pair (views, KnownGeometry), "
            f"got {type(sample).__name__}"
        )
    return sample, geometry


def _figure_to_array(fig: Any) -> Any:
    """Figure -> (H, W, 3) uint8 numpy array (for loggers that take arrays)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _send_figure(logger: Any, tag: str, fig: Any, step: int) -> bool:
    """Give ``fig`` to ``logger`` if it takes images; True if it did."""
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    try:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(tag, fig, global_step=step, close=False)
            return True
        if isinstance(logger, WandbLogger) or callable(getattr(logger, "log_image", None)):
            logger.log_image(key=tag, images=[_figure_to_array(fig)], step=step)
            return True
    except Exception as err:  # a broken image sink must not kill training
        warnings.warn(f"MEt3RCallback: {type(logger).__name__} did not take the figure ({err})", stacklevel=2)
    return False
