"""MEt3RCallback: logged values equal hand-computed metrics, DDP equals one process, no checkpoint
growth, clear errors, figures, autocast isolation. CPU only, tiny random-weight MEt3R networks."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger, Logger
from torch.utils.data import DataLoader
from torchmetrics.image.fid import FrechetInceptionDistance

from lightning_callbacks import MEt3RCallback
from lightning_callbacks.met3r_callback import _first_tensor, _rank_quota
from met3r_metrics.inputs import to_unit_range
from lightning_callbacks.testing import TinyFeatureExtractor, ToyImageDataset, ToyViewGenerator

TOL = 1e-5  # float32 sums in a different order (DDP gather) / same order (by hand)


@pytest.fixture(scope="module")
def tiny_kwargs(golden_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from met3r_metrics.testing import tiny_met3r_kwargs

    return tiny_met3r_kwargs(golden_root, tmp_path_factory.mktemp("tiny_met3r"))


def _trainer(tmp_path: Path, callbacks: list, **kwargs) -> Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        logger=CSVLogger(tmp_path, name="logs"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        deterministic=True,
    )
    defaults.update(kwargs)
    return Trainer(callbacks=callbacks, **defaults)


def _loaders(n: int = 8, batch_size: int = 2) -> tuple[DataLoader, DataLoader]:
    data = ToyImageDataset(n=n, size=64, seed=0)
    return DataLoader(data, batch_size=batch_size), DataLoader(data, batch_size=batch_size)


def _by_hand(model: ToyViewGenerator, loader: DataLoader, tiny_kwargs: dict, feature: torch.nn.Module,
             num_batches: int) -> dict[str, float]:
    """The callback's numbers, recomputed with plain MEt3R / FID on the same samples."""
    from met3r_metrics import MEt3R

    model.eval()
    metric = MEt3R(**tiny_kwargs)
    fid = FrechetInceptionDistance(feature=feature, normalize=True)
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i == num_batches:
                break
            views = model.sample_views(batch)
            metric.update(views)
            fid.update(((views.flatten(0, 1) + 1) / 2).clamp(0, 1), real=False)
            fid.update(((batch["images"] + 1) / 2).clamp(0, 1), real=True)
    details = metric.compute_details()
    return {
        "met3r": float(details["met3r"]),
        "met3r_zero_overlap": float(details["zero_overlap"]),
        "met3r_mean_overlap": float(details["mean_overlap"]),
        "fid": float(fid.compute()),
    }


def _tensor_bytes(obj) -> int:
    """Bytes of all tensors inside a (nested) checkpoint dict."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


# ----------------------------------------------------------------------------- end to end
def test_fit_logs_met3r_and_fid_equal_to_by_hand(tmp_path: Path, tiny_kwargs: dict) -> None:
    torch.manual_seed(0)
    model = ToyViewGenerator(num_views=2)
    feature = TinyFeatureExtractor(num_features=16, seed=0)
    fid = FrechetInceptionDistance(feature=copy.deepcopy(feature), normalize=True)
    callback = MEt3RCallback(metric_kwargs=tiny_kwargs, metrics={"fid": fid}, num_plot_pairs=2)
    train, val = _loaders()
    trainer = _trainer(tmp_path, [callback], max_epochs=1)
    trainer.fit(model, train, val)

    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    for key in ("val/met3r", "val/fid", "val/met3r_zero_overlap", "val/met3r_mean_overlap"):
        assert key in logged, key
    hand = _by_hand(model, val, tiny_kwargs, feature, num_batches=2)
    print("callback vs by hand:", json.dumps({k: (logged[f"val/{k}"], v) for k, v in hand.items()}))
    for name, value in hand.items():
        assert math.isclose(logged[f"val/{name}"], value, rel_tol=TOL, abs_tol=TOL), name
    assert math.isfinite(logged["val/met3r"]) and logged["val/fid"] >= 0

    # The resolved settings go into the run's hyperparameters (next to every logged number).
    import yaml

    hparams = yaml.safe_load((Path(trainer.logger.log_dir) / "hparams.yaml").read_text())
    assert hparams["val/met3r_settings"] == callback.settings.to_dict()
    assert callback.settings.img_size == 64 and callback.settings.variant == "official"

    # Logged once per evaluated epoch, to the CSV logger (rank 0).
    rows = (Path(trainer.logger.log_dir) / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    col = header.index("val/met3r")
    assert sum(1 for r in rows[1:] if r.split(",")[col] != "") == 1  # once per evaluation

    # CSVLogger takes no images -> the figure goes to <log_dir>/met3r/epoch_XXX.png.
    assert callback.last_figure_path == Path(trainer.log_dir) / "met3r" / "epoch_000.png"
    assert callback.last_figure_path.stat().st_size > 1000

    # Checkpoint: the callback adds no tensors (metric networks/states are not saved).
    ckpt_with = tmp_path / "with.ckpt"
    trainer.save_checkpoint(ckpt_with)
    plain = _trainer(tmp_path / "plain", [], max_epochs=1, limit_val_batches=0)
    plain.fit(ToyViewGenerator(num_views=2), train)
    ckpt_without = tmp_path / "without.ckpt"
    plain.save_checkpoint(ckpt_without)
    with_, without = (torch.load(p, weights_only=False) for p in (ckpt_with, ckpt_without))
    assert set(with_["state_dict"]) == set(model.state_dict())
    assert _tensor_bytes(with_) == _tensor_bytes(without)
    assert not any(k.startswith("MEt3RCallback") for k in with_.get("callbacks", {}))  # no callback state
    print("checkpoint bytes with/without callback:", ckpt_with.stat().st_size, ckpt_without.stat().st_size)
    assert ckpt_with.stat().st_size - ckpt_without.stat().st_size < 4096


class _ImageLogger(Logger):
    """A W&B-like logger: has log_image; records what it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[tuple[str, int, tuple]] = []
        self.metrics: list[dict] = []

    @property
    def name(self) -> str:
        return "images"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.append(dict(metrics))

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_image(self, key: str, images: list, step: int | None = None, **kwargs) -> None:
        self.images.append((key, step, tuple(images[0].shape)))


def test_every_n_epochs_limits_sample_fn_and_image_logger(tmp_path: Path, tiny_kwargs: dict) -> None:
    """sample_fn wins over sample_views; every_n_epochs gates; max_samples caps the sequences;
    a logger with log_image gets the figure (and no file is written)."""
    calls: list[int] = []

    def sample_fn(module: ToyViewGenerator, batch: dict, batch_idx: int) -> torch.Tensor:
        calls.append(batch_idx)
        return module.sample_views(batch)[:, :2]  # 2 views -> 1 consecutive pair per sample

    logger = _ImageLogger()
    callback = MEt3RCallback(sample_fn, metric_kwargs=tiny_kwargs, fid=False, every_n_epochs=2,
                             max_samples=3, num_plot_pairs=2)
    train, val = _loaders()
    trainer = _trainer(tmp_path, [callback], max_epochs=2, limit_train_batches=1, limit_val_batches=4,
                       logger=logger)
    trainer.fit(ToyViewGenerator(num_views=3), train, val)
    assert calls == [0, 1]  # only epoch 1 (second); stops once 3 samples are in (2 + 1)
    details = callback.met3r_metric.compute_details()
    assert int(details["num_sequences"]) == 3 and int(details["num_pairs"]) == 3
    assert "val/met3r" in trainer.callback_metrics and "val/fid" not in trainer.callback_metrics
    assert sum("val/met3r" in m for m in logger.metrics) == 1

    assert len(logger.images) == 1
    key, step, shape = logger.images[0]
    assert key == "val/met3r_pairs" and step == trainer.global_step
    assert len(shape) == 3 and shape[2] == 3 and shape[0] > 100
    assert callback.last_figure_path is None  # no file when a logger took the picture


def test_missing_sampler_fails_at_setup(tmp_path: Path, tiny_kwargs: dict) -> None:
    class NoSampler(ToyViewGenerator):
        sample_views = None  # hide the hook
        steps = 0

        def training_step(self, batch, batch_idx):
            NoSampler.steps += 1
            return super().training_step(batch, batch_idx)

    train, val = _loaders()
    trainer = _trainer(tmp_path, [MEt3RCallback(metric_kwargs=tiny_kwargs, fid=False)])
    with pytest.raises(TypeError, match=r"sample_fn=.*sample_views"):
        trainer.fit(NoSampler(), train, val)
    assert NoSampler.steps == 0  # raised before the first training step


def test_validate_ignores_epoch_gating_and_builds_normal_tensors(tmp_path: Path, tiny_kwargs: dict) -> None:
    """trainer.validate always evaluates; networks built during validation are not inference tensors."""
    callback = MEt3RCallback(metric_kwargs=tiny_kwargs, fid=False, every_n_epochs=5, max_samples=1,
                             num_plot_pairs=0)
    _, val = _loaders(n=2, batch_size=1)
    trainer = _trainer(tmp_path, [callback])
    trainer.validate(ToyViewGenerator(num_views=2), val)
    assert math.isfinite(float(trainer.callback_metrics["val/met3r"]))
    assert int(callback.met3r_metric.compute_details()["num_sequences"]) == 1
    params = list(callback.met3r_metric.scorer.parameters()) + list(callback.met3r_metric.scorer.buffers())
    assert params and not any(p.is_inference() for p in params)


def test_limit_batches_real_fn_and_metric_kwargs(tmp_path: Path, tiny_kwargs: dict) -> None:
    """limit_batches caps the batches per evaluation, a custom real_fn feeds FID, metric_kwargs reach MEt3R."""
    real_calls: list[int] = []
    grad_enabled: list[bool] = []

    def real_fn(batch: dict) -> torch.Tensor:
        real_calls.append(batch["images"].shape[0])
        return batch["images"]

    def sample_fn(module: ToyViewGenerator, batch: dict, batch_idx: int) -> torch.Tensor:
        grad_enabled.append(torch.is_grad_enabled())
        return module.sample_views(batch)

    fid = FrechetInceptionDistance(feature=TinyFeatureExtractor(seed=0), normalize=True)
    callback = MEt3RCallback(sample_fn, real_fn, metric_kwargs={**tiny_kwargs, "pairing": "first"},
                             metrics={"fid": fid}, limit_batches=1, num_plot_pairs=0)
    _, val = _loaders(n=6, batch_size=2)
    trainer = _trainer(tmp_path, [callback], limit_val_batches=3)
    trainer.validate(ToyViewGenerator(num_views=3), val)
    assert real_calls == [2] and grad_enabled == [False]  # one of the three batches
    details = callback.met3r_metric.compute_details()
    assert int(details["num_sequences"]) == 2 and int(details["num_pairs"]) == 4  # (0, 1), (0, 2) per sample
    assert callback.settings.pairing == "first"
    assert int(callback.fid_metric.real_features_num_samples) == 2
    assert int(callback.fid_metric.fake_features_num_samples) == 6  # B * V generated images
    assert math.isfinite(float(trainer.callback_metrics["val/fid"]))


# ----------------------------------------------------------------------------- numerics
def test_metric_runs_fp32_without_autocast(tiny_kwargs: dict) -> None:
    """Views sampled under bf16 autocast are scored exactly as fp32 views outside autocast."""
    from met3r_metrics import MEt3R

    callback = MEt3RCallback(metric_kwargs=tiny_kwargs, fid=False)
    views = ToyViewGenerator(num_views=2).sample_views({"images": ToyImageDataset(n=1).images}).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        callback._update_metrics(views, None, torch.device("cpu"))
    reference = MEt3R(**tiny_kwargs)
    reference.update(views.float())
    assert callback.met3r_metric.compute().item() == pytest.approx(reference.compute().item(), abs=1e-6)


# ----------------------------------------------------------------------------- DDP
class _RankDump(MEt3RCallback):
    """Writes every rank's computed results to <dump_dir>/rank<r>.json (spawned processes)."""

    def __init__(self, dump_dir: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dump_dir = dump_dir

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        results = dict(self.last_results)
        # compute_details() is a collective: every rank calls it.
        results["num_sequences"] = int(self.met3r_metric.compute_details()["num_sequences"])
        Path(self.dump_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(results))


def _ddp_run(tmp_path: Path, tiny_kwargs: dict, devices: int) -> tuple[dict, dict]:
    torch.manual_seed(0)
    model = ToyViewGenerator(num_views=2, lr=0.0)  # lr 0: same weights however batches are split
    dump = tmp_path / f"dump{devices}"
    dump.mkdir()
    fid = FrechetInceptionDistance(feature=TinyFeatureExtractor(seed=0), normalize=True)
    callback = _RankDump(str(dump), metric_kwargs=tiny_kwargs, metrics={"fid": fid}, max_samples=4, num_plot_pairs=1)
    # Validation batches of one sample: each sequence is scored alone in both runs, so the
    # per-sequence scores are bitwise equal and only the (float64) summation order differs.
    train, val = _loaders(n=8, batch_size=1)
    kwargs = dict(max_epochs=1, limit_train_batches=1, limit_val_batches=None, devices=devices,
                  logger=CSVLogger(tmp_path, name=f"logs{devices}"))
    if devices > 1:
        kwargs["strategy"] = "ddp_spawn"
    trainer = _trainer(tmp_path, [callback], **kwargs)
    trainer.fit(model, train, val)
    ranks = {p.stem: json.loads(p.read_text()) for p in sorted(dump.glob("rank*.json"))}
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/met3r") or k == "val/fid"}, ranks


def test_ddp_two_processes_equal_one(tmp_path: Path, tiny_kwargs: dict, capfd: pytest.CaptureFixture) -> None:
    single, single_ranks = _ddp_run(tmp_path, tiny_kwargs, devices=1)
    ddp, ddp_ranks = _ddp_run(tmp_path, tiny_kwargs, devices=2)
    # logged with sync_dist=True (reduce "max" of equal values): Lightning has no reason to warn,
    # and the callback installs no warning filter to hide it
    assert "sync_dist=True" not in capfd.readouterr().err
    print("single vs ddp:", json.dumps({k: (single[k], ddp.get(k)) for k in single}))
    assert set(ddp_ranks) == {"rank0", "rank1"}
    # Every rank holds the same, already global value (so logging without sync_dist is right).
    assert ddp_ranks["rank0"] == ddp_ranks["rank1"]
    for key in ("val/met3r", "val/fid", "val/met3r_zero_overlap", "val/met3r_mean_overlap"):
        assert math.isclose(ddp[key], single[key], rel_tol=1e-6, abs_tol=1e-7), key
    # max_samples is global: 4 sequences in total (2 per rank) in both runs.
    assert single_ranks["rank0"]["num_sequences"] == ddp_ranks["rank0"]["num_sequences"] == 4


# ----------------------------------------------------------------------------- figure sinks
def test_send_figure_to_tensorboard_wandb_style_and_others() -> None:
    """TensorBoard gets add_figure, W&B-style loggers an RGB array, others nothing; errors warn."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from matplotlib.figure import Figure

    from lightning_callbacks.met3r_callback import _send_figure

    class _Recorder:
        def __init__(self) -> None:
            self.calls: list = []

        def add_figure(self, tag, figure, global_step=None, close=True) -> None:
            self.calls.append((tag, figure, global_step, close))

    class _FakeTensorBoard(TensorBoardLogger):  # tensorboard itself is not installed here
        recorder = _Recorder()

        @property
        def experiment(self):
            return self.recorder

    fig = Figure(figsize=(2, 1))
    fig.subplots().plot([0, 1])
    tb = _FakeTensorBoard.__new__(_FakeTensorBoard)  # skip __init__ (needs tensorboard)
    assert _send_figure(tb, "val/met3r_pairs", fig, 7)
    assert tb.recorder.calls == [("val/met3r_pairs", fig, 7, False)]

    images = _ImageLogger()
    assert _send_figure(images, "k", fig, 3)
    assert images.images == [("k", 3, (100, 200, 3))]

    assert not _send_figure(CSVLogger("unused"), "k", fig, 0)

    class _Broken(_ImageLogger):
        def log_image(self, *args, **kwargs) -> None:
            raise RuntimeError("offline")

    with pytest.warns(UserWarning, match="offline"):
        assert not _send_figure(_Broken(), "k", fig, 0)


# ----------------------------------------------------------------------------- helpers
def test_helpers_and_argument_checks() -> None:
    t = torch.zeros(2, 3, 4, 4)
    assert _first_tensor({"label": [1], "x": (t, 0)}) is t
    assert _first_tensor(("a", t)) is t and _first_tensor({"a": 1}) is None
    assert [_rank_quota(7, 3, r) for r in range(3)] == [3, 2, 2]
    assert to_unit_range(torch.tensor([-1.0, 0.0, 1.0]), normalize=False).tolist() == [0.0, 0.5, 1.0]
    assert to_unit_range(torch.tensor([0, 255], dtype=torch.uint8), normalize=False).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="normalize"):
        MEt3RCallback(metric_kwargs={"normalize": True})
    with pytest.raises(ValueError, match="every_n_epochs"):
        MEt3RCallback(every_n_epochs=0)
    with pytest.raises(TypeError, match="sample_fn"):
        MEt3RCallback(sample_fn=3)  # type: ignore[arg-type]

    cb = MEt3RCallback(real_key="rgb")
    assert cb._real_images({"cond": torch.zeros(2, 1, 4, 4), "rgb": t}) is t
    assert cb._real_images((t, torch.zeros(2))) is t
    with pytest.raises(ValueError, match="real_fn"):
        cb._real_images({"x": torch.zeros(2, 1, 4, 4)})


# ----------------------------------------------------------------------------- your own metrics
def test_user_metrics_are_fed_and_logged(tmp_path: Path, tiny_kwargs: dict) -> None:
    """Any torchmetrics metric: those taking `real` get real images too; others only the views in [0, 1]."""
    from torchmetrics import MeanMetric

    fid = FrechetInceptionDistance(feature=TinyFeatureExtractor(seed=0), normalize=True)
    mean = MeanMetric()  # update(value): gets the generated images only
    callback = MEt3RCallback(metric_kwargs=tiny_kwargs, metrics={"fid": fid, "pixel_mean": mean}, fid=False,
                             max_samples=2, num_plot_pairs=0)
    _, val = _loaders(n=2, batch_size=2)
    model = ToyViewGenerator(num_views=2)
    trainer = _trainer(tmp_path, [callback])
    trainer.validate(model, val)
    assert set(callback.log_keys) == {"met3r", "met3r_zero_overlap", "met3r_mean_overlap", "fid", "pixel_mean"}
    with torch.no_grad():
        views = model.sample_views(next(iter(val)))
    expected = float(((views + 1) / 2).clamp(0, 1).mean())
    assert float(trainer.callback_metrics["val/pixel_mean"]) == pytest.approx(expected, abs=1e-6)
    assert int(fid.real_features_num_samples) == 2 and int(fid.fake_features_num_samples) == 4


def test_user_metric_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match=r"metrics\['fid'\]: expected normalize=True .*got normalize=False"):
        MEt3RCallback(metrics={"fid": FrechetInceptionDistance(feature=TinyFeatureExtractor(seed=0))})
    with pytest.raises(TypeError, match=r"metrics\['x'\]: expected a torchmetrics.Metric, got int"):
        MEt3RCallback(metrics={"x": 3})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="metrics: expected log names other than"):
        MEt3RCallback(metrics={"met3r": FrechetInceptionDistance(feature=TinyFeatureExtractor(seed=0), normalize=True)})
    with pytest.raises(ValueError, match=r"^radius: expected a finite float"):
        MEt3RCallback(metric_kwargs={"radius": float("inf")})  # settings are validated at construction


def test_default_fid_only_where_its_dependency_is_installed() -> None:
    import importlib.util

    from lightning_callbacks.met3r_callback import _default_fid

    if importlib.util.find_spec("torch_fidelity") is None:
        assert _default_fid(required=False) == {}
        with pytest.raises(ModuleNotFoundError, match="fid=True: .*torch-fidelity"):
            _default_fid(required=True)
    cb = MEt3RCallback(fid=False)
    cb._add_default_metrics()
    assert cb.metrics == {} and cb.fid_metric is None


def test_import_without_the_lightning_extra_names_it() -> None:
    import subprocess
    import sys

    code = "import sys; sys.modules['lightning'] = None\ntry:\n    import lightning_callbacks\nexcept ImportError as e:\n    print(e)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "lightning_callbacks needs Lightning: pip install 'met3r-metrics[lightning]'", out.stderr


# ----------------------------------------------------------------------------- known cameras (issue 16)
def test_known_cameras_from_sample_fn(tmp_path: Path) -> None:
    """sample_fn returns (views, KnownGeometry): MEt3R scores the views under those cameras (no network
    is built for an RGB distance); the plane rendered with its true geometry scores 0, an altered view does not."""
    from known_geometry_scenes import plane_geometry, plane_views

    from met3r_metrics import KnownGeometry

    def sample(altered: bool):
        def fn(module, batch, batch_idx):
            n = batch["images"].shape[0]
            views = plane_views(3).repeat(n, 1, 1, 1, 1)
            if altered:
                views[:, 1, :, 10:30, 10:30] = 1.0
            return views, KnownGeometry.cat([plane_geometry(3)] * n)

        return fn

    kwargs = {"geometry": "given", "distance": "rmse", "radius": 0.01, "img_size": None}
    results = {}
    for altered in (False, True):
        callback = MEt3RCallback(sample_fn=sample(altered), metric_kwargs=kwargs, fid=False, num_plot_pairs=2)
        trainer = _trainer(tmp_path / str(altered), [callback], max_epochs=1)
        trainer.fit(ToyViewGenerator(num_views=3), *_loaders())
        results[altered] = callback.last_results
        assert callback.settings.geometry == "given" and callback.settings.focal_source == "intrinsics"
        assert callback.last_figure_path is not None and callback.last_figure_path.stat().st_size > 1000
    assert results[False]["met3r"] == 0.0 and results[False]["met3r_mean_overlap"] == pytest.approx(0.75)
    assert results[True]["met3r"] > 0.01


def test_given_geometry_needs_the_cameras(tmp_path: Path) -> None:
    from known_geometry_scenes import plane_views

    callback = MEt3RCallback(sample_fn=lambda m, b, i: plane_views(3).repeat(b["images"].shape[0], 1, 1, 1, 1),
                             metric_kwargs={"geometry": "given", "distance": "rmse"}, fid=False, num_plot_pairs=0)
    with pytest.raises(ValueError, match="geometry: expected a KnownGeometry with settings geometry='given', got None"):
        _trainer(tmp_path, [callback], max_epochs=1).fit(ToyViewGenerator(num_views=3), *_loaders())
    with pytest.raises(ValueError, match=r"sample_fn / sample_views: expected a tensor \(B, V, 3, H, W\) or a pair"):
        bad = MEt3RCallback(sample_fn=lambda m, b, i: (plane_views(3), "cameras"), fid=False,
                            metric_kwargs={"geometry": "given", "distance": "rmse"}, num_plot_pairs=0)
        _trainer(tmp_path / "b", [bad], max_epochs=1).fit(ToyViewGenerator(num_views=3), *_loaders())


def test_default_fid_without_its_weights_names_fid_and_the_way_out(monkeypatch) -> None:
    """Issue 26 item 8: torch-fidelity installed, no network: not a bare URLError from setup."""
    import importlib.util
    import urllib.error

    import torchmetrics.image.fid as tm_fid

    from lightning_callbacks.met3r_callback import _default_fid

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "torch_fidelity" else real_find_spec(name, *a))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tm_fid, "FrechetInceptionDistance", offline)
    with pytest.warns(UserWarning, match=r"no default FID is logged: torchmetrics' default Inception FID could not "
                                         r"load its Inception weights \(URLError: .*fid=False"):
        assert _default_fid(required=False) == {}
    with pytest.raises(RuntimeError, match=r"^fid=True: torchmetrics' default Inception FID could not load .*"
                                           r"fid=False, or your own metrics="):
        _default_fid(required=True)
