"""Where the feature / LPIPS / RAFT loaders read a checkpoint from: a registry name, an https URL, a local
file or an already loaded state dict, and how their errors name it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .fetch import checkpoint_file, url_file
from .formats import TORCH_SUFFIXES, read_tensors
from .registry import CHECKPOINTS

__all__: list[str] = []  # package-internal


def _label(source: str | os.PathLike[str] | Mapping[str, Any], argument: str) -> str:
    return f"{argument}=<state dict>" if isinstance(source, Mapping) else f"{argument}={os.fspath(source)!r}"


def _repr_label(source: str | os.PathLike[str] | Mapping[str, Any] | None, argument: str) -> str:
    """As :func:`_label`, with ``repr(source)`` (``None`` included): how the LPIPS and RAFT errors name it."""
    return f"{argument}=<state dict>" if isinstance(source, Mapping) else f"{argument}={source!r}"


def _read_source(
    source: str | os.PathLike[str] | Mapping[str, Any], download: bool, argument: str,
    kinds: tuple[str, ...] = ("dino", "featup"),
) -> Mapping[str, Any]:
    """Registry name (of one of ``kinds``), https URL, local file or loaded state dict -> raw (possibly
    Lightning-nested) dict."""
    if isinstance(source, Mapping):
        return source
    s = os.fspath(source)
    path = Path(s).expanduser()
    if s.startswith(("http://", "https://")):
        path = url_file(s, download=download)
    elif not (path.exists() or os.sep in s or path.suffix in (*TORCH_SUFFIXES, ".safetensors")):
        names = [n for n, info in CHECKPOINTS.items() if info.kind in kinds]
        if s not in names:
            raise ValueError(
                f"{argument}: expected a registry name ({', '.join(names)}), an https URL or an existing "
                f".ckpt/.pth/.pt/.bin/.safetensors file, got {argument}={s!r}"
            )
        path = checkpoint_file(s, download=download)
    return read_tensors(path, key="state_dict", argument=argument)
