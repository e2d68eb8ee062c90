"""met3r-download: what each variant needs, --list, offline errors; never touches the network."""

import pytest

from met3r_metrics.cli import download
from met3r_metrics.weights import CHECKPOINTS


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def test_variant_needs():
    assert download.checkpoints_for("official") == ["mast3r_512_catmlpdpt_metric", "featup_dino16_jbu", "dino_vits16"]
    assert download.checkpoints_for("paper")[0] == "dust3r_512_dpt"
    assert download.checkpoints_for("dust3r") == ["dust3r_512_dpt"]
    assert download.checkpoints_for("dino_vits16") == ["dino_vits16"]
    with pytest.raises(SystemExit, match="unknown variant or checkpoint"):
        download.checkpoints_for("nope")


def test_list_and_cached_file(empty_caches, capsys):
    assert download.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in CHECKPOINTS) and "variant official:" in out
    assert "cached" not in out.replace("missing", "")
    # a file placed where the registry looks counts as cached, and "downloading" it is a no-op
    path = empty_caches / "torch" / "hub" / "checkpoints" / CHECKPOINTS["dino_vits16"].cache_name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    assert download.is_cached("dino_vits16") == str(path)
    assert download.main(["dino_vits16"]) == 0
    assert str(path) in capsys.readouterr().out


def test_offline_failure_says_what_stops_the_download(empty_caches, capsys):
    """met3r-download is the prefetch command: its error must not tell the user to run met3r-download."""
    assert download.main(["featup_dino16_jbu"]) == 1
    err = capsys.readouterr().err
    assert "featup_dino16_jbu: FAILED:" in err and "unset HF_HUB_OFFLINE (met3r-download needs network access)" in err
    assert "Prefetch it with" not in err and str(empty_caches / "torch") in err


def test_no_network_fails_fast_and_names_the_arguments(empty_caches, monkeypatch):
    """Without HF_HUB_OFFLINE and without network: one connection probe, no ~25 s of hub retries."""
    import socket
    import time

    import huggingface_hub

    from met3r_metrics.weights import WeightsNotFoundError, checkpoint_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    probes = []

    def no_route(address, timeout=None):
        probes.append(address)
        raise OSError("Network is unreachable")

    def must_not_download(*args, **kwargs):
        if not kwargs.get("local_files_only"):
            raise AssertionError("downloaded without network")
        raise huggingface_hub.utils.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(socket, "create_connection", no_route)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", must_not_download)
    t0 = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as err:
        checkpoint_file("mast3r_512_catmlpdpt_metric")
    assert time.perf_counter() - t0 < 5 and probes == [("huggingface.co", 443)]
    assert "no network access: huggingface.co:443 is unreachable" in str(err.value)
    assert "or pass a local file with backbone_weights= instead" in str(err.value)
    with pytest.raises(WeightsNotFoundError, match="or pass a local file with feature_weights= instead"):
        checkpoint_file("featup_dino16_jbu")
    assert probes[-1] == ("marhamilresearch4.blob.core.windows.net", 443)


def test_random_tiny_networks_are_a_smoke_test_without_golden_data(tmp_path, capsys):
    """Issue 26 item 13: `met3r-download --random-tiny DIR` writes official-format files that met3r() and met3r-eval
    load; the same seed gives the same tensors."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import torch
    from safetensors.torch import load_file

    from met3r_metrics import met3r
    from met3r_metrics.testing import random_tiny_kwargs, write_random_tiny_networks
    from met3r_metrics.weights.identity import state_dict_digest

    assert download.main(["--random-tiny", str(tmp_path / "smoke")]) == 0
    printed = capsys.readouterr().out
    kw = random_tiny_kwargs(tmp_path / "smoke")
    stereo = Path(kw["backbone_weights"])
    assert (stereo / "config.json").is_file() and (stereo / "model.safetensors").is_file()
    ckpt = torch.load(kw["feature_weights"], weights_only=True)
    assert any(k.startswith("model.0.model.blocks.1.") for k in ckpt["state_dict"])  # FeatUp's own key names
    assert any(k.startswith("model.1.norm.") for k in ckpt["state_dict"])

    again = write_random_tiny_networks(tmp_path / "again", frames=False)
    assert state_dict_digest(load_file(str(stereo / "model.safetensors"))) == state_dict_digest(
        load_file(str(Path(again["backbone_weights"]) / "model.safetensors")))

    frames = sorted((tmp_path / "smoke" / "frames" / "seq_0").glob("*.png"))
    assert len(frames) == 4
    from met3r_metrics.io import read_frame_folder

    views = read_frame_folder(tmp_path / "smoke" / "frames" / "seq_0")[None]
    scores = met3r(views, **kw, normalize=True)
    assert torch.isfinite(scores).all()

    # the met3r-eval line it prints runs as printed (this worktree's code) and exits 0
    line = next(ln for ln in printed.splitlines() if ln.startswith("met3r-eval "))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "met3r_metrics.cli.evaluate", *line.split()[1:], "runtime.progress=false"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "2 sequences, 6 pairs scored, 0 pairs without overlap, 0 errors" in done.stdout


def test_readme_smoke_test_runs_as_written(tmp_path):
    """README.md, "Smoke test": its two commands, as written, in a fresh folder (this worktree's code)."""
    import os
    import re
    import shlex
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    readme = (repo / "README.md").read_text()
    block = re.search(r"## Smoke test[^\n]*\n+```bash\n(.*?)```", readme, re.S).group(1)
    commands = [ln.split("#")[0].strip() for ln in block.splitlines() if ln.strip()]
    assert [c.split()[0] for c in commands] == ["met3r-download", "met3r-eval"]
    modules = {"met3r-download": "met3r_metrics.cli.download", "met3r-eval": "met3r_metrics.cli.evaluate"}
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    for command in commands:
        prog, *args = shlex.split(command)
        done = subprocess.run([sys.executable, "-m", modules[prog], *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (command, done.stderr[-2000:])
    assert "MEt3R (official, cosine, lower is better) =" in done.stdout
    assert (tmp_path / "met3r_smoke" / "results" / "summary.json").is_file()
