"""Lightning callback: sample views from the model being trained, log MEt3R next to FID.

During validation the callback asks the generator for multi-view samples (``sample_fn`` or the
LightningModule's ``sample_views``), feeds them to a callback-owned :class:`met3r_metrics.MEt3R`
(and optionally a torchmetrics ``FrechetInceptionDistance``), and at the end of the validation
epoch logs ``val/met3r``, ``val/fid``, ``val/met3r_zero_overlap`` and ``val/met3r_mean_overlap``,
plus a PNG figure of a few sampled pairs with their score maps and overlap masks.

Why the metrics live on the callback (and not on the LightningModule):

* DDP wraps only the LightningModule. MEt3R's frozen networks (~0.7 B weights) as a sub-module of
  the DDP-wrapped module would be broadcast at construction and (as buffers) before every forward.
* Lightning saves ``pl_module.state_dict()`` in checkpoints; the callback contributes only its own
  :meth:`MEt3RCallback.state_dict` (a few integers), so checkpoints do not grow.

Distributed semantics: every rank samples views for its own shard of the validation data and
updates its local metric states. ``MEt3R.compute`` and ``FrechetInceptionDistance.compute`` are
torchmetrics ``compute`` calls, which all-gather and reduce the states across ranks
(``sync_on_compute=True``), so after ``compute()`` every rank holds the *same*, already global
value. The value is therefore logged on every rank with ``sync_dist=False``: a second reduction by
Lightning would at best be a wasted collective (mean of equal numbers) and at worst wrong (a
``"sum"`` reduction would multiply by the world size). It is logged on every rank (not
``rank_zero_only``) so that ``trainer.callback_metrics`` - and thus ``ModelCheckpoint`` /
``EarlyStopping`` monitoring ``val/met3r`` - agree on all ranks; loggers write only on rank 0.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn

__all__ = ["MEt3RCallback"]

# MEt3R(...) arguments that are not scoring settings (not accepted by the functional met3r()).
_METRIC_ONLY_KWARGS = frozenset({
    "return_per_pair", "compute_on_cpu", "dist_sync_on_step", "process_group", "dist_sync_fn",
    "distributed_available_fn", "sync_on_compute", "compute_with_cache", "scorer",
})

SampleFn = Callable[[LightningModule, Any, int], Tensor]
RealFn = Callable[[Any], Tensor]


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


def _to_unit_range(images: Tensor, normalize: bool) -> Tensor:
    """Images in the metric's input convention -> float32 in [0, 1] (for FID and pictures).

    uint8 is 0..255; float is [-1, 1] when ``normalize=False`` and [0, 1] when ``normalize=True``
    (the torchmetrics LPIPS / MEt3R convention).
    """
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    images = images.float()
    if not normalize:
        images = (images + 1.0) / 2.0
    return images.clamp(0.0, 1.0)


def _rank_quota(total: int, world_size: int, rank: int) -> int:
    """Share of ``total`` samples for ``rank`` so that the shares add up to exactly ``total``."""
    return total // world_size + (1 if rank < total % world_size else 0)


class MEt3RCallback(Callback):
    """Log MEt3R (multi-view consistency) and FID of generated views during validation.

    How views are obtained, per validation batch (dataloader ``dataloader_idx`` only):

    * ``sample_fn(pl_module, batch, batch_idx) -> Tensor (B, V, 3, H, W)`` if given, else
    * ``pl_module.sample_views(batch) -> Tensor (B, V, 3, H, W)``.

    If neither exists, :meth:`setup` raises a ``TypeError`` before training starts. Sampling runs
    under ``torch.no_grad()`` and the trainer's precision context (like ``validation_step``); the
    metrics run in float32 with autocast disabled.

    Value range of views (and of real images): float in [-1, 1] by default (``normalize=False``,
    the MEt3R/official convention), float in [0, 1] with ``normalize=True``, or uint8 0..255.
    ``V >= 2`` views per sample; H and W multiples of 16 for MEt3R.

    Real images for FID come from ``real_fn(batch)``; by default ``batch[real_key]`` for a mapping
    batch with that key, otherwise the first tensor in the batch (the batch itself if it is a
    tensor). They may be ``(B, 3, H, W)`` or ``(B, V, 3, H, W)`` (flattened to images), in the same
    value range as the views. Generated views are flattened to ``(B*V, 3, H, W)`` fake images.

    Args:
        sample_fn: ``(pl_module, batch, batch_idx) -> (B, V, 3, H, W)``; default
            ``pl_module.sample_views(batch)``.
        real_fn: ``batch -> (B, 3, H, W)`` or ``(B, V, 3, H, W)`` real images for FID.
        real_key: batch key used by the default ``real_fn`` for mapping batches.
        every_n_epochs: evaluate when ``(current_epoch + 1) % every_n_epochs == 0`` during
            ``fit`` (Lightning's ``check_val_every_n_epoch`` convention); always under
            ``trainer.validate``.
        limit_batches: at most this many validation batches per rank per evaluation (None: all).
        max_samples: at most this many sampled sequences per evaluation *in total over all
            ranks* (rank r gets ``max_samples // world_size`` plus one of the remainder).
        metric_kwargs: keyword arguments of :class:`met3r_metrics.MEt3R` (``variant``,
            ``pairing``, ``backbone_weights``, ``img_size``, ``symmetric``, ...).
            ``normalize`` is taken from this callback's ``normalize``.
        normalize: value range of views and real images (see above).
        fid: also compute FID between the real images and the generated views.
        fid_feature: ``FrechetInceptionDistance(feature=...)``: an int (Inception features,
            needs ``torch-fidelity`` and its weights) or an ``nn.Module`` mapping float images in
            [0, 1] ``(N, 3, H, W)`` to features ``(N, D)`` (give it a ``num_features`` attribute,
            or pass ``fid_kwargs={"input_img_size": (3, H, W)}`` for the probing forward).
        fid_kwargs: further ``FrechetInceptionDistance`` arguments (e.g.
            ``reset_real_features=False`` to keep the real statistics of the first evaluation;
            the real images are then not re-encoded).
        log_prefix: prefix of the logged keys (``"val/"`` gives ``val/met3r``, ``val/fid``, ...).
        dataloader_idx: the validation dataloader whose batches are used.
        num_plot_pairs: pairs shown in the per-epoch figure (0 disables pictures).
        plot_dir: where figures go when no logger accepts images; default
            ``<trainer.log_dir or default_root_dir>/met3r``. Files: ``epoch_XXX.png``.
        run_on_sanity_check: also evaluate during the sanity-check validation (off by default:
            those numbers come from an untrained model and a couple of batches).

    The MEt3R networks are built on the first evaluation, on ``pl_module.device``, and stay
    there (met3r_metrics caches them per process and device) until
    ``met3r_metrics.scorer.clear_scorer_cache()``.
    """

    def __init__(
        self,
        sample_fn: SampleFn | None = None,
        real_fn: RealFn | None = None,
        *,
        real_key: str = "images",
        every_n_epochs: int = 1,
        limit_batches: int | None = None,
        max_samples: int | None = None,
        metric_kwargs: Mapping[str, Any] | None = None,
        normalize: bool = False,
        fid: bool = True,
        fid_feature: int | nn.Module = 2048,
        fid_kwargs: Mapping[str, Any] | None = None,
        log_prefix: str = "val/",
        dataloader_idx: int = 0,
        num_plot_pairs: int = 4,
        plot_dir: str | Path | None = None,
        run_on_sanity_check: bool = False,
    ) -> None:
        super().__init__()
        if sample_fn is not None and not callable(sample_fn):
            raise TypeError(f"sample_fn must be callable, got {type(sample_fn).__name__}")
        if real_fn is not None and not callable(real_fn):
            raise TypeError(f"real_fn must be callable, got {type(real_fn).__name__}")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if limit_batches is not None and limit_batches < 1:
            raise ValueError(f"limit_batches must be >= 1 or None, got {limit_batches}")
        if max_samples is not None and max_samples < 1:
            raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}")
        if num_plot_pairs < 0:
            raise ValueError(f"num_plot_pairs must be >= 0, got {num_plot_pairs}")
        metric_kwargs = dict(metric_kwargs or {})
        if "normalize" in metric_kwargs and bool(metric_kwargs["normalize"]) != normalize:
            raise ValueError(
                "pass the value range as MEt3RCallback(normalize=...), not in metric_kwargs: it "
                "also decides how images are converted for FID and pictures"
            )
        metric_kwargs["normalize"] = normalize
        self.sample_fn = sample_fn
        self.real_fn = real_fn
        self.real_key = real_key
        self.every_n_epochs = every_n_epochs
        self.limit_batches = limit_batches
        self.max_samples = max_samples
        self.metric_kwargs = metric_kwargs
        self.normalize = normalize
        self.fid = fid
        self.fid_feature = fid_feature
        self.fid_kwargs = dict(fid_kwargs or {})
        self.log_prefix = log_prefix
        self.dataloader_idx = dataloader_idx
        self.num_plot_pairs = num_plot_pairs
        self.plot_dir = Path(plot_dir) if plot_dir is not None else None
        self.run_on_sanity_check = run_on_sanity_check

        # Built in setup() so that configuration errors surface before the first epoch.
        self.met3r_metric: Any | None = None  # met3r_metrics.MEt3R
        self.fid_metric: Any | None = None  # torchmetrics FrechetInceptionDistance
        # Per-evaluation bookkeeping (reset in on_validation_epoch_start).
        self._active = False
        self._batches_seen = 0
        self._samples_seen = 0
        self._sample_quota: int | None = None
        self._plot_views: list[Tensor] = []
        # Results of the last evaluation, for users and tests (identical on all ranks).
        self.last_results: dict[str, float] = {}
        self.last_figure_path: Path | None = None
        self._figure_dir: Path | None = None
        self._last_evaluated_epoch = -1

    # ------------------------------------------------------------------ keys / state
    @property
    def state_key(self) -> str:
        # Several MEt3R callbacks (e.g. two variants) may coexist in one Trainer; they must log
        # under different prefixes anyway, so the prefix identifies the callback.
        return self._generate_state_key(log_prefix=self.log_prefix)

    def _key(self, name: str) -> str:
        return f"{self.log_prefix}{name}"

    @property
    def log_keys(self) -> dict[str, str]:
        """Logged keys: ``met3r``, ``met3r_zero_overlap``, ``met3r_mean_overlap``, ``fid``."""
        keys = {n: self._key(n) for n in ("met3r", "met3r_zero_overlap", "met3r_mean_overlap")}
        if self.fid:
            keys["fid"] = self._key("fid")
        return keys

    def state_dict(self) -> dict[str, Any]:
        # Only bookkeeping: the metric networks and states are never checkpointed.
        return {"last_evaluated_epoch": self._last_evaluated_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_evaluated_epoch = int(state_dict.get("last_evaluated_epoch", -1))

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

    def _build_metrics(self) -> None:
        from met3r_metrics import MEt3R

        if self.met3r_metric is None:
            self.met3r_metric = MEt3R(**self.metric_kwargs)
        if self.fid and self.fid_metric is None:
            from torchmetrics.image.fid import FrechetInceptionDistance

            kwargs = {"normalize": True, **self.fid_kwargs}
            if not kwargs["normalize"]:
                raise ValueError("fid_kwargs['normalize'] must stay True: the callback feeds [0, 1] floats")
            try:
                self.fid_metric = FrechetInceptionDistance(feature=self.fid_feature, **kwargs)
            except ModuleNotFoundError as err:
                raise ModuleNotFoundError(
                    f"{err}. The default Inception FID extractor needs torch-fidelity "
                    "(`pip install torch-fidelity`) and its weights; or pass "
                    "MEt3RCallback(fid_feature=<nn.Module>) or fid=False."
                ) from err

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage not in (TrainerFn.FITTING, TrainerFn.VALIDATING):
            return
        self._resolve_sampler(pl_module)  # fail now, not mid-epoch
        self._build_metrics()
        if self.num_plot_pairs > 0:
            # trainer.log_dir is a collective under DDP (broadcast from rank 0): resolve it here,
            # on every rank, never inside the rank-zero-only plotting branch.
            self._figure_dir = self.plot_dir or Path(trainer.log_dir or trainer.default_root_dir) / "met3r"
        if trainer.world_size > 1:
            # Our values are already global (see module docstring); silence Lightning's generic
            # "use sync_dist=True at epoch level" hint for exactly our keys.
            keys = "|".join(re.escape(repr(k)) for k in self.log_keys.values())
            warnings.filterwarnings("ignore", message=rf"It is recommended to use `self\.log\(({keys})")
        # A MEt3R number only means something with the settings that made it: record them once
        # per run as hyperparameters (hparams.yaml for CSV/TensorBoard, the run config for W&B).
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_hyperparams({self._key("met3r_settings"): self.settings})

    @property
    def settings(self) -> dict[str, Any]:
        """The resolved MEt3R settings (variant, backbone, img_size, symmetric, pairing, ...)."""
        if self.met3r_metric is None:  # cheap: MEt3R builds its networks on first use only
            from met3r_metrics import MEt3R

            self.met3r_metric = MEt3R(**self.metric_kwargs)
        return self.met3r_metric.settings

    def _build_networks(self, device: torch.device) -> None:
        """Move the metrics to ``device`` and build MEt3R's frozen networks there.

        Built with inference mode switched off: validation runs under ``torch.inference_mode``,
        and networks created there would hold inference tensors, unusable with autograd by any
        later user of met3r_metrics' per-process network cache.
        """
        self.met3r_metric.to(device)
        if self.fid_metric is not None:
            self.fid_metric.to(device)
        with torch.inference_mode(False), torch.no_grad():
            _ = self.met3r_metric.scorer  # property: builds (or fetches) the networks on device

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # pl_module is on its final device now; build the networks before the first training
        # step so missing weights fail here, not after the first epoch.
        if self.met3r_metric is not None:
            self._build_networks(pl_module.device)

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
        if self.met3r_metric is None:  # e.g. setup() overridden or skipped by a custom loop
            self._build_metrics()
        self._batches_seen = 0
        self._samples_seen = 0
        self._plot_views = []
        self._sample_quota = (
            None
            if self.max_samples is None
            else _rank_quota(self.max_samples, trainer.world_size, trainer.global_rank)
        )
        # Owned by the callback, so they follow pl_module.device by hand.
        self._build_networks(pl_module.device)
        self.met3r_metric.reset()
        if self.fid_metric is not None:
            # reset() keeps the real statistics when reset_real_features=False.
            self.fid_metric.reset()

    def _wants_real_images(self) -> bool:
        fid = self.fid_metric
        if fid is None:
            return False
        if getattr(fid, "reset_real_features", True):
            return True
        return int(fid.real_features_num_samples) == 0  # first evaluation fills the real stats

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
                f"real images for FID must be a tensor (B, 3, H, W) or (B, V, 3, H, W), got {shape}; "
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
            views = sampler(pl_module, batch, batch_idx)
        if not isinstance(views, Tensor) or views.ndim != 5 or views.shape[2] != 3 or views.shape[1] < 2:
            shape = tuple(views.shape) if isinstance(views, Tensor) else type(views).__name__
            raise ValueError(
                f"sample_fn / sample_views must return a tensor (B, V, 3, H, W) with V >= 2, got {shape}"
            )
        real = self._real_images(batch) if self._wants_real_images() else None
        if remaining is not None and views.shape[0] > remaining:
            # Keep the real images of the same batch rows when they line up with the samples.
            if real is not None and real.shape[0] == views.shape[0]:
                real = real[:remaining]
            views = views[:remaining]
        self._samples_seen += views.shape[0]
        if real is not None:
            real = real.reshape(-1, *real.shape[-3:])
        self._update_metrics(views, real, pl_module.device)

        if trainer.is_global_zero and self.num_plot_pairs > 0:
            stored = sum(v.shape[0] for v in self._plot_views)
            if stored < self.num_plot_pairs:
                self._plot_views.append(views[: self.num_plot_pairs - stored].detach().cpu())

    def _update_metrics(self, views: Tensor, real: Tensor | None, device: torch.device) -> None:
        """Metric updates in float32 with autocast off (mixed precision must not leak in)."""
        views = views.detach().to(device)
        if views.dtype != torch.uint8:
            views = views.float()
        with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
            self.met3r_metric.update(views)
            if self.fid_metric is not None:
                fake = _to_unit_range(views.reshape(-1, *views.shape[-3:]), self.normalize)
                self.fid_metric.update(fake, real=False)
                if real is not None:
                    self.fid_metric.update(_to_unit_range(real.detach().to(device), self.normalize), real=True)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._active:
            return
        device = pl_module.device
        with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
            # Both calls synchronise the states over all ranks (collectives: every rank must
            # reach them, so nothing here may be rank-conditional).
            details = self.met3r_metric.compute_details()
            fid_value = self.fid_metric.compute() if self.fid_metric is not None else None

        values: dict[str, Tensor] = {
            "met3r": details["met3r"],
            "met3r_zero_overlap": details["zero_overlap"],
            "met3r_mean_overlap": details["mean_overlap"],
        }
        if fid_value is not None:
            values["fid"] = fid_value
        self.last_results = {}
        for name, value in values.items():
            value = torch.as_tensor(value).detach().to(device=device, dtype=torch.float32)
            self.last_results[name] = float(value)
            # Already global after compute(): no second reduction (see module docstring).
            pl_module.log(self._key(name), value, on_step=False, on_epoch=True, sync_dist=False)
        self._last_evaluated_epoch = trainer.current_epoch

        if trainer.is_global_zero and self._plot_views:
            self._log_figure(trainer, torch.cat(self._plot_views))
        self._plot_views = []

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._active = False

    # ------------------------------------------------------------------ pictures
    def _pair_maps(self, views: Tensor) -> dict[str, Tensor]:
        """Score maps of the first ``num_plot_pairs`` pairs of ``views`` (S, V, 3, H, W), rank 0 only.

        Returns view1 / view2 ``(N, 3, H, W)`` in [0, 1], score_maps / masks ``(N, h, w)``,
        scores ``(N,)`` and ``titles``. Uses the metric's own (already built) networks.
        """
        from met3r_metrics import met3r

        metric = self.met3r_metric
        device = metric.device
        # Only settings go to the functional; Metric-only arguments (DDP knobs, ...) stay out.
        kwargs = {k: v for k, v in self.metric_kwargs.items() if k not in _METRIC_ONLY_KWARGS}
        scorer = getattr(metric, "scorer", None)
        if callable(scorer) and not isinstance(scorer, nn.Module):
            scorer = scorer()  # accessor method
        if views.shape[0] >= self.num_plot_pairs:
            # One pair per sample is enough: score only views 0 and 1 (the first pair under
            # every pairing), not all V - 1 pairs - pictures must stay cheap.
            views = views[: self.num_plot_pairs, :2]
        views = views.to(device)
        if views.dtype != torch.uint8:
            views = views.float()
        with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
            out = met3r(views, return_details=True, return_maps=True, scorer=scorer, **kwargs)
        pairs = out.pairs.to("cpu")  # (P, 2)
        num_seq, num_pairs = out.pair_scores.shape
        # First pair of every sequence first, then second pairs, ...: variety across samples.
        order = [(s, p) for p in range(num_pairs) for s in range(num_seq)][: self.num_plot_pairs]
        seq = torch.tensor([s for s, _ in order])
        pid = torch.tensor([p for _, p in order])
        unit = _to_unit_range(views.cpu(), self.normalize)
        return {
            "view1": unit[seq, pairs[pid, 0]],
            "view2": unit[seq, pairs[pid, 1]],
            "score_maps": out.score_maps.cpu()[seq, pid],
            "masks": out.overlap_masks.cpu()[seq, pid],
            "scores": out.pair_scores.cpu()[seq, pid],
            "titles": [f"sample {s} views {int(pairs[p, 0])}->{int(pairs[p, 1])}" for s, p in order],
        }

    def _log_figure(self, trainer: Trainer, views: Tensor) -> None:
        try:
            from met3r_metrics.plotting import plot_pair_maps

            maps = self._pair_maps(views)
            fig = plot_pair_maps(
                maps["view1"], maps["view2"], maps["score_maps"], maps["masks"], maps["scores"],
                titles=maps["titles"],
            )
        except ImportError as err:  # matplotlib is optional
            warnings.warn(f"MEt3RCallback: no figure ({err})", stacklevel=2)
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
