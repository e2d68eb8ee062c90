"""Lightning integration for met3r-metrics (the core library never imports Lightning).

``MEt3RCallback`` samples views from the generator being trained during validation and logs
MEt3R next to your other metrics (e.g. FID); see docs/lightning.md.
"""

try:
    import lightning  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "lightning_callbacks needs Lightning: pip install 'met3r-metrics[lightning]'"
    ) from err

from lightning_callbacks.met3r_callback import MEt3RCallback

__all__ = ["MEt3RCallback"]
