"""Loading DUSt3R / MASt3R from every official layout: registry name, HF repo id, directory, ``.pth``,
``.safetensors``. Keys go through the DUSt3R checkpoint filter
(:func:`met3r_metrics.models.dust3r.checkpoint_filter_fn`, alias ``map_official_state_dict``), then the one
strict loader."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_model
from torch import nn

from ..models import dust3r
from ..models.dust3r import AsymmetricCroCo3DStereo, build_stereo_model, map_official_state_dict
from .fetch import WeightsNotFoundError, checkpoint_file, hub_file
from .formats import TORCH_SUFFIXES, read_config, read_safetensors, read_stereo_pth
from .loading import build_frozen, load_strict
from .registry import CHECKPOINTS, CheckpointInfo, by_hf_repo, stereo_names

__all__ = ["load_stereo_model", "load_stereo_state_dict", "save_stereo_files"]

_NO_DEC_BLOCKS2 = (
    " (no dec_blocks2.* keys: a CroCo pre-training checkpoint? The official loader would copy dec_blocks into "
    "dec_blocks2; released DUSt3R/MASt3R checkpoints have both)"
)


def _hint(state_dict: Mapping[str, torch.Tensor]) -> str:
    return "" if any(k.startswith("dec_blocks2.") for k in state_dict) else _NO_DEC_BLOCKS2


def load_stereo_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, assign: bool = False) -> None:
    """Strictly load an official-key state dict (after :func:`map_official_state_dict`) into a stereo model
    (a copy, unless ``assign``: then the model keeps the given tensors, e.g. meta tensors for shape checks)."""
    mapped = map_official_state_dict(state_dict)
    load_strict(model, mapped, what="DUSt3R/MASt3R", hint=_hint(mapped), assign=assign)


def _looks_like_repo_id(source: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", source)) and not source.endswith(
        (*TORCH_SUFFIXES, ".safetensors")
    )


def _resolve(
    source: str | os.PathLike, config: Mapping[str, Any] | None, argument: str,
) -> tuple[Path, Mapping[str, Any] | None]:
    """-> (weights file, config or None). The config is the explicit one, else config.json, else the registry's
    (for a registry name); .pth files carry their own and get None here."""
    registry: CheckpointInfo | None = None
    if isinstance(source, str) and not Path(source).exists():
        registry = CHECKPOINTS.get(source) or by_hf_repo(source)
        if registry is not None:
            if registry.kind != "stereo":
                raise ValueError(
                    f"{argument}: expected a DUSt3R/MASt3R checkpoint, got {source!r}, a {registry.kind} checkpoint, "
                    "not a DUSt3R/MASt3R model"
                )
            path = checkpoint_file(registry.name)
        elif _looks_like_repo_id(source):
            path = hub_file(source)
        else:
            raise WeightsNotFoundError(
                f"{argument}: expected a registry name ({', '.join(stereo_names())}), an existing file or directory, "
                f"or a Hugging Face repo id, got {source!r}, which is neither a registry name, an existing path "
                "nor a repo id"
            )
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise WeightsNotFoundError(f"{argument}: expected an existing checkpoint path, got {str(path)!r}, which "
                                       "does not exist")
    if path.is_dir():
        if not (path / "model.safetensors").is_file():
            raise WeightsNotFoundError(f"{argument}: expected a directory with model.safetensors (+ config.json), "
                                       f"got {str(path)!r} without one")
        path = path / "model.safetensors"
    if config is not None or path.suffix != ".safetensors":
        return path, config
    if (path.parent / "config.json").is_file():
        return path, read_config(path.parent / "config.json")
    if registry is not None and registry.config is not None:
        return path, dict(registry.config)
    raise ValueError(f"{argument}: expected config=... or a config.json beside {str(path)!r}: a bare .safetensors "
                     "file needs a config")


def load_stereo_model(
    source: str | os.PathLike,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    config: Mapping[str, Any] | None = None,
    attn_impl: str | None = None,
    argument: str = "source",
) -> AsymmetricCroCo3DStereo:
    """Build and load a DUSt3R / MASt3R model, frozen, in eval mode, owning its memory.

    Args:
        source: a registry name (``'mast3r_512_catmlpdpt_metric'``...), a Hugging Face repo id
            (``'naver/...'``, through the hub cache), a directory with ``config.json`` + ``model.safetensors``,
            an official ``.pth`` (``{'args': Namespace(model='Cls(...)'), 'model': state_dict}``), or a
            ``.safetensors`` file (config from ``config=``, a sibling ``config.json`` or the registry).
        device: where the weights go (default CPU).
        dtype: parameter dtype (default float32).
        config: constructor kwargs overriding any stored config (needed for a bare state dict / safetensors).
        attn_impl: 'sdpa' (default) or 'explicit'.
        argument: the name errors give ``source`` (the metric passes ``'backbone_weights'``).

    The model is built on the meta device (no random init), materialised on ``device``, and the checkpoint
    copied in strictly after :func:`map_official_state_dict`. The file is read memory-mapped where possible,
    but the network never shares memory with it: rewriting the file later changes nothing.
    """
    path, cfg = _resolve(source, config, argument)
    if path.suffix == ".safetensors":
        state_dict = read_safetensors(path)
    else:
        state_dict, pth_cfg = read_stereo_pth(path, argument=argument)
        cfg = cfg if cfg is not None else pth_cfg
        if cfg is None:
            raise ValueError(f"{argument}: expected config=... for {str(path)!r}, which holds no args.model "
                             "constructor string")
    return build_frozen(
        lambda sd: build_stereo_model(dict(cfg), attn_impl=attn_impl), state_dict, filter_fn=dust3r.checkpoint_filter_fn,
        what=f"{argument}={os.fspath(source)!r}", device=device, dtype=dtype or torch.float32, hint=_hint(state_dict),
    )


def save_stereo_files(model: nn.Module, directory: str | os.PathLike, config: Mapping[str, Any]) -> Path:
    """Write ``config.json`` + ``model.safetensors`` like the HF mixin (alias names dropped, Infinity tokens).

    Handy for converting an official ``.pth`` once into the faster safetensors layout.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(dict(config), indent=2))
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        tmp_file = Path(tmp) / "model.safetensors"
        save_model(model, str(tmp_file))
        tmp_file.replace(directory / "model.safetensors")
    return directory / "model.safetensors"
