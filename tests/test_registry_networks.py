"""Every registry checkpoint: its network builds (tiny), loads a state dict in the official file's layout strictly
through the filter beside its model, runs under no_grad, and comes out frozen (timm's one-builder pattern)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import torch

from met3r_metrics.weights import ARCHITECTURES, CHECKPOINTS, build_frozen
from met3r_metrics.weights.registry import FEATUP_CHECKPOINTS

# Tiny sizes (constructor keyword arguments); the DPT needs dec_depth > 9.
_TINY_STEREO = {
    "enc_embed_dim": 32, "enc_depth": 1, "enc_num_heads": 2, "dec_embed_dim": 32, "dec_depth": 10, "dec_num_heads": 2,
    "dpt_feature_dim": 16, "dpt_last_dim": 8, "dpt_layer_dims": (8, 8, 16, 16), "img_size": (32, 32),
}
_ALIAS = re.compile(r"\.scratch\.layer_rn\.\d\.weight$")


def _official_stereo(sd: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    # The hub's model.safetensors (save_model) keeps only scratch.layer{N}_rn of the DPT's alias pairs.
    return {k: v for k, v in sd.items() if not _ALIAS.search(k)}


def _official_dino(sd: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    # dino_deitsmall16_pretrain.pth: the plain ViT keys (cls_token, blocks.0.attn.qkv.weight, ...)
    return {k.removeprefix("vit."): v for k, v in sd.items()}


def _official_featup(sd: dict[str, torch.Tensor], name: str) -> dict[str, Any]:
    # FeatUp's Lightning .ckpt: {"state_dict": ...}, the ViT under model.0.model. (use_norm) or model.model. (no_norm)
    vit = "model.0.model." if name == FEATUP_CHECKPOINTS[True] else "model.model."
    renamed = {re.sub(r"^featurizer\.vit\.", vit, k).replace("featurizer.channel_norm.", "model.1.norm."): v
               for k, v in sd.items()}
    return {"state_dict": renamed, "epoch": 7}


def _official_lpips(sd: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    # torchvision's features.<i>.* (+ its classifier, which LPIPS drops) and lpips' lin<k>.model.1.weight
    out = {re.sub(r"^trunk\.", "features.", k): v for k, v in sd.items() if k.startswith("trunk.")}
    out.update({f"lin{k.split('.')[1]}.model.1.weight": v for k, v in sd.items() if k.startswith("lins.")})
    out["classifier.6.bias"] = torch.zeros(1000)
    return out


def _official_raft(sd: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    # torchvision's raft_large file uses the network's own keys; a DDP-saved one prefixes them with module.
    return {"module." + k: v for k, v in sd.items()}


def _pair(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return tuple(torch.rand(1, 3, size, size, generator=g) * 2 - 1 for _ in range(2))  # type: ignore[return-value]


def _run_stereo(net: torch.nn.Module) -> tuple[int, ...]:
    res1, res2 = net(*_pair(32))
    assert res2["pts3d_in_other_view"].shape == (1, 32, 32, 3)
    return tuple(res1["pts3d"].shape) + tuple(res1["conf"].shape)


# kind -> (tiny overrides, official layout, forward returning a shape, expected shape)
_CASES: dict[str, tuple[dict[str, Any], Callable[..., dict[str, Any]], Callable[[Any], tuple[int, ...]], tuple]] = {
    "stereo": (_TINY_STEREO, _official_stereo, _run_stereo, (1, 32, 32, 3, 1, 32, 32)),
    "dino": ({"depth": 1}, _official_dino, lambda net: tuple(net(_pair(32)[0] * 0.5 + 0.5).shape), (1, 384, 2, 2)),
    "featup": ({"depth": 1}, _official_featup, lambda net: tuple(net(_pair(32)[0] * 0.5 + 0.5).shape), (1, 384, 32, 32)),
    "alexnet": ({}, _official_lpips, lambda net: tuple(net(*_pair(32)).shape), (1, 1, 32, 32)),
    "vgg": ({}, _official_lpips, lambda net: tuple(net(*_pair(32)).shape), (1, 1, 32, 32)),
    "raft": ({}, _official_raft, lambda net: tuple(net(*_pair(128), num_flow_updates=1)[-1].shape), (1, 2, 128, 128)),
}


def test_every_checkpoint_kind_has_an_architecture_and_a_case() -> None:
    kinds = {info.kind for info in CHECKPOINTS.values()}
    assert kinds == set(ARCHITECTURES) == set(_CASES)


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_registry_entry_builds_loads_through_its_filter_and_runs_frozen(name: str) -> None:
    info = CHECKPOINTS[name]
    arch = ARCHITECTURES[info.kind]
    overrides, official_layout, run, expected = _CASES[info.kind]
    if info.kind == "stereo":  # MASt3R's descriptor head keeps its output mode (desc24)
        assert {"head_type", "output_mode"} <= set(info.config or {})
    torch.manual_seed(0)
    reference = arch.build(info, **overrides).state_dict()
    official = official_layout(reference, name)

    net = build_frozen(lambda sd: arch.build(info, **overrides), official, filter_fn=arch.filter_fn, what=name,
                       official_key=arch.official_key)

    loaded = net.state_dict()
    assert set(loaded) == set(reference)
    assert all(torch.equal(loaded[k], reference[k]) for k in reference), "a key went to the wrong tensor"
    assert all(not p.requires_grad for p in net.parameters()) and not any(m.training for m in net.modules())
    with torch.no_grad():
        assert run(net) == expected
    net.train()  # a LightningModule entering its loop: frozen networks with train-mode layers stay in eval
    assert all(not m.training for m in net.modules() if hasattr(m, "frozen"))
    if set(official) == set(reference):
        # DUSt3R's linear-head checkpoints: no DPT, no alias keys; the filter leaves their names alone.
        assert info.config is not None and info.config["head_type"] == "linear"
        assert set(arch.filter_fn(official)) == set(official)
        return
    # The filter does work on this layout: without it the strict load refuses the official keys.
    with pytest.raises(RuntimeError, match="strict load"):
        build_frozen(lambda sd: arch.build(info, **overrides), official, what=name)
