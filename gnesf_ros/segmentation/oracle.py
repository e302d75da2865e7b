"""Noisy-oracle segmenter: ground-truth labels corrupted the way real 2D segmenters err.

For controlled experiments (how much does multi-view fusion recover from 2D errors of a known
size?). The noise model, applied to a GT label image (class indices, 255 = ignore), with a
strength ``s`` in [0, 1] (constants below). Like a real segmenter's, its errors depend on the view:

0. View factors, each in [0, 1] (0 easy, 1 hard): distance (GT depth ramped over ``DEPTH_RAMP_M``,
   1 -> 4 m); grazing angle between the viewing ray and the surface normal (normals from finite
   differences of the back-projected depth, each from the side with the smaller depth step; ramped
   over ``ANGLE_RAMP_DEG``, 30 -> 80 deg); border (pixels within ``BORDER_BAND_PX`` of the image edge,
   linear; for a whole region: truncated = its connected region touches the image border); small
   apparent size (a region's equivalent radius sqrt(area / pi) over ``SMALL_REGION_RADIUS_PX``, 1 at
   10 px down to 0 at 40 px). Lengths in px are at 240 px image height, scaled with the image. Without
   depth or K (``predict_labels`` on plain label images) distance and angle take the constants
   ``DEPTH_FACTOR_FALLBACK`` / ``ANGLE_FACTOR_FALLBACK`` (their typical values on synthetic views), as do
   pixels without valid depth; border and size need only the labels. ``FACTOR_WEIGHTS`` (depth 0.35,
   angle 0.15, border 0.25, small 0.25) combine them: a region's difficulty uses all four (mean depth
   and angle factors over the region, truncation, smallness), a pixel's the first three (renormalised).
1. Whole-object confusion: each connected region of an object class is relabelled, as a whole, to
   a plausible partner (``CONFUSABLE``: table/desk, cabinet/otherfurniture, curtain/window,
   door/wall, sofa/chair, bookshelf/cabinet, counter/cabinet, picture/wall, ...) visible in the same
   view, with probability ``P_OBJECT * s * gain`` where the gain rises linearly with the region's
   difficulty over ``OBJECT_GAIN`` (0.2 for a near, head-on, centred, large region to 2.2 for a far,
   grazing, truncated, small one). Walls and floors are surfaces and keep their label. Partners must
   be in view so the oracle never invents classes absent from the image: that keeps its mIoU
   independent of how many frames are evaluated. With depth and a pose the uniform draw compared
   with that per-view probability is keyed to the region's world position (1 m cells, one draw per
   cell and class), so an object is confused alike from views of similar difficulty, and whenever a
   near, centred view confuses it the harder views do too (as a real network does); without them
   the draws are stratified over frame indices.
2. Boundary erosion/dilation: labels are resampled through a smooth random displacement field of
   amplitude ``BOUNDARY_PX * s`` (px at 240 px image height, scaled with the image, independent of
   depth; smaller for objects under ``SMALL_OBJECT_RADIUS_PX``), so boundaries move raggedly into one
   neighbour or the other.
3. View-dependent flicker: smooth blobs covering ``FLICKER_AREA * s`` of the image turn each class
   into a partner in view (else another class in view); drawn per (seed, frame index). The blobs
   are where smooth noise + ``FLICKER_BIAS`` x pixel difficulty is highest, so they gather on far,
   grazing surfaces and at the image border.
4. Soft probabilities: peak ``0.95 - 0.3 s`` (lower near predicted boundaries and by up to
   ``PEAK_DROP`` on difficult pixels, never under 0.5) on the noisy label; 50 % of the rest on the
   label's confusable partners, 30 % on the true class when the label is wrong, the remainder
   uniform; then a temperature (``T > 1`` flattens). Pixels whose GT is ignore get a uniform
   distribution. The argmax is always the noisy label.

``s`` comes from the requested 2D mIoU through ``STRENGTH_TABLE``, measured once on synthetic
views with depth and poses (``fit_strength_table``; its docstring names the data). Held-out views
land within a few points for targets 50..80; the spread between small sets of views is larger than
before the view factors, since whole objects are confused alike across views (see
``benchmarks/oracle_calibration.py`` to compare with a trained Mask2Former). Everything is seeded by
(seed, frame index).
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

# 2D mIoU (percent, argmax vs GT) measured at noise strengths s on synthetic views with depth and
# poses; see fit_strength_table. Targets below 43.4 are clamped to s = 1.
STRENGTH_TABLE: tuple[tuple[float, float], ...] = (
    (0.0, 100.0), (0.05, 96.8), (0.1, 90.4), (0.2, 81.8), (0.3, 73.9), (0.4, 67.3), (0.5, 61.6),
    (0.6, 56.8), (0.8, 49.1), (1.0, 43.4),
)

P_OBJECT = 0.25  # probability (at s = 1, view gain 1) that an object region takes a partner's label
BOUNDARY_PX = 8.0  # boundary displacement amplitude (px at 240 px height, s = 1)
SMALL_OBJECT_RADIUS_PX = 25.0  # objects smaller than this (equivalent radius) get less displacement
FLICKER_AREA = 0.25  # image fraction (s = 1) of the per-view flicker blobs
_REF_HEIGHT = 240.0  # spatial noise parameters are in pixels at this image height
_GOLDEN, _GOLDEN2 = 0.6180339887, 0.7548776662  # low-discrepancy steps (golden ratios) for stratified draws
_WORLD_CELL_M = 1.0  # objects whose region centroids share a cell share their confusion draw

# View factors, each in [0, 1] (0 = easy, 1 = hard); see the module docstring.
DEPTH_RAMP_M = (1.0, 4.0)  # distance: 0 at or under 1 m, 1 at or beyond 4 m (linear)
ANGLE_RAMP_DEG = (30.0, 80.0)  # grazing angle between viewing ray and surface normal
BORDER_BAND_PX = 24.0  # pixels this close to the image border (px at 240 px height) are "at the border"
SMALL_REGION_RADIUS_PX = (10.0, 40.0)  # region equivalent radius: 1 at or under 10 px, 0 from 40 px
# weights of distance, grazing angle, border (truncation) and smallness in the difficulty (sum 1)
FACTOR_WEIGHTS = {"depth": 0.35, "angle": 0.15, "border": 0.25, "small": 0.25}
# without depth / K / pose: distance and angle factors take their mean over synthetic views
DEPTH_FACTOR_FALLBACK, ANGLE_FACTOR_FALLBACK = 0.45, 0.2
OBJECT_GAIN = (0.2, 2.2)  # object confusion probability P_OBJECT * s * gain, gain linear in difficulty
FLICKER_BIAS = 4.0  # flicker blobs sit where smooth noise + FLICKER_BIAS * pixel difficulty is highest
PEAK_DROP = 0.1  # soft-probability peak lowered by this much at difficulty 1


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

        depth (HxW metres), K and T_world_cam (camera-to-world) are optional: with depth and K the
        distance and grazing-angle factors come from the view (else their fallback constants); with
        all three, object confusions are keyed to world position and so agree across views.
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
        f_depth, f_angle, f_border = self._view_maps(gt.shape, depth, K)
        difficulty = self._pixel_difficulty(f_depth, f_angle, f_border)
        world = self._world_points(gt.shape, depth, K, T_world_cam)
        noisy = self._confuse_objects(gt, regions, rng, world, int(frame_index), f_depth, f_angle)
        noisy = self._move_boundaries(noisy, radius, rng)
        noisy = self._flicker(noisy, rng, difficulty)
        return self._soften(noisy, gt, valid, rng, difficulty)

    def noisy_labels(self, labels: np.ndarray, frame_index: int = 0, **kwargs) -> np.ndarray:
        """argmax of ``predict_labels`` as uint8 (255 where the GT is ignored)."""
        probs = self.predict_labels(labels, frame_index, **kwargs)
        lab = probs.argmax(-1).astype(np.uint8)
        gt = np.asarray(labels).astype(np.int64)
        lab[(gt < 0) | (gt >= self.num_classes)] = IGNORE
        return lab

    def difficulty(self, labels: np.ndarray, depth: np.ndarray | None = None,
                   K: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The per-pixel view factors (HxW float32 in [0, 1]: depth, angle, border, small) the noise uses."""
        gt = np.asarray(labels).astype(np.int64)
        gt = np.where((gt >= 0) & (gt < self.num_classes), gt, IGNORE)
        regions, _ = self._regions(gt)
        f_depth, f_angle, f_border = self._view_maps(gt.shape, depth, K)
        return {"depth": f_depth, "angle": f_angle, "border": f_border, "small": self._small_map(gt.shape, regions)}

    # -- view factors ---------------------------------------------------------------------------
    @staticmethod
    def _view_maps(shape, depth, K) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distance, grazing-angle and border factors per pixel (HxW float32 in [0, 1]); the first two
        take their fallback constants without depth and K (and on pixels without valid depth)."""
        h, w = shape
        ys, xs = np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32)
        to_border = np.minimum(np.minimum(ys, h - 1 - ys)[:, None], np.minimum(xs, w - 1 - xs)[None, :])
        f_border = np.clip(1.0 - to_border / (BORDER_BAND_PX * h / _REF_HEIGHT), 0.0, 1.0).astype(np.float32)
        if depth is None or K is None or np.shape(depth) != tuple(shape):
            return (np.full(shape, DEPTH_FACTOR_FALLBACK, np.float32),
                    np.full(shape, ANGLE_FACTOR_FALLBACK, np.float32), f_border)
        z = np.asarray(depth, np.float32)
        ok = np.isfinite(z) & (z > 0)
        z0, z1 = DEPTH_RAMP_M
        f_depth = np.where(ok, np.clip((z - z0) / (z1 - z0), 0.0, 1.0), DEPTH_FACTOR_FALLBACK).astype(np.float32)
        K = np.asarray(K, np.float32)
        zn = np.where(ok, z, np.nan)
        pts = np.stack([(xs[None, :] - K[0, 2]) * zn / K[0, 0], (ys[:, None] - K[1, 2]) * zn / K[1, 1], zn], -1)
        # surface tangents by finite differences of the back-projected points, each from the side with
        # the smaller depth step (so an occlusion edge does not tilt the surface in front of it)
        tangents = []
        for axis in (1, 0):
            d = np.diff(pts, axis=axis)
            first = [slice(None)] * 3
            first[axis] = slice(0, 1)
            last = [slice(None)] * 3
            last[axis] = slice(-1, None)
            fwd = np.concatenate([d, d[tuple(last)]], axis)
            bwd = np.concatenate([d[tuple(first)], d], axis)
            jf = np.nan_to_num(np.abs(fwd[..., 2]), nan=np.inf)
            jb = np.nan_to_num(np.abs(bwd[..., 2]), nan=np.inf)
            tangents.append(np.where((jf <= jb)[..., None], fwd, bwd))
        n = np.cross(tangents[0], tangents[1])
        cos = np.abs((n * pts).sum(-1)) / (np.linalg.norm(n, axis=-1) * np.linalg.norm(pts, axis=-1) + 1e-12)
        angle = np.degrees(np.arccos(np.clip(cos, 0.0, 1.0)))
        a0, a1 = ANGLE_RAMP_DEG
        f_angle = np.where(np.isfinite(angle), np.clip((angle - a0) / (a1 - a0), 0.0, 1.0), ANGLE_FACTOR_FALLBACK)
        return f_depth, f_angle.astype(np.float32), f_border

    @staticmethod
    def _pixel_difficulty(f_depth, f_angle, f_border) -> np.ndarray:
        """Per-pixel difficulty in [0, 1]: FACTOR_WEIGHTS mean of the distance, angle and border factors
        (smallness acts on whole regions only, in the object confusion)."""
        w = FACTOR_WEIGHTS
        total = w["depth"] + w["angle"] + w["border"]
        return ((w["depth"] * f_depth + w["angle"] * f_angle + w["border"] * f_border) / total).astype(np.float32)

    @staticmethod
    def _small_factor(area, h: int) -> np.ndarray:
        r = np.sqrt(np.asarray(area, np.float32) / np.pi) * (_REF_HEIGHT / h)
        r0, r1 = SMALL_REGION_RADIUS_PX
        return np.clip((r1 - r) / (r1 - r0), 0.0, 1.0).astype(np.float32)

    def _small_map(self, shape, regions) -> np.ndarray:
        """Per-pixel smallness factor of the pixel's connected region (0 on ignore)."""
        small = np.zeros(shape, np.float32)
        for _, comp, stats in regions:
            f = self._small_factor(stats[:, cv2.CC_STAT_AREA], shape[0])
            f[0] = 0.0
            small += f[comp]
        return small

    @staticmethod
    def _touches_border(stats_row, shape) -> bool:
        x, y, w, h = (int(stats_row[k]) for k in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH,
                                                     cv2.CC_STAT_HEIGHT))
        return x == 0 or y == 0 or x + w == shape[1] or y + h == shape[0]

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

    def region_gain(self, depth_factor: float, angle_factor: float, truncated: bool, area: float, h: int) -> float:
        """Multiplier of P_OBJECT * s for one region from its mean distance / angle factors, whether it
        touches the image border and its pixel area (image height h)."""
        w = FACTOR_WEIGHTS
        v = (w["depth"] * depth_factor + w["angle"] * angle_factor + w["border"] * float(truncated)
             + w["small"] * float(self._small_factor(area, h)))
        return OBJECT_GAIN[0] + (OBJECT_GAIN[1] - OBJECT_GAIN[0]) * v

    def _confuse_objects(self, gt, regions, rng, world, frame_index: int, f_depth, f_angle) -> np.ndarray:
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
            area = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
            mean_depth = np.bincount(comp.ravel(), f_depth.ravel(), len(stats)) / np.maximum(area, 1)
            mean_angle = np.bincount(comp.ravel(), f_angle.ravel(), len(stats)) / np.maximum(area, 1)
            for k in range(1, len(stats)):
                if area[k] < min_area:
                    continue
                region = comp == k
                # per-view threshold: far, grazing, truncated and small regions are confused more often
                p_view = min(1.0, p_obj * self.region_gain(mean_depth[k], mean_angle[k],
                                                           self._touches_border(stats[k], gt.shape),
                                                           area[k], gt.shape[0]))
                key = self._region_key(region, world)
                if key is None:  # stratified over frames: each class is confused in ~p_view of the views
                    u, pick = (class_offset[cls] + frame_index * _GOLDEN + k * _GOLDEN2) % 1.0, rng
                else:  # one uniform per world cell: an object is confused alike from views of similar difficulty
                    pick = np.random.default_rng([self.seed, 2, cls, *key])
                    u = pick.random()
                if u < p_view:
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

    def _flicker(self, lab, rng, difficulty) -> np.ndarray:
        frac = FLICKER_AREA * self.strength
        if frac <= 0:
            return lab
        # blobs of fixed total area, placed where smooth noise + bias x pixel difficulty is highest
        field = _smooth_field(rng, lab.shape, 6) + FLICKER_BIAS * difficulty
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

    def _soften(self, noisy, gt, valid, rng, difficulty) -> np.ndarray:
        h, w = noisy.shape
        c = self.num_classes
        pred = np.where(noisy == IGNORE, gt, noisy)
        pred = np.where(pred == IGNORE, 0, pred)
        edges = np.zeros((h, w), bool)
        edges[:, 1:] |= pred[:, 1:] != pred[:, :-1]
        edges[1:, :] |= pred[1:, :] != pred[:-1, :]
        dist = cv2.distanceTransform((~edges).astype(np.uint8), cv2.DIST_L2, 3) * (_REF_HEIGHT / h)
        peak = ((0.95 - 0.3 * self.strength) - 0.25 * np.exp(-dist / 3.0) + 0.05 * _smooth_field(rng, (h, w), 8)
                - PEAK_DROP * difficulty)
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


def _views(items) -> Iterable[tuple[np.ndarray, dict]]:
    """Label images or Frames -> (labels, depth/K/pose keyword arguments)."""
    for item in items:
        if hasattr(item, "labels"):
            yield item.labels, {"depth": item.depth, "K": item.K, "T_world_cam": item.T_world_cam}
        else:
            yield item, {}


def measure_miou(oracle: NoisyOracleSegmenter, label_images: Iterable) -> float:
    """2D mIoU (percent) of the oracle's argmax against the label images (frame index = position).

    Items may also be Frames (``.labels`` plus ``.depth``, ``.K``, ``.T_world_cam``): then the view
    factors and world-keyed draws are used, as in ``predict_frames``.
    """
    from gnesf_ros.eval.metrics import ConfusionAccumulator

    acc = ConfusionAccumulator(oracle.num_classes)
    for i, (gt, kw) in enumerate(_views(label_images)):
        acc.add(gt, oracle.predict_labels(gt, i, **kw).argmax(-1))
    miou = acc.results()["miou"]
    if miou is None:
        raise DataError("measure_miou: the label images contain no valid class pixels")
    return 100.0 * miou


def fit_strength_table(label_images: Sequence, strengths: Sequence[float] = tuple(np.linspace(0, 1, 11)),
                       seed: int | Sequence[int] = 0) -> list[tuple[float, float]]:
    """Measure mIoU at each strength on ``label_images`` (or Frames) -> [(s, miou)] for STRENGTH_TABLE;
    ``seed`` may list several oracle seeds (the mIoU is then their mean).

    STRENGTH_TABLE was fitted with 256 views as Frames (240x320, depth and poses: world-keyed draws and
    all view factors), 2 views per scene (``segmentation.train.render_views``) of train seeds 0-63 and
    val seeds 1000-1063, mean over oracle seeds 0 and 1, at strengths 0, 0.05, 0.1, 0.2, ..., 0.6, 0.8, 1.
    """
    seeds = [seed] if np.isscalar(seed) else list(seed)
    return [(float(s), round(float(np.mean([measure_miou(NoisyOracleSegmenter(seed=k, strength=s), label_images)
                                             for k in seeds])), 1)) for s in strengths]
