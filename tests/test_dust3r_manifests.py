"""Full-size DUSt3R / MASt3R configs, built on the meta device, have exactly the official state-dict layout.

Proves checkpoint compatibility without the multi-GB files: keys, order, shapes, dtypes, alias pairs and the
safetensors key subset equal ../shared/golden/dust3r/manifests/*.json, and a strict load of a checkpoint with
those keys (safetensors layout, via the documented alias mapping) succeeds.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import golden_path
from dust3r_golden_utils import single_thread  # noqa: F401  (autouse fixture)
from met3r_metrics.model_args import inference_kwargs, parse_model_call
from met3r_metrics.models.dust3r import AsymmetricMASt3R, build_stereo_model
from met3r_metrics.weights import CHECKPOINTS, load_stereo_state_dict, map_official_state_dict

STEREO = [name for name, info in CHECKPOINTS.items() if info.kind == "stereo"]


def manifest(name: str) -> dict:
    official = CHECKPOINTS[name].hf_repo_id.split("/")[1]
    return json.loads(golden_path("dust3r", "manifests", f"{official}.json").read_text())


def normalise(value):
    """JSON lists and tuples compare equal."""
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    return value


def build_meta(config: dict) -> torch.nn.Module:
    with torch.device("meta"):
        return build_stereo_model(config)


def layout(model: torch.nn.Module) -> list[tuple[str, list[int], str]]:
    return [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]


def test_all_four_manifests_covered():
    names = sorted(p.stem for p in golden_path("dust3r", "manifests").glob("*.json"))
    assert sorted(CHECKPOINTS[n].hf_repo_id.split("/")[1] for n in STEREO) == names


@pytest.mark.parametrize("name", STEREO)
def test_registry_matches_manifest(name):
    info, man = CHECKPOINTS[name], manifest(name)
    assert normalise(dict(info.config)) == normalise(man["constructor_kwargs_for_inference"])
    assert info.model_string == man["training_args_model_string"]
    # The .pth route: the training string, parsed without eval and rewritten like load_model, gives the same kwargs.
    cls_name, kwargs = parse_model_call(man["training_args_model_string"])
    assert cls_name == man["model_class"]
    assert normalise(inference_kwargs(kwargs)) == normalise(man["constructor_kwargs_for_inference"])


@pytest.mark.parametrize("name", STEREO)
def test_meta_build_equals_manifest(name):
    man = manifest(name)
    model = build_meta(dict(CHECKPOINTS[name].config))
    assert (type(model) is AsymmetricMASt3R) == (man["model_class"] == "AsymmetricMASt3R")
    expected = [(e["key"], e["shape"], e["dtype"]) for e in man["keys"]]
    assert layout(model) == expected  # same keys, same order, same shapes, float32
    assert all(e["kind"] == "parameter" for e in man["keys"]) and not list(model.buffers())
    assert len(model.state_dict()) == man["num_state_dict_keys"]
    assert sum(p.numel() for p in model.parameters()) == man["num_parameters_unique"]

    # Alias pairs: the same Parameter under two names, exactly where the manifest says.
    sd = model.state_dict(keep_vars=True)
    aliases = {e["key"]: e["alias_of"] for e in man["keys"] if e.get("alias_of")}
    found = {}
    first_name: dict[int, str] = {}
    for key, p in sd.items():
        if id(p) in first_name:
            found[key] = first_name[id(p)]
        else:
            first_name[id(p)] = key
    assert found == aliases

    # safetensors keeps one name per shared tensor: the lexicographically first.
    groups: dict[int, list[str]] = {}
    for key, p in sd.items():
        groups.setdefault(id(p), []).append(key)
    assert sorted(min(g) for g in groups.values()) == sorted(man["safetensors_keys"])


@pytest.mark.parametrize("name", STEREO)
def test_no_train_mode_layers_exact_gelu_and_eps(name):
    """Inference needs no eval(): no dropout / batch norm anywhere; exact-erf GELU; every LayerNorm eps 1e-6."""
    model = build_meta(dict(CHECKPOINTS[name].config))
    modules = list(model.modules())
    assert not [m for m in modules if isinstance(m, (torch.nn.modules.dropout._DropoutNd,
                                                     torch.nn.modules.batchnorm._NormBase))]
    gelus = [m for m in modules if isinstance(m, torch.nn.GELU)]
    norms = [m for m in modules if isinstance(m, torch.nn.LayerNorm)]
    assert gelus and all(m.approximate == "none" for m in gelus)
    assert norms and all(m.eps == 1e-6 for m in norms)


@pytest.mark.parametrize("name", STEREO)
def test_config_json_and_training_string_build_same_layout(name):
    man = manifest(name)
    expected = [(e["key"], e["shape"], e["dtype"]) for e in man["keys"]]
    assert layout(build_meta(dict(man["mixin_config"]))) == expected  # what config.json holds
    cls_name, kwargs = parse_model_call(man["training_args_model_string"])
    assert layout(build_meta({"model_class": cls_name, **inference_kwargs(kwargs)})) == expected


@pytest.mark.parametrize("name", STEREO)
@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_strict_load_of_manifest_shaped_checkpoint(name, fmt):
    """A checkpoint with exactly the manifest's keys (hub: alias names dropped; .pth: both names) loads strictly."""
    man = manifest(name)
    shapes = {e["key"]: e["shape"] for e in man["keys"]}
    keys = man["safetensors_keys"] if fmt == "safetensors" else list(shapes)
    ckpt = {k: torch.empty(shapes[k], device="meta") for k in keys}
    if fmt == "pth":  # share storage like torch.save of aliased modules
        for e in man["keys"]:
            if e.get("alias_of"):
                ckpt[e["key"]] = ckpt[e["alias_of"]]
    assert set(map_official_state_dict(ckpt)) == set(shapes)
    model = build_meta(dict(CHECKPOINTS[name].config))
    load_stereo_state_dict(model, ckpt, assign=True)
    # A missing or unexpected key fails loudly.
    broken = dict(ckpt)
    broken.pop("enc_norm.weight")
    with pytest.raises(RuntimeError, match="enc_norm.weight"):
        load_stereo_state_dict(build_meta(dict(CHECKPOINTS[name].config)), broken, assign=True)
