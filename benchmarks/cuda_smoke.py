"""CUDA checks of the user-facing API with the tiny golden networks (run on the GPU machine).

    PYTHONPATH=. python benchmarks/cuda_smoke.py --golden .device/golden --out OUT

* ``MEt3R`` metric on CUDA (networks built lazily on the metric's device, TF32 off) vs the same metric
  on CPU: |compute() difference|, per-pair scores, and that the networks live on CUDA;
* ``met3r`` functional with ``return_maps`` on CUDA, and gradients reaching the images;
* CUDA-graph replay of the network stages vs eager, per precision (max |score difference|, replay count);
* known cameras (the tests' plane scene) and the RAFT backbone (golden recipe weights) on CUDA vs CPU;
* ``MEt3RCallback`` in a one-GPU Lightning ``Trainer``: logs ``val/met3r`` equal to the metric by hand.
Writes ``cuda_smoke.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--golden", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    from met3r_metrics import MEt3R, met3r
    from met3r_metrics.precision import set_tf32, tf32_flags
    from met3r_metrics.testing import tiny_met3r_kwargs

    set_tf32(False)  # through the running torch's TF32 API (met3r_metrics.precision)
    kw = tiny_met3r_kwargs(Path(args.golden), Path(tempfile.mkdtemp()))
    g = torch.Generator().manual_seed(0)
    seqs = torch.rand(3, 4, 3, 64, 64, generator=g) * 2 - 1
    res: dict = {"device": torch.cuda.get_device_name()}

    cpu = MEt3R(**kw, return_per_pair=True, precision="fp32")
    cpu.update(seqs)
    gpu = MEt3R(**kw, return_per_pair=True, precision="fp32").to("cuda")
    gpu.update(seqs.cuda())
    dc, dg = cpu.compute_details(), gpu.compute_details()
    res["metric_cpu"], res["metric_cuda"] = float(dc["met3r"]), float(dg["met3r"])
    res["metric_abs_diff"] = abs(res["metric_cpu"] - res["metric_cuda"])
    res["pair_max_abs_diff"] = float((dc["pair_scores"].double() - dg["pair_scores"].cpu().double()).abs().max())
    res["networks_on_cuda"] = next(gpu.scorer.parameters()).is_cuda
    res["state_dict_keys"] = len(gpu.state_dict())

    x = seqs[:1].cuda().requires_grad_(True)
    out = met3r(x, **kw, return_details=True, return_maps=True)
    out.sequence_scores.sum().backward()
    res["grad_finite"] = bool(torch.isfinite(x.grad).all())
    res["grad_abs_sum"] = float(x.grad.abs().sum())
    res["score_maps_shape"] = list(out.score_maps.shape)

    # one GPU, one cache entry: "cuda" and "cuda:0" are the same scorer (and weights)
    from met3r_metrics import Settings
    from met3r_metrics.scorer import get_scorer

    s = Settings.official(**kw)
    res["cuda_and_cuda0_share_one_scorer"] = get_scorer(s, "cuda") is get_scorer(s, "cuda:0")
    # precision pins TF32 per call: a caller's global TF32 does not change an fp32 number
    ref = met3r(seqs.cuda(), **kw, precision="fp32")
    res["default_precision"] = Settings.official().precision
    set_tf32(True)
    res["fp32_under_global_tf32_max_abs_diff"] = float((met3r(seqs.cuda(), **kw, precision="fp32") - ref).abs().max())
    res["default_vs_fp32_max_abs_diff"] = float((met3r(seqs.cuda(), **kw) - ref).abs().max())
    res["tf32_setting_max_abs_diff"] = float((met3r(seqs.cuda(), **kw, precision="tf32") - ref).abs().max())
    res["global_tf32_restored"] = tf32_flags() == (True, True)
    set_tf32(False)

    # CUDA graphs: the network stages replayed from captured graphs give the eager numbers
    from met3r_metrics import cuda_graphs
    from met3r_metrics.cuda_graphs import graphs_for

    for prec in ("fp32", "tf32", "bf16"):
        x = seqs.cuda()
        with cuda_graphs.enabled(False):
            eager = met3r(x, **kw, precision=prec, return_details=True).pair_scores
        sc = get_scorer(Settings.official(**kw, precision=prec), "cuda")
        before = graphs_for(sc.stereo).replays + graphs_for(sc.features).replays
        graphed = [met3r(x, **kw, precision=prec, return_details=True).pair_scores for _ in range(3)]
        res[f"graphs_{prec}_replays"] = graphs_for(sc.stereo).replays + graphs_for(sc.features).replays - before
        res[f"graphs_{prec}_max_abs_diff_vs_eager"] = max(float((g - eager).abs().max()) for g in graphed)

    # Known cameras on CUDA vs CPU (the plane scene of the tests: rmse ~0 on the true geometry)
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    try:
        from known_geometry_scenes import plane_geometry, plane_views

        views, geo = plane_views(3), plane_geometry(3)
        kg = dict(distance="rmse", radius=0.01, img_size=None, pairing="all", symmetric=True)
        on_cpu = met3r(views, geometry=geo, **kg, return_details=True).pair_scores
        on_gpu = [met3r(views.cuda(), geometry=geo.to("cuda"), **kg, return_details=True).pair_scores for _ in range(3)]
        res["known_geometry_cuda_scores"] = on_gpu[-1].flatten().tolist()
        res["known_geometry_cuda_vs_cpu_max_abs_diff"] = max(float((g.cpu() - on_cpu).abs().max()) for g in on_gpu)
    except Exception as err:  # report, do not hide the other checks
        res["known_geometry_error"] = repr(err)
    # RAFT backbone (recipe weights of the golden) on CUDA vs CPU, per pair
    try:
        from safetensors.torch import load_file

        from met3r_metrics.testing import extras_kwargs

        sq128 = load_file(str(Path(args.golden) / "met3r_extras" / "inputs.safetensors"))["sq128"]
        rk = extras_kwargs(Path(args.golden), Path(tempfile.mkdtemp()), backbone="raft", distance="cosine")
        r_cpu = met3r(sq128, **rk, precision="fp32", return_details=True).pair_scores
        r_gpu = met3r(sq128.cuda(), **rk, precision="fp32", return_details=True).pair_scores
        res["raft_cuda_scores"] = r_gpu.flatten().tolist()
        res["raft_cuda_vs_cpu_max_abs_diff"] = float((r_gpu.cpu() - r_cpu).abs().max())
    except Exception as err:
        res["raft_error"] = repr(err)

    import lightning as L
    from torchmetrics.image.fid import FrechetInceptionDistance

    from lightning_callbacks import MEt3RCallback
    from lightning_callbacks.testing import ToyImageDataset, ToyViewGenerator, TinyFeatureExtractor

    fid = FrechetInceptionDistance(feature=TinyFeatureExtractor(), normalize=True)
    cb = MEt3RCallback(metric_kwargs=kw, metrics={"fid": fid}, num_plot_pairs=0)
    model = ToyViewGenerator(num_views=2)
    data = torch.utils.data.DataLoader(ToyImageDataset(4), batch_size=2)
    trainer = L.Trainer(accelerator="gpu", devices=1, max_epochs=1, limit_train_batches=2, limit_val_batches=2,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[cb],
                        default_root_dir=tempfile.mkdtemp())
    trainer.fit(model, data, data)
    res["callback_val_met3r"] = float(trainer.callback_metrics["val/met3r"])
    res["callback_val_fid"] = float(trainer.callback_metrics.get("val/fid", float("nan")))
    print(json.dumps(res, indent=1))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "cuda_smoke.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
