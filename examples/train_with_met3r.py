"""Train a (toy) multi-view generator and log MEt3R next to FID during validation.

    python examples/train_with_met3r.py --tiny          # CPU, < 1 minute, NOT meaningful scores
    python examples/train_with_met3r.py                 # official MEt3R + Inception FID (weights needed)

``--tiny`` builds MEt3R from the tiny random-weight networks of the golden test data
(``../shared/golden``, via ``met3r_metrics.testing.tiny_met3r_kwargs``) and uses a random conv
feature extractor for FID. It shows the wiring only: the numbers it prints mean nothing.

Without ``--tiny`` the callback uses the ``official`` MEt3R variant (MASt3R + DINO/FeatUp weights
from the Hugging Face cache / official URLs) and Inception FID (``pip install torch-fidelity``).
To use it with your own model, give your LightningModule a ``sample_views(batch)`` method returning
``(B, V, 3, H, W)`` in [-1, 1] (or pass ``MEt3RCallback(sample_fn=...)``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader
from torchmetrics.image.fid import FrechetInceptionDistance

from lightning_callbacks import MEt3RCallback
from lightning_callbacks.testing import TinyFeatureExtractor, ToyImageDataset, ToyViewGenerator

REPO_ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true",
                        help="tiny random-weight networks from the golden data (CPU, fast, scores NOT meaningful)")
    parser.add_argument("--golden-root", type=Path, default=REPO_ROOT.parent / "shared" / "golden",
                        help="golden test data for --tiny (default: ../shared/golden beside the repository)")
    parser.add_argument("--out", type=Path, default=None, help="log directory (default: a temporary directory)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--views", type=int, default=None, help="views per generated sample (default: 2 with --tiny, else 4)")
    parser.add_argument("--variant", default="official", help="MEt3R variant (official | paper)")
    args = parser.parse_args()

    seed_everything(0, workers=True)
    out = args.out or Path(tempfile.mkdtemp(prefix="met3r_example_"))

    if args.tiny:
        from met3r_metrics.testing import tiny_met3r_kwargs

        print("=" * 78)
        print("--tiny: TINY RANDOM-WEIGHT NETWORKS. The scores below are NOT meaningful;")
        print("this run only demonstrates how MEt3RCallback is wired into training.")
        print("=" * 78)
        metric_kwargs = tiny_met3r_kwargs(args.golden_root, out / "tiny_met3r")
        fid = FrechetInceptionDistance(feature=TinyFeatureExtractor(num_features=16, seed=0), normalize=True)
        data = ToyImageDataset(n=8, size=64, seed=0)
        views, max_samples = args.views or 2, 4  # CPU-sized: 4 pairs per evaluation
    else:
        metric_kwargs = {"variant": args.variant}
        fid = FrechetInceptionDistance(feature=2048, normalize=True)  # Inception pool features: needs torch-fidelity
        data = ToyImageDataset(n=32, size=256, seed=0)
        views, max_samples = args.views or 4, 32

    callback = MEt3RCallback(
        metric_kwargs=metric_kwargs,
        metrics={"fid": fid},  # your own metrics, logged next to MEt3R as val/<name>
        every_n_epochs=2 if args.tiny else 1,  # --tiny: evaluate at the end of epoch 2 only
        max_samples=max_samples,  # sampled sequences per evaluation, over all ranks
        num_plot_pairs=2,
    )
    trainer = Trainer(
        max_epochs=args.epochs,
        accelerator="cpu" if args.tiny else "auto",
        devices=1,
        limit_train_batches=4,
        num_sanity_val_steps=0,
        logger=CSVLogger(out, name="train_with_met3r"),
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    start = time.perf_counter()
    trainer.fit(
        ToyViewGenerator(num_views=views),
        DataLoader(data, batch_size=4, shuffle=True),
        DataLoader(data, batch_size=4),
    )
    print(f"\nfinished in {time.perf_counter() - start:.1f} s; logs in {trainer.log_dir}")
    for key in callback.log_keys.values():
        print(f"  {key:24s} {float(trainer.callback_metrics[key]):.6f}")
    if callback.last_figure_path is not None:
        print(f"  figure: {callback.last_figure_path}")
    if args.tiny:
        print("(tiny random-weight networks: NOT meaningful scores)")


if __name__ == "__main__":
    main()
