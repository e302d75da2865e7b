"""Evaluation metrics: 3D / 2D semantic IoU and mesh quality, with the literature's protocols.

3D semantics (Atlas / GNeSF, ScanNet benchmark IoU): every ground-truth vertex takes the label of
its nearest predicted vertex (no distance threshold; exact ties between coincident predicted
vertices resolve to the GT label, see transfer_labels). GT vertices whose NYU40 id is outside the
class table are ignored; predictions outside the table (unknown, id 0) count as wrong. One
confusion matrix (accumulate over scenes with ConfusionAccumulator); IoU_c = TP / (TP + FP + FN);
mIoU averages the classes present in GT or prediction (a class absent from both is not averaged);
mAcc averages per-class recall over classes present in GT.

Mesh quality (NeuralRecon): point sets from both meshes (vertices by default, or uniform samples
on the faces), voxel down-sampled at 2 cm; Acc = mean distance pred -> GT, Comp = mean distance
GT -> pred (metres); Prec / Recall = fraction of pred / GT points within the threshold (5 cm);
F-score = harmonic mean. NeuralRecon additionally culls both meshes to the parts observed by the
cameras before evaluating; that step is not done here (it needs the trajectory).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy.spatial import cKDTree

from gnesf_ros.classes import IGNORE, ClassTable, default_class_table
from gnesf_ros.config import EvalConfig
from gnesf_ros.data.ply import LabeledMesh, require_labels


class ConfusionAccumulator:
    """Confusion matrix over C classes, accumulated over images or scenes.

    ``matrix``: C x (C + 1) int64; rows = ground-truth class, columns = predicted class, the last
    column counts predictions outside the table (unknown), which are always wrong."""

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None) -> None:
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        if len(self.class_names) != self.num_classes:
            raise ValueError("class_names must have num_classes entries")
        self.matrix = np.zeros((self.num_classes, self.num_classes + 1), np.int64)

    def add(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """Add pairs of class indices (any equal shapes). GT >= C (e.g. 255) is ignored;
        pred >= C or < 0 is counted in the 'unknown' column."""
        gt = np.asarray(gt).reshape(-1).astype(np.int64)
        pred = np.asarray(pred).reshape(-1).astype(np.int64)
        if gt.shape != pred.shape:
            raise ValueError(f"gt and pred differ in size: {gt.size} vs {pred.size}")
        keep = (gt >= 0) & (gt < self.num_classes)
        gt, pred = gt[keep], pred[keep]
        pred = np.where((pred >= 0) & (pred < self.num_classes), pred, self.num_classes)
        c1 = self.num_classes + 1
        self.matrix += np.bincount(gt * c1 + pred, minlength=self.num_classes * c1).reshape(-1, c1)

    def merge(self, other: "ConfusionAccumulator") -> None:
        if other.num_classes != self.num_classes:
            raise ValueError("cannot merge confusion matrices of different class counts")
        self.matrix += other.matrix

    def results(self) -> dict:
        """-> {miou, macc, overall_acc, num_points, num_unknown, per_class: {name: {iou, acc, gt, pred}}}.
        Fractions in [0, 1]; ``None`` where undefined (class absent from GT and prediction)."""
        m = self.matrix
        tp = np.diag(m[:, : self.num_classes]).astype(np.float64)
        gt_count = m.sum(1)
        pred_count = m[:, : self.num_classes].sum(0)
        union = gt_count + pred_count - tp
        iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
        acc = np.where(gt_count > 0, tp / np.maximum(gt_count, 1), np.nan)
        total = int(m.sum())
        per_class = {
            name: {"iou": _opt(iou[i]), "acc": _opt(acc[i]), "gt": int(gt_count[i]), "pred": int(pred_count[i])}
            for i, name in enumerate(self.class_names)
        }
        return {
            "miou": _opt(np.nanmean(iou)) if np.isfinite(iou).any() else None,
            "macc": _opt(np.nanmean(acc)) if np.isfinite(acc).any() else None,
            "overall_acc": float(tp.sum() / total) if total else None,
            "num_points": total,
            "num_unknown": int(m[:, -1].sum()),
            "per_class": per_class,
        }


def _opt(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def surface_tree(points: np.ndarray) -> cKDTree:
    """k-d tree over surface samples (Nx3). Sliding-midpoint splits (``balanced_tree=False``): on
    points that lie on a few planes, median splits make queries far from the surface (GT that the
    scan never saw) 10x slower (2.85 against 0.24 s for 341k GT vertices on the demo mesh)."""
    return cKDTree(np.asarray(points, np.float64), balanced_tree=False, compact_nodes=False)


def transfer_labels(pred_vertices: np.ndarray, pred_values: np.ndarray, gt_vertices: np.ndarray,
                    prefer: np.ndarray | None = None, max_ties: int = 8) -> np.ndarray:
    """Value of the nearest predicted vertex for each GT vertex (no distance threshold).

    pred_vertices Px3, pred_values P, gt_vertices Gx3 (metres) -> G values. ``prefer`` (G values,
    e.g. the GT labels) breaks exact ties only: when several predicted vertices are equally near
    (coincident duplicates, common at part seams), one carrying the preferred value is taken, so
    that a mesh scored against itself is exact. Generic predictions have no exact ties."""
    pred_values = np.asarray(pred_values)
    tree = surface_tree(pred_vertices)
    gt_vertices = np.asarray(gt_vertices, np.float64)
    dist, idx = tree.query(gt_vertices, k=1, workers=-1)
    out = pred_values[idx]
    if prefer is None or len(pred_values) < 2:
        return out
    prefer = np.asarray(prefer)
    wrong = np.flatnonzero(out != prefer)
    if len(wrong):
        k = min(max_ties, len(pred_values))
        dk, ik = tree.query(gt_vertices[wrong], k=k, workers=-1)
        tie_ok = (dk <= dist[wrong, None] + 1e-9) & (pred_values[ik] == prefer[wrong, None])
        fix = tie_ok.any(1)
        out[wrong[fix]] = prefer[wrong[fix]]
    return out


def label_transfer_indices(pred: LabeledMesh, gt: LabeledMesh,
                           table: ClassTable | None = None) -> tuple[np.ndarray, np.ndarray]:
    """-> (gt class index G, transferred predicted class index G); IGNORE (255) outside the table.
    Feed these to ConfusionAccumulator.add to accumulate over scenes."""
    table = table or default_class_table()
    lut = table.nyu40_to_index_lut()
    gt_idx = lut[np.clip(gt.labels, 0, 255)]
    gt_idx[(gt.labels < 0) | (gt.labels > 255)] = IGNORE
    if pred.num_vertices == 0:
        return gt_idx, np.full(gt.num_vertices, IGNORE, np.uint8)
    pred_idx = lut[np.clip(pred.labels, 0, 255)]
    pred_idx[(pred.labels < 0) | (pred.labels > 255)] = IGNORE
    return gt_idx, transfer_labels(pred.vertices, pred_idx, gt.vertices, prefer=gt_idx)


def semantic_3d(pred: LabeledMesh, gt: LabeledMesh, table: ClassTable | None = None) -> dict:
    """3D semantic metrics of one scene (see module doc); labels are NYU40 ids in both meshes.
    A mesh read from a PLY without a ``label`` property raises DataError naming the file."""
    require_labels(pred, "predicted")
    require_labels(gt, "ground-truth")
    table = table or default_class_table()
    acc = ConfusionAccumulator(table.num_classes, table.names)
    acc.add(*label_transfer_indices(pred, gt, table))
    return acc.results()


def miou_2d(preds: Iterable[np.ndarray] | np.ndarray, gts: Iterable[np.ndarray] | np.ndarray,
            num_classes: int, class_names: Sequence[str] | None = None) -> dict:
    """2D metrics over label images of class indices (HxW each, or NxHxW arrays).
    GT 255 is ignored; predicted 255 (unknown / no hit) counts as wrong."""
    acc = ConfusionAccumulator(num_classes, class_names)
    for p, g in zip(preds, gts, strict=True):
        if np.shape(p) != np.shape(g):
            raise ValueError(f"label image shapes differ: {np.shape(p)} vs {np.shape(g)}")
        acc.add(g, p)
    return acc.results()


def voxel_downsample(points: np.ndarray, voxel_m: float) -> np.ndarray:
    """Centroid of the points in each occupied voxel (like Open3D voxel_down_sample). Nx3 -> Mx3."""
    points = np.asarray(points, np.float64).reshape(-1, 3)
    if voxel_m <= 0 or len(points) == 0:
        return points
    keys = np.floor(points / voxel_m).astype(np.int64)
    keys -= keys.min(0)
    dims = keys.max(0) + 1
    flat = (keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2]  # one int64 per voxel
    _, inv, counts = np.unique(flat, return_inverse=True, return_counts=True)
    sums = np.stack([np.bincount(inv, points[:, i], len(counts)) for i in range(3)], 1)
    return sums / counts[:, None]


def sample_surface(mesh: LabeledMesh, points_per_m2: float, seed: int = 0) -> np.ndarray:
    """Points uniformly distributed over the mesh faces (area-weighted); Nx3 metres.
    A mesh without faces returns its vertices."""
    if mesh.num_faces == 0:
        return mesh.vertices.astype(np.float64)
    tri = mesh.vertices[mesh.faces].astype(np.float64)  # F x 3 x 3
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    n = max(int(round(area.sum() * points_per_m2)), 1)
    rng = np.random.default_rng(seed)
    face = rng.choice(len(tri), n, p=area / area.sum()) if area.sum() > 0 else rng.integers(0, len(tri), n)
    r1, r2 = rng.random(n), rng.random(n)
    flip = r1 + r2 > 1  # fold the unit square onto the triangle
    r1[flip], r2[flip] = 1 - r1[flip], 1 - r2[flip]
    t = tri[face]
    return t[:, 0] + r1[:, None] * (t[:, 1] - t[:, 0]) + r2[:, None] * (t[:, 2] - t[:, 0])


def mesh_points(mesh: LabeledMesh, cfg: EvalConfig | None = None) -> np.ndarray:
    """The point set a mesh is evaluated on, following ``cfg.sampling`` and ``cfg.downsample_m``."""
    cfg = cfg or EvalConfig()
    if cfg.sampling == "vertices":
        pts = mesh.vertices.astype(np.float64)
    elif cfg.sampling == "surface":
        pts = sample_surface(mesh, cfg.surface_points_per_m2, cfg.seed)
    else:
        raise ValueError(f"unknown sampling '{cfg.sampling}' (vertices | surface)")
    return voxel_downsample(pts, cfg.downsample_m)


def mesh_quality(pred_pts: np.ndarray, gt_pts: np.ndarray, threshold: float = 0.05) -> dict:
    """NeuralRecon mesh metrics between point sets (Nx3, Mx3, metres).

    -> {acc, comp (metres, None if a set is empty), prec, recall, f_score, threshold_m,
    num_pred_points, num_gt_points}."""
    pred_pts = np.asarray(pred_pts, np.float64).reshape(-1, 3)
    gt_pts = np.asarray(gt_pts, np.float64).reshape(-1, 3)
    out = {"threshold_m": float(threshold), "num_pred_points": len(pred_pts), "num_gt_points": len(gt_pts)}
    if len(pred_pts) == 0 or len(gt_pts) == 0:
        return {**out, "acc": None, "comp": None, "prec": 0.0, "recall": 0.0, "f_score": 0.0}
    d_pred, _ = surface_tree(gt_pts).query(pred_pts, k=1, workers=-1)  # accuracy: pred -> GT
    d_gt, _ = surface_tree(pred_pts).query(gt_pts, k=1, workers=-1)  # completeness: GT -> pred
    prec = float(np.mean(d_pred < threshold))
    recall = float(np.mean(d_gt < threshold))
    f = 2 * prec * recall / (prec + recall) if prec + recall > 0 else 0.0
    return {**out, "acc": float(d_pred.mean()), "comp": float(d_gt.mean()),
            "prec": prec, "recall": recall, "f_score": float(f)}


def evaluate_meshes(pred: LabeledMesh, gt: LabeledMesh, table: ClassTable | None = None,
                    cfg: EvalConfig | None = None) -> dict:
    """Both protocols on one scene -> {"semantic": semantic_3d(...), "mesh": mesh_quality(...)}."""
    cfg = cfg or EvalConfig()
    return {"semantic": semantic_3d(pred, gt, table),
            "mesh": mesh_quality(mesh_points(pred, cfg), mesh_points(gt, cfg), cfg.threshold_m)}


def _fmt(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _semantic_md(r: dict) -> list[str]:
    lines = ["| metric | value |", "|---|---|",
             f"| mIoU | {_fmt(r['miou'])} |", f"| mAcc | {_fmt(r['macc'])} |",
             f"| overall acc | {_fmt(r['overall_acc'])} |", f"| evaluated points | {r['num_points']} |",
             f"| unknown predictions | {r['num_unknown']} |", "",
             "| class | IoU | Acc | GT points | pred points |", "|---|---|---|---|---|"]
    for name, c in r["per_class"].items():
        lines.append(f"| {name} | {_fmt(c['iou'])} | {_fmt(c['acc'])} | {c['gt']} | {c['pred']} |")
    return lines


def _mesh_md(r: dict) -> list[str]:
    t = r["threshold_m"]
    return ["| metric | value |", "|---|---|",
            f"| Acc (m) | {_fmt(r['acc'], 4)} |", f"| Comp (m) | {_fmt(r['comp'], 4)} |",
            f"| Prec @ {t * 100:g} cm | {_fmt(r['prec'])} |", f"| Recall @ {t * 100:g} cm | {_fmt(r['recall'])} |",
            f"| F-score @ {t * 100:g} cm | {_fmt(r['f_score'])} |",
            f"| points pred / GT | {r['num_pred_points']} / {r['num_gt_points']} |"]


def format_markdown(results: dict, title: str | None = None) -> str:
    """Readable markdown tables for semantic results, mesh results, or a dict nesting them
    (e.g. evaluate_meshes output); nested dicts get a '### key' heading each."""
    lines = [f"## {title}", ""] if title else []
    if "miou" in results:
        lines += _semantic_md(results)
    elif "f_score" in results:
        lines += _mesh_md(results)
    else:
        for key, sub in results.items():
            if isinstance(sub, dict):
                lines += [f"### {key}", "", format_markdown(sub).rstrip(), ""]
    return "\n".join(lines).rstrip() + "\n"
