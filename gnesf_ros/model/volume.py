"""Fragment volume: placement from the camera frusta, back-projection of 2D features, mean/var pooling.

World frame = the map frame of the poses (no axis is assumed to be "up"); the voxel grid is
aligned with the world axes and with the global map grid: voxel ``c`` (int) has its centre at
``(c + 0.5) * voxel_size`` metres. Cameras: K N x 3 x 3 pixels at image size (H, W), poses
T_world_cam N x 4 x 4 (optical frame: x right, y down, z forward).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

NEAR_M = 0.05  # points closer than this to a camera are not projected into it


def frustum_points(K: np.ndarray, T_world_cam: np.ndarray, size: tuple[int, int], max_depth: float,
                   steps: int = 8) -> np.ndarray:
    """Samples filling each camera frustum up to ``max_depth`` m: (N*steps^3) x 3 world points."""
    h, w = size
    u = (np.arange(steps) + 0.5) / steps * w - 0.5
    v = (np.arange(steps) + 0.5) / steps * h - 0.5
    d = (np.arange(steps) + 0.5) / steps * max_depth
    uu, vv, dd = np.meshgrid(u, v, d, indexing="ij")
    pix = np.stack([uu.ravel(), vv.ravel(), np.ones(uu.size)], 0)
    pts = []
    for Ki, Ti in zip(K, T_world_cam):
        rays = np.linalg.inv(Ki) @ pix
        cam = rays * dd.ravel()[None]
        pts.append((Ti[:3, :3] @ cam + Ti[:3, 3:4]).T)
    return np.concatenate(pts, 0)


def place_volume(K: np.ndarray, T_world_cam: np.ndarray, size: tuple[int, int], max_depth: float,
                 voxel_size: float, dims: int, align_vox: int) -> np.ndarray:
    """Integer index (3,) of the fragment cube's min corner, in finest voxels.

    The cube (``dims`` voxels per edge) is centred on the centroid of the views' frusta (where the
    views overlap most), snapped to multiples of ``align_vox`` so coarse voxels nest in the global grid."""
    centre = frustum_points(K, T_world_cam, size, max_depth).mean(0)
    corner = centre / voxel_size - dims / 2.0
    return (np.round(corner / align_vox) * align_vox).astype(np.int64)


def grid_coords(dims: int, device=None) -> torch.Tensor:
    """All voxel indices of a dims^3 cube, x-major (matches ``tensor.view(dims, dims, dims)``): dims^3 x 3."""
    r = torch.arange(dims, device=device)
    return torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).view(-1, 3)


def project(points: torch.Tensor, K: torch.Tensor, T_world_cam: torch.Tensor):
    """World points P x 3 -> (uv N x P x 2 pixels, z N x P metres) in each of the N cameras."""
    T_cam_world = torch.linalg.inv(T_world_cam)
    cam = points[None] @ T_cam_world[:, :3, :3].transpose(1, 2) + T_cam_world[:, None, :3, 3]
    z = cam[..., 2]
    pix = cam @ K.transpose(1, 2)
    uv = pix[..., :2] / z.clamp(min=1e-6)[..., None]
    return uv, z


def image_grid(uv: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pixels uv N x P x 2 at (H, W) -> grid_sample coordinates N x P x 2 (align_corners=False; the
    image spans [-1, 1])."""
    h, w = size
    return torch.stack([(uv[..., 0] + 0.5) / w * 2 - 1, (uv[..., 1] + 0.5) / h * 2 - 1], -1)


def in_image(uv: torch.Tensor, z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N x P bool: in front of the camera (z > NEAR_M) and inside the H x W image."""
    return (z > NEAR_M) & (image_grid(uv, size).abs() <= 1).all(-1)


def sample_views(maps: torch.Tensor, uv: torch.Tensor, z: torch.Tensor, size: tuple[int, int]):
    """Bilinear samples of per-view maps at projected points.

    maps N x C x h x w (any resolution covering the H x W image); uv N x P x 2 pixels at (H, W);
    returns (values N x P x C, valid N x P bool: in front of the camera and inside the image)."""
    grid = image_grid(uv, size)
    valid = (z > NEAR_M) & (grid.abs() <= 1).all(-1)
    vals = F.grid_sample(maps, grid[:, None], mode="bilinear", padding_mode="border", align_corners=False)
    return vals[:, :, 0].transpose(1, 2), valid


def mean_var(values: torch.Tensor, valid: torch.Tensor, min_views: int = 2):
    """Mean and variance over the valid views.

    values N x P x C, valid N x P -> (mean P x C, var P x C, count P int); points seen by fewer than
    ``min_views`` views get zeros. The reductions run in the layout the values are stored in
    (``sample_views`` returns a transposed view of N x C x P; a concatenation is N x P x C):
    reducing across the other layout's strides is several times slower."""
    channels_last = values.is_contiguous()
    vt = values if channels_last else values.transpose(1, 2)  # N x P x C, or N x C x P
    w = valid.to(values.dtype)[..., None] if channels_last else valid.to(values.dtype)[:, None]
    count = w.sum(0)  # P x 1, or 1 x P
    inv = torch.where(count >= min_views, 1.0 / count.clamp(min=1), torch.zeros_like(count))
    s1, s2 = torch.zeros_like(vt[0]), torch.zeros_like(vt[0])
    for v_i, w_i in zip(vt, w):  # one view at a time: no N x P x C temporaries (3x faster than .sum(0))
        vw = v_i * w_i
        s1 += vw
        s2.addcmul_(vw, v_i)
    mean = s1 * inv
    var = (s2 * inv - mean * mean).clamp(min=0)
    if channels_last:
        return mean, var, count[:, 0].long()
    return mean.t(), var.t(), count[0].long()


def feature_volume(maps: torch.Tensor, points: torch.Tensor, K: torch.Tensor, T_world_cam: torch.Tensor,
                   size: tuple[int, int], min_views: int = 2):
    """B = [mean, var] of back-projected features: (B P x 2C, count P, per-view (values, valid, z))."""
    uv, z = project(points, K, T_world_cam)
    vals, valid = sample_views(maps, uv, z, size)
    mean, var, count = mean_var(vals, valid, min_views)
    return torch.cat([mean, var], 1), count, (vals, valid, z)
