"""RGB-only (MVS) vs RGB-D mapping on rooms from an independent generator (not gnesf_ros.data.synth_*).

The project's synthetic scenes trained its networks; this benchmark renders rooms from a generator
written separately (numpy only, analytic ray casting), so its seeds are unseen by construction:

- room: 3-6 m x 3-6 m, 2.4-2.8 m high; floor, ceiling, 4 walls (skirting, posters labelled picture);
  4-8 furniture boxes (table, desk, cabinet, bookshelf, bed, sofa, chair, other furniture), yaw-rotated,
  standing on the floor;
- textures: band-limited procedural noise (random-phase gratings, periods 1-30 cm, antialiased by
  fading out gratings shorter than 2 pixel footprints), plank or tile floors, wood grain, fabric,
  plaster walls; Lambertian shading from 1-2 point lights + ambient, gamma 2.2, Gaussian sensor
  noise sigma 2 (per-frame seed), no vignette;
- camera: a 30 Hz walk along an ellipse 0.6-1.2 m from the walls at 1.2-1.6 m height, 0.2-0.4 m/s,
  looking at the room centre with yaw/pitch wobble; OpenCV optical frame (x right, y down, z forward),
  poses camera-to-world, 320x240 with fx = fy = 277;
- GT: surface points at 2 cm spacing with NYU40 labels (ceiling 0 = unannotated), culled to what a
  keyframe observes (benchmarks/ablation.py::cull_to_observed, the NeuralRecon/Atlas protocol).

Runs through ``gnesf_ros.pipeline.Mapper`` with the noisy oracle segmenter (65 % 2D mIoU):
``rgb`` + ``model.geometry = mvs`` (depth predicted from RGB; frames carry no depth) and ``rgbd``
(rendered depth; the reference). Metrics: mesh Prec/Recall/F-score at 5 cm and 3D mIoU
(gnesf_ros.eval.metrics.evaluate_meshes), busy mapping time vs the stream's 30 Hz duration.

    .venv/bin/python benchmarks/other_generator.py [--seeds 0 1 2] [--frames 200]
        [--mvs-weights models/mvs_depth.pt] [--out benchmarks/results/other_generator.json]
Prints a markdown table; writes the JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("other_generator")

SIZE = (240, 320)  # (height, width) pixels
FOCAL = 277.0  # pixels, fx = fy at 320x240
FPS = 30.0
ORACLE_MIOU = 65.0
GT_SPACING_M = 0.02
IGNORE = 255
# class indices of config/scannet20.yaml
WALL, FLOOR, CABINET, BED, CHAIR, SOFA, TABLE, BOOKSHELF, PICTURE, DESK, OTHER = 0, 1, 2, 3, 4, 5, 6, 9, 10, 12, 19

# furniture kinds: class index, (length lo, hi), (depth lo, hi), (height lo, hi) in metres, against a wall?, material
FURNITURE: dict[str, tuple] = {
    "table": (TABLE, (0.8, 1.6), (0.6, 0.9), (0.70, 0.78), False, "wood"),
    "desk": (DESK, (1.0, 1.6), (0.55, 0.75), (0.72, 0.76), True, "wood"),
    "cabinet": (CABINET, (0.6, 1.4), (0.4, 0.6), (0.8, 2.0), True, "wood"),
    "bookshelf": (BOOKSHELF, (0.7, 1.2), (0.28, 0.4), (1.5, 2.0), True, "wood"),
    "bed": (BED, (1.9, 2.1), (0.9, 1.6), (0.45, 0.6), True, "fabric"),
    "sofa": (SOFA, (1.6, 2.2), (0.8, 0.95), (0.7, 0.9), True, "fabric"),
    "chair": (CHAIR, (0.42, 0.5), (0.42, 0.5), (0.8, 0.95), False, "fabric"),
    "other": (OTHER, (0.4, 0.8), (0.4, 0.6), (0.4, 1.0), False, "wood"),
}


# ----------------------------------------------------------------------------------------- textures
@dataclass
class Gratings:
    """Sum of random-phase sinusoidal gratings in surface coordinates (metres): a band-limited field.
    freq: Nx2 cycles/metre; phase: N radians; amp: N (linear albedo units, signed per channel via tint)."""

    freq: np.ndarray
    phase: np.ndarray
    amp: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator, n: int, period_m: tuple[float, float], contrast: float,
               angle: float | None = None) -> "Gratings":
        """``n`` gratings, periods log-uniform in ``period_m``, rms amplitude ~``contrast``; with ``angle``
        (radians in the s-t plane) the stripes run along that direction (wood grain), else isotropic."""
        period = np.exp(rng.uniform(np.log(period_m[0]), np.log(period_m[1]), n))
        theta = rng.uniform(0, np.pi, n) if angle is None else angle + np.pi / 2 + rng.normal(0, 0.08, n)
        f = np.stack([np.cos(theta), np.sin(theta)], 1) / period[:, None]
        amp = period ** 0.5  # pinkish: longer periods carry more energy
        amp *= contrast * np.sqrt(2.0 / n) / np.sqrt(np.mean(amp ** 2))
        return cls(f, rng.uniform(0, 2 * np.pi, n), amp)

    def __call__(self, s: np.ndarray, t: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """Field value at surface coordinates s, t (metres); gratings with a period under two
        ``footprint``s (metres per pixel on the surface) fade out (antialiasing)."""
        out = np.zeros_like(s)
        period = 1.0 / np.linalg.norm(self.freq, axis=1)
        for (fx, fy), ph, a, p in zip(self.freq, self.phase, self.amp, period):
            w = np.clip(p / footprint - 2.0, 0.0, 1.0)  # 0 below 2 px per period, 1 above 3
            if not np.any(w):
                continue
            out += a * w * np.sin(2 * np.pi * (fx * s + fy * t) + ph)
        return out


@dataclass
class Material:
    """Procedural albedo (linear RGB) on a surface parameterised by (s, t) in metres.
    kind: paint | planks | tiles | wood | fabric | poster | ceiling."""

    kind: str
    base: np.ndarray  # 3, linear albedo
    fine: Gratings
    coarse: Gratings
    tint: np.ndarray  # 3, per-channel weights of the texture field
    params: dict = field(default_factory=dict)

    def albedo(self, s: np.ndarray, t: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """Nx3 linear albedo at coordinates s, t (metres) seen at ``footprint`` metres per pixel."""
        v = self.fine(s, t, footprint) + self.coarse(s, t, footprint)
        col = self.base[None, :] * (1.0 + v[:, None] * self.tint[None, :])
        p = self.params
        if self.kind in ("planks", "tiles"):
            if self.kind == "planks":
                w, ln = p["width"], p["length"]
                row = np.floor(t / w)
                off = (row * 0.37 % 1.0) * ln
                col_i = np.floor((s + off) / ln)
                cell = (row * 7919 + col_i * 104729).astype(np.int64)
                du = np.minimum(np.mod(t, w), w - np.mod(t, w))  # distance to the long seam (m)
                dv = np.minimum(np.mod(s + off, ln), ln - np.mod(s + off, ln))
            else:
                w = p["size"]
                cell = (np.floor(s / w) * 7919 + np.floor(t / w) * 104729).astype(np.int64)
                du = np.minimum(np.mod(t, w), w - np.mod(t, w))
                dv = np.minimum(np.mod(s, w), w - np.mod(s, w))
            h = _hash01(cell)
            col = col * (1.0 + p["cell_var"] * (h[:, None] - 0.5) * np.array([1.0, 0.9, 0.8]))
            seam = p["seam_m"]
            # seam coverage of the pixel, antialiased: a line of width `seam` seen at `footprint` m/px
            cover = np.clip((seam / 2 - np.minimum(du, dv)) / footprint + 0.5, 0, 1) * np.clip(seam / footprint, 0, 1)
            col = col * (1.0 - p["seam_dark"] * cover[:, None])
        return np.clip(col, 0.005, 0.95)


def _hash01(k: np.ndarray) -> np.ndarray:
    """Integer -> pseudo-random float in [0, 1) (splitmix-like)."""
    x = (k.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    x ^= x >> np.uint64(31)
    x = (x * np.uint64(0xBF58476D1CE4E5B9)) & np.uint64(0xFFFFFFFFFFFFFFFF)
    x ^= x >> np.uint64(29)
    return (x >> np.uint64(11)).astype(np.float64) / float(2 ** 53)


def srgb_to_linear(c) -> np.ndarray:
    return np.asarray(c, np.float64) ** 2.2


def make_material(rng: np.random.Generator, kind: str) -> Material:
    """A random material of ``kind`` (see Material)."""
    if kind == "paint":
        base = srgb_to_linear(rng.uniform([0.7, 0.68, 0.6], [0.95, 0.93, 0.9]))
        return Material(kind, base, Gratings.random(rng, 10, (0.01, 0.05), 0.035),
                        Gratings.random(rng, 8, (0.08, 0.30), 0.05), np.ones(3))
    if kind == "ceiling":
        base = srgb_to_linear(rng.uniform(0.85, 0.95, 3))
        return Material(kind, base, Gratings.random(rng, 8, (0.01, 0.05), 0.03),
                        Gratings.random(rng, 6, (0.08, 0.30), 0.03), np.ones(3))
    if kind == "planks":
        base = srgb_to_linear(rng.uniform([0.45, 0.3, 0.18], [0.7, 0.5, 0.32]))
        return Material(kind, base, Gratings.random(rng, 14, (0.01, 0.06), 0.18, angle=0.0),
                        Gratings.random(rng, 8, (0.06, 0.30), 0.12), np.array([1.0, 1.1, 1.25]),
                        {"width": rng.uniform(0.12, 0.2), "length": rng.uniform(0.9, 1.8), "cell_var": 0.35,
                         "seam_m": 0.004, "seam_dark": 0.6})
    if kind == "tiles":
        base = srgb_to_linear(rng.uniform([0.5, 0.48, 0.45], [0.85, 0.82, 0.78]))
        return Material(kind, base, Gratings.random(rng, 12, (0.01, 0.05), 0.10),
                        Gratings.random(rng, 8, (0.06, 0.30), 0.08), np.ones(3),
                        {"size": rng.uniform(0.3, 0.6), "cell_var": 0.15, "seam_m": 0.006, "seam_dark": 0.55})
    if kind == "wood":
        base = srgb_to_linear(rng.uniform([0.35, 0.22, 0.12], [0.8, 0.6, 0.42]))
        return Material(kind, base, Gratings.random(rng, 14, (0.01, 0.05), 0.16, angle=rng.uniform(0, 0.1)),
                        Gratings.random(rng, 8, (0.06, 0.30), 0.10), np.array([1.0, 1.1, 1.25]))
    if kind == "fabric":
        base = srgb_to_linear(rng.uniform(0.15, 0.75, 3))
        return Material(kind, base, Gratings.random(rng, 14, (0.01, 0.04), 0.14),
                        Gratings.random(rng, 8, (0.05, 0.30), 0.10), np.ones(3))
    if kind == "poster":
        base = srgb_to_linear(rng.uniform(0.2, 0.9, 3))
        return Material(kind, base, Gratings.random(rng, 16, (0.02, 0.3), 0.45),
                        Gratings.random(rng, 6, (0.1, 0.3), 0.3), rng.uniform(0.3, 1.5, 3))
    raise ValueError(f"unknown material kind {kind!r}")


# -------------------------------------------------------------------------------------------- scene
@dataclass
class Box:
    """A yaw-rotated box standing on the floor. centre: (x, y) metres world; half: (hx, hy) metres in
    its own frame; height: metres; yaw: radians about world z; label: class index."""

    centre: np.ndarray
    half: np.ndarray
    height: float
    yaw: float
    label: int
    material: Material
    kind: str = ""

    def to_local(self, p: np.ndarray) -> np.ndarray:
        """World points/directions Nx3 -> box frame (origin at the floor centre, axes along its sides);
        for directions pass the vectors with the translation already removed."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.stack([c * p[:, 0] + s * p[:, 1], -s * p[:, 0] + c * p[:, 1], p[:, 2]], 1)

    def to_world_dir(self, d: np.ndarray) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.stack([c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1], d[:, 2]], 1)

    def footprint_corners(self) -> np.ndarray:
        """4x2 world xy corners (metres)."""
        c = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * self.half
        R = np.array([[np.cos(self.yaw), -np.sin(self.yaw)], [np.sin(self.yaw), np.cos(self.yaw)]])
        return c @ R.T + self.centre


@dataclass
class Poster:
    """A flat poster on wall ``wall`` (0: y=0, 1: x=W, 2: y=D, 3: x=0): s range and z range (metres)."""

    wall: int
    s0: float
    s1: float
    z0: float
    z1: float
    material: Material


@dataclass
class Room:
    """Room [0, W] x [0, D] x [0, H] metres, world z up. walls 0..3: y=0, x=W, y=D, x=0."""

    size: np.ndarray  # W, D, H
    boxes: list[Box]
    posters: list[Poster]
    wall_mat: list[Material]
    floor_mat: Material
    ceil_mat: Material
    skirting: Material
    skirting_h: float
    lights: np.ndarray  # Lx3 world positions (metres)
    light_power: np.ndarray  # L
    ambient: float


def wall_coords(wall: int, p: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Position along wall ``wall`` (metres, running counter-clockwise seen from above) of world points Nx3."""
    W, D = size[0], size[1]
    return [p[:, 0], p[:, 1], W - p[:, 0], D - p[:, 1]][wall]


def sample_furniture(rng: np.random.Generator, size: np.ndarray, path_xy: np.ndarray, cam_z_min: float,
                     n: int) -> list[Box]:
    """``n`` non-overlapping boxes inside the room; tall ones (above the camera's lowest height - 0.3 m)
    keep 0.35 m from the camera path. Wall-standing kinds go against a random wall."""
    W, D = size[0], size[1]
    kinds = list(FURNITURE)
    boxes: list[Box] = []
    tries = 0
    while len(boxes) < n and tries < 2000:
        tries += 1
        kind = kinds[rng.integers(len(kinds))] if boxes else "table"
        label, (l0, l1), (d0, d1), (h0, h1), on_wall, mat = FURNITURE[kind]
        length, depth, height = rng.uniform(l0, l1), rng.uniform(d0, d1), rng.uniform(h0, h1)
        if on_wall:
            wall = int(rng.integers(4))
            along = W if wall in (0, 2) else D
            if length + 0.1 > along:
                continue
            u = rng.uniform(length / 2 + 0.05, along - length / 2 - 0.05)
            g = 0.02  # gap to the wall
            yaw = wall * np.pi / 2
            centre = [np.array([u, depth / 2 + g]), np.array([W - depth / 2 - g, u]),
                      np.array([W - u, D - depth / 2 - g]), np.array([depth / 2 + g, D - u])][wall]
        else:
            yaw = float(rng.uniform(0, np.pi))
            r = np.hypot(length, depth) / 2
            if 2 * r + 0.2 > min(W, D):
                continue
            centre = rng.uniform([r + 0.1, r + 0.1], [W - r - 0.1, D - r - 0.1])
        box = Box(centre, np.array([length / 2, depth / 2]), float(height), float(yaw), label,
                  make_material(rng, mat), kind)
        if _overlaps(box, boxes, 0.1):
            continue
        if height > cam_z_min - 0.3 and _dist_to_box(path_xy, box) < 0.35:
            continue
        boxes.append(box)
    return boxes


def _dist_to_box(xy: np.ndarray, box: Box) -> float:
    """Smallest horizontal distance (metres) from points Nx2 to the box footprint (0 inside)."""
    p = np.c_[xy - box.centre, np.zeros(len(xy))]
    loc = box.to_local(p)[:, :2]
    q = np.maximum(np.abs(loc) - box.half, 0)
    return float(np.linalg.norm(q, axis=1).min())


def _overlaps(box: Box, others: list[Box], margin: float) -> bool:
    """Footprints closer than ``margin`` metres (separating-axis test on the expanded rectangles)."""
    for o in others:
        a, b = box.footprint_corners(), o.footprint_corners()
        axes = [np.array([np.cos(box.yaw), np.sin(box.yaw)]), np.array([-np.sin(box.yaw), np.cos(box.yaw)]),
                np.array([np.cos(o.yaw), np.sin(o.yaw)]), np.array([-np.sin(o.yaw), np.cos(o.yaw)])]
        if all(not ((a @ ax).max() + margin < (b @ ax).min() or (b @ ax).max() + margin < (a @ ax).min())
               for ax in axes):
            return True
    return False


def build_room(seed: int, frames: int) -> tuple[Room, np.ndarray]:
    """Room and camera path (Nx4x4 camera-to-world, OpenCV optical frame) of generator seed ``seed``."""
    rng = np.random.default_rng([seed, 0x07E4])
    size = np.array([rng.uniform(3, 6), rng.uniform(3, 6), rng.uniform(2.4, 2.8)])
    poses = camera_path(np.random.default_rng([seed, 1]), size, frames)
    path_xy = poses[:, :2, 3]
    boxes = sample_furniture(rng, size, path_xy, float(poses[:, 2, 3].min()), int(rng.integers(4, 9)))
    posters = []
    for wall in range(4):
        along = size[0] if wall in (0, 2) else size[1]
        for _ in range(int(rng.integers(0, 3))):
            w, h = rng.uniform(0.4, 1.0), rng.uniform(0.4, 0.9)
            s0, z0 = rng.uniform(0.2, along - w - 0.2), rng.uniform(1.0, size[2] - h - 0.25)
            if all(p.wall != wall or s0 > p.s1 + 0.1 or s0 + w < p.s0 - 0.1 for p in posters):
                posters.append(Poster(wall, s0, s0 + w, z0, z0 + h, make_material(rng, "poster")))
    paint = make_material(rng, "paint")
    wall_mat = [paint if rng.random() < 0.75 else make_material(rng, "paint") for _ in range(4)]
    skirting = make_material(rng, "wood")
    skirting.base = srgb_to_linear(rng.uniform(0.75, 0.92, 3)) if rng.random() < 0.6 else skirting.base
    n_lights = int(rng.integers(1, 3))
    lights = np.c_[rng.uniform(0.25, 0.75, (n_lights, 2)) * size[:2], np.full(n_lights, size[2] - 0.15)]
    room = Room(size, boxes, posters, wall_mat, make_material(rng, "planks" if rng.random() < 0.6 else "tiles"),
                make_material(rng, "ceiling"), skirting, float(rng.uniform(0.06, 0.1)), lights,
                rng.uniform(2.5, 4.0, n_lights) / n_lights, float(rng.uniform(0.25, 0.4)))
    return room, poses


def camera_path(rng: np.random.Generator, size: np.ndarray, frames: int) -> np.ndarray:
    """Smooth 30 Hz walk on an ellipse 0.6-1.2 m from the walls (height 1.2-1.6 m, 0.2-0.4 m/s), looking
    at the room centre with yaw/pitch wobble. -> frames x 4 x 4 camera-to-world (OpenCV optical frame)."""
    W, D, H = size
    margin = rng.uniform(0.6, 1.2)
    a, b = max(W / 2 - margin, 0.25), max(D / 2 - margin, 0.25)
    speed = rng.uniform(0.2, 0.4)
    theta0 = rng.uniform(0, 2 * np.pi)
    direction = rng.choice([-1.0, 1.0])
    z0 = rng.uniform(1.2, 1.6)
    # arc length -> angle by integrating the ellipse's speed on a fine grid
    grid = np.linspace(0, 2 * np.pi, 4097)
    ds = np.hypot(a * np.sin(grid), b * np.cos(grid))
    arc = np.concatenate([[0], np.cumsum((ds[1:] + ds[:-1]) / 2 * np.diff(grid))])
    t = np.arange(frames) / FPS
    s = (np.interp(theta0, grid, arc) + direction * speed * t) % arc[-1]
    theta = np.interp(s, arc, grid)
    centre = np.array([W / 2, D / 2])
    pos = np.c_[centre + np.c_[a * np.cos(theta), b * np.sin(theta)],
                z0 + 0.05 * np.sin(2 * np.pi * 0.15 * t + rng.uniform(0, 6))]
    f_yaw, f_pitch = rng.uniform(0.1, 0.3, 2)
    yaw_w = np.deg2rad(rng.uniform(8, 15)) * np.sin(2 * np.pi * f_yaw * t + rng.uniform(0, 6))
    pitch_w = np.deg2rad(rng.uniform(3, 7)) * np.sin(2 * np.pi * f_pitch * t + rng.uniform(0, 6))
    poses = np.zeros((frames, 4, 4))
    for i in range(frames):
        to = np.r_[centre, 1.0] - pos[i]
        yaw = np.arctan2(to[1], to[0]) + yaw_w[i]
        pitch = np.arctan2(to[2], np.hypot(to[0], to[1])) - np.deg2rad(8) + pitch_w[i]
        poses[i] = look_pose(pos[i], yaw, pitch)
    return poses


def look_pose(position: np.ndarray, yaw: float, pitch: float) -> np.ndarray:
    """4x4 camera-to-world of a camera at ``position`` (metres) whose optical axis has heading ``yaw``
    (radians from world +x, counter-clockwise) and elevation ``pitch`` (radians, up positive); no roll."""
    f = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
    right = np.cross(f, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(f, right)
    T = np.eye(4)
    T[:3, :3] = np.stack([right, down, f], 1)
    T[:3, 3] = position
    return T


def intrinsics(size: tuple[int, int] = SIZE) -> np.ndarray:
    """3x3 pinhole K: fx = fy = 277 px at 320x240 (scaled with the width), principal point at the centre."""
    h, w = size
    f = FOCAL * w / 320.0
    return np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1.0]])


# ------------------------------------------------------------------------------------------ raycast
@dataclass
class Hit:
    """Per-ray intersection: t (ray parameter; with camera-space directions of unit z it is z-depth in
    metres, inf = miss), normal Nx3 (world, facing the ray origin), surface id (-1 floor, -2 ceiling,
    -3..-6 walls 0..3, k >= 0 box k), local hit point Nx3 (box frame for boxes, world otherwise)."""

    t: np.ndarray
    normal: np.ndarray
    surface: np.ndarray
    local: np.ndarray


def raycast(room: Room, origin: np.ndarray, dirs: np.ndarray) -> Hit:
    """Nearest surface along rays ``origin + t * dirs`` (origin 3, dirs Nx3 world; metres) from inside the room."""
    n = len(dirs)
    lo, hi = np.zeros(3), room.size
    with np.errstate(divide="ignore", invalid="ignore"):
        t_axes = np.where(dirs > 0, (hi - origin) / dirs, np.where(dirs < 0, (lo - origin) / dirs, np.inf))
    axis = np.argmin(t_axes, 1)
    t = t_axes[np.arange(n), axis]
    sign = dirs[np.arange(n), axis] > 0  # exits through the high face of that axis
    # surface ids: z low floor -1, z high ceiling -2; y=0 wall0 -3, x=W wall1 -4, y=D wall2 -5, x=0 wall3 -6
    surf = np.select([(axis == 2) & ~sign, (axis == 2) & sign, (axis == 1) & ~sign, (axis == 0) & sign,
                      (axis == 1) & sign, (axis == 0) & ~sign], [-1, -2, -3, -4, -5, -6]).astype(np.int64)
    normal = np.zeros((n, 3))
    normal[np.arange(n), axis] = np.where(sign, -1.0, 1.0)
    local = origin + t[:, None] * dirs
    for k, box in enumerate(room.boxes):
        o = box.to_local((origin - np.r_[box.centre, 0.0])[None])[0]
        d = box.to_local(dirs)
        blo = np.array([-box.half[0], -box.half[1], 0.0])
        bhi = np.array([box.half[0], box.half[1], box.height])
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (blo - o) / d, (bhi - o) / d
        t1 = np.where(np.isnan(t1), -np.inf, t1)
        t2 = np.where(np.isnan(t2), np.inf, t2)
        tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
        enter_axis = np.argmax(tmin, 1)
        t_in = tmin[np.arange(n), enter_axis]
        t_out = tmax.min(1)
        hit = (t_in <= t_out) & (t_in > 1e-6) & (t_in < t)
        if not hit.any():
            continue
        t[hit] = t_in[hit]
        surf[hit] = k
        nl = np.zeros((hit.sum(), 3))
        ax = enter_axis[hit]
        nl[np.arange(len(ax)), ax] = -np.sign(d[hit, ax])
        normal[hit] = box.to_world_dir(nl)
        local[hit] = o + t_in[hit, None] * d[hit]
    return Hit(t, normal, surf, local)


def surface_labels_albedo(room: Room, surf: np.ndarray, world: np.ndarray, local: np.ndarray,
                          footprint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class index (uint8, 255 = ceiling) and linear albedo Nx3 of points on surfaces ``surf`` (see Hit):
    ``world`` Nx3 and ``local`` Nx3 (box frame for boxes) positions, ``footprint`` metres per pixel."""
    n = len(surf)
    label = np.full(n, IGNORE, np.uint8)
    alb = np.zeros((n, 3))
    m = surf == -1
    label[m] = FLOOR
    alb[m] = room.floor_mat.albedo(world[m, 0], world[m, 1], footprint[m])
    m = surf == -2
    alb[m] = room.ceil_mat.albedo(world[m, 0], world[m, 1], footprint[m])
    for wall in range(4):
        m = surf == -3 - wall
        if not m.any():
            continue
        label[m] = WALL
        s, z = wall_coords(wall, world[m], room.size), world[m, 2]
        a = room.wall_mat[wall].albedo(s, z, footprint[m])
        sk = z < room.skirting_h
        if sk.any():
            a[sk] = room.skirting.albedo(s[sk] * 0.3, z[sk], footprint[m][sk])
        idx = np.flatnonzero(m)
        for p in room.posters:
            if p.wall != wall:
                continue
            inside = (s >= p.s0) & (s <= p.s1) & (z >= p.z0) & (z <= p.z1)
            if inside.any():
                a[inside] = p.material.albedo(s[inside], z[inside], footprint[m][inside])
                label[idx[inside]] = PICTURE
        alb[m] = a
    for k, box in enumerate(room.boxes):
        m = surf == k
        if not m.any():
            continue
        label[m] = box.label
        lp = local[m]
        top = lp[:, 2] > box.height - 1e-4
        side_x = np.abs(np.abs(lp[:, 0]) - box.half[0]) < 1e-4
        s = np.where(top, lp[:, 0], np.where(side_x, lp[:, 1], lp[:, 0]))
        t = np.where(top, lp[:, 1], lp[:, 2]) + 3.1 * side_x  # faces get different pattern offsets
        alb[m] = box.material.albedo(s, t, footprint[m])
    return label, alb


def shade(room: Room, world: np.ndarray, normal: np.ndarray, albedo: np.ndarray) -> np.ndarray:
    """Linear radiance Nx3: albedo x (ambient + sum of point lights' Lambertian terms with a softened
    inverse-square falloff). No shadows."""
    irr = np.full(len(world), room.ambient)
    for pos, power in zip(room.lights, room.light_power):
        v = pos - world
        d2 = np.einsum("ij,ij->i", v, v)
        cos = np.clip(np.einsum("ij,ij->i", v, normal) / np.sqrt(d2), 0, None)
        irr += power * cos / (1.0 + d2)
    return albedo * irr[:, None]


def render(room: Room, T_world_cam: np.ndarray, K: np.ndarray, size: tuple[int, int] = SIZE,
           noise_seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> rgb HxWx3 uint8, depth HxW float32 (z-depth, metres), labels HxW uint8 class indices (255: ceiling)
    of camera ``T_world_cam`` (4x4 camera-to-world, OpenCV optical frame). Pixel (u, v) is the ray through
    u, v in K's convention (integer coordinates at pixel centres). Sensor noise sigma 2 (8-bit) seeded by
    ``noise_seed`` (None: no noise)."""
    h, w = size
    v, u = np.mgrid[0:h, 0:w]
    pix = np.stack([u.ravel(), v.ravel(), np.ones(h * w)], 1).astype(np.float64)
    d_cam = pix @ np.linalg.inv(K).T  # z component 1: ray parameter = z-depth
    R, o = T_world_cam[:3, :3], T_world_cam[:3, 3]
    d_world = d_cam @ R.T
    hit = raycast(room, o, d_world)
    world = o + hit.t[:, None] * d_world
    # footprint: metres per pixel on the surface = z / f / |cos(incidence)|
    ray_len = np.linalg.norm(d_world, axis=1)
    cos_i = np.abs(np.einsum("ij,ij->i", d_world, hit.normal)) / ray_len
    footprint = hit.t * ray_len / K[0, 0] / np.clip(cos_i, 0.15, 1.0)
    labels, alb = surface_labels_albedo(room, hit.surface, world, hit.local, footprint)
    lin = shade(room, world, hit.normal, alb)
    img = 255.0 * np.clip(lin, 0, 1) ** (1 / 2.2)
    if noise_seed is not None:
        img += np.random.default_rng(noise_seed).normal(0, 2.0, img.shape)
    rgb = np.clip(np.round(img), 0, 255).astype(np.uint8).reshape(h, w, 3)
    return rgb, hit.t.reshape(h, w).astype(np.float32), labels.reshape(h, w)


# ------------------------------------------------------------------------------------------------ GT
def _grid(a0: float, a1: float, b0: float, b1: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    a = np.arange(a0 + step / 2, a1, step)
    b = np.arange(b0 + step / 2, b1, step)
    A, B = np.meshgrid(a, b, indexing="ij")
    return A.ravel(), B.ravel()


def surface_points(room: Room, spacing: float = GT_SPACING_M) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points on every surface at ``spacing`` metres -> (Nx3 world metres, N surface ids as in Hit,
    Nx3 local positions: box frame for boxes, world otherwise). Box bottoms are omitted (on the floor)."""
    W, D, H = room.size
    pts, ids, loc = [], [], []
    x, y = _grid(0, W, 0, D, spacing)
    for z, sid in ((0.0, -1), (H, -2)):
        p = np.c_[x, y, np.full_like(x, z)]
        pts.append(p), ids.append(np.full(len(p), sid)), loc.append(p)
    for wall in range(4):
        along = W if wall in (0, 2) else D
        s, z = _grid(0, along, 0, H, spacing)
        p = [np.c_[s, np.zeros_like(s), z], np.c_[np.full_like(s, W), s, z],
             np.c_[W - s, np.full_like(s, D), z], np.c_[np.zeros_like(s), D - s, z]][wall]
        pts.append(p), ids.append(np.full(len(p), -3 - wall)), loc.append(p)
    for k, box in enumerate(room.boxes):
        hx, hy, hz = box.half[0], box.half[1], box.height
        a, b = _grid(-hx, hx, -hy, hy, spacing)
        faces = [np.c_[a, b, np.full_like(a, hz)]]
        a, z = _grid(-hx, hx, 0, hz, spacing)
        faces += [np.c_[a, np.full_like(a, -hy), z], np.c_[a, np.full_like(a, hy), z]]
        b, z = _grid(-hy, hy, 0, hz, spacing)
        faces += [np.c_[np.full_like(b, -hx), b, z], np.c_[np.full_like(b, hx), b, z]]
        lp = np.vstack(faces)
        wp = box.to_world_dir(lp) + np.r_[box.centre, 0.0]
        pts.append(wp), ids.append(np.full(len(lp), k)), loc.append(lp)
    return np.vstack(pts), np.concatenate(ids), np.vstack(loc)


def gt_points(room: Room, table) -> "LabeledMesh":
    """All surface points (2 cm) as a LabeledMesh point set: NYU40 labels (ceiling 0), sRGB colours."""
    from gnesf_ros.data.ply import LabeledMesh

    p, ids, loc = surface_points(room)
    labels, alb = surface_labels_albedo(room, ids, p, loc, np.full(len(p), GT_SPACING_M))
    nyu = np.where(labels == IGNORE, 0, table.index_to_nyu40(labels)).astype(np.int32)
    colors = (255 * np.clip(alb, 0, 1) ** (1 / 2.2)).astype(np.uint8)
    return LabeledMesh(vertices=p.astype(np.float32), colors=colors, labels=nyu)


def cull_to_observed(mesh, poses: np.ndarray, K: np.ndarray, depths: list[np.ndarray], tol_m: float = 0.05):
    """The points some keyframe sees (in the image, in front, within ``tol_m`` metres of its depth map):
    the NeuralRecon/Atlas observed region. Same protocol as benchmarks/ablation.py::cull_to_observed."""
    from gnesf_ros.data.ply import LabeledMesh

    v = mesh.vertices.astype(np.float64)
    seen = np.zeros(len(v), bool)
    h, w = depths[0].shape
    for T, depth in zip(poses, depths):
        cam = (v - T[:3, 3]) @ T[:3, :3]
        z = cam[:, 2]
        uv = cam @ K.T
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.round(uv[:, 0] / z)
            r = np.round(uv[:, 1] / z)
        ok = (z > 0.1) & (u >= 0) & (u < w) & (r >= 0) & (r < h)
        d = np.zeros(len(v))
        d[ok] = depth[r[ok].astype(np.int64), u[ok].astype(np.int64)]
        seen |= ok & (d > 0) & (np.abs(d - z) < tol_m)
    return LabeledMesh(vertices=mesh.vertices[seen], colors=mesh.colors[seen], labels=mesh.labels[seen])


# ----------------------------------------------------------------------------------------- pipeline
def render_stream(seed: int, frames: int) -> dict:
    """Room ``seed``: poses, keyframe mask (KeyframeSelector as the Mapper), keyframe views, culled GT."""
    from gnesf_ros.classes import default_class_table
    from gnesf_ros.config import MapperConfig
    from gnesf_ros.geometry.keyframes import KeyframeSelector

    room, poses = build_room(seed, frames)
    K = intrinsics()
    sel = KeyframeSelector(MapperConfig().keyframe)
    key = np.array([sel.accept(T) for T in poses])
    views = {int(i): render(room, poses[i], K, SIZE, noise_seed=seed * 100003 + int(i)) for i in np.flatnonzero(key)}
    kf = sorted(views)
    gt = cull_to_observed(gt_points(room, default_class_table()), poses[kf], K, [views[i][1] for i in kf])
    return {"seed": seed, "room": room, "poses": poses, "key": key, "K": K, "views": views, "gt": gt}


def run_mapper(stream: dict, mode: str, oracle, mvs_weights: str | None, refine_steps: int | None = None) -> tuple:
    """Map the stream with Mapper ``mode`` (rgb: MVS geometry, frames without depth) -> (mesh, busy s)."""
    from gnesf_ros.config import MapperConfig
    from gnesf_ros.pipeline import Mapper
    from gnesf_ros.types import Frame

    cfg = MapperConfig(mode=mode)
    cfg.segmenter.backend = "oracle"
    if mode == "rgb":
        cfg.model.geometry = "mvs"
        cfg.model.mvs_weights = mvs_weights
        if refine_steps is not None:
            cfg.model.mvs_refine_steps = refine_steps
    mapper = Mapper(cfg, segmenter=oracle)
    mapper.warm_up()  # load and warm the networks outside the timed stream, as gnesf-map does
    blank = np.zeros(SIZE + (3,), np.uint8)
    t0 = time.perf_counter()
    for i, T in enumerate(stream["poses"]):
        if stream["key"][i]:
            rgb, depth, lab = stream["views"][i]
            mapper.add_frame(Frame(i / FPS, rgb, stream["K"], T, depth=depth if mode == "rgbd" else None,
                                   labels=lab, index=i))
        else:
            mapper.add_frame(Frame(i / FPS, blank, stream["K"], T, index=i))
    mapper.flush()
    busy = time.perf_counter() - t0
    return mapper.map.extract_mesh(), busy


def evaluate(args) -> dict:
    from tqdm import tqdm

    from gnesf_ros.classes import default_class_table
    from gnesf_ros.eval.metrics import evaluate_meshes
    from gnesf_ros.segmentation.oracle import NoisyOracleSegmenter

    table = default_class_table()
    rows, rooms = [], []
    modes = [m for m in ("rgb", "rgbd") if m in args.modes]
    bar = tqdm(total=len(args.seeds) * (1 + len(modes)), desc="other_generator")
    for seed in args.seeds:
        t0 = time.perf_counter()
        stream = render_stream(seed, args.frames)
        room = stream["room"]
        rooms.append({"seed": seed, "size_m": room.size.round(3).tolist(), "furniture": [b.kind for b in room.boxes],
                      "posters": len(room.posters), "lights": len(room.lights), "frames": args.frames,
                      "keyframes": int(stream["key"].sum()), "gt_points_observed": len(stream["gt"].vertices),
                      "render_s": time.perf_counter() - t0})
        log.info("room %d: %s", seed, rooms[-1])
        bar.update()
        for mode in modes:
            oracle = NoisyOracleSegmenter(ORACLE_MIOU, seed=0, class_table=table)
            mesh, busy = run_mapper(stream, mode, oracle, args.mvs_weights, args.refine_steps)
            ev = evaluate_meshes(mesh, stream["gt"], table)
            duration = args.frames / FPS
            rows.append({"seed": seed, "mode": "rgb (mvs)" if mode == "rgb" else "rgbd", **{
                k: ev["mesh"][k] for k in ("acc", "comp", "prec", "recall", "f_score")},
                "miou": ev["semantic"]["miou"], "busy_s": busy, "x_real_time": duration / busy,
                "mesh_vertices": len(mesh.vertices)})
            log.info("seed %d %s: %s", seed, mode, rows[-1])
            bar.update()
    bar.close()
    return {"machine": {"platform": platform.platform(), "python": sys.version.split()[0],
                        "cpu_count": os.cpu_count(), "processor": platform.processor()},
            "args": {k: v for k, v in vars(args).items()}, "oracle_miou": ORACLE_MIOU,
            "mvs_weights_mtime": (time.ctime(os.path.getmtime(args.mvs_weights))
                                  if os.path.isfile(args.mvs_weights) else None),
            "rooms": rooms, "rows": rows, "mean": mean_rows(rows)}


def mean_rows(rows: list[dict]) -> list[dict]:
    """Per mode, the mean of every numeric metric over rooms (None values skipped)."""
    out = []
    for mode in dict.fromkeys(r["mode"] for r in rows):
        sel = [r for r in rows if r["mode"] == mode]
        m = {"seed": "mean", "mode": mode}
        for k in ("acc", "comp", "prec", "recall", "f_score", "miou", "busy_s", "x_real_time"):
            vals = [r[k] for r in sel if r[k] is not None]
            m[k] = float(np.mean(vals)) if vals else None
        out.append(m)
    return out


def markdown(result: dict) -> str:
    def f(x, d=3):
        return "-" if x is None else f"{x:.{d}f}"

    lines = ["| room | mode | F@5cm | prec | recall | 3D mIoU | x real time |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"] + result["mean"]:
        lines.append(f"| {r['seed']} | {r['mode']} | {f(r['f_score'])} | {f(r['prec'])} | {f(r['recall'])} | "
                     f"{f(r['miou'])} | {f(r['x_real_time'], 2)} |")
    return "\n".join(lines)


def contact_sheet(seed: int, frames: int, path: Path, n: int = 4) -> None:
    """PNG of ``n`` keyframes of room ``seed``: rgb, depth, class colours (one row per view)."""
    import cv2

    from gnesf_ros.classes import default_class_table

    room, poses = build_room(seed, frames)
    K = intrinsics()
    table = default_class_table()
    rows = []
    for i in np.linspace(0, frames - 1, n).round().astype(int):
        rgb, depth, lab = render(room, poses[i], K, SIZE, noise_seed=int(i))
        d = cv2.applyColorMap((np.clip(depth / 6.0, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
        rows.append(np.hstack([rgb, d, table.colorize(lab)]))
    cv2.imwrite(str(path), np.vstack(rows)[..., ::-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of this generator")
    p.add_argument("--frames", type=int, default=200, help="30 Hz frames per room")
    p.add_argument("--mvs-weights", default="models/mvs_depth.pt", help="MVS depth network for rgb mode")
    p.add_argument("--modes", nargs="+", default=["rgb", "rgbd"], choices=["rgb", "rgbd"])
    p.add_argument("--refine-steps", type=int, default=None, help="model.mvs_refine_steps (default: the config's)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "other_generator.json"))
    p.add_argument("--contact-sheet", default=None, help="optional PNG of a few views of the first room")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if "rgb" in args.modes and not os.path.isfile(args.mvs_weights):
        log.warning("MVS weights %s not found (try data/mvs/mvs_depth.pt from a training run)", args.mvs_weights)
    if args.contact_sheet:
        contact_sheet(args.seeds[0], args.frames, Path(args.contact_sheet))
    result = evaluate(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    print(markdown(result))
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
