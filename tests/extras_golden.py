"""Loaders of ../shared/golden/met3r_extras shared by its test files (cached: the files are read once)."""

from __future__ import annotations

import json
from functools import lru_cache

import torch
from safetensors.torch import load_file

from conftest import golden_path


@lru_cache(maxsize=None)
def extras_meta() -> dict:
    """cases.json of met3r_extras."""
    return json.loads(golden_path("met3r_extras", "cases.json").read_text())


@lru_cache(maxsize=None)
def extras_case(case: str) -> dict[str, torch.Tensor]:
    """A case's tensors, with the ones stored once elsewhere (``shared_with``) resolved and reshaped."""
    out = dict(load_file(str(golden_path("met3r_extras", f"{case}.safetensors"))))
    for name, info in extras_meta()["cases"][case]["tensors"].items():
        if name not in out and info.get("shared_with"):
            file, key = info["shared_with"].split(":")
            out[name] = load_file(str(golden_path("met3r_extras", file)))[key].reshape(info["shape"])
    return out
