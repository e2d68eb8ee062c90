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
