"""The one freeze helper: every frozen network of the package goes through :func:`freeze`.

A frozen module has ``requires_grad=False`` everywhere and is in eval mode. Modules that hold
train-mode layers (FeatUp's ``Dropout2d``) mix in :class:`FrozenMixin`, so that once frozen a parent
calling ``.train()`` (a LightningModule entering its training loop) cannot switch them back on.
"""

from __future__ import annotations

from typing import TypeVar

from torch import nn

__all__ = ["FrozenMixin", "freeze"]

M = TypeVar("M", bound=nn.Module)


class FrozenMixin:
    """Mix in before ``nn.Module``: after :func:`freeze`, ``.train(mode)`` keeps eval mode."""

    frozen: bool = False

    def train(self, mode: bool = True):  # type: ignore[no-untyped-def]
        return super().train(mode and not self.frozen)  # type: ignore[misc]


def freeze(module: M) -> M:
    """No gradients, eval mode, and eval pinned on every :class:`FrozenMixin` inside; returns ``module``."""
    module.requires_grad_(False)
    for sub in module.modules():
        if isinstance(sub, FrozenMixin):
            sub.frozen = True
    return module.eval()
