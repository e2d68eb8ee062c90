"""2-process gloo DDP on CPU: uneven shards reduce to exactly the single-process result (sum states)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from conftest import golden_path
from met3r_metrics import MEt3R
from met3r_metrics.testing import tiny_met3r_kwargs

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sequences() -> torch.Tensor:
    """(3, 3, 3, 64, 64): three 3-view sequences of the golden canvas."""
    x = load_file(str(golden_path("met3r", "inputs.safetensors")))["sq64"]
    v = [x[0, 0], x[1, 1], x[2, 1]]
    return torch.stack([torch.stack([v[0], v[1], v[2]]), torch.stack([v[1], v[0], v[2]]), torch.stack([v[2], v[1], v[0]])])


def _worker(rank: int, port: int, kw: dict, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        seqs = _sequences()
        metric = MEt3R(**kw, return_per_pair=True)
        # uneven: rank 0 gets sequences 0 and 1 (two updates), rank 1 gets sequence 2
        if rank == 0:
            metric.update(seqs[0:1])
            metric.update(seqs[1:2])
        else:
            metric.update(seqs[2:3])
        value = metric.compute()
        details = metric.compute_details()
        # states are back to local after compute (unsync)
        local_pairs = int(metric.num_pairs)
        torch.save({"value": value, "details": details, "local_pairs": local_pairs}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_uneven_equals_single_process(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    kw = tiny_met3r_kwargs(golden_path(), tmp_path_factory.mktemp("tiny_ddp"))
    mp.spawn(_worker, args=(_free_port(), kw, str(tmp_path)), nprocs=WORLD, join=True)

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = MEt3R(**kw, return_per_pair=True)
        single.update(_sequences())
        ref, ref_det = single.compute(), single.compute_details()
    finally:
        torch.set_num_threads(n)

    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for r, res in enumerate(results):
        diff = (res["value"] - ref).abs().item()
        print(f"rank {r}: |ddp - single| = {diff:.3g}")
        assert diff <= 1e-6
        d = res["details"]
        for key in ("met3r_pairs", "mean_overlap"):
            assert (d[key] - ref_det[key]).abs().item() <= 1e-6, key
        for key in ("num_pairs", "num_sequences", "zero_overlap"):
            assert d[key].item() == ref_det[key].item(), key
        assert d["num_pairs"].item() == 6 and d["num_sequences"].item() == 3
        # per-pair cat state: every pair once (gathered in rank order, which here is sequence order)
        torch.testing.assert_close(d["pair_scores"], ref_det["pair_scores"], atol=1e-6, rtol=0)
    assert results[0]["local_pairs"] == 4 and results[1]["local_pairs"] == 2
    assert torch.equal(results[0]["value"], results[1]["value"])


# -- known cameras (issue 16): geometry= through update, the same reductions -----------------------
def _plane_batch():
    """(3, 3, 3, 64, 64) plane sequences (one of them altered) and their KnownGeometry."""
    from known_geometry_scenes import plane_geometry, plane_views, world_transform

    from met3r_metrics import KnownGeometry

    views = torch.cat([plane_views(3, seed=s) for s in range(3)])
    views[1, 2, :, 5:25, 30:50] = 1.0
    views[2, 0, :, :, 40:48] = -1.0
    geo = KnownGeometry.cat([plane_geometry(3), plane_geometry(3, world=world_transform()), plane_geometry(3)])
    return views, geo


_GIVEN = {"geometry": "given", "distance": "rmse", "radius": 0.01, "img_size": None, "symmetric": True}


def _given_worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        views, geo = _plane_batch()
        metric = MEt3R(**_GIVEN, return_per_pair=True)
        rows = [0, 1] if rank == 0 else [2]  # uneven
        for r in rows:
            metric.update(views[r : r + 1], geometry=geo[r])
        torch.save({"value": metric.compute(), "details": metric.compute_details()}, Path(out_dir) / f"given{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_given_geometry_equals_single_process(tmp_path: Path) -> None:
    mp.spawn(_given_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    views, geo = _plane_batch()
    single = MEt3R(**_GIVEN, return_per_pair=True)
    single.update(views, geometry=geo)
    ref, ref_det = single.compute(), single.compute_details()
    assert ref.item() > 1e-3  # the altered sequences score, the clean pairs are 0
    # clean pairs are 0: sequence 0's two, (0, 1) of sequence 1, (1, 2) of sequence 2
    assert (ref_det["pair_scores"] == 0.0).tolist() == [True, True, True, False, False, True]
    for r in range(WORLD):
        res = torch.load(tmp_path / f"given{r}.pt")
        assert abs(res["value"].item() - ref.item()) <= 1e-6
        torch.testing.assert_close(res["details"]["pair_scores"], ref_det["pair_scores"], atol=1e-6, rtol=0)
        assert res["details"]["num_pairs"].item() == 6
