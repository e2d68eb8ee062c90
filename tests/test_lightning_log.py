"""A LightningModule logging the MEt3R Metric object with self.log through Trainer.fit / validate on CPU."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning")
from lightning.pytorch import LightningModule, Trainer  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from conftest import golden_path, torch_threads  # noqa: E402
from met3r_metrics import MEt3R, met3r  # noqa: E402
from met3r_metrics.testing import tiny_met3r_kwargs  # noqa: E402


class _ToyGenerator(LightningModule):
    """Maps a sequence of views through a 1x1 conv (tanh keeps [-1, 1]); logs MEt3R of its output."""

    def __init__(self, metric_kwargs: dict) -> None:
        super().__init__()
        self.net = torch.nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.net.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.net.bias.zero_()
        self.val_met3r = MEt3R(**metric_kwargs)

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        b, v = views.shape[:2]
        return torch.tanh(self.net(views.flatten(0, 1))).view(b, v, *views.shape[2:])

    def training_step(self, batch, batch_idx):
        (views,) = batch
        return (self(views) - views).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        (views,) = batch
        self.val_met3r.update(self(views))
        self.log("met3r", self.val_met3r, on_step=False, on_epoch=True, batch_size=views.shape[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    from safetensors.torch import load_file

    x = load_file(str(golden_path("met3r", "inputs.safetensors")))["sq64"]
    return x.clamp(-0.9, 0.9)  # (3, 2, 3, 64, 64)


def test_self_log_metric_fit_and_validate(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, data) -> None:
    with torch_threads(1):
        kw = tiny_met3r_kwargs(golden_path(), tmp_path_factory.mktemp("tiny_pl"))
        model = _ToyGenerator(kw)
        loader = DataLoader(TensorDataset(data), batch_size=2)
        trainer = Trainer(
            max_epochs=1, limit_train_batches=1, accelerator="cpu", devices=1, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, default_root_dir=tmp_path,
        )
        trainer.fit(model, train_dataloaders=loader, val_dataloaders=loader)
        fit_value = trainer.callback_metrics["met3r"]
        assert torch.isfinite(fit_value)
        out = trainer.validate(model, dataloaders=loader, verbose=False)
        value = out[0]["met3r"]
        with torch.no_grad():
            expected = met3r(model(data), **kw).mean().item()
        assert abs(value - expected) <= 1e-5
        # the metric was reset by Lightning after the epoch
        assert model.val_met3r.num_pairs.item() == 0
        # checkpoint: the metric adds no tensors (frozen networks are not sub-modules)
        keys = list(model.state_dict())
        assert keys == ["net.weight", "net.bias"]
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        assert buf.tell() < 5000

