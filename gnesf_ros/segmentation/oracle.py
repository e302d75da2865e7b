"""Noisy-oracle segmenter: ground-truth labels corrupted the way real 2D segmenters err.

For controlled experiments (how much does multi-view fusion recover from 2D errors of a known
size?). The noise model, applied to a GT label image (class indices, 255 = ignore), with a
strength ``s`` in [0, 1] (constants below):

1. Whole-object confusion: each connected region of an object class is relabelled, as a whole, to
   a plausible partner (``CONFUSABLE``: table/desk, cabinet/otherfurniture, curtain/window,
   door/wall, sofa/chair, bookshelf/cabinet, counter/cabinet, picture/wall, ...) visible in the same
   view, with probability ``P_OBJECT * s``. Walls and floors are surfaces and keep their label.
   Partners must be in view so the oracle never invents classes absent from the image: that keeps
   its mIoU independent of how many frames are evaluated. With depth and a pose the draw is keyed
   to the region's world position (1 m cells), so an object is confused alike from every view, as
   a real network does; without them the draws are stratified over frame indices.
2. Boundary erosion/dilation: labels are resampled through a smooth random displacement field of
   amplitude ``BOUNDARY_PX * s`` (px at 240 px image height, scaled with the image; smaller for
   objects under ``SMALL_OBJECT_RADIUS_PX``), so boundaries move raggedly into one neighbour or the other.
3. View-dependent flicker: smooth blobs covering ``FLICKER_AREA * s`` of the image turn each class
   into a partner in view (else another class in view); drawn per (seed, frame index).
4. Soft probabilities: peak ``0.95 - 0.3 s`` (lower near predicted boundaries, never under 0.5) on
   the noisy label; 50 % of the rest on the label's confusable partners, 30 % on the true class when
   the label is wrong, the remainder uniform; then a temperature (``T > 1`` flattens). Pixels whose
   GT is ignore get a uniform distribution. The argmax is always the noisy label.

``s`` comes from the requested 2D mIoU through ``STRENGTH_TABLE``, measured once on synthetic
views (``fit_strength_table``; its docstring names the data); held-out views land within about
+-3 points for targets 50..80. Everything is seeded by (seed, frame index).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from gnesf_ros.classes import IGNORE, ClassTable
from gnesf_ros.errors import DataError, ModelError
from gnesf_ros.segmentation.base import SegmenterBase, stack_per_frame

log = logging.getLogger(__name__)

# Plausible confusions of indoor 2D segmenters (symmetric; weight = relative likelihood).
CONFUSABLE: tuple[tuple[str, str, float], ...] = (
    ("table", "desk", 3.0), ("cabinet", "otherfurniture", 2.0), ("curtain", "window", 2.0),
    ("door", "wall", 2.0), ("sofa", "chair", 2.0), ("bookshelf", "cabinet", 2.0),
    ("counter", "cabinet", 2.0), ("picture", "wall", 2.0), ("window", "wall", 1.0),
    ("curtain", "shower curtain", 1.0), ("bed", "sofa", 1.0), ("chair", "otherfurniture", 1.0),
    ("table", "otherfurniture", 1.0), ("desk", "otherfurniture", 1.0), ("sink", "counter", 1.0),
    ("refrigerator", "cabinet", 1.0), ("refrigerator", "door", 1.0), ("bookshelf", "otherfurniture", 1.0),
    ("bathtub", "shower curtain", 1.0), ("toilet", "sink", 0.5), ("floor", "wall", 0.2),
)

# Surfaces, not objects: never relabelled as a whole (a wall is not mistaken for one big door).
STRUCTURE_CLASSES = ("wall", "floor")

# 2D mIoU (percent, argmax vs GT) measured at noise strengths s on synthetic views; see fit_strength_table.
# Targets below 40.7 are clamped to s = 1.
STRENGTH_TABLE: tuple[tuple[float, float], ...] = (
    (0.0, 100.0), (0.05, 91.5), (0.1, 86.3), (0.2, 78.1), (0.3, 68.7), (0.4, 63.3),
    (0.6, 55.1), (0.8, 47.5), (1.0, 40.7),
)

P_OBJECT = 0.25  # probability (at s = 1) that an object region takes a partner's label
BOUNDARY_PX = 8.0  # boundary displacement amplitude (px at 240 px height, s = 1)
SMALL_OBJECT_RADIUS_PX = 25.0  # objects smaller than this (equivalent radius) get less displacement
FLICKER_AREA = 0.15  # image fraction (s = 1) of the per-view flicker blobs
_REF_HEIGHT = 240.0  # spatial noise parameters are in pixels at this image height
_GOLDEN, _GOLDEN2 = 0.6180339887, 0.7548776662  # low-discrepancy steps (golden ratios) for stratified draws
_WORLD_CELL_M = 1.0  # objects whose region centroids share a cell share their confusion draw


def strength_for_miou(target_miou: float, table: Sequence[tuple[float, float]] = STRENGTH_TABLE) -> float:
    """Invert the monotone s -> mIoU table (linear interpolation); clamps to [0, 1]."""
    s, m = np.array(table, np.float64).T
    lo, hi = float(m.min()), float(m.max())
    if not lo <= target_miou <= hi:
        log.warning("oracle mIoU %.1f outside the calibrated range [%.1f, %.1f]; clamping", target_miou, lo, hi)
    return float(np.interp(np.clip(target_miou, lo, hi), m[::-1], s[::-1]))


def confusion_matrix_for(table: ClassTable) -> np.ndarray:
    """C x C row-normalised partner weights from CONFUSABLE (rows without partners stay zero)."""
    index = {n: i for i, n in enumerate(table.names)}
    w = np.zeros((table.num_classes, table.num_classes), np.float32)
    for a, b, weight in CONFUSABLE:
        if a in index and b in index:
            w[index[a], index[b]] += weight
            w[index[b], index[a]] += weight
    total = w.sum(1, keepdims=True)
    return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth noise, roughly unit variance, varying over ~1/cells of the image height."""
    h, w = shape
    ch, cw = max(cells, 2), max(int(round(cells * w / h)), 2)
    coarse = rng.standard_normal((ch + 2, cw + 2)).astype(np.float32)
    big = cv2.resize(coarse, (w * (cw + 2) // cw, h * (ch + 2) // ch), interpolation=cv2.INTER_CUBIC)
    oy, ox = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
    return big[oy:oy + h, ox:ox + w]


class NoisyOracleSegmenter(SegmenterBase):
    """Ground truth + calibrated, seeded noise (module docstring); expected 2D mIoU ``target_miou`` (percent)."""

    def __init__(self, target_miou: float = 65.0, seed: int = 0, temperature: float = 1.0,
                 class_table: ClassTable | None = None, strength: float | None = None, threads: int = 1):
        super().__init__(class_table)
        if not 0.0 < target_miou <= 100.0:
            raise ModelError(f"oracle target mIoU must be in (0, 100] percent, got {target_miou}")
        if temperature <= 0:
            raise ModelError(f"oracle temperature must be > 0, got {temperature}")
        self.target_miou = float(target_miou)
        self.seed = int(seed)
        self.temperature = float(temperature)
        self.strength = strength_for_miou(target_miou) if strength is None else float(np.clip(strength, 0, 1))
        self.partners = confusion_matrix_for(self.class_table)
        # frames are independent (each seeds its own noise), so a window's frames run in parallel:
        # OpenCV and numpy's large array operations release the GIL (1.6x with 2 threads)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="oracle") if threads > 1 else None
        self._partners32 = self.partners.astype(np.float32)
        self._has_partner = self.partners.sum(1) > 0

    def predict(self, images: np.ndarray) -> np.ndarray:
        raise ModelError("the noisy oracle segments ground-truth labels, not pixels: call "
                         "segment_frames(oracle, frames) with frames that carry .labels")

    def predict_frames(self, frames) -> np.ndarray:
        def one(f):
            if f.labels is None:
                raise DataError(f"oracle segmenter: frame {f.index} has no ground-truth labels "
                                "(use a scene with label images, or another segmenter backend)")
            return self.predict_labels(f.labels, f.index, depth=f.depth, K=f.K, T_world_cam=f.T_world_cam)

        return stack_per_frame(frames, one, self._pool)

    def predict_labels(self, labels: np.ndarray, frame_index: int = 0, depth: np.ndarray | None = None,
                       K: np.ndarray | None = None, T_world_cam: np.ndarray | None = None) -> np.ndarray:
        """GT labels HxW (class index, 255 ignore) -> HxWxC float32 noisy probabilities.

        depth (HxW metres), K and T_world_cam (camera-to-world) are optional: with them, object
        confusions are keyed to world position and so agree across views.
        """
        gt = np.asarray(labels)
        if gt.ndim != 2 or not np.issubdtype(gt.dtype, np.integer):
            raise DataError(f"oracle: labels must be an HxW integer class-index image, got {gt.dtype} {gt.shape}")
        c = self.num_classes
        gt = gt.astype(np.int64)
        valid = (gt >= 0) & (gt < c)
        gt = np.where(valid, gt, IGNORE)
        rng = np.random.default_rng([self.seed, int(frame_index) & 0x7FFFFFFF, 1])
        regions, radius = self._regions(gt)
        world = self._world_points(gt.shape, depth, K, T_world_cam)
        noisy = self._confuse_objects(gt, regions, rng, world, int(frame_index))
        noisy = self._move_boundaries(noisy, radius, rng)
        noisy = self._flicker(noisy, rng)
        return self._soften(noisy, gt, valid, rng)

    def noisy_labels(self, labels: np.ndarray, frame_index: int = 0, **kwargs) -> np.ndarray:
        """argmax of ``predict_labels`` as uint8 (255 where the GT is ignored)."""
        probs = self.predict_labels(labels, frame_index, **kwargs)
        lab = probs.argmax(-1).astype(np.uint8)
        gt = np.asarray(labels).astype(np.int64)
        lab[(gt < 0) | (gt >= self.num_classes)] = IGNORE
        return lab

    # -- noise stages ---------------------------------------------------------------------------
    @staticmethod
    def _world_points(shape, depth, K, T_world_cam) -> np.ndarray | None:
        if depth is None or K is None or T_world_cam is None or np.shape(depth) != tuple(shape):
            return None
        h, w = shape
        z = np.asarray(depth, np.float64)
        u, v = np.meshgrid(np.arange(w), np.arange(h))
        K = np.asarray(K, np.float64)
        cam = np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], -1)
        world = cam @ np.asarray(T_world_cam, np.float64)[:3, :3].T + np.asarray(T_world_cam)[:3, 3]
        world[~(np.isfinite(z) & (z > 0))] = np.nan
        return world

    @staticmethod
    def _regions(gt) -> tuple[list, np.ndarray]:
        """Connected regions per class [(class, component image, stats)] and each pixel's region
        radius sqrt(area / pi) in pixels (0 on ignore)."""
        regions, radius = [], np.zeros(gt.shape, np.float32)
        for cls in np.unique(gt[gt != IGNORE]):
            _, comp, stats, _ = cv2.connectedComponentsWithStats((gt == cls).astype(np.uint8), connectivity=4)
            r = np.sqrt(stats[:, cv2.CC_STAT_AREA] / np.pi).astype(np.float32)
            r[0] = 0.0
            radius += r[comp]
            regions.append((int(cls), comp, stats))
        return regions, radius

    def _confuse_objects(self, gt, regions, rng, world, frame_index: int) -> np.ndarray:
        out = gt.copy()
        p_obj = P_OBJECT * self.strength
        if p_obj <= 0:
            return out
        min_area = 0.002 * gt.size
        class_offset = np.random.default_rng([self.seed, 3]).random(self.num_classes)
        in_view = np.zeros(self.num_classes, np.float32)
        in_view[[cls for cls, _, _ in regions]] = 1.0
        for cls, comp, stats in regions:
            partners = self.partners[cls] * in_view
            if partners.sum() == 0 or self.class_table.names[cls] in STRUCTURE_CLASSES:
                continue
            partners = partners / partners.sum()
            for k in range(1, len(stats)):
                if stats[k, cv2.CC_STAT_AREA] < min_area:
                    continue
                region = comp == k
                key = self._region_key(region, world)
                if key is None:  # stratified over frames: each class is confused in ~p_obj of the views
                    u, pick = (class_offset[cls] + frame_index * _GOLDEN + k * _GOLDEN2) % 1.0, rng
                else:  # keyed to the world cell: the same object is confused alike from every view
                    pick = np.random.default_rng([self.seed, 2, cls, *key])
                    u = pick.random()
                if u < p_obj:
                    out[region] = pick.choice(len(partners), p=partners)
        return out

    @staticmethod
    def _region_key(region, world) -> list[int] | None:
        if world is None:
            return None
        pts = world[region]
        pts = pts[np.isfinite(pts).all(1)]
        if len(pts) < 10:
            return None
        cell = np.floor(pts.mean(0) / _WORLD_CELL_M).astype(np.int64)
        return [int(v) + (1 << 20) for v in cell]

    def _move_boundaries(self, lab, radius, rng) -> np.ndarray:
        h, w = lab.shape
        scale = h / _REF_HEIGHT
        amp = BOUNDARY_PX * self.strength * scale
        if amp < 0.5:
            return lab
        # small objects move less: real segmenters' boundary errors grow with object size
        amp_map = amp * np.clip(radius / (SMALL_OBJECT_RADIUS_PX * scale), 0.25, 1.0)
        dx = _smooth_field(rng, (h, w), 12) * amp_map
        dy = _smooth_field(rng, (h, w), 12) * amp_map
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        moved = cv2.remap(lab.astype(np.uint8), gx + dx, gy + dy, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        return moved.astype(np.int64)

    def _flicker(self, lab, rng) -> np.ndarray:
        frac = FLICKER_AREA * self.strength
        if frac <= 0:
            return lab
        field = _smooth_field(rng, lab.shape, 6)
        blob = field > np.quantile(field, 1.0 - frac)
        c = self.num_classes
        present = np.zeros(c, bool)
        present[np.unique(lab[lab < c])] = True
        # inside the blobs each class turns into one draw of its partners seen in this view, else of
        # any other class in view (a segmenter mostly confuses things with what is in the picture)
        swap = np.full(256, IGNORE, np.int64)
        for k in range(c):
            w = self.partners[k] * present
            if w.sum() == 0:
                w = present & (np.arange(c) != k)
            swap[k] = rng.choice(c, p=w / w.sum()) if w.sum() > 0 else k
        return np.where(blob, swap[lab.clip(0, 255)], lab)

    def _soften(self, noisy, gt, valid, rng) -> np.ndarray:
        h, w = noisy.shape
        c = self.num_classes
        pred = np.where(noisy == IGNORE, gt, noisy)
        pred = np.where(pred == IGNORE, 0, pred)
        edges = np.zeros((h, w), bool)
        edges[:, 1:] |= pred[:, 1:] != pred[:, :-1]
        edges[1:, :] |= pred[1:, :] != pred[:-1, :]
        dist = cv2.distanceTransform((~edges).astype(np.uint8), cv2.DIST_L2, 3) * (_REF_HEIGHT / h)
        peak = (0.95 - 0.3 * self.strength) - 0.25 * np.exp(-dist / 3.0) + 0.05 * _smooth_field(rng, (h, w), 8)
        peak = np.clip(peak, 0.5, 0.98).astype(np.float32)[..., None]
        rest = 1.0 - peak
        flat = pred.reshape(-1)
        # float32 throughout, one H x W x C buffer written in place (this runs on every keyframe)
        probs = self._partners32[flat].reshape(h, w, c)
        has_partner = self._has_partner[pred][..., None]
        wrong = (pred != gt) & valid
        to_partner = np.where(has_partner, np.float32(0.5), np.float32(0.0)) * rest
        to_truth = np.where(wrong[..., None], np.float32(0.3), np.float32(0.0)) * rest
        probs *= to_partner
        probs += (rest - to_partner - to_truth) / np.float32(c)
        flat_probs = probs.reshape(-1, c)  # a view: the two scatters below write into probs
        pix = np.arange(h * w)
        flat_probs[pix, flat] += peak.reshape(-1)
        flat_probs[pix, np.where(valid, gt, 0).reshape(-1)] += to_truth.reshape(-1)
        if self.temperature != 1.0:
            probs **= np.float32(1.0 / self.temperature)
        probs[~valid] = 1.0
        probs /= probs.sum(-1, keepdims=True)
        return probs


def measure_miou(oracle: NoisyOracleSegmenter, label_images: Iterable[np.ndarray]) -> float:
    """2D mIoU (percent) of the oracle's argmax against the label images (frame index = position)."""
    from gnesf_ros.eval.metrics import ConfusionAccumulator

    acc = ConfusionAccumulator(oracle.num_classes)
    for i, gt in enumerate(label_images):
        acc.add(gt, oracle.predict_labels(gt, i).argmax(-1))
    miou = acc.results()["miou"]
    if miou is None:
        raise DataError("measure_miou: the label images contain no valid class pixels")
    return 100.0 * miou


def fit_strength_table(label_images: Sequence[np.ndarray], strengths: Sequence[float] = tuple(np.linspace(0, 1, 11)),
                       seed: int = 0) -> list[tuple[float, float]]:
    """Measure mIoU at each strength on ``label_images`` -> [(s, miou)] for STRENGTH_TABLE.

    STRENGTH_TABLE was fitted with 48 views (240x320, every other of 12 views per scene of train
    seeds 0-7, ``segmentation.train.render_views``), without depth (stratified draws).
    """
    return [(float(s), round(measure_miou(NoisyOracleSegmenter(seed=seed, strength=s), label_images), 1))
            for s in strengths]
