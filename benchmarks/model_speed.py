"""GNeSF forward speed per stage for one fragment (9 views, 240x320 by default), p50/p95.

Stages: features2d (2D FPN), volume (back-projection + mean/var, all levels), net3d (3D nets + heads,
pruning, kernel maps), visibility, voting, total. ``--pruning gt`` keeps exactly the ground-truth
near-surface voxels (TSDF fused from the window's depth) at every level, i.e. the voxel counts a
well-trained model produces (the time of that look-up is subtracted); ``--pruning model`` uses the model's own occupancy (needs --weights).
``--pruning depth`` times rgbd mode instead: ``GNeSF.vote_semantics`` on the voxels of the window's
depth TSDF within ``model.vote_band_vox`` of the surface (what the Mapper passes it).

    .venv/bin/python benchmarks/model_speed.py [--weights models/gnesf_synthetic.pt] [--threads 2]
    .venv/bin/python benchmarks/model_speed.py --save-window /tmp/w.npz   # then --window /tmp/w.npz elsewhere
    python benchmarks/model_speed.py --window w.npz --weights W --device cuda --check-cpu   # a GPU machine
``--check-cpu`` runs the same forward on a CPU copy of the model and reports how far the device's
outputs are from it (class probabilities, argmax agreement, kept voxels): the parity of the
``device: cuda`` option.
Prints a markdown table; writes benchmarks/results/model_speed.json.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from gnesf_ros.config import ModelConfig
from gnesf_ros.model.geometry_net import FACTOR
from gnesf_ros.model.gnesf import GNeSF, Views
from gnesf_ros.model.targets import TsdfTargets
from gnesf_ros.types import Fragment, Frame

STAGES = ("features2d", "volume", "net3d", "visibility", "voting", "total")


def load_window(path: str | None, seed: int) -> dict:
    if path and Path(path).is_file():
        z = np.load(path)
        return {k: z[k].astype(np.float32) if k == "probs" else z[k] for k in z.files}
    from gnesf_ros.config import GnesfTrainConfig
    from gnesf_ros.model.data import WindowSampler

    cfg = GnesfTrainConfig(train_seed_start=seed, train_seed_count=1)
    w = WindowSampler(cfg).sample()
    return {"rgb": w.rgb, "probs": w.probs, "K": w.K, "T": w.T, "depth": w.depth, "depth_d": w.depth_d, "K_d": w.K_d,
            "T_d": w.T_d}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None)
    ap.add_argument("--pruning", choices=("gt", "model", "depth"), default=None, help="default: model with --weights, else gt")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--seed", type=int, default=2000, help="synthetic test scene seed")
    ap.add_argument("--window", default=None, help="npz window (from --save-window) instead of rendering one")
    ap.add_argument("--save-window", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--check-cpu", action="store_true", help="compare the device's outputs with the CPU's")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "model_speed.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    win = load_window(args.window, args.seed)
    if args.save_window:
        np.savez_compressed(args.save_window, **{k: v.astype(np.float16) if k == "probs" else v for k, v in win.items()})
    pruning = args.pruning or ("model" if args.weights else "gt")
    cfg = ModelConfig(threads=args.threads)
    torch.manual_seed(0)
    model = GNeSF.load(args.weights, cfg, args.device) if args.weights else GNeSF(cfg).to(args.device).eval()
    gt_occ, gt_ms = None, [0.0]
    if pruning == "gt":
        model.cfg.occ_threshold = model.geometry.occ_threshold = 1.01  # the network's occupancy never keeps
        tsdf = TsdfTargets(win["depth_d"], win["K_d"], win["T_d"])

        def gt_occ(pts, lvl):  # its own time is excluded from net3d below
            t = time.perf_counter()
            vs = cfg.voxel_size_m * FACTOR ** (2 - lvl)
            sdf, known = tsdf(pts.cpu(), cfg.trunc_vox * vs)
            gt_ms[0] += 1e3 * (time.perf_counter() - t)
            return (known & (sdf.abs() < cfg.occ_band_vox[lvl] * vs)).to(pts.device)

    if pruning == "depth":
        rows, counts = time_rgbd(model, win, args.repeats, args.device)
    else:
        rows, counts = time_rgb(model, win, args.repeats, args.device, gt_occ, gt_ms)
    parity = compare_with_cpu(model, win, pruning, gt_occ) if args.check_cpu else None
    stats = {s: {"p50": float(np.percentile([r.get(s, 0) for r in rows], 50)),
                 "p95": float(np.percentile([r.get(s, 0) for r in rows], 95))} for s in STAGES}
    info = {"device": args.device, "threads": args.threads, "cpu": platform.processor() or platform.machine(),
            "nproc": os.cpu_count(), "loadavg": os.getloadavg(), "torch": torch.__version__, "pruning": pruning,
            "weights": args.weights, "views": int(win["rgb"].shape[0]), "size": list(win["rgb"].shape[1:3]), **counts}
    print(f"GNeSF forward, {info['views']} views {info['size'][0]}x{info['size'][1]}, {args.threads} threads, "
          f"{args.device}, pruning={pruning}, {args.repeats} runs, load {info['loadavg'][0]:.1f}; voxels {counts}\n")
    print("| stage | p50 ms | p95 ms |\n|---|---|---|")
    for s in STAGES:
        print(f"| {s} | {stats[s]['p50']:.0f} | {stats[s]['p95']:.0f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    if parity is not None:
        print("\nparity with the CPU:", json.dumps(parity))
    Path(args.out).write_text(json.dumps({"info": info, "stages_ms": stats, "runs": rows, "cpu_parity": parity},
                                         indent=1))


def rgb_forward(model: GNeSF, win: dict, device, gt_occ):
    """predict_fragment's work on the window: encode + prob_vis semantics of the kept finest voxels
    -> (encoded, finest level, kept rows, class probabilities)."""
    views = Views.from_arrays(win["rgb"], win["probs"], win["K"], win["T"], device)
    enc = model.encode(views, gt_occ)
    fine = enc.geo.levels[2]
    keep = torch.nonzero(fine.keep)[:, 0]
    cls, _ = model.semantics(views, fine, keep, enc.sdf, "prob_vis")
    return enc, fine, keep, cls


def time_rgb(model: GNeSF, win: dict, repeats: int, device: str, gt_occ, gt_ms: list) -> tuple[list, dict]:
    """predict_fragment's stages (encode + prob_vis semantics) per run."""
    rows, counts = [], {}
    for _ in range(repeats + 1):  # first run warms up
        with torch.no_grad():
            gt_ms[0] = 0.0
            t0 = time.perf_counter()
            enc, fine, keep, _ = rgb_forward(model, win, device, gt_occ)
            if device != "cpu":
                torch.cuda.synchronize()
            r = dict(model.timings, total=1e3 * (time.perf_counter() - t0) - gt_ms[0])
            r["net3d"] -= gt_ms[0]
            rows.append(r)
        counts = {"level0_kept": int(enc.geo.levels[0].keep.sum()), "level1_kept": int(enc.geo.levels[1].keep.sum()),
                  "fine_evaluated": int(fine.coords.shape[0]), "fine_output": int(keep.numel())}
    return rows[1:], counts


def depth_surface(model: GNeSF, win: dict) -> tuple[Fragment, np.ndarray, np.ndarray]:
    """The window as a Fragment plus its depth-TSDF voxels within vote_band_vox of the surface
    (coords M x 3 int32, sdf M metres): what the Mapper passes vote_semantics in rgbd mode."""
    cfg = model.cfg
    views = Views.from_arrays(win["rgb"], win["probs"], win["K"], win["T"])
    origin = model.place(views)
    d, vs = cfg.volume_size_vox, cfg.voxel_size_m
    coords = origin + torch.stack(torch.meshgrid(*[torch.arange(d)] * 3, indexing="ij"), -1).view(-1, 3)
    sdf, known = TsdfTargets(win["depth_d"], win["K_d"], win["T_d"])((coords.float() + 0.5) * vs, cfg.trunc_vox * vs)
    near = known & (sdf.abs() <= cfg.vote_band_vox * vs)
    coords, sdf = coords[near].numpy().astype(np.int32), sdf[near].numpy()
    frames = [Frame(float(i), rgb, K, T, depth=depth)
              for i, (rgb, K, T, depth) in enumerate(zip(win["rgb"], win["K"], win["T"], win["depth"]))]
    return Fragment(frames, voxel_size=vs), coords, sdf


def time_rgbd(model: GNeSF, win: dict, repeats: int, device: str) -> tuple[list, dict]:
    """vote_semantics on the window's depth-TSDF voxels near the surface, per run."""
    fragment, coords, sdf = depth_surface(model, win)
    vs = model.cfg.voxel_size_m
    rows = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        model.vote_semantics(fragment, win["probs"], coords, sdf, vs, "prob_vis")
        if device != "cpu":
            torch.cuda.synchronize()
        rows.append(dict(model.timings, total=1e3 * (time.perf_counter() - t0)))
    return rows[1:], {"surface_voxels": int(len(coords))}


def compare_with_cpu(model: GNeSF, win: dict, pruning: str, gt_occ) -> dict:
    """The same forward on the device and on a CPU copy: class probabilities (max |diff|, argmax
    agreement) and, with learned pruning, the kept finest voxels (IoU of the two sets)."""
    cpu = copy.deepcopy(model).to("cpu")
    if pruning == "depth":
        fragment, coords, sdf = depth_surface(model, win)
        vs = model.cfg.voxel_size_m
        (a, wa), (b, wb) = (m.vote_semantics(fragment, win["probs"], coords, sdf, vs, "prob_vis") for m in (model, cpu))
        seen = (wa > 0) & (wb > 0)
        return {"voxels": int(len(coords)), "weight_equal": float((wa == wb).mean()),
                "max_abs_diff": float(np.abs(a - b)[seen].max(initial=0.0)),
                "argmax_agree": float((a.argmax(1) == b.argmax(1))[seen].mean())}
    out = []
    for m in (model, cpu):
        with torch.no_grad():
            _, fine, keep, cls = rgb_forward(m, win, next(m.parameters()).device, gt_occ)
        out.append({tuple(c): p for c, p in zip(fine.coords[keep].cpu().numpy().tolist(), cls.cpu().numpy())})
    common = out[0].keys() & out[1].keys()
    a = np.array([out[0][k] for k in common]).reshape(-1, model.num_classes)
    b = np.array([out[1][k] for k in common]).reshape(-1, model.num_classes)
    return {"kept_device": len(out[0]), "kept_cpu": len(out[1]),
            "kept_iou": len(common) / max(len(out[0].keys() | out[1].keys()), 1),
            "max_abs_diff": float(np.abs(a - b).max(initial=0.0)),
            "argmax_agree": float((a.argmax(1) == b.argmax(1)).mean()) if len(common) else None}


if __name__ == "__main__":
    main()
