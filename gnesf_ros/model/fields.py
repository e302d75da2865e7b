"""Continuous look-ups into voxel predictions: a dense SDF grid and a sparse per-voxel value set.

Points are world metres P x 3; voxel ``c`` of size ``voxel_size`` has its centre at (c + 0.5) * voxel_size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from gnesf_ros.model.sparse_conv import VoxelHash

_CORNERS = torch.tensor([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=torch.long)


class SdfField:
    """Trilinear SDF (metres) on a dense D^3 grid (x-major) whose voxel 0 is global voxel ``origin_index``.

    Outside the grid the field reads ``outside`` (positive: free/unknown never occludes)."""

    def __init__(self, grid: torch.Tensor, origin_index: torch.Tensor, voxel_size: float, outside: float):
        self.grid = grid.view(1, 1, *grid.shape[-3:])
        self.origin_m = origin_index.to(grid.dtype) * voxel_size
        self.voxel_size = voxel_size
        self.dims = grid.shape[-1]
        self.outside = outside

    @classmethod
    def from_voxels(cls, coords: torch.Tensor, sdf: torch.Tensor, origin_index: torch.Tensor, dims: int,
                    voxel_size: float, trunc: float, background: torch.Tensor | None = None) -> "SdfField":
        """Dense D^3 field whose voxels ``coords`` (M x 3 global, inside the cube) read ``sdf`` (M metres,
        clamped to +-trunc); every other voxel reads ``background`` (D^3, x-major) or +trunc (free)."""
        grid = torch.full((dims ** 3,), trunc, dtype=sdf.dtype, device=sdf.device) if background is None \
            else background.reshape(-1).clone()
        local = coords - origin_index
        grid[(local[:, 0] * dims + local[:, 1]) * dims + local[:, 2]] = sdf.clamp(-trunc, trunc)
        return cls(grid.view(dims, dims, dims), origin_index, voxel_size, trunc)

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """points ... x 3 -> sdf ... (metres)."""
        shape = points.shape[:-1]
        idx = (points.reshape(-1, 3) - self.origin_m) / self.voxel_size - 0.5  # continuous voxel index
        g = idx / (self.dims - 1) * 2 - 1
        inside = (g.abs() <= 1).all(1)
        vals = F.grid_sample(self.grid, g.flip(1).view(1, 1, 1, -1, 3), mode="bilinear",
                             padding_mode="border", align_corners=True).view(-1)
        return torch.where(inside, vals, torch.full_like(vals, self.outside)).view(shape)


class SparseField:
    """Trilinear interpolation of per-voxel values (M x C) over a sparse voxel set (global coords M x 3).

    Missing corners get no weight; ``__call__(points P x 3) -> (values P x C, valid P)`` where valid
    means some corner exists. Differentiable w.r.t. the values."""

    def __init__(self, coords: torch.Tensor, values: torch.Tensor, voxel_size: float):
        self.hash = VoxelHash(coords)
        self.values = values
        self.voxel_size = voxel_size

    def __call__(self, points: torch.Tensor):
        idx = points / self.voxel_size - 0.5
        base = torch.floor(idx)
        frac = idx - base
        base = base.long()
        acc = points.new_zeros(points.shape[0], self.values.shape[1])
        wsum = points.new_zeros(points.shape[0])
        for c in _CORNERS.to(points.device):
            w = torch.prod(torch.where(c.bool(), frac, 1 - frac), 1)
            row = self.hash.lookup(base + c)
            ok = row >= 0
            w = w * ok
            acc = acc + w[:, None] * self.values[row.clamp(min=0)]
            wsum = wsum + w
        valid = wsum > 1e-4
        return acc / wsum.clamp(min=1e-4)[:, None], valid
