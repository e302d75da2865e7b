"""Projective TSDF integration of a depth image (rgbd mode and the depth baselines).

Blocks within the truncation band around the measured surface are allocated; every voxel of
those blocks is projected into the image (nearest pixel, pixel centres at integer coordinates)
and updated when it lies in front of the measurement or at most one truncation distance
behind it (sdf >= -trunc), which is the set of voxels Kimera's rays visit inside allocated
blocks. The SDF is the projective distance along the optical axis (depth - z), clipped to
+-trunc, in metres.
"""
from __future__ import annotations

import numpy as np

from gnesf_ros.geometry.camera import pixel_rays
from gnesf_ros.mapping.blocks import unique_blocks


def valid_depth_mask(depth: np.ndarray, min_m: float, max_m: float) -> np.ndarray:
    return np.isfinite(depth) & (depth > min_m) & (depth < max_m)


def band_block_coords(depth: np.ndarray, valid: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray,
                      trunc_m: float, voxel_size: float, block_size: int, stride: int) -> np.ndarray:
    """Unique block coords (Mx3 int64) touched by the band [d - trunc, d + trunc] of every
    ``stride``-th valid pixel, sampled along the optical axis every voxel."""
    v, u = np.nonzero(valid[::stride, ::stride])
    v, u = v * stride, u * stride
    d = depth[v, u].astype(np.float64)
    offsets = np.arange(-trunc_m, trunc_m + 1e-9, voxel_size)
    z = d[:, None] + offsets[None, :]  # P x S (z-depths)
    z = np.maximum(z, 1e-3)
    rays = pixel_rays(K, depth.shape)[v, u]  # P x 3, z = 1
    pts = (rays[:, None, :] * z[:, :, None]).reshape(-1, 3)
    world = np.einsum("nj,ij->ni", pts, T_world_cam[:3, :3]) + T_world_cam[:3, 3]
    blocks = np.floor(world / (voxel_size * block_size)).astype(np.int64)
    return unique_blocks(blocks)


def project_voxels(centres: np.ndarray, depth: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray,
                   valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project voxel centres (Nx3 world, metres) into the depth image.

    Returns (hit N bool: in image with valid depth and z > 0, pixel N int64 flat index,
    sdf N float32 = depth - z in metres, untruncated)."""
    R, t = T_world_cam[:3, :3], T_world_cam[:3, 3]
    cam = np.einsum("nj,jk->nk", centres - t, R)  # R^T (p - t); einsum is much faster than @ here
    z = cam[:, 2]
    h, w = depth.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.rint(K[0, 0] * cam[:, 0] / z + K[0, 2])
        v = np.rint(K[1, 1] * cam[:, 1] / z + K[1, 2])
    inside = (z > 1e-6) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    pix = np.where(inside, v * w + u, 0).astype(np.int64)
    hit = inside & valid.reshape(-1)[pix]
    sdf = (depth.reshape(-1)[pix] - z).astype(np.float32)
    return hit, pix, sdf
