"""Lightning integration for met3r-metrics (the core library never imports Lightning).

``MEt3RCallback`` samples views from the generator being trained during validation and logs
MEt3R next to FID; see docs/lightning.md.
"""

from lightning_callbacks.met3r_callback import MEt3RCallback

__all__ = ["MEt3RCallback"]
