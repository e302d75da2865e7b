"""gnesf-map: build a semantic map offline from a ScanNet scene (exported folder or .sens) or a ROS 2 bag.

    gnesf-map INPUT --out DIR [--config FILE] [--mode rgb|rgbd|baseline_bayesian|baseline_average]
              [--segmenter oracle|mask2former] [--max-frames N] [--stride S] [--heldout-every K] [--gt PLY]

Writes into DIR: mesh.ply (per-vertex NYU40 ``label``), map.npz (resumable map file),
views/<frame>_labels.png (class index), views/<frame>_labels_color.png, views/<frame>_depth.png
(uint16 mm) rendered at held-out views (every K-th non-keyframe), overview_top_down.png and
overview_perspective.png (class-coloured mesh with legend) and metrics.json (2D mIoU at the
held-out views, 3D mIoU + mesh F-score when the scene has a ground-truth mesh, throughput,
stage timings, counters, peak RSS). Prints a markdown summary.

DIR holds one run's results: the outputs of a previous run there are removed before this run
writes (only the files named above), every file is written atomically (gnesf_ros.atomic) and
metrics.json last, so a folder with metrics.json is complete and one without it is not.
"""
from __future__ import annotations

import argparse
import fnmatch
import logging
import resource
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from gnesf_ros.atomic import TMP_TAG, atomic_dir, atomic_path, check_output_dir, is_temp_name, write_json
from gnesf_ros.cli.common import nonnegative_int, positive_int, run_cli
from gnesf_ros.config import load_config, to_dict
from gnesf_ros.data.ply import read_labeled_ply, require_labels
from gnesf_ros.data.scannet import open_scene
from gnesf_ros.errors import DataError
from gnesf_ros.eval.metrics import evaluate_meshes, format_markdown, miou_2d
from gnesf_ros.mapping.io import save_mesh_ply
from gnesf_ros.pipeline import MODES, Mapper
from gnesf_ros.ros.bag import BagFrameSource, is_bag
from gnesf_ros.types import Frame
from gnesf_ros.viz import overview_images, save_png

log = logging.getLogger("gnesf_ros.map")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gnesf-map", description=__doc__.split("\n\n")[0])
    p.add_argument("input", type=Path,
                   help="ScanNet scene (exported folder or .sens file) or a ROS 2 bag folder (gnesf-bag convert)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--config", type=Path, help="YAML overlay of config/default.yaml")
    p.add_argument("--mode", choices=MODES, help="mapping mode (default: the config's)")
    p.add_argument("--segmenter", help="segmenter backend override (oracle | mask2former | external)")
    p.add_argument("--max-frames", type=positive_int, help="stop after this many frames")
    p.add_argument("--stride", type=positive_int, default=1, help="use every n-th frame")
    p.add_argument("--heldout-every", type=nonnegative_int, default=10,
                   help="render label/depth images at every k-th non-keyframe (0 = none)")
    p.add_argument("--gt", type=Path, help="ground-truth labelled mesh (default: the scene's *_vh_clean_2.labels.ply)")
    return p


def _open_input(args: argparse.Namespace, size: tuple[int, int]):
    if is_bag(args.input):
        return BagFrameSource(args.input, size, args.max_frames, args.stride, args.gt)
    source = open_scene(args.input, size=size, max_frames=args.max_frames, stride=args.stride)
    if args.gt is not None:
        source.gt_mesh_path = args.gt
    return source


def _write_view(out: Path, frame: Frame, labels: np.ndarray, depth: np.ndarray, table) -> None:
    stem = out / f"{frame.index:06d}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    for path, img in ((f"{stem}_labels.png", labels),
                      (f"{stem}_depth.png", np.clip(np.rint(depth * 1000), 0, 65535).astype(np.uint16))):
        if not cv2.imwrite(path, img):
            raise OSError(f"could not write image {path}")
    save_png(f"{stem}_labels_color.png", table.colorize(labels))


OUTPUT_FILES = ("mesh.ply", "map.npz")
OUTPUT_GLOBS = ("overview_*.png",)
OUTPUT_DIRS = ("views",)
METRICS = "metrics.json"


def _output_name(name: str) -> str | None:
    """The output ``name`` stands for (a temporary file of an interrupted run counts), or None."""
    if is_temp_name(name):  # .mesh.ply.tmp-1a2b3c4d.ply, .views.tmp-1a2b3c4d, .views.old.tmp-...
        name = name[1:].split(TMP_TAG)[0].removesuffix(".old")
    if name in (METRICS, *OUTPUT_FILES, *OUTPUT_DIRS) or any(fnmatch.fnmatchcase(name, g) for g in OUTPUT_GLOBS):
        return name
    return None


def check_outputs(out: Path) -> None:
    """--out must be a folder (or creatable) whose output names are free or of the right kind."""
    check_output_dir(out, "--out")
    for name in (METRICS, *OUTPUT_FILES):
        if (out / name).is_dir():
            raise DataError(f"--out {out}: {name} is a folder (gnesf-map writes a file there); move it away")
    for name in OUTPUT_DIRS:
        if (out / name).exists() and not (out / name).is_dir():
            raise DataError(f"--out {out}: {name} is a file (gnesf-map writes a folder there); move it away")


def clear_outputs(out: Path) -> None:
    """Remove what a previous gnesf-map run wrote into ``out`` (metrics.json first: a folder
    without it is incomplete) and the temporary files of an interrupted run; nothing else."""
    check_outputs(out)
    (out / METRICS).unlink(missing_ok=True)
    for entry in sorted(out.iterdir()):
        name = _output_name(entry.name)
        if name is None:
            continue
        if entry.is_dir() and not entry.is_symlink():
            if name in OUTPUT_DIRS:
                shutil.rmtree(entry)
        else:
            entry.unlink()


def _main(args: argparse.Namespace) -> int:
    overrides: dict = {}
    if args.mode:
        overrides["mode"] = args.mode
    if args.segmenter:
        overrides["segmenter"] = {"backend": args.segmenter}
    check_outputs(args.out)  # before any work, not after mapping
    cfg = load_config(args.config, overrides)
    source = _open_input(args, (cfg.camera.height, cfg.camera.width))
    gt_mesh = None
    if source.gt_mesh_path is not None:  # read (and checked) before mapping, not after
        gt_mesh = read_labeled_ply(source.gt_mesh_path)
        require_labels(gt_mesh, "ground-truth")
    mapper = Mapper(cfg)
    t0 = time.perf_counter()
    mapper.load_models()  # timed apart from mapping: a node loads them once at start
    load_s = time.perf_counter() - t0
    table = mapper.class_table
    heldout: list[Frame] = []
    non_key = 0
    busy_s = 0.0
    stamps = []
    for frame in tqdm(source, total=len(source), desc=f"mapping ({cfg.mode})", unit="frame"):
        stamps.append(frame.stamp)
        before = mapper.counters["keyframes"]
        t0 = time.perf_counter()
        mapper.add_frame(frame)
        busy_s += time.perf_counter() - t0
        if mapper.counters["keyframes"] == before and args.heldout_every:
            non_key += 1
            if non_key % args.heldout_every == 0 and frame.labels is not None:
                heldout.append(Frame(frame.stamp, frame.rgb[:1, :1], frame.K, frame.T_world_cam,
                                     labels=frame.labels, index=frame.index))
    t0 = time.perf_counter()
    mapper.flush()
    busy_s += time.perf_counter() - t0
    if mapper.counters["fragments"] == 0:
        raise DataError(f"{args.input}: no fragment could be mapped ({mapper.stats})")

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    clear_outputs(out)  # checks the folder again: it may have changed while mapping
    vmap = mapper.map
    mesh_path = save_mesh_ply(vmap, out / "mesh.ply")
    vmap.save(out / "map.npz")
    size = (cfg.camera.height, cfg.camera.width)
    preds, gts, render_ms = [], [], []
    if heldout:
        with atomic_dir(out / "views") as views:  # all views appear at once
            for f in tqdm(heldout, desc="rendering held-out views", unit="view"):
                t0 = time.perf_counter()
                labels, depth = vmap.render(f.T_world_cam, f.K, size)
                render_ms.append(1e3 * (time.perf_counter() - t0))
                _write_view(views, f, labels, depth, table)
                preds.append(labels)
                gts.append(f.labels)
    mesh = vmap.extract_mesh()
    if len(mesh.faces):
        for name, img in overview_images(mesh, table).items():
            with atomic_path(out / f"overview_{name}.png") as tmp:
                save_png(tmp, img)

    keyframes = mapper.counters["keyframes"]
    stream_s = (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
    metrics: dict = {
        "scene": source.scene_name, "mode": cfg.mode, "frames": len(stamps),
        "throughput": {
            "keyframes": keyframes, "busy_s": busy_s, "model_load_s": load_s,
            "keyframes_per_s": keyframes / busy_s if busy_s else None,
            "stream_keyframes_per_s": keyframes / stream_s if stream_s else None,
            "speedup_vs_realtime": stream_s / busy_s if busy_s and stream_s else None,
        },
        "timings_ms": mapper.timing_summary(),
        "render_ms_p50": float(np.median(render_ms)) if render_ms else None,
        "counters": mapper.stats, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "map_memory_mb": vmap.memory_bytes() / 2 ** 20, "config": to_dict(cfg),
    }
    if preds:
        metrics["semantic_2d"] = miou_2d(preds, gts, table.num_classes, table.names)
    if gt_mesh is not None:
        res = evaluate_meshes(mesh, gt_mesh, table)
        metrics["semantic"], metrics["mesh"] = res["semantic"], res["mesh"]
    write_json(out / METRICS, metrics, indent=2, default=float)  # last: marks the run complete
    shown = {k: metrics[k] for k in ("semantic", "mesh") if k in metrics}
    if shown:
        print(format_markdown(shown, title=f"{source.scene_name} ({cfg.mode})"))
    tp = metrics["throughput"]
    print(f"\nmapped {len(stamps)} frames, {keyframes} keyframes, {mapper.counters['fragments']} fragments in "
          f"{busy_s:.1f} s ({tp['speedup_vs_realtime'] or float('nan'):.2f}x real time); "
          f"2D mIoU at {len(preds)} held-out views: "
          f"{metrics.get('semantic_2d', {}).get('miou', float('nan'))}; mesh: {mesh_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
