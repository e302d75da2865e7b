"""Analytic test scene for the mapping tests: an axis-aligned box on a floor plane, seen by
pinhole cameras, with exact depth and class images by ray casting (independent of the map)."""
from __future__ import annotations

import numpy as np

from gnesf_ros.types import FragmentResult, Frame

BOX_MIN = np.array([-0.3, -0.25, 0.0])
BOX_MAX = np.array([0.3, 0.25, 0.5])
FLOOR_Z = 0.0
BOX_CLASS, TOP_CLASS, FLOOR_CLASS = 4, 6, 1  # side faces, top face, floor (class indices)


def intrinsics(size: tuple[int, int]) -> np.ndarray:
    h, w = size
    f = 0.9 * w
    return np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], np.float64)


def look_at(eye, target, up=(0, 0, 1)) -> np.ndarray:
    """Camera-to-world pose (optical frame: z forward, x right, y down) looking at target."""
    eye, target, up = (np.asarray(a, np.float64) for a in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T


def render_analytic(T: np.ndarray, K: np.ndarray, size: tuple[int, int]):
    """(depth HxW z-depth metres, 0 = no hit; labels HxW uint8 class, 255 = no hit)."""
    h, w = size
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    d = d_cam @ T[:3, :3].T
    o = T[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (BOX_MIN - o) / d
        t2 = (BOX_MAX - o) / d
    tmin = np.nanmax(np.minimum(t1, t2), 1)
    tmax = np.nanmin(np.maximum(t1, t2), 1)
    box_hit = (tmax >= tmin) & (tmin > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = (FLOOR_Z - o[2]) / d[:, 2]
    floor_hit = np.isfinite(t_floor) & (t_floor > 0)
    t = np.full(len(d), np.inf)
    lab = np.full(len(d), 255, np.uint8)
    t[floor_hit] = t_floor[floor_hit]
    lab[floor_hit] = FLOOR_CLASS
    closer = box_hit & (tmin <= t)
    t[closer] = tmin[closer]
    p = o + d * tmin[:, None]
    top = np.abs(p[:, 2] - BOX_MAX[2]) < 1e-6
    lab[closer] = np.where(top[closer], TOP_CLASS, BOX_CLASS)
    depth = np.where(np.isfinite(t), t, 0.0).astype(np.float32)  # t is z-depth (d has unit z)
    return depth.reshape(h, w), lab.reshape(h, w)


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    p = np.zeros(labels.shape + (num_classes,), np.float32)
    ok = labels < num_classes
    p[ok, labels[ok]] = 1.0
    return p


def orbit_frames(n: int, size: tuple[int, int], radius: float = 1.6, height: float = 1.1,
                 start_deg: float = 0.0, max_depth_m: float = 4.0) -> list[Frame]:
    K = intrinsics(size)
    frames = []
    for i in range(n):
        a = np.deg2rad(start_deg + 360.0 * i / n)
        T = look_at([radius * np.cos(a), radius * np.sin(a), height], [0, 0, 0.2])
        depth, lab = render_analytic(T, K, size)
        depth[depth > max_depth_m] = 0.0
        lab[depth == 0] = 255
        frames.append(Frame(stamp=i / 30, rgb=np.zeros(size + (3,), np.uint8), K=K, T_world_cam=T,
                            depth=depth, labels=lab, index=i))
    return frames


def box_sdf(p):
    """Exact signed distance (metres) to the box, negative inside."""
    c, h = (BOX_MIN + BOX_MAX) / 2, (BOX_MAX - BOX_MIN) / 2
    q = np.abs(p - c) - h
    return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0)


def box_fragment(split_z=0.25):
    """FragmentResult of the box SDF in the truncation band, two classes split at z = split_z."""
    lo = np.floor((BOX_MIN - 0.2) / 0.04).astype(int)
    hi = np.ceil((BOX_MAX + 0.2) / 0.04).astype(int)
    g = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
    centres = (g + 0.5) * 0.04
    d = box_sdf(centres)
    band = np.abs(d) < 3 * 0.04
    labels = np.where(centres[:, 2] >= split_z, TOP_CLASS, BOX_CLASS)[band]
    return FragmentResult(coords=g[band].astype(np.int32), sdf=d[band].astype(np.float32),
                          class_probs=one_hot(labels, 20), weight=np.ones(band.sum(), np.float32),
                          voxel_size=0.04)


def box_face_pixels(T, K, size, margin=0.04):
    """Pixels whose analytic ray hits a box face at least ``margin`` metres from the face's
    edges (marching cubes rounds sharp edges by up to about one voxel)."""
    depth, labels = render_analytic(T, K, size)
    h, w = size
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    p = T[:3, 3] + (d_cam * depth[..., None]) @ T[:3, :3].T
    q = np.sort((BOX_MAX - BOX_MIN) / 2 - np.abs(p - (BOX_MIN + BOX_MAX) / 2), -1)
    return np.isin(labels, [BOX_CLASS, TOP_CLASS]) & (q[..., 1] > margin)
