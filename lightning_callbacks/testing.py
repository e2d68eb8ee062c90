"""A toy multi-view "generator" and dataset for tests and the --tiny example (no real model).

The generator is a two-layer conv net that turns one conditioning image into ``V`` views by
shifting the input horizontally (a crude camera pan) and refining each shifted copy. It trains
(to reproduce its input) in seconds on CPU. Scores computed on it mean nothing; it exists to
exercise :class:`lightning_callbacks.MEt3RCallback` end to end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.utils.data import Dataset

__all__ = ["TinyFeatureExtractor", "ToyImageDataset", "ToyViewGenerator"]


class ToyImageDataset(Dataset):
    """``n`` deterministic smooth images, items ``{"images": (3, size, size)}`` in [-1, 1].

    Smooth (low-frequency noise, bilinearly upsampled) so the views have some structure; the
    content depends only on ``(seed, index)``, never on worker or rank.
    """

    def __init__(self, n: int = 16, size: int = 64, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        coarse = torch.rand(n, 3, size // 8, size // 8, generator=gen)
        self.images = (F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) * 2 - 1)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, idx: int) -> dict[str, Tensor]:
        return {"images": self.images[idx]}


class ToyViewGenerator(LightningModule):
    """Conditioning image ``(B, 3, H, W)`` -> ``V`` views ``(B, V, 3, H, W)`` in [-1, 1].

    ``sample_views(batch)`` is the hook :class:`~lightning_callbacks.MEt3RCallback` looks for.
    Deterministic in eval mode (no noise), so the same batch gives the same views on any rank.
    """

    def __init__(self, num_views: int = 3, shift: int = 4, hidden: int = 8, lr: float = 1e-2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(3, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, 3, 3, padding=1)
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(N, 3, H, W)`` in [-1, 1] -> refined ``(N, 3, H, W)`` in [-1, 1]."""
        return torch.tanh(x + self.net(x))

    def sample_views(self, batch: dict[str, Tensor]) -> Tensor:
        """``batch["images"] (B, 3, H, W)`` -> views ``(B, V, 3, H, W)``: shifted, refined copies."""
        x = batch["images"]
        views = [self(torch.roll(x, shifts=v * self.hparams.shift, dims=-1)) for v in range(self.hparams.num_views)]
        return torch.stack(views, dim=1)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x = batch["images"]
        loss = F.mse_loss(self(x), x)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x = batch["images"]
        loss = F.mse_loss(self(x), x)
        self.log("val/loss", loss, sync_dist=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class TinyFeatureExtractor(nn.Module):
    """Stand-in FID feature extractor: fixed random conv features, ``(N, 3, H, W)`` in [0, 1] -> ``(N, D)``.

    For tests and the ``--tiny`` example, where the Inception weights are not available. Its
    weights come from ``seed`` only, so two instances with the same seed are identical. FID values
    computed with it are not comparable with Inception FID.
    """

    def __init__(self, num_features: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.num_features = num_features  # read by torchmetrics' FrechetInceptionDistance
        gen = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, num_features, kernel_size=8, stride=8)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen) * 0.1)
            self.conv.bias.zero_()
        self.requires_grad_(False)

    def forward(self, images: Tensor) -> Tensor:
        return torch.relu(self.conv(images.float())).mean(dim=(-2, -1))
