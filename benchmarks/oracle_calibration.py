"""Oracle calibration: the noisy oracle against a trained Mask2Former on the same overlapping test views.

Windows: ``--frames`` consecutive views (every ``--stride`` frames of the 30 Hz camera path,
``gnesf_ros.data.synthetic.camera_path``) of each held-out test scene (``--seeds``, 2000+), rendered
at 240x320 with depth, pose and GT labels. The Mask2Former (``--checkpoint``) segments them first; the
oracle (``NoisyOracleSegmenter``) then runs at the Mask2Former's measured 2D mIoU as its target
(clamped to the oracle's calibrated range; both the target and the oracle's measured mIoU are reported).
Side by side:

(a) 2D mIoU and per-class IoU (argmax vs GT);
(b) per-class confusion: for each GT class, accuracy and the most frequent wrong label with its
    row-normalised rate;
(c) cross-view agreement: pixels of view i (every 2nd pixel) are back-projected with GT depth and
    projected into view j (j - i <= ``--pair-gap``); points inside view j whose GT depth there agrees
    within 5 cm are kept, and the rate at which the predicted labels at both ends are equal is reported,
    overall and split by whether the GT labels at both ends are equal;
(d) error rate binned by distance (GT depth, m), grazing angle (between viewing ray and the surface
    normal from finite differences of back-projected GT depth, degrees), distance to the image border
    (px) and GT region size (equivalent radius sqrt(area / pi) of the pixel's connected GT region, px).

    .venv/bin/python benchmarks/oracle_calibration.py [--checkpoint models/segmenter] [--seeds 2000 2001 2002 2003]
        [--frames 24] [--stride 10] [--out benchmarks/results/oracle_calibration.json]
Prints a compact table; writes benchmarks/results/oracle_calibration.json.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from gnesf_ros.classes import IGNORE, default_class_table
from gnesf_ros.eval.metrics import ConfusionAccumulator
from gnesf_ros.geometry.multiview import backproject, project
from gnesf_ros.types import Frame
from segmentation import git_commit  # benchmarks/segmentation.py (this folder is on sys.path)

log = logging.getLogger("oracle_calibration")

SIZE = (240, 320)
DEPTH_TOL_M = 0.05  # cross-view: projected depth must agree with the GT depth there within this
MIN_PAIR_POINTS = 200  # pairs with fewer co-visible points are skipped
MIN_CLASS_PIXELS = 500  # classes with fewer GT pixels are left out of the confusion table
BINS = {  # (d) bin edges
    "distance_m": (0.0, 1.5, 2.0, 2.5, 3.0, 4.0, np.inf),
    "grazing_deg": (0.0, 30.0, 45.0, 60.0, 75.0, 90.01),
    "border_px": (0.0, 8.0, 16.0, 32.0, 64.0, np.inf),
    "region_radius_px": (0.0, 10.0, 20.0, 40.0, 80.0, np.inf),
}


def render_window(seed: int, frames: int, stride: int, table) -> list[Frame]:
    """``frames`` consecutive views (every ``stride`` path frames) of test scene ``seed`` with depth, pose, labels."""
    from gnesf_ros.data.synthetic import build_scene, camera_path, default_intrinsics, frame_noise_seed

    scene = build_scene(seed)
    poses = camera_path(scene, frames * stride, seed)
    K = default_intrinsics(SIZE)
    lut = table.nyu40_to_index_lut()
    out = []
    for i in range(0, len(poses), stride)[:frames]:
        T = np.asarray(poses[i])
        rgb, depth, nyu = scene.render(T, K, SIZE, noise_seed=frame_noise_seed(seed, i))
        out.append(Frame(stamp=i / 30.0, rgb=rgb, K=K, T_world_cam=T, depth=depth,
                         labels=lut[np.asarray(nyu, np.int64).clip(0, 255)], index=i))
    return out


def segment(segmenter, frames: list[Frame], bar: tqdm) -> list[np.ndarray]:
    """argmax label images (uint8) of a segmenter over frames, 4 at a time."""
    from gnesf_ros.segmentation.base import segment_frames

    out = []
    for start in range(0, len(frames), 4):
        chunk = frames[start:start + 4]
        out.extend(segment_frames(segmenter, chunk).argmax(-1).astype(np.uint8))
        bar.update(len(chunk))
    return out


# ----------------------------------------------------------------------------- per-pixel view properties
def grazing_deg(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Angle (degrees) between the viewing ray and the surface normal from central differences of the
    back-projected GT depth (NaN where depth or a neighbour is invalid or across a > 10 cm depth step)."""
    h, w = depth.shape
    z = np.where(depth > 0, depth, np.nan).astype(np.float64)
    ys, xs = np.mgrid[0:h, 0:w]
    p = np.stack([(xs - K[0, 2]) / K[0, 0] * z, (ys - K[1, 2]) / K[1, 1] * z, z], -1)
    tx, ty = np.gradient(p, axis=1), np.gradient(p, axis=0)
    n = np.cross(tx, ty)
    cos = np.abs((n * p).sum(-1)) / (np.linalg.norm(n, axis=-1) * np.linalg.norm(p, axis=-1) + 1e-12)
    ang = np.degrees(np.arccos(np.clip(cos, 0, 1)))
    step = np.maximum(np.abs(tx[..., 2]), np.abs(ty[..., 2]))
    return np.where(step < 0.1, ang, np.nan)


def border_px(shape) -> np.ndarray:
    h, w = shape
    ys, xs = np.arange(h), np.arange(w)
    return np.minimum(np.minimum(ys, h - 1 - ys)[:, None], np.minimum(xs, w - 1 - xs)[None, :]).astype(np.float64)


def region_radius_px(labels: np.ndarray) -> np.ndarray:
    """Equivalent radius sqrt(area / pi) of each pixel's connected GT region (NaN on ignore)."""
    out = np.full(labels.shape, np.nan)
    for cls in np.unique(labels[labels != IGNORE]):
        _, comp, stats, _ = cv2.connectedComponentsWithStats((labels == cls).astype(np.uint8), connectivity=4)
        r = np.sqrt(stats[:, cv2.CC_STAT_AREA] / np.pi)
        m = comp > 0
        out[m] = r[comp[m]]
    return out


# ----------------------------------------------------------------------------- metrics
class Stats:
    """Accumulates (a)-(d) for one segmenter."""

    def __init__(self, table):
        self.table = table
        self.acc = ConfusionAccumulator(table.num_classes, table.names)
        self.bins = {k: np.zeros((2, len(e) - 1)) for k, e in BINS.items()}  # (errors, pixels)
        self.cross = np.zeros((3, 2))  # rows: all, gt same, gt differs; cols: agreeing, points

    def add_view(self, f: Frame, pred: np.ndarray, props: dict) -> None:
        self.acc.add(f.labels, pred)
        valid = f.labels != IGNORE
        wrong = (pred != f.labels) & valid
        for key, edges in BINS.items():
            v = props[key]
            ok = valid & np.isfinite(v)
            idx = np.clip(np.digitize(v[ok], edges) - 1, 0, len(edges) - 2)
            self.bins[key][0] += np.bincount(idx, wrong[ok], len(edges) - 1)
            self.bins[key][1] += np.bincount(idx, minlength=len(edges) - 1)

    def add_pair(self, pa: np.ndarray, pb: np.ndarray, ga: np.ndarray, gb: np.ndarray) -> None:
        same_pred = pa == pb
        same_gt = ga == gb
        for row, m in enumerate((np.ones_like(same_gt), same_gt, ~same_gt)):
            self.cross[row] += (same_pred[m].sum(), m.sum())

    def results(self) -> dict:
        res = self.acc.results()
        names = self.table.names
        m = self.acc.matrix[:, : self.table.num_classes].astype(np.float64)
        confusion = {}
        for c, name in enumerate(names):
            total = self.acc.matrix[c].sum()
            if total < MIN_CLASS_PIXELS:
                continue
            row = m[c].copy()
            row[c] = -1
            top = int(row.argmax())
            confusion[name] = {"acc": round(100 * m[c, c] / total, 1), "top_wrong": names[top],
                               "top_wrong_rate": round(100 * m[c, top] / total, 1), "gt_pixels": int(total)}
        cross = {k: (round(100 * a / n, 1) if n else None) for k, (a, n) in
                 zip(("all", "gt_same", "gt_differs"), self.cross)}
        cross["points"] = {k: int(n) for k, (_, n) in zip(("all", "gt_same", "gt_differs"), self.cross)}
        binned = {}
        for key, edges in BINS.items():
            err, n = self.bins[key]
            binned[key] = [{"lo": float(edges[i]), "hi": (None if np.isinf(edges[i + 1]) else float(edges[i + 1])),
                            "error_pct": (round(100 * err[i] / n[i], 1) if n[i] else None), "pixels": int(n[i])}
                           for i in range(len(n))]
        return {"miou_2d": round(100 * res["miou"], 1), "overall_acc": round(100 * res["overall_acc"], 1),
                "per_class_iou": {k: (None if v["iou"] is None else round(100 * v["iou"], 1))
                                  for k, v in res["per_class"].items()},
                "confusion": confusion, "cross_view_agreement": cross, "error_by": binned}


def covisible_pairs(frames: list[Frame], gap: int):
    """(i, j, pixels_i (ys, xs), pixels_j (ys, xs)) of co-visible GT points for view pairs 0 < j - i <= gap."""
    h, w = SIZE
    ys, xs = np.mgrid[0:h:2, 0:w:2]
    ys, xs = ys.ravel(), xs.ravel()
    for i, fa in enumerate(frames):
        ok = fa.depth[ys, xs] > 0
        ya, xa = ys[ok], xs[ok]
        pts = backproject(fa.depth[ya, xa], fa.K, fa.T_world_cam, ya, xa)
        for j in range(i + 1, min(i + gap + 1, len(frames))):
            fb = frames[j]
            uv, z = project(pts, fb.K, fb.T_world_cam)
            xb, yb = np.round(uv[:, 0]).astype(np.int64), np.round(uv[:, 1]).astype(np.int64)
            inside = (z > 0) & (xb >= 0) & (xb < w) & (yb >= 0) & (yb < h)
            keep = np.zeros(len(z), bool)
            db = fb.depth[yb[inside], xb[inside]]
            keep[np.flatnonzero(inside)] = (db > 0) & (np.abs(db - z[inside]) < DEPTH_TOL_M)
            if keep.sum() >= MIN_PAIR_POINTS:
                yield i, j, (ya[keep], xa[keep]), (yb[keep], xb[keep])


# ----------------------------------------------------------------------------- report
def print_table(res: dict, target: float, clamped: bool) -> None:
    o, m = res["oracle"], res["mask2former"]
    print(f"Oracle calibration: {res['views']} views of test scenes {res['seeds']} (240x320, every "
          f"{res['stride']} frames), {res['pairs']} overlapping pairs; oracle target {target:.1f}"
          f"{' (clamped)' if clamped else ''}\n")
    print("| metric | oracle | mask2former |")
    print("|---|---|---|")
    print(f"| 2D mIoU (%) | {o['miou_2d']} | {m['miou_2d']} |")
    print(f"| pixel accuracy (%) | {o['overall_acc']} | {m['overall_acc']} |")
    for k in ("all", "gt_same", "gt_differs"):
        print(f"| cross-view agreement, {k} (%) | {o['cross_view_agreement'][k]} | {m['cross_view_agreement'][k]} |")
    for key in BINS:
        for bo, bm in zip(o["error_by"][key], m["error_by"][key]):
            hi = "inf" if bo["hi"] is None else f"{bo['hi']:g}"
            print(f"| error % {key} [{bo['lo']:g}, {hi}) ({bo['pixels']} px) | {bo['error_pct']} | {bm['error_pct']} |")
    print("\n| GT class | oracle IoU | m2f IoU | oracle acc, top wrong (rate) | m2f acc, top wrong (rate) |")
    print("|---|---|---|---|---|")
    for name, co in o["confusion"].items():
        cm = m["confusion"].get(name)
        cm_s = f"{cm['acc']}, {cm['top_wrong']} ({cm['top_wrong_rate']})" if cm else "-"
        print(f"| {name} | {o['per_class_iou'][name]} | {m['per_class_iou'][name]} | "
              f"{co['acc']}, {co['top_wrong']} ({co['top_wrong_rate']}) | {cm_s} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="models/segmenter", help="Mask2Former checkpoint directory")
    ap.add_argument("--seeds", type=int, nargs="+", default=[2000, 2001, 2002, 2003], help="test scene seeds")
    ap.add_argument("--frames", type=int, default=24, help="consecutive views per scene")
    ap.add_argument("--stride", type=int, default=10, help="camera-path frames (30 Hz) between views")
    ap.add_argument("--pair-gap", type=int, default=3, help="pairs (i, j) with 0 < j - i <= this")
    ap.add_argument("--oracle-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "oracle_calibration.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from gnesf_ros.segmentation.mask2former import Mask2FormerSegmenter
    from gnesf_ros.segmentation.oracle import STRENGTH_TABLE, NoisyOracleSegmenter

    table = default_class_table()
    windows = {s: render_window(s, args.frames, args.stride, table)
               for s in tqdm(args.seeds, desc="render", leave=False)}
    n_views = sum(len(w) for w in windows.values())
    m2f = Mask2FormerSegmenter(args.checkpoint, input_size=SIZE, threads=args.threads)
    with tqdm(total=n_views, desc="mask2former", leave=False) as bar:
        m2f_pred = {s: segment(m2f, w, bar) for s, w in windows.items()}
    acc = ConfusionAccumulator(table.num_classes)
    for s, w in windows.items():
        for f, p in zip(w, m2f_pred[s]):
            acc.add(f.labels, p)
    m2f_miou = 100 * acc.results()["miou"]
    lo, hi = min(m for _, m in STRENGTH_TABLE), max(m for _, m in STRENGTH_TABLE)
    target = float(np.clip(m2f_miou, lo, hi))
    oracle = NoisyOracleSegmenter(target, seed=args.oracle_seed, class_table=table, threads=min(args.threads, 2))
    with tqdm(total=n_views, desc="oracle", leave=False) as bar:
        oracle_pred = {s: segment(oracle, w, bar) for s, w in windows.items()}

    stats = {"oracle": Stats(table), "mask2former": Stats(table)}
    n_pairs = 0
    for s, w in tqdm(windows.items(), desc="metrics", leave=False):
        for k, f in enumerate(w):
            props = {"distance_m": np.where(f.depth > 0, f.depth, np.nan).astype(np.float64),
                     "grazing_deg": grazing_deg(f.depth, f.K), "border_px": border_px(SIZE),
                     "region_radius_px": region_radius_px(f.labels)}
            stats["oracle"].add_view(f, oracle_pred[s][k], props)
            stats["mask2former"].add_view(f, m2f_pred[s][k], props)
        for i, j, (ya, xa), (yb, xb) in covisible_pairs(w, args.pair_gap):
            ga, gb = w[i].labels[ya, xa], w[j].labels[yb, xb]
            keep = (ga != IGNORE) & (gb != IGNORE)
            n_pairs += 1
            for name, pred in (("oracle", oracle_pred), ("mask2former", m2f_pred)):
                stats[name].add_pair(pred[s][i][ya, xa][keep], pred[s][j][yb, xb][keep], ga[keep], gb[keep])

    result = {"benchmark": "oracle_calibration", "commit": git_commit(), "checkpoint": str(args.checkpoint),
              "seeds": list(args.seeds), "frames_per_scene": args.frames, "stride": args.stride,
              "views": n_views, "pairs": n_pairs, "pair_gap": args.pair_gap, "size": list(SIZE),
              "depth_tol_m": DEPTH_TOL_M, "oracle_seed": args.oracle_seed,
              "oracle_target_miou": round(target, 1), "oracle_target_clamped": bool(target != m2f_miou),
              "oracle_strength": round(oracle.strength, 3),
              "bins": {k: [None if np.isinf(e) else float(e) for e in v] for k, v in BINS.items()},
              "oracle": stats["oracle"].results(), "mask2former": stats["mask2former"].results()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    log.info("wrote %s", args.out)
    print_table(result, target, result["oracle_target_clamped"])


if __name__ == "__main__":
    main()
