"""Checkpoint registry, file resolution (hub cache / torch hub cache / offline errors) and every load format.

Tiny checkpoints are written in each official layout from the golden weights and loaded back through
``met3r_metrics.weights``; outputs must equal the goldens within the README tolerances.
"""

from __future__ import annotations

import argparse
import json
import pickle
import urllib.error
from pathlib import Path

import pytest

from met3r_metrics.weights import fetch
import torch
from safetensors.torch import save_file

from dust3r_golden_utils import (
    compare_outputs,
    golden_config,
    golden_inputs,
    golden_meta,
    golden_weights,
    single_thread,  # noqa: F401  (autouse fixture)
)
from met3r_metrics import weights as W
from met3r_metrics.model_args import ModelArgsError, parse_model_call
from met3r_metrics.weights import (
    CHECKPOINTS,
    WeightsNotFoundError,
    checkpoint_file,
    load_stereo_model,
    map_official_state_dict,
)

FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty, private HF and torch hub caches; offline by default."""
    hf = tmp_path / "hf_cache"
    hf.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(hf))
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch_hub"))
    return {"hf": hf, "ckpt": tmp_path / "torch_hub" / "checkpoints", "tmp": tmp_path}


def run_case(model, cfg: str, case: str = "sq64") -> None:
    inp = golden_inputs()
    with torch.no_grad():
        res1, res2 = model(inp[f"{case}.view1.img"], inp[f"{case}.view2.img"])
    compare_outputs(res1, res2, cfg, case)


def check_frozen(model) -> None:
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())


def hub_config(cfg: str) -> dict:
    """config.json as PyTorchModelHubMixin writes it (+ our dpt_head_overrides for the tiny widths)."""
    config = golden_config(cfg)
    if golden_meta(cfg)["model_class"] == "AsymmetricMASt3R":
        config["desc_mode"] = "norm"
    config["freeze"] = "none"
    return config


def safetensors_state_dict(cfg: str) -> dict[str, torch.Tensor]:
    """Golden weights as a hub model.safetensors holds them: the 8 DPT alias names dropped."""
    aliases = golden_meta(cfg)["aliases"]
    return {k: v for k, v in golden_weights(cfg).items() if k not in aliases}


def write_hub_repo(cache: Path, repo_id: str, cfg: str) -> Path:
    """Hugging Face cache layout: models--org--name/{refs/main, snapshots/<commit>/{config.json,model.safetensors}}."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / FAKE_COMMIT
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(FAKE_COMMIT)
    text = json.dumps(hub_config(cfg))
    (snap / "config.json").write_text(text)
    save_file(safetensors_state_dict(cfg), str(snap / "model.safetensors"))
    return snap


def write_pth(path: Path, cfg: str, model_string: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"args": argparse.Namespace(model=model_string, lr=1e-4), "model": golden_weights(cfg), "epoch": 7},
               path)
    return path


def official_string(cfg: str) -> str:
    """The golden constructor call as a training --model string (ManyAR patch embed, no landscape_only)."""
    call = golden_meta(cfg)["constructor_call"]
    call = call.replace("patch_embed_cls='PatchEmbedDust3R'", "patch_embed_cls='ManyAR_PatchEmbed'")
    call = call.replace(", landscape_only=False", "")
    overrides = golden_meta(cfg)["dpt_head_overrides"]
    if overrides:  # not official: the tiny DPT widths, as an extra literal kwarg our constructor understands
        call = call[:-1] + f", dpt_head_overrides={overrides!r})"
    return call


# ------------------------------------------------------------------------------------------------ registry


def test_registry_entries():
    assert set(CHECKPOINTS) == {
        "dust3r_224_linear", "dust3r_512_linear", "dust3r_512_dpt", "mast3r_512_catmlpdpt_metric",
        "dino_vits16", "featup_dino16_jbu", "featup_dino16_jbu_no_norm", "alexnet_torchvision",
        "raft_large_torchvision", "vgg16_torchvision",
    }
    for name, info in CHECKPOINTS.items():
        assert info.name == name and info.prefetch_command == f"met3r-download {name}"
        if info.kind == "stereo":
            official = info.filename.removesuffix(".pth")
            assert info.hf_repo_id == f"naver/{official}"
            project = "MASt3R" if official.startswith("MASt3R") else "DUSt3R"
            assert info.url == f"https://download.europe.naverlabs.com/ComputerVision/{project}/{official}.pth"
            assert "CC BY-NC-SA 4.0" in info.licence
            assert info.config is not None and info.model_string
    assert CHECKPOINTS["dino_vits16"].url == (
        "https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth"
    )
    base = "https://marhamilresearch4.blob.core.windows.net/feature-upsampling-public/pretrained/"
    assert CHECKPOINTS["featup_dino16_jbu"].url == base + "dino16_jbu_stack_cocostuff.ckpt"
    assert CHECKPOINTS["featup_dino16_jbu_no_norm"].url == base + "no_norm/dino16_jbu_stack_cocostuff.ckpt"
    assert CHECKPOINTS["alexnet_torchvision"].url == "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
    cache_names = [info.cache_name for info in CHECKPOINTS.values()]
    assert len(set(cache_names)) == len(cache_names)


# ------------------------------------------------------------------------------------------------ formats


def test_hub_cache_layout_registry_name_and_repo_id(caches):
    info = CHECKPOINTS["dust3r_224_linear"]
    snap = write_hub_repo(caches["hf"], info.hf_repo_id, "dust3r_linear_tiny")
    assert "Infinity" in (snap / "config.json").read_text()  # the non-standard token real config.json files use
    assert checkpoint_file("dust3r_224_linear", download=False) == snap / "model.safetensors"
    for source in ("dust3r_224_linear", info.hf_repo_id):
        model = load_stereo_model(source)
        check_frozen(model)
        run_case(model, "dust3r_linear_tiny", "land48x80")


def test_hub_cache_mast3r_without_alias_keys(caches):
    info = CHECKPOINTS["mast3r_512_catmlpdpt_metric"]
    write_hub_repo(caches["hf"], info.hf_repo_id, "mast3r_catmlpdpt_tiny")
    model = load_stereo_model("mast3r_512_catmlpdpt_metric", dtype=torch.float32, device="cpu")
    check_frozen(model)
    run_case(model, "mast3r_catmlpdpt_tiny", "sq64")  # includes desc / desc_conf


def test_official_pth_with_args_string(caches):
    cfg = "dust3r_dpt_tiny"
    path = write_pth(caches["tmp"] / "tiny_dpt.pth", cfg, official_string(cfg))
    raw = torch.load(path, weights_only=False)
    assert any(".layer_rn.0." in k for k in raw["model"]) and any("layer1_rn" in k for k in raw["model"])
    model = load_stereo_model(path)
    check_frozen(model)
    run_case(model, cfg, "land48x80")  # odd token grid: exercises the DPT crop


def test_pth_in_torch_hub_cache_resolves_registry_name(caches):
    """An official .pth already in torch.hub's checkpoint folder is used when the hub cache has nothing."""
    name = "dust3r_512_linear"
    path = write_pth(caches["ckpt"] / CHECKPOINTS[name].cache_name, "dust3r_linear_tiny",
                     official_string("dust3r_linear_tiny"))
    assert checkpoint_file(name, download=False) == path
    run_case(load_stereo_model(name), "dust3r_linear_tiny")


def test_local_directory(caches):
    cfg = "mast3r_catmlpdpt_tiny"
    directory = caches["tmp"] / "local_model"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(hub_config(cfg)))
    save_file(safetensors_state_dict(cfg), str(directory / "model.safetensors"))
    model = load_stereo_model(directory)
    check_frozen(model)
    run_case(model, cfg, "sq64")


def test_bare_safetensors_needs_config(caches):
    cfg = "dust3r_dpt_tiny"
    path = caches["tmp"] / "weights_only.safetensors"
    save_file(safetensors_state_dict(cfg), str(path))
    with pytest.raises(ValueError, match="needs a config"):
        load_stereo_model(path)
    model = load_stereo_model(str(path), config=golden_config(cfg))
    run_case(model, cfg, "mixed48x80_80x48")


def test_save_stereo_files_roundtrip(caches):
    cfg = "dust3r_dpt_tiny"
    model = load_stereo_model(write_pth(caches["tmp"] / "a.pth", cfg, official_string(cfg)))
    out = W.save_stereo_files(model, caches["tmp"] / "exported", golden_config(cfg))
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        keys = set(f.keys())
    assert keys == set(safetensors_state_dict(cfg))  # alias names dropped, like the HF mixin
    run_case(load_stereo_model(out.parent), cfg, "sq64")


@pytest.mark.usefixtures("torch_load_policy")
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pth_with_unsafe_pickle_is_refused_naming_file_and_argument(caches, zip_format):
    """A pickle needing a foreign class is refused in one line naming the argument, the file and the class,
    without torch's advice to pass weights_only=False (not even in the chained traceback)."""
    from met3r_metrics.networks import _load_stereo

    path = caches["tmp"] / "evil.pth"
    torch.save({"args": argparse.Namespace(model="AsymmetricCroCo3DStereo()"), "model": {},
                "extra": _NotAllowListed()}, path, _use_new_zipfile_serialization=zip_format)
    for call, argument in ((lambda: load_stereo_model(path), "source"),
                           (lambda: _load_stereo("mast3r_512_catmlpdpt_metric", str(path), torch.device("cpu")),
                            "backbone_weights")):
        with pytest.raises(pickle.UnpicklingError) as excinfo:
            call()
        msg = str(excinfo.value)
        assert msg.startswith(f"{argument}: expected a checkpoint that pickles only tensors, argparse.Namespace")
        assert f"received {path}," in msg and f"{__name__}._NotAllowListed" in msg and "\n" not in msg
        assert "weights_only" not in msg and excinfo.value.__cause__ is None and excinfo.value.__suppress_context__


class _NotAllowListed:
    pass


@pytest.mark.usefixtures("torch_load_policy")
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torchscript_archive_is_refused_naming_file_and_argument(caches):
    """torch.load would hand a TorchScript archive to torch.jit.load; its weights_only refusal suggests
    weights_only=False. Ours names the argument and the file."""
    path = caches["tmp"] / "scripted.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    with pytest.raises(pickle.UnpicklingError) as excinfo:
        load_stereo_model(path, argument="backbone_weights")
    msg = str(excinfo.value)
    assert msg.startswith(f"backbone_weights: expected a checkpoint written by torch.save, received {path}")
    assert "TorchScript" in msg and "weights_only" not in msg


def _overwrite_in_place(path: Path, truncate: bool = False) -> None:
    """What a re-download or a `cp` over the file does to its inode: new bytes (here zeros) or a shorter file."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        if truncate:
            f.truncate(0)
        else:
            f.write(b"\0" * size)


@pytest.mark.parametrize("layout", ["hub_dir", "pth", "featup_safetensors"])
def test_loaded_network_owns_its_memory(caches, layout):
    """Rewriting the checkpoint file in place after loading changes nothing in the built network (it used to
    stay memory-mapped to the file: 745 parameters changed, scores moved or became NaN)."""
    from met3r_metrics.networks import _load_features, _load_stereo

    cfg = "dust3r_linear_tiny"
    if layout == "hub_dir":
        source = caches["tmp"] / "hub_dir"
        source.mkdir()
        (source / "config.json").write_text(json.dumps(hub_config(cfg)))
        save_file(safetensors_state_dict(cfg), str(source / "model.safetensors"))
        file = source / "model.safetensors"
    elif layout == "pth":
        source = file = write_pth(caches["tmp"] / "tiny.pth", cfg, official_string(cfg))
    else:
        from conftest import golden_path
        from safetensors.torch import load_file

        official = {k: v.float() for k, v in load_file(str(golden_path("featup", "dino16_d2_weights.safetensors"))).items()}
        source = file = caches["tmp"] / "featup.safetensors"
        save_file(official, str(file))
    if layout == "featup_safetensors":
        model = _load_features("featup", str(source), torch.device("cpu"))
    else:
        model = _load_stereo("dust3r_224_linear", str(source), torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _overwrite_in_place(file)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == []
    if layout != "featup_safetensors":
        run_case(model, cfg)


def test_truncated_checkpoint_file_does_not_kill_the_process(caches, tmp_path):
    """Truncating the weights file under a loaded network used to kill the process with SIGBUS."""
    import subprocess
    import sys

    directory = caches["tmp"] / "hub_dir"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(hub_config("dust3r_linear_tiny")))
    save_file(safetensors_state_dict("dust3r_linear_tiny"), str(directory / "model.safetensors"))
    script = (
        "import sys, torch\n"
        "from met3r_metrics.weights import load_stereo_model\n"
        "net = load_stereo_model(sys.argv[1])\n"
        "open(sys.argv[1] + '/model.safetensors', 'r+b').truncate(0)\n"
        "x = torch.zeros(1, 3, 32, 32)\n"
        "print(float(sum(p.double().abs().sum() for p in net.parameters())), net(x, x)[0]['pts3d'].shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(directory)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "torch.Size([1, 32, 32, 3])" in done.stdout


# ------------------------------------------------------------------------------------------------ key mapping


def test_alias_mapping_both_directions():
    w = torch.ones(2, 3, 3, 3)
    assert set(map_official_state_dict({"h.dpt.scratch.layer2_rn.weight": w})) == {
        "h.dpt.scratch.layer2_rn.weight", "h.dpt.scratch.layer_rn.1.weight"}
    assert set(map_official_state_dict({"h.dpt.scratch.layer_rn.3.weight": w})) == {
        "h.dpt.scratch.layer_rn.3.weight", "h.dpt.scratch.layer4_rn.weight"}
    same = map_official_state_dict({"a.scratch.layer1_rn.weight": w, "a.scratch.layer_rn.0.weight": w.clone()})
    assert len(same) == 2
    with pytest.raises(ValueError, match="hold different tensors"):
        map_official_state_dict({"a.scratch.layer1_rn.weight": w, "a.scratch.layer_rn.0.weight": w * 2})


def test_unexpected_key_fails_loudly(caches):
    cfg = "dust3r_linear_tiny"
    sd = golden_weights(cfg)
    sd["prediction_head.weight"] = torch.zeros(1)
    path = caches["tmp"] / "extra.safetensors"
    save_file(sd, str(path))
    with pytest.raises(RuntimeError, match="prediction_head.weight"):
        load_stereo_model(path, config=golden_config(cfg))


# ------------------------------------------------------------------------------------------------ model args


def test_parse_model_call_literals():
    cls_name, kwargs = parse_model_call(
        "AsymmetricMASt3R(a=1, b=-2.5, c=('exp', -inf, inf), d=[1, 2], e={'x': None}, f=True, g=float('-inf'))"
    )
    assert cls_name == "AsymmetricMASt3R"
    assert kwargs == {"a": 1, "b": -2.5, "c": ("exp", -float("inf"), float("inf")), "d": [1, 2],
                      "e": {"x": None}, "f": True, "g": -float("inf")}


@pytest.mark.parametrize("text", [
    "__import__('os').system('true')",
    "Cls(a=__import__('os'))",
    "Cls(a=os.environ)",
    "Cls(a=some_name)",
    "Cls(1, 2)",
    "Cls(**kw)",
    "Cls(a=(lambda: 1))",
    "Cls(a=1",
    "Cls(a=-'x')",
])
def test_parse_model_call_rejects_code(text):
    with pytest.raises(ModelArgsError):
        parse_model_call(text)


# ------------------------------------------------------------------------------------------------ resolution


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_offline_missing_error_names_file_source_and_command(caches, name):
    info = CHECKPOINTS[name]
    with pytest.raises(WeightsNotFoundError) as excinfo:
        checkpoint_file(name)
    msg = str(excinfo.value)
    assert isinstance(excinfo.value, FileNotFoundError)
    assert f"'{name}'" in msg and info.filename in msg and f"`met3r-download {name}`" in msg
    assert "HF_HUB_OFFLINE=1" in msg
    assert (info.hf_repo_id or info.url) in msg


def test_load_stereo_model_offline_error(caches):
    with pytest.raises(WeightsNotFoundError, match="met3r-download dust3r_512_dpt"):
        load_stereo_model("dust3r_512_dpt")
    with pytest.raises(WeightsNotFoundError, match="hf download someone/other-model"):
        load_stereo_model("someone/other-model")


def test_lpips_trunk_from_the_registry(caches):
    """distance='lpips' default: torchvision's AlexNet file in the torch hub cache (classifier dropped)."""
    from met3r_metrics.models.lpips import LPIPS
    from met3r_metrics.weights import load_lpips

    with pytest.raises(WeightsNotFoundError, match=r"`met3r-download alexnet_torchvision`.*a local file with lpips_weights="):
        load_lpips(download=False)
    trunk = {f"features.{k}": v for k, v in LPIPS().trunk.state_dict().items()}
    trunk["classifier.1.weight"] = torch.zeros(4096, 9216)
    caches["ckpt"].mkdir(parents=True, exist_ok=True)
    torch.save(trunk, caches["ckpt"] / "alexnet-owt-7be5be79.pth")
    net = load_lpips(download=False)
    assert torch.equal(net.trunk[10].weight, trunk["features.10.weight"]) and not net.trunk[10].weight.requires_grad
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    assert net(x, x).abs().max().item() == 0.0 and net(x, -x).min().item() > 0.0


def test_download_false_never_downloads(caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded"))
    with pytest.raises(WeightsNotFoundError, match="download=False"):
        checkpoint_file("dino_vits16", download=False)


def test_url_checkpoints_cached(caches):
    dino = caches["ckpt"] / "dino_deitsmall16_pretrain.pth"
    no_norm = caches["ckpt"] / "no_norm" / "dino16_jbu_stack_cocostuff.ckpt"
    for p in (dino, no_norm):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert checkpoint_file("dino_vits16", download=False) == dino
    assert checkpoint_file("featup_dino16_jbu_no_norm") == no_norm
    with pytest.raises(WeightsNotFoundError):  # the use_norm file is a different one
        checkpoint_file("featup_dino16_jbu")


def test_url_download_goes_to_torch_hub_cache(caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(fetch, "_unreachable", lambda host: None)  # the network probe: as if online
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append(url)
        Path(dst).write_bytes(b"weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    path = checkpoint_file("featup_dino16_jbu")
    assert path == caches["ckpt"] / "dino16_jbu_stack_cocostuff.ckpt" and path.read_bytes() == b"weights"
    assert calls == [CHECKPOINTS["featup_dino16_jbu"].url]
    assert checkpoint_file("featup_dino16_jbu") == path and len(calls) == 1  # cached now


def test_failed_download_is_a_clear_error(caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(fetch, "_unreachable", lambda host: None)  # the network probe: as if online

    def no_network(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(WeightsNotFoundError, match=r"download failed.*met3r-download dino_vits16") as excinfo:
        checkpoint_file("dino_vits16")
    assert isinstance(excinfo.value.__cause__, urllib.error.URLError)


def test_bad_sources(caches):
    with pytest.raises(KeyError, match="unknown checkpoint"):
        checkpoint_file("dust3r_9000")
    with pytest.raises(ValueError, match="not a DUSt3R/MASt3R model"):
        load_stereo_model("dino_vits16")
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        load_stereo_model(caches["tmp"] / "missing.pth")
    with pytest.raises(WeightsNotFoundError, match="neither a registry name"):
        load_stereo_model("not a model")
