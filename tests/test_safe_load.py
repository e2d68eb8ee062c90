"""Safe checkpoint reading: Lightning-style checkpoints whose non-tensor entries weights_only refuses are read by
a restricted unpickler that stubs unknown classes (never importing or running them); weights that need such a
class still fail."""

from __future__ import annotations

import argparse
import importlib
import io
import pickle
import sys
import textwrap
import uuid
import warnings
from collections import OrderedDict

import pytest
import torch
from conftest import golden_path
from safetensors.torch import load_file

from met3r_metrics.weights import load_dino_featurizer, load_featup_dino
from met3r_metrics.weights import (
    CheckpointStubWarning,
    PickleStub,
    read_checkpoint_tensors,
    restricted_allow_list,
    safe_torch_load,
)

WEIGHTS = ("featup", "dino16_d2_weights.safetensors")

pytestmark = pytest.mark.usefixtures("torch_load_policy")  # every test also under TORCH_FORCE_WEIGHTS_ONLY_LOAD=1

# A helper module (written to tmp, importable only while saving): an AttributeDict-like hyper-parameter dict,
# a callback state object, and objects whose unpickling would have side effects (each creates a marker file).
_HELPER = '''
import builtins
import pathlib

import torch

MARKER_DIR = pathlib.Path({marker_dir!r})
(MARKER_DIR / "imported").write_text("module code ran")  # import-time side effect


def touch(name):
    (MARKER_DIR / name).write_text("ran")
    return name


class HParams(dict):
    """Like Lightning's AttributeDict: a dict subclass with attribute access (+ a side effect on unpickle)."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(key) from err

    def __setstate__(self, state):
        touch("setstate")
        self.__dict__.update(state)


class CallbackState:
    def __init__(self):
        self.best_model_path = "/ckpts/epoch=3.ckpt"
        self.best_score = torch.tensor(0.25)


class ReduceToTouch:
    def __reduce__(self):
        return (touch, ("reduce",))


class ReduceToEval:
    def __reduce__(self):
        return (builtins.eval, ("__import__('pathlib').Path(%r).write_text('ran')" % str(MARKER_DIR / "eval"),))


class MyTensor(torch.Tensor):
    pass
'''


@pytest.fixture()
def helper(tmp_path, monkeypatch):
    """(module, marker_dir, forget): the helper imported from tmp; forget() makes it unimportable again."""
    src = tmp_path / "src"
    src.mkdir()
    markers = tmp_path / "markers"
    markers.mkdir()
    name = f"met3r_ckpt_helper_{uuid.uuid4().hex[:8]}"
    (src / f"{name}.py").write_text(textwrap.dedent(_HELPER).format(marker_dir=str(markers)))
    monkeypatch.syspath_prepend(str(src))
    module = importlib.import_module(name)

    def forget(delete: bool) -> None:
        sys.modules.pop(name, None)
        for marker in markers.iterdir():
            marker.unlink()
        if delete:
            (src / f"{name}.py").unlink()
            importlib.invalidate_caches()

    yield module, markers, forget
    sys.modules.pop(name, None)


def _official() -> dict[str, torch.Tensor]:
    return load_file(str(golden_path(*WEIGHTS)))


def _lightning_ckpt(mod, state_dict: dict[str, torch.Tensor]) -> dict[str, object]:
    """A Lightning-like checkpoint of FeatUp's JBUFeatUp: training-only keys in state_dict, pickled objects."""
    sd = OrderedDict(state_dict)
    sd["downsampler.attention_net.1.weight"] = torch.randn(1, 384)
    sd["downsampler.attention_net.1.bias"] = torch.randn(1)
    sd["downsampler.w"] = torch.randn(16, 16)
    sd["downsampler.b"] = torch.randn(16, 16)
    sd["scale_net.net.weight"] = torch.randn(1, 384, 1, 1)
    sd["scale_net.net.bias"] = torch.randn(1)
    hp = mod.HParams(model_type="dino16", activation_type="token", lr=1e-3, outlier_detection=True)
    hp.extra = "x"  # non-empty __dict__ -> BUILD -> __setstate__ on load
    return {
        "epoch": 3,
        "global_step": 2000,
        "pytorch-lightning_version": "1.9.0",
        "state_dict": sd,
        "hyper_parameters": hp,
        "hparams_name": "kwargs",
        "callbacks": {"ModelCheckpoint{'monitor': None}": mod.CallbackState()},
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 3}}}},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-3}]}],
        "lr_schedulers": [],
        "side_effects": [mod.ReduceToTouch(), mod.ReduceToEval()],
    }


def _image() -> torch.Tensor:
    return load_file(str(golden_path("featup", "dino16_d2_case_32x48.safetensors")))["image"]


def _assert_same_model(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=0, rtol=0, msg=k)
    with torch.no_grad():
        torch.testing.assert_close(a(_image()), b(_image()), atol=0, rtol=0)


@pytest.mark.parametrize("delete_module", [True, False], ids=["unimportable", "importable"])
def test_lightning_ckpt_loads_without_running_foreign_code(tmp_path, helper, delete_module) -> None:
    mod, markers, forget = helper
    path = tmp_path / "dino16_jbu_stack_cocostuff.ckpt"
    torch.save(_lightning_ckpt(mod, _official()), path)
    forget(delete_module)
    with pytest.raises(pickle.UnpicklingError):  # weights_only=True alone refuses the file
        safe_torch_load(path)

    with pytest.warns(CheckpointStubWarning, match=r"HParams.*CallbackState") as rec:
        model = load_featup_dino(path, depth=None)
    message = str(rec[0].message)
    for stubbed in ("HParams", "CallbackState", "touch", "builtins.eval"):
        assert stubbed in message
    assert sorted(p.name for p in markers.iterdir()) == []  # no import, __setstate__, __reduce__ or eval ran
    _assert_same_model(model, load_featup_dino(golden_path(*WEIGHTS), depth=None))


def test_stubs_are_inert_and_keep_their_data(tmp_path, helper) -> None:
    mod, markers, forget = helper
    path = tmp_path / "lightning.ckpt"
    torch.save(_lightning_ckpt(mod, _official()), path, _use_new_zipfile_serialization=False)  # legacy format too
    forget(False)
    with pytest.warns(CheckpointStubWarning):
        ckpt = safe_torch_load(path, stub_unknown=True)
    hp = ckpt["hyper_parameters"]
    assert isinstance(hp, PickleStub) and hp.stub_of.endswith(".HParams")
    assert hp.stub_items["model_type"] == "dino16" and hp.stub_state == {"extra": "x"}
    cb = next(iter(ckpt["callbacks"].values()))
    assert isinstance(cb, PickleStub) and torch.equal(cb.stub_state["best_score"], torch.tensor(0.25))
    assert all(isinstance(s, PickleStub) for s in ckpt["side_effects"])
    assert ckpt["epoch"] == 3 and torch.equal(ckpt["optimizer_states"][0]["state"][0]["exp_avg"], torch.zeros(3))
    assert list(markers.iterdir()) == []
    with pytest.warns(CheckpointStubWarning):
        tensors = read_checkpoint_tensors(path)
    official = _official()
    assert set(tensors) == set(official) | {k for k in ckpt["state_dict"] if k.startswith(("scale", "down"))}
    for k, v in official.items():
        assert torch.equal(tensors[k], v), k


def test_real_lightning_and_omegaconf_objects(tmp_path) -> None:
    """Lightning's AttributeDict and omegaconf's DictConfig (what a real JBUFeatUp checkpoint pickles)."""
    omegaconf = pytest.importorskip("omegaconf")
    data = pytest.importorskip("lightning.fabric.utilities.data")
    official = _official()
    cfg = omegaconf.OmegaConf.create({"model_type": "dino16", "loss": {"kind": "mse", "weights": [1, 2]}})
    ckpt = {"state_dict": official, "hyper_parameters": data.AttributeDict(cfg=cfg, lr=1e-3), "epoch": 0}
    path = tmp_path / "real.ckpt"
    torch.save(ckpt, path)
    with pytest.warns(CheckpointStubWarning, match=r"AttributeDict.*DictConfig"):
        model = load_featup_dino(path, depth=None)
    _assert_same_model(model, load_featup_dino(official, depth=None))


def test_dino_loader_reads_lightning_style_file(tmp_path, helper) -> None:
    mod, markers, forget = helper
    vit = {k[len("model.0.model."):]: v for k, v in _official().items() if k.startswith("model.0.model.")}
    path = tmp_path / "dino.pth"
    torch.save({"state_dict": vit, "hyper_parameters": mod.HParams(arch="vit_small")}, path)
    forget(True)
    with pytest.warns(CheckpointStubWarning, match="HParams"):
        feat = load_dino_featurizer(path, depth=2)
    ref = load_dino_featurizer(vit, depth=2)
    for k, v in ref.state_dict().items():
        assert torch.equal(feat.state_dict()[k], v), k
    assert list(markers.iterdir()) == []


def test_plain_file_loads_without_warnings(tmp_path) -> None:
    official = _official()
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": official, "epoch": 1, "args": argparse.Namespace(lr=0.1)}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_featup_dino(path, depth=None)
        assert read_checkpoint_tensors(path).keys() == official.keys()
    _assert_same_model(model, load_featup_dino(official, depth=None))


def test_tensor_subclass_in_state_dict_fails_clearly(tmp_path, helper) -> None:
    mod, markers, forget = helper
    sd = dict(_official())
    sd["upsampler.up1.range_temp"] = sd["upsampler.up1.range_temp"].as_subclass(mod.MyTensor)
    path = tmp_path / "subclass.ckpt"
    torch.save({"state_dict": sd}, path)
    forget(True)
    with pytest.raises(pickle.UnpicklingError, match=r"restricted unpickler could not read it.*MyTensor"):
        load_featup_dino(path, depth=None)


def test_object_in_state_dict_fails_clearly(tmp_path, helper) -> None:
    mod, markers, forget = helper
    sd = dict(_official())
    sd["upsampler.up1.sigma_spatial"] = mod.CallbackState()
    path = tmp_path / "object.ckpt"
    torch.save({"state_dict": sd}, path)
    tensor = torch.zeros(2)
    tensor.owner = mod.CallbackState()  # a plain tensor carrying a foreign object as an attribute
    attr_path = tmp_path / "attr.ckpt"
    torch.save({"state_dict": {"w": tensor}}, attr_path)
    forget(False)
    with pytest.warns(CheckpointStubWarning), pytest.raises(
        pickle.UnpicklingError, match=r"'upsampler\.up1\.sigma_spatial'.*CallbackState.*refusing"
    ):
        load_featup_dino(path, depth=None)
    with pytest.warns(CheckpointStubWarning), pytest.raises(pickle.UnpicklingError, match=r"'w'.*CallbackState"):
        read_checkpoint_tensors(attr_path)
    assert list(markers.iterdir()) == []


def test_state_of_allow_listed_classes_and_functions_cannot_be_tampered(tmp_path) -> None:
    """BUILD on a class or function (e.g. replacing argparse.Namespace.__init__ or a rebuild function's
    __defaults__) is refused: only instances of allow-listed types and stubs take state."""
    from met3r_metrics.weights import _restricted_pickle_module

    module = _restricted_pickle_module(restricted_allow_list(), {})
    on_class = b"\x80\x02cargparse\nNamespace\n}X\x08\x00\x00\x00__init__K\x01sb."  # BUILD on the class
    on_function = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}X\x03\x00\x00\x00__kK\x01sb."
    for payload, kind in ((on_class, "type"), (on_function, "function")):
        with pytest.raises(pickle.UnpicklingError, match=f"refusing to set the state of a {kind} object"):
            module.load(io.BytesIO(payload))
    assert callable(argparse.Namespace.__init__) and not hasattr(torch._utils._rebuild_tensor_v2, "__k")

    class GetAttr:
        def __reduce__(self):
            return (getattr, (argparse.Namespace, "__init__"))

    path = tmp_path / "getattr.ckpt"
    torch.save({"x": GetAttr()}, path)
    with pytest.warns(CheckpointStubWarning, match="builtins.getattr"):
        out = safe_torch_load(path, stub_unknown=True)
    assert isinstance(out["x"], PickleStub) and out["x"].stub_args == (argparse.Namespace, "__init__")


def test_allow_list_has_no_code_execution_primitives() -> None:
    allowed = restricted_allow_list()
    for name in ("builtins.eval", "builtins.exec", "builtins.getattr", "builtins.__import__", "builtins.open",
                 "builtins.compile", "builtins.setattr", "os.system", "posix.system", "subprocess.Popen",
                 "copyreg._reconstructor", "functools.partial", "numpy.core.multiarray._reconstruct",
                 "builtins.type", "types.CodeType", "types.FunctionType"):
        assert name not in allowed, name
    for name in ("torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter", "collections.OrderedDict",
                 "argparse.Namespace", "torch.float32", "torch.Size", "builtins.set", "builtins.frozenset",
                 "builtins.complex", "builtins.slice", "_codecs.encode"):
        assert name in allowed, name
