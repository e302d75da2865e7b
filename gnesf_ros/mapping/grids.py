"""2D grids for navigation, from the voxel map.

The gravity axis is the map frame's z (REP-103: map z up). Cells are voxel columns: cell
(row, col) covers x in [origin_x + col * res, ...), y in [origin_y + row * res, ...), like
nav_msgs/OccupancyGrid (row-major from the origin, rows along +y).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gnesf_ros.classes import IGNORE

FREE, OCCUPIED, UNKNOWN = 0, 100, -1


@dataclass
class Grid2D:
    """data HxW (int8 occupancy 0 free / 100 occupied / -1 unknown, or uint8 class index with
    255 unknown); resolution_m cell edge in metres; origin_xy map-frame (x, y) of cell (0, 0)'s corner."""

    data: np.ndarray
    resolution_m: float
    origin_xy: tuple[float, float]


def _columns(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    lo = coords[:, :2].min(0)
    hi = coords[:, :2].max(0)
    shape = (int(hi[1] - lo[1] + 1), int(hi[0] - lo[0] + 1))  # rows = y, cols = x
    flat = (coords[:, 1] - lo[1]) * shape[1] + (coords[:, 0] - lo[0])
    return lo, flat.astype(np.int64), shape


def occupancy_grid(coords: np.ndarray, sdf: np.ndarray, voxel_size: float, z_min_m: float,
                   z_max_m: float, occupied_sdf_m: float) -> Grid2D:
    """Observed voxels (coords Nx3 int, sdf N metres) -> occupancy in the height band
    [z_min_m, z_max_m] (voxel centre z). A column is occupied if any voxel in the band has
    sdf <= occupied_sdf_m, free if it has observed voxels in the band and none occupied."""
    if len(coords) == 0:
        return Grid2D(np.full((0, 0), UNKNOWN, np.int8), voxel_size, (0.0, 0.0))
    lo, flat, shape = _columns(coords)
    z = (coords[:, 2] + 0.5) * voxel_size
    band = (z >= z_min_m) & (z <= z_max_m)
    n = shape[0] * shape[1]
    seen = np.bincount(flat[band], minlength=n) > 0
    occ = np.bincount(flat[band & (sdf <= occupied_sdf_m)], minlength=n) > 0
    data = np.full(n, UNKNOWN, np.int8)
    data[seen] = FREE
    data[occ] = OCCUPIED
    return Grid2D(data.reshape(shape), voxel_size, (float(lo[0] * voxel_size), float(lo[1] * voxel_size)))


def class_grid(coords: np.ndarray, sdf: np.ndarray, labels: np.ndarray, voxel_size: float,
               z_max_m: float, occupied_sdf_m: float) -> Grid2D:
    """Top-down class map: per column the class index of the highest occupied voxel
    (sdf <= occupied_sdf_m, known class) whose centre is at most z_max_m; 255 unknown.
    The highest occupied voxel of a column sits at the surface seen from above."""
    if len(coords) == 0:
        return Grid2D(np.full((0, 0), IGNORE, np.uint8), voxel_size, (0.0, 0.0))
    lo, flat, shape = _columns(coords)
    z = (coords[:, 2] + 0.5) * voxel_size
    keep = (sdf <= occupied_sdf_m) & (labels != IGNORE) & (z <= z_max_m)
    data = np.full(shape[0] * shape[1], IGNORE, np.uint8)
    if keep.any():
        f, zc, lab = flat[keep], coords[keep, 2], labels[keep]
        order = np.lexsort((zc, f))  # by column, then height; the last per column is the top
        f, lab = f[order], lab[order]
        last = np.r_[f[1:] != f[:-1], True]
        data[f[last]] = lab[last]
    return Grid2D(data.reshape(shape), voxel_size, (float(lo[0] * voxel_size), float(lo[1] * voxel_size)))
