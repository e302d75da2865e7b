"""Multi-view geometry on numpy arrays: back-projection and projection, source-view selection and
depth-map agreement (MVS fusion).

Conventions: metres; poses camera-to-world 4x4 (OpenCV optical frame); K 3x3 pixels; depth H x W z-depth
(0 = invalid).
"""
from __future__ import annotations

import numpy as np


def backproject(depth: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray,
                ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """World points (N x 3, metres) of pixels (ys, xs) at camera-frame depths ``depth`` (N, metres)."""
    z = np.asarray(depth, np.float64)
    pc = np.stack([(xs - K[0, 2]) / K[0, 0] * z, (ys - K[1, 2]) / K[1, 1] * z, z], -1)
    return pc @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]


def project(points_world: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (... x 2: x, y) and camera-frame depth (..., metres) of world points (... x 3)."""
    R, t = T_world_cam[:3, :3], T_world_cam[:3, 3]
    pc = (points_world - t) @ R  # R^T (p - t), row vectors
    z = pc[..., 2]
    zs = np.where(np.abs(z) > 1e-9, z, 1e-9)
    uv = np.stack([K[0, 0] * pc[..., 0] / zs + K[0, 2], K[1, 1] * pc[..., 1] / zs + K[1, 2]], -1)
    return uv, z


def pick_sources(T_ref, T_candidates, max_sources: int = 3, min_baseline_m: float = 0.05,
                 max_angle_deg: float = 60.0) -> list[int]:
    """Indices of the best source views for a reference pose among candidate poses (numpy 4 x 4 each):
    those with a baseline of at least ``min_baseline_m`` and optical axes within ``max_angle_deg``,
    preferring baselines near 0.25 m and similar view directions (DeepVideoMVS-style pose distance)."""
    scores = []
    for i, T in enumerate(T_candidates):
        base = float(np.linalg.norm(T[:3, 3] - T_ref[:3, 3]))
        cosang = float(np.clip(T[:3, 2] @ T_ref[:3, 2], -1, 1))
        ang = np.degrees(np.arccos(cosang))
        if base < min_baseline_m or ang > max_angle_deg:
            continue
        scores.append((abs(np.log(base / 0.25)) + ang / 30.0, i))
    return [i for _, i in sorted(scores)[:max_sources]]


def depth_agreement(depth: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray,
                    others: list[tuple[np.ndarray, np.ndarray, np.ndarray]], rel_tol: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Multi-view geometric consistency of a depth map (H x W m, 0 invalid) with other views' depth maps
    ``others`` [(depth_j, K_j, T_world_cam_j)]: each pixel's 3D point projected into view j lands in front
    of it, inside its image, on valid depth ("covered"), and its depth there is within ``rel_tol`` x depth
    of view j's ("agrees"). -> (agrees, covered), H x W bool each, any over the other views."""
    h, w = depth.shape
    ys, xs = np.nonzero(depth > 0)
    pts = backproject(depth[ys, xs], K, T_world_cam, ys, xs)  # P x 3 world
    agrees, covered = np.zeros(len(ys), bool), np.zeros(len(ys), bool)
    for d_j, K_j, T_j in others:
        hj, wj = d_j.shape
        uv, zj = project(pts, K_j, T_j)
        uj, vj = np.round(uv[:, 0]).astype(np.int64), np.round(uv[:, 1]).astype(np.int64)
        inside = (zj > 1e-3) & (uj >= 0) & (uj < wj) & (vj >= 0) & (vj < hj)
        dj = np.zeros_like(zj)
        dj[inside] = d_j[vj[inside], uj[inside]]
        seen = inside & (dj > 0)
        covered |= seen
        agrees |= seen & (np.abs(zj - dj) < rel_tol * zj)
    out_a, out_c = np.zeros((h, w), bool), np.zeros((h, w), bool)
    out_a[ys, xs], out_c[ys, xs] = agrees, covered
    return out_a, out_c
