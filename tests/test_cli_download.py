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


def test_offline_failure_names_the_command(empty_caches, capsys):
    assert download.main(["featup_dino16_jbu"]) == 1
    assert "met3r-download featup_dino16_jbu" in capsys.readouterr().err
