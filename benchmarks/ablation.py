"""GNeSF ablation on held-out synthetic test scenes: semantic variants, learned geometry, stage timings.

For each test scene (seeds 2000+, never used in training) a 30 Hz camera path is rendered at 240x320;
its keyframes (KeyframeSelector, as in the Mapper) feed every run, and ``--heldout`` non-keyframe
views per scene are held out for the 2D evaluation. Segmenter: the noisy oracle at 65% mIoU (the
shipped Mask2Former is too weak to be a useful reference here). Runs, all through
``gnesf_ros.pipeline.Mapper`` with one shared GNeSF model and one oracle:

- segmenter alone: 2D = the oracle's own argmax at the held-out views; 3D = its reference pipeline,
  depth TSDF + running average of the oracle's probabilities (mode ``baseline_average``);
- rgb mode (learned geometry) with voting ``direct``, ``logit``, ``prob``, ``prob_vis``;
- rgbd mode (depth TSDF geometry + GNeSF voting ``logit``, ``prob``, ``prob_vis``).

2D mIoU: labels rendered from the fused map (raycast of its mesh) at the held-out views, one confusion
matrix over all scenes, pixels the map leaves unknown count as wrong (coverage = share of labelled
pixels that got a label). 3D mIoU: GT-vertex label transfer from the extracted mesh (Atlas protocol,
one confusion matrix over all scenes). Mesh Acc/Comp/Prec/Recall/F-score at 5 cm per scene (mean).
Both 3D evaluations use the GT mesh culled to the surfaces the keyframes observe (NeuralRecon/Atlas
evaluate observed surfaces only; a short scan sees part of a room).

    .venv/bin/python benchmarks/ablation.py [--seeds 2000 2001] [--frames 200] [--heldout 12]
        [--weights models/gnesf_synthetic.pt]
Prints markdown; writes benchmarks/results/ablation.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from gnesf_ros.classes import default_class_table
from gnesf_ros.config import MapperConfig, ModelConfig
from gnesf_ros.data.ply import LabeledMesh
from gnesf_ros.eval.metrics import ConfusionAccumulator, evaluate_meshes, label_transfer_indices
from gnesf_ros.geometry.keyframes import KeyframeSelector
from gnesf_ros.segmentation.base import segment_frames
from gnesf_ros.segmentation.oracle import NoisyOracleSegmenter
from gnesf_ros.types import Frame

RESULTS = Path(__file__).parent / "results"
SIZE = (240, 320)
ORACLE_MIOU = 65.0
STAGES = ("features2d", "volume", "net3d", "visibility", "voting", "total")
RUNS = (  # (row name, mapper mode, voting variant)
    ("segmenter alone", "baseline_average", None),
    ("direct", "rgb:volume", "direct"),
    ("logit", "rgb:volume", "logit"),
    ("prob", "rgb:volume", "prob"),
    ("prob+visibility", "rgb:volume", "prob_vis"),
    ("mean of the seeing views (no network)", "rgb:volume", "mean"),
    # the voting variants again on depth geometry: their order without the learned geometry's errors
    ("rgbd: depth geometry + logit", "rgbd", "logit"),
    ("rgbd: depth geometry + prob", "rgbd", "prob"),
    ("rgbd: depth geometry + prob+visibility", "rgbd", "prob_vis"),
    ("rgbd: depth geometry + mean of the seeing views (no network)", "rgbd", "mean"),
    # rgb mode with multi-view stereo geometry (model.geometry: mvs): predicted depth, TSDF-fused
    ("rgb, mvs geometry + prob+visibility", "rgb:mvs", "prob_vis"),
    ("rgb, mvs geometry + mean of the seeing views (no network)", "rgb:mvs", "mean"),
)


class StatsRecorder:
    """Wraps a GNeSF model for the Mapper, keeping every FragmentResult.stats['timings_ms']."""

    def __init__(self, model):
        self.model = model
        self.timings: list[dict] = []
        self.vote_counts: dict[str, int] = {}  # summed over vote_semantics calls

    def predict_fragment(self, fragment, probs, variant=None):
        result = self.model.predict_fragment(fragment, probs, variant)
        self.timings.append(dict(result.stats["timings_ms"]))
        return result

    def vote_semantics(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self.model.vote_semantics(*args, **kwargs)
        self.timings.append(dict(self.model.timings, total=1e3 * (time.perf_counter() - t0)))
        for k, v in self.model.vote_counts.items():
            self.vote_counts[k] = self.vote_counts.get(k, 0) + v
        return out


def render_test_scene(seed: int, frames: int, heldout: int) -> dict:
    """Keyframes (rgb, depth, labels) and held-out views (depth, labels) of scene ``seed`` + its GT mesh."""
    from gnesf_ros.data.synthetic import build_scene, camera_path, default_intrinsics, frame_noise_seed

    scene = build_scene(seed)
    poses = camera_path(scene, frames, seed)
    K = default_intrinsics(SIZE)
    lut = default_class_table().nyu40_to_index_lut()
    sel = KeyframeSelector(MapperConfig().keyframe)
    key = np.array([sel.accept(T) for T in poses])
    others = np.flatnonzero(~key)
    held = others[np.linspace(0, len(others) - 1, min(heldout, len(others))).round().astype(int)]
    views = {}
    for i in np.flatnonzero(key).tolist() + held.tolist():
        rgb, depth, nyu = scene.render(poses[i], K, SIZE, noise_seed=frame_noise_seed(seed, i))
        views[i] = (rgb, depth, lut[nyu])
    kf = np.flatnonzero(key)
    gt = cull_to_observed(scene.gt_mesh(), np.asarray(poses)[kf], K, [views[i][1] for i in kf])
    return {"seed": seed, "poses": np.asarray(poses), "key": key, "held": held, "K": K, "views": views, "gt_mesh": gt}


def cull_to_observed(mesh: LabeledMesh, poses: np.ndarray, K: np.ndarray, depths: list[np.ndarray],
                     tol_m: float = 0.05) -> LabeledMesh:
    """The GT vertices some keyframe sees (in the image, in front, within ``tol_m`` of its depth map):
    the observed part of the scene, as NeuralRecon / Atlas evaluate (a 200-frame scan sees part of a room).
    Returns a point set (no faces); evaluation uses vertices only."""
    v = mesh.vertices.astype(np.float64)
    seen = np.zeros(len(v), bool)
    h, w = depths[0].shape
    for T, depth in zip(poses, depths):
        cam = (v - T[:3, 3]) @ T[:3, :3]  # world -> camera (rotation transposed)
        z = cam[:, 2]
        uv = cam @ K.T
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.round(uv[:, 0] / z).astype(np.int64, copy=False)
            r = np.round(uv[:, 1] / z).astype(np.int64, copy=False)
        ok = (z > 0.1) & (u >= 0) & (u < w) & (r >= 0) & (r < h)
        d = np.zeros(len(v))
        d[ok] = depth[r[ok], u[ok]]
        seen |= ok & (d > 0) & (np.abs(d - z) < tol_m)
    return LabeledMesh(vertices=mesh.vertices[seen], colors=mesh.colors[seen], labels=mesh.labels[seen])


def run_mapper(scene: dict, mode: str, variant: str | None, model, oracle, depth_estimator=None,
               model_overrides: dict | None = None) -> tuple:
    """Map the scene's stream; -> (mesh, held-out label renders, stage timings, busy seconds).
    mode: a mapper mode, or "rgb:mvs" / "rgb:volume" for rgb mode with that model.geometry."""
    from gnesf_ros.pipeline import Mapper

    mode, _, geometry = mode.partition(":")
    cfg = MapperConfig(mode=mode)
    cfg.model.geometry = geometry or "volume"
    for k, v in (model_overrides or {}).items():
        setattr(cfg.model, k, v)
    cfg.segmenter.backend = "oracle"
    rec = None
    if model is not None:
        model.cfg.voting = variant or model.cfg.voting
        rec = StatsRecorder(model)
    if depth_estimator is not None:
        depth_estimator.reset()
    mapper = Mapper(cfg, segmenter=oracle, model=rec, depth_estimator=depth_estimator)
    blank = np.zeros(SIZE + (3,), np.uint8)
    t0 = time.perf_counter()
    for i, T in enumerate(scene["poses"]):
        if scene["key"][i]:
            rgb, depth, lab = scene["views"][i]
            mapper.add_frame(Frame(i / 30, rgb, scene["K"], T, depth=None if mode == "rgb" else depth, labels=lab,
                                   index=i))
        else:
            mapper.add_frame(Frame(i / 30, blank, scene["K"], T, index=i))
    mapper.flush()
    busy = time.perf_counter() - t0
    mesh = mapper.map.extract_mesh()
    renders = [mapper.map.render(scene["poses"][i], scene["K"], SIZE)[0] for i in scene["held"]]
    stages = mapper.timing_summary()
    if rec is not None and rec.vote_counts:  # rgbd: how the surface voxels got their labels
        total = max(sum(rec.vote_counts.values()), 1)
        stages["vote_shares"] = {k: v / total for k, v in rec.vote_counts.items()}
    return mesh, renders, (rec.timings if rec else []), busy, stages


def percentiles(timings: list[dict]) -> dict:
    out = {}
    for s in STAGES:
        v = [t[s] for t in timings if s in t]
        if v:
            out[s] = {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)), "n": len(v)}
    return out


def evaluate(args) -> dict:
    from gnesf_ros.model.gnesf import GNeSF

    table = default_class_table()
    model_cfg = dataclasses.replace(ModelConfig(), occ_threshold=args.occ_threshold, threads=args.threads,
                                    max_fine_voxels=args.max_fine_voxels)
    model = GNeSF.load(args.weights, model_cfg) if Path(args.weights).is_file() else None
    estimator = None
    if Path(args.mvs_weights).is_file():
        from gnesf_ros.model.mvs import MvsDepthEstimator
        from gnesf_ros.model.train_mvs import load_depth_net

        estimator = MvsDepthEstimator(load_depth_net(args.mvs_weights), ModelConfig().mvs_sources,
                                      refine_steps=ModelConfig().mvs_refine_steps)
    runs = [r for r in RUNS if not args.only or any(o in r[0] for o in args.only)]
    oracle = NoisyOracleSegmenter(ORACLE_MIOU, seed=MapperConfig().segmenter.oracle_seed, class_table=table)
    acc2d = {name: ConfusionAccumulator(table.num_classes, table.names) for name, _, _ in RUNS}
    acc2d["segmenter alone (2D, its own output)"] = ConfusionAccumulator(table.num_classes, table.names)
    acc3d = {name: ConfusionAccumulator(table.num_classes, table.names) for name, _, _ in RUNS}
    mesh_q: dict[str, list] = {name: [] for name, _, _ in RUNS}
    cover: dict[str, list] = {name: [] for name, _, _ in RUNS}
    timings: dict[str, list] = {name: [] for name, _, _ in RUNS}
    mapper_stages, busy = {}, {name: 0.0 for name, _, _ in RUNS}
    scenes = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        scene = render_test_scene(seed, args.frames, args.heldout)
        held_frames = [Frame(i / 30, scene["views"][i][0], scene["K"], scene["poses"][i], depth=scene["views"][i][1],
                             labels=scene["views"][i][2], index=int(i)) for i in scene["held"]]
        gts = [f.labels for f in held_frames]
        seg = segment_frames(oracle, held_frames).argmax(-1)
        for g, p in zip(gts, seg):
            acc2d["segmenter alone (2D, its own output)"].add(g, p)
        scenes.append({"seed": seed, "frames": len(scene["poses"]), "keyframes": int(scene["key"].sum()),
                       "gt_vertices_observed": len(scene["gt_mesh"].vertices),
                       "heldout_views": [int(i) for i in scene["held"]], "render_s": time.perf_counter() - t0})
        for name, mode, variant in runs:
            if (mode != "baseline_average" and model is None) or (mode == "rgb:mvs" and estimator is None):
                continue
            mesh, renders, tim, secs, stages = run_mapper(scene, mode, variant, model, oracle, estimator)
            for g, p in zip(gts, renders):
                acc2d[name].add(g, p)
                valid = g != 255
                cover[name].append(float(((p != 255) & valid).sum() / max(valid.sum(), 1)))
            acc3d[name].add(*label_transfer_indices(mesh, scene["gt_mesh"], table))
            mesh_q[name].append(evaluate_meshes(mesh, scene["gt_mesh"], table)["mesh"])
            timings[name] += tim
            busy[name] += secs
            mapper_stages.setdefault(name, []).append(stages)
            print(f"seed {seed} {name}: done in {secs:.1f} s", file=sys.stderr, flush=True)
    rows = {}
    for name, _, _ in RUNS:
        if not mesh_q[name]:
            continue
        mq = {k: float(np.mean([m[k] for m in mesh_q[name] if m[k] is not None] or [np.nan]))
              for k in ("acc", "comp", "prec", "recall", "f_score")}
        rows[name] = {"miou_2d": acc2d[name].results()["miou"], "coverage_2d": float(np.mean(cover[name])),
                      "miou_3d": acc3d[name].results()["miou"], "mesh": mq, "mesh_per_scene": mesh_q[name],
                      "per_class_iou_3d": {k: v["iou"] for k, v in acc3d[name].results()["per_class"].items()},
                      "stage_ms": percentiles(timings[name]), "busy_s": busy[name], "mapper_stages_ms": mapper_stages[name]}
    seg2d = acc2d["segmenter alone (2D, its own output)"].results()
    return {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
                        "load_avg_at_end": os.getloadavg()},
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
            "args": vars(args), "weights": args.weights if model is not None else None,
            "segmenter": f"noisy oracle, target 2D mIoU {ORACLE_MIOU}%", "segmenter_alone_2d_miou": seg2d["miou"],
            "gt": "GT mesh vertices observed by a keyframe (within 5 cm of its depth)", "scenes": scenes, "rows": rows}


def fmt(x, d=3):
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else (f"{x:.{d}f}" if isinstance(x, float) else str(x))


def markdown(res: dict) -> str:
    seg = res["segmenter_alone_2d_miou"]
    lines = [f"## GNeSF ablation ({len(res['scenes'])} held-out synthetic scenes, seeds "
             f"{', '.join(str(s['seed']) for s in res['scenes'])}; segmenter = {res['segmenter']}; "
             f"occupancy threshold {res['args']['occ_threshold']}, max fine voxels {res['args'].get('max_fine_voxels')})", "",
             "| variant | 2D mIoU (held-out views) | 2D coverage | 3D mIoU | Acc m | Comp m | Prec | Recall | F@5cm |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| segmenter alone, 2D output | {fmt(seg)} | 1.000 | | | | | | |"]
    for name, r in res["rows"].items():
        label = "segmenter alone: depth TSDF + average fusion (reference)" if name == "segmenter alone" else name
        m = r["mesh"]
        lines.append(f"| {label} | {fmt(r['miou_2d'])} | {fmt(r['coverage_2d'])} | {fmt(r['miou_3d'])} | {fmt(m['acc'])} "
                     f"| {fmt(m['comp'])} | {fmt(m['prec'])} | {fmt(m['recall'])} | {fmt(m['f_score'])} |")
    lines += ["", "Per-fragment stage timings of GNeSF.predict_fragment / vote_semantics (ms, p50 / p95):", "",
              "| variant | " + " | ".join(STAGES) + " |", "|---" * (len(STAGES) + 1) + "|"]
    for name, r in res["rows"].items():
        if r["stage_ms"]:
            cells = [f"{fmt(r['stage_ms'][s]['p50'], 0)} / {fmt(r['stage_ms'][s]['p95'], 0)}" if s in r["stage_ms"] else "-"
                     for s in STAGES]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[2000, 2001])
    ap.add_argument("--frames", type=int, default=200, help="30 Hz frames per scene")
    ap.add_argument("--heldout", type=int, default=12, help="held-out (non-key) views per scene for 2D mIoU")
    ap.add_argument("--weights", default="models/gnesf_synthetic.pt")
    ap.add_argument("--mvs-weights", default=ModelConfig.mvs_weights, help="MVS depth network (rgb, mvs rows)")
    ap.add_argument("--only", nargs="+", default=None, metavar="TEXT",
                    help="run only the rows whose name contains one of these (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--occ-threshold", type=float, default=0.3,
                    help="pruning threshold (model.occ_threshold); 0.3 was chosen on validation seed 990 for the "
                         "shipped weights, whose finest occupancy rarely exceeds the default 0.5")
    ap.add_argument("--max-fine-voxels", type=int, default=ModelConfig.max_fine_voxels,
                    help="model.max_fine_voxels: cap on the finest level of rgb mode (cost vs recall)")
    ap.add_argument("--out", default=str(RESULTS / "ablation.json"))
    args = ap.parse_args()
    if any(s < 2000 for s in args.seeds):
        ap.error("test scenes are seeds >= 2000 (0-999 train the network)")
    import torch

    torch.set_num_threads(args.threads)
    res = evaluate(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2, default=float))
    print(markdown(res))


if __name__ == "__main__":
    main()
