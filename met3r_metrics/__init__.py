"""met3r-metrics: the MEt3R multi-view consistency metric (arXiv 2501.06336) in plain PyTorch.

Importing this package has no side effects: no RNG seeding, no TF32 switching, no downloads.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
