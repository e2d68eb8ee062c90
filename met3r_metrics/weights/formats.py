"""Checkpoint file formats: safetensors (+ ``config.json``), official DUSt3R/MASt3R ``.pth``, Lightning ``.ckpt``.

Readers return CPU state dicts that may be memory-mapped views of the file; the strict loader
(:func:`met3r_metrics.weights.loading.load_strict`) copies them into the network's own memory, so nothing
built from them changes when the file does. Torch files are read with :mod:`.safe_load` (never fully
unpickled).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..model_args import inference_kwargs, parse_model_call
from .fetch import WeightsNotFoundError
from .safe_load import read_checkpoint_tensors, safe_torch_load

__all__ = ["TORCH_SUFFIXES", "read_config", "read_safetensors", "read_stereo_pth", "read_tensors"]

#: Suffixes read as torch (pickle) files; ``.safetensors`` is the other format.
TORCH_SUFFIXES = (".ckpt", ".pth", ".pt", ".bin")


def read_config(path: Path) -> dict[str, Any]:
    """A ``config.json`` of constructor kwargs (Python's json reads the ``Infinity`` tokens HF mixins write)."""
    return json.loads(path.read_text())


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file, on CPU (memory-mapped: copy before keeping them)."""
    return load_file(str(path), device="cpu")


def read_tensors(path: Path, *, key: str | None = "state_dict", argument: str = "path") -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file, or of a torch file (``ckpt[key]`` when present, e.g. a Lightning
    ``state_dict``; pickled extras become inert stubs, see :func:`~.safe_load.read_checkpoint_tensors`)."""
    if path.is_dir():  # it exists: "not found" would send the user looking for a missing file
        raise ValueError(f"{argument}: expected a checkpoint file (.ckpt/.pth/.pt/.bin/.safetensors), got {str(path)!r}, "
                         "which is a directory: name the file inside it")
    if not path.is_file():
        raise WeightsNotFoundError(f"{argument}: expected an existing checkpoint file, got {str(path)!r} (not found)")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    return read_checkpoint_tensors(path, key=key, argument=argument)


def read_stereo_pth(path: Path, *, argument: str = "path") -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Official DUSt3R/MASt3R ``.pth`` -> (state dict, inference kwargs parsed from ``args.model``); a bare state
    dict -> (state dict, None).

    The official file is ``{'args': argparse.Namespace(model='Cls(...)', ...), 'model': state_dict, ...}``. Only
    tensors and ``argparse.Namespace`` are allowed in the pickle; anything else is refused
    (:class:`~.safe_load.UnsafeCheckpointError` naming ``argument`` and the file). The ``args.model`` string is
    parsed with ``ast``, never evaluated.
    """
    ckpt = safe_torch_load(path, [argparse.Namespace], argument=argument)
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("model"), Mapping):
        config = None
        model_string = getattr(ckpt.get("args"), "model", None)
        if isinstance(model_string, str):
            cls_name, kwargs = parse_model_call(model_string)
            config = {"model_class": cls_name, **inference_kwargs(kwargs)}
        return dict(ckpt["model"]), config
    if isinstance(ckpt, Mapping) and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return dict(ckpt), None
    raise ValueError(
        f"{argument}: expected a DUSt3R/MASt3R checkpoint (a dict with 'model' and 'args', or a state dict), "
        f"got {os.fspath(path)} holding a {type(ckpt).__name__}"
    )
