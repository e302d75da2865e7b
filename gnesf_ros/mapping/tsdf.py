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


def block_voxel_centres(blocks: np.ndarray, block_size: int, voxel_size: float, origin: np.ndarray) -> np.ndarray:
    """Centres of every voxel of ``blocks`` (Mx3 block coords; x-major local order, as BlockStore)
    relative to ``origin`` (world metres): (M * B^3) x 3 float32. The block corners are taken
    relative to the origin in float64 first, so float32 keeps sub-millimetre precision far from
    the world origin."""
    B = block_size
    local = np.stack(np.meshgrid(*[np.arange(B)] * 3, indexing="ij"), -1).reshape(-1, 3)
    corner = (blocks.astype(np.float64) * (B * voxel_size) - origin).astype(np.float32)
    offsets = ((local + 0.5) * voxel_size).astype(np.float32)
    return (corner[:, None, :] + offsets[None]).reshape(-1, 3)


def project_voxels(rel: np.ndarray, depth: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray,
                   valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project voxel centres into the depth image. rel: Nx3 float32 centres minus the camera
    position (metres, world axes; see ``block_voxel_centres``).

    Returns (hit N bool: in image with valid depth and z > 0, pixel N int64 flat index,
    sdf N float32 = depth - z in metres, untruncated)."""
    R = np.asarray(T_world_cam[:3, :3], np.float32)
    cam = rel @ R  # R^T (p - t) row-wise
    z = cam[:, 2]
    h, w = depth.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_z = 1.0 / z
        u = np.rint(cam[:, 0] * inv_z * np.float32(K[0, 0]) + np.float32(K[0, 2]))
        v = np.rint(cam[:, 1] * inv_z * np.float32(K[1, 1]) + np.float32(K[1, 2]))
    inside = (z > 1e-6) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    pix = np.where(inside, v * w + u, 0).astype(np.int64)
    hit = inside & valid.reshape(-1)[pix]
    sdf = depth.reshape(-1)[pix] - z
    return hit, pix, sdf
