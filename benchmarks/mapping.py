"""Mapping benchmark: 3D mIoU / mesh F-score, throughput and memory per mode, plus scaling.

For each held-out synthetic test scene (seeds 2000+) the keyframes of a 30 Hz scan are rendered
once (240x320) and every mode maps the same stream in its own process (so peak RSS is per mode):
GNeSF rgb / rgbd (when --weights exist), the Kimera-style Bayesian baseline and the averaged-
probability baseline (depth TSDF + 2D segmenter, here the noisy oracle). An Open3D
ScalableTSDFVolume with labels fused as colours is timed on the same keyframes (reference
integrator; ratio = ours / Open3D per keyframe). Scaling: 1-, 2- and 4-room scenes with the
Bayesian baseline (time and memory against mapped area).

    .venv/bin/python benchmarks/mapping.py [--seeds 2000 2001] [--frames 300] [--rooms 1 2 4]
``--segmenter mask2former`` puts the shipped Mask2Former in the loop instead of the oracle: its labels
are poor (models/segmenter/MODEL_CARD.md), so that run is for timing, not accuracy.
Prints markdown; writes benchmarks/results/mapping.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gnesf_ros.classes import IGNORE, default_class_table
from gnesf_ros.config import MapperConfig
from gnesf_ros.data.ply import LabeledMesh, read_labeled_ply, write_labeled_ply
from gnesf_ros.eval.metrics import evaluate_meshes
from gnesf_ros.geometry.camera import scale_intrinsics
from gnesf_ros.geometry.keyframes import KeyframeSelector
from gnesf_ros.types import Frame

RESULTS = Path(__file__).parent / "results"
SIZE = (240, 320)
K_FULL = np.array([[577.9, 0, 319.5], [0, 577.9, 239.5], [0, 0, 1]])  # ScanNet-like colour camera at 480x640


# ----------------------------------------------------------------------------- scene cache
def render_scene(seed: int, rooms: int, frames: int, out: Path, need_rgb: bool) -> Path:
    """Render the keyframes (and GT mesh) of a scan of scene ``seed`` into ``out`` (npz + ply)."""
    from gnesf_ros.data.synthetic import build_scene, camera_path, frame_noise_seed

    scene = build_scene(seed, rooms)
    poses = camera_path(scene, frames=frames * rooms, seed=seed)
    K = scale_intrinsics(K_FULL, (480, 640), SIZE)
    sel = KeyframeSelector(MapperConfig().keyframe)
    key = np.array([sel.accept(T) for T in poses])
    lut = default_class_table().nyu40_to_index_lut()
    rgbs, depths, labels = [], [], []
    for i in np.flatnonzero(key).tolist():
        T = np.asarray(poses[i])
        if need_rgb:
            rgb, depth, nyu = scene.render(T, K, SIZE, noise_seed=frame_noise_seed(seed, i))
        else:
            depth, nyu, _ = scene.render_geometry(T, K, SIZE)
            rgb = np.zeros(SIZE + (3,), np.uint8)
        rgbs.append(rgb)
        depths.append(depth)
        labels.append(lut[nyu])
    path = out / f"scene{seed}_r{rooms}.npz"
    np.savez(path, poses=np.array(poses), key=key, K=K, rgb=np.array(rgbs), depth=np.array(depths),
             labels=np.array(labels))
    write_labeled_ply(out / f"scene{seed}_r{rooms}_gt.ply", scene.gt_mesh())
    return path


# ----------------------------------------------------------------------------- worker
def _rss_mb() -> float:
    """Peak resident set size of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_mode(npz: str, mode: str, weights: str | None, segmenter: str = "oracle") -> dict:
    """Map the cached stream in this process; returns metrics (called in a fresh process)."""
    from gnesf_ros.pipeline import Mapper

    with np.load(npz) as f:  # each NpzFile access decompresses a fresh copy: read once
        z = {k: f[k] for k in f.files}
    rss_start = _rss_mb()
    mapper_mode, _, geometry = mode.partition(":")  # "rgb:mvs" / "rgb:volume": rgb mode with that geometry
    cfg = MapperConfig(mode=mapper_mode)
    if geometry:
        cfg.model.geometry = geometry
    cfg.segmenter.backend = segmenter
    if weights:
        cfg.model.weights = weights
    mapper = Mapper(cfg)
    t0 = time.perf_counter()
    mapper.load_models()  # start-up, not mapping: the node and gnesf-map load them before the stream
    load_s = time.perf_counter() - t0
    blank = np.zeros(SIZE + (3,), np.uint8)
    kf = iter(range(len(z["rgb"])))
    busy = 0.0
    n = len(z["poses"])
    for i, (T, is_key) in enumerate(zip(z["poses"], z["key"])):
        if is_key:
            j = next(kf)
            f = Frame(i / 30, z["rgb"][j], z["K"], T, depth=None if mapper_mode == "rgb" else z["depth"][j],
                      labels=z["labels"][j], index=i)
        else:
            f = Frame(i / 30, blank, z["K"], T, index=i)
        t0 = time.perf_counter()
        mapper.add_frame(f)
        busy += time.perf_counter() - t0
    t0 = time.perf_counter()
    mapper.flush()
    busy += time.perf_counter() - t0
    t0 = time.perf_counter()
    keyframes = mapper.counters["keyframes"]
    mesh = mapper.map.extract_mesh()
    mesh_s = time.perf_counter() - t0
    T0 = z["poses"][int(np.argmax(z["key"]))]
    mapper.map.render(T0, z["K"], SIZE)
    rt = []
    for T in z["poses"][:: max(1, n // 20)]:
        t0 = time.perf_counter()
        mapper.map.render(T, z["K"], SIZE)
        rt.append(1e3 * (time.perf_counter() - t0))
    occ = mapper.map.occupancy_grid()
    rss_mapping = _rss_mb()  # peak so far: mapping + mesh + renders + grid, before evaluation
    ev = evaluate_meshes(mesh, read_labeled_ply(npz.replace(".npz", "_gt.ply")))
    return {
        "mode": mode, "miou": ev["semantic"]["miou"], "f_score": ev["mesh"]["f_score"],
        "acc_m": ev["mesh"]["acc"], "comp_m": ev["mesh"]["comp"],
        "keyframes": keyframes, "busy_s": busy, "ms_per_keyframe": 1e3 * busy / max(keyframes, 1),
        "speedup_vs_30hz": (n / 30) / busy, "mesh_s": mesh_s, "model_load_s": load_s,
        "stages_ms": mapper.timing_summary(),
        "integrate_ms_per_keyframe": sum(t.get("integrate", 0.0) for t in mapper.timings) / max(keyframes, 1),
        "segment_ms_per_keyframe": sum(t.get("segment", 0.0) for t in mapper.timings) / max(keyframes, 1),
        "render_ms_p50": float(np.median(rt)),
        "render_ms_p95": float(np.percentile(rt, 95)),
        "peak_rss_mb": rss_mapping, "rss_after_loading_mb": rss_start,
        "map_mb": mapper.map.memory_bytes() / 2 ** 20, "blocks": mapper.map.num_blocks,
        "mapped_area_m2": float((occ.data >= 0).sum() * occ.resolution_m ** 2),  # observed, height band
    }


def run_open3d(npz: str) -> dict:
    """Open3D ScalableTSDFVolume, labels fused as palette colours (time per keyframe + mIoU)."""
    import open3d as o3d

    with np.load(npz) as f:
        z = {k: f[k] for k in f.files}
    table = default_class_table()
    K = z["K"]
    intr = o3d.camera.PinholeCameraIntrinsic(SIZE[1], SIZE[0], K[0, 0], K[1, 1], K[0, 2], K[1, 2])
    vol = o3d.pipelines.integration.ScalableTSDFVolume(
        voxel_length=0.04, sdf_trunc=0.12, color_type=o3d.pipelines.integration.TSDFVolumeColorType.RGB8)
    from gnesf_ros.segmentation.base import build_segmenter, segment_frames

    cfg = MapperConfig()
    cfg.segmenter.backend = "oracle"
    oracle = build_segmenter(cfg.segmenter, table)  # same 2D labels the other baselines fuse
    busy = 0.0
    rss_start = _rss_mb()
    index = np.nonzero(z["key"])[0]
    for i, T, rgb, depth, gt in zip(index, z["poses"][z["key"]], z["rgb"], z["depth"], z["labels"]):
        probs = segment_frames(oracle, [Frame(i / 30, rgb, K, T, depth=depth, labels=gt, index=int(i))])[0]
        t0 = time.perf_counter()
        color = table.colorize(probs.argmax(-1))
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(color), o3d.geometry.Image(depth), depth_scale=1.0, depth_trunc=5.0,
            convert_rgb_to_intensity=False)
        vol.integrate(rgbd, intr, np.linalg.inv(T))
        busy += time.perf_counter() - t0
    m = vol.extract_triangle_mesh()
    rss_mapping = _rss_mb()
    verts = np.asarray(m.vertices, np.float32)
    cols = (np.asarray(m.vertex_colors) * 255).astype(np.float32)
    d = ((cols[:, None, :] - table.colors[None].astype(np.float32)) ** 2).sum(-1)
    idx = np.where(d.min(1) < 30 ** 2, d.argmin(1), IGNORE)  # blended colours -> nearest class
    mesh = LabeledMesh(verts, np.asarray(m.triangles, np.int32), labels=table.index_to_nyu40(idx))
    ev = evaluate_meshes(mesh, read_labeled_ply(npz.replace(".npz", "_gt.ply")))
    k = int(z["key"].sum())
    return {"mode": "open3d_scalable_tsdf", "miou": ev["semantic"]["miou"], "f_score": ev["mesh"]["f_score"],
            "keyframes": k, "busy_s": busy, "ms_per_keyframe": 1e3 * busy / max(k, 1),
            "peak_rss_mb": rss_mapping, "rss_after_loading_mb": rss_start}


def in_subprocess(npz: Path, mode: str, weights: str | None, segmenter: str = "oracle") -> dict:
    cmd = [sys.executable, __file__, "--worker", str(npz), mode, "--segmenter", segmenter] + \
        (["--weights", weights] if weights else [])
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    if out.returncode != 0:
        return {"mode": mode, "error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report
def fmt(x, d=3):
    return "-" if x is None else (f"{x:.{d}f}" if isinstance(x, float) else str(x))


def markdown(results: dict) -> str:
    lines = [f"## Mapping quality and speed (synthetic test scenes, 240x320, segmenter: {results['args']['segmenter']})", "",
             "| scene | mode | 3D mIoU | F-score@5cm | ms/keyframe | segment ms/kf | integrate ms/kf | x real time (30 Hz) | render ms p50 | peak RSS MB (after loading) | integrate time / Open3D |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for scene, rows in results["scenes"].items():
        o3d_ms = next((r["ms_per_keyframe"] for r in rows if r["mode"] == "open3d_scalable_tsdf"), None)
        for r in rows:
            if "error" in r:
                lines.append(f"| {scene} | {r['mode']} | error: {r['error']} | | | | | | |")
                continue
            integ = r.get("integrate_ms_per_keyframe")
            ratio = integ / o3d_ms if integ and o3d_ms and r["mode"].startswith("baseline") else None
            seg = r.get("segment_ms_per_keyframe")
            lines.append(f"| {scene} | {r['mode']} | {fmt(r['miou'])} | {fmt(r['f_score'])} | {fmt(r['ms_per_keyframe'], 1)} "
                         f"| {fmt(seg, 1)} | {fmt(integ or r['ms_per_keyframe'], 1)} "
                         f"| {fmt(r.get('speedup_vs_30hz'), 2)} | {fmt(r.get('render_ms_p50'), 1)} "
                         f"| {fmt(r['peak_rss_mb'], 0)} ({fmt(r['rss_after_loading_mb'], 0)}) | {fmt(ratio, 2)} |")
    lines += ["", "## Scaling (baseline_bayesian)", "",
              "| rooms | keyframes | mapped area m2 | blocks | map MB | peak RSS MB (after loading) | ms/keyframe | integrate ms/kf |",
              "|---|---|---|---|---|---|---|---|"]
    for rooms, r in results["scaling"].items():
        if "error" in r:
            lines.append(f"| {rooms} | error: {r['error']} | | | | | |")
            continue
        lines.append(f"| {rooms} | {r['keyframes']} | {fmt(r['mapped_area_m2'], 1)} | {r['blocks']} | {fmt(r['map_mb'], 1)} "
                     f"| {fmt(r['peak_rss_mb'], 0)} ({fmt(r['rss_after_loading_mb'], 0)}) | {fmt(r['ms_per_keyframe'], 1)} "
                     f"| {fmt(r['integrate_ms_per_keyframe'], 1)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[2000, 2001])
    ap.add_argument("--frames", type=int, default=300, help="frames at 30 Hz per room")
    ap.add_argument("--rooms", type=int, nargs="+", default=[1, 2, 4], help="scaling runs")
    ap.add_argument("--weights", default=None, help="GNeSF weights: adds the rgb and rgbd modes")
    ap.add_argument("--segmenter", choices=("oracle", "mask2former"), default="oracle",
                    help="2D segmenter in the loop (mask2former: the shipped checkpoint; for timing)")
    ap.add_argument("--out", default=str(RESULTS / "mapping.json"))
    ap.add_argument("--worker", nargs=2, metavar=("NPZ", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        npz, mode = args.worker
        res = run_open3d(npz) if mode == "open3d" else run_mode(npz, mode, args.weights, args.segmenter)
        print(json.dumps(res, default=float))
        return
    weights = args.weights if args.weights and Path(args.weights).is_file() else None
    modes = (["rgb:volume", "rgb:mvs", "rgbd"] if weights else []) + ["baseline_bayesian", "baseline_average", "open3d"]
    results: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]},
                     "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                              text=True).stdout.strip(),
                     "args": vars(args), "gnesf_weights": weights, "scenes": {}, "scaling": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            npz = render_scene(seed, 1, args.frames, Path(tmp), need_rgb=bool(weights))
            results["scenes"][str(seed)] = [in_subprocess(npz, m, weights, args.segmenter) for m in modes]
        for rooms in args.rooms:
            npz = render_scene(args.seeds[0], rooms, args.frames, Path(tmp), need_rgb=False)
            results["scaling"][str(rooms)] = in_subprocess(npz, "baseline_bayesian", None)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=float))
    print(markdown(results))


if __name__ == "__main__":
    main()
