"""Label and depth images by raycasting the map's mesh with Open3D's RaycastingScene.

The scene is built once per mesh version (the mesh is re-extracted incrementally on change);
each render then costs one ``cast_rays`` call. Rays go through pixel centres at integer
coordinates (u, v) with unnormalised directions R K^-1 [u, v, 1], so the hit distance equals
the z-depth in the camera's optical frame.
"""
from __future__ import annotations

import numpy as np
import open3d as o3d

from gnesf_ros.classes import IGNORE
from gnesf_ros.geometry.camera import pixel_rays


def pinhole_rays(T_world_cam: np.ndarray, K: np.ndarray, size: tuple[int, int],
                 cam_dirs: np.ndarray | None = None) -> np.ndarray:
    """(H*W)x6 float32 rays (origin, direction with unit z in the camera frame), row-major.
    cam_dirs: optional precomputed camera-frame directions (H*W)x3 for (K, size)."""
    if cam_dirs is None:
        cam_dirs = pixel_rays(K, size).reshape(-1, 3).astype(np.float32)
    T = np.asarray(T_world_cam, np.float32)
    rays = np.empty((cam_dirs.shape[0], 6), np.float32)
    rays[:, :3] = T[:3, 3]
    np.einsum("nj,ij->ni", cam_dirs, T[:3, :3], out=rays[:, 3:])  # einsum: ~8x faster than @ here
    return rays


class MeshRaycaster:
    """Casts camera rays against a triangle mesh with per-vertex class labels."""

    def __init__(self) -> None:
        self._scene: o3d.t.geometry.RaycastingScene | None = None
        self._tri_labels = np.zeros(0, np.uint8)
        self.version = -1
        self._dirs_key: tuple | None = None
        self._dirs = np.zeros((0, 3), np.float32)

    def set_mesh(self, vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray, version: int) -> None:
        """vertices Vx3 float32 metres; faces Fx3 int; labels V uint8 class index (IGNORE unknown).
        A triangle takes the label most of its vertices carry (its first vertex's on a 3-way tie)."""
        self.version = version
        self._scene = None
        if len(faces):
            a, b, c = labels[faces].T
            self._tri_labels = np.where(b == c, b, a).astype(np.uint8)
            scene = o3d.t.geometry.RaycastingScene()
            scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(vertices, np.float32)),
                                o3d.core.Tensor(np.ascontiguousarray(faces, np.uint32)))
            self._scene = scene

    def render(self, T_world_cam: np.ndarray, K: np.ndarray, size: tuple[int, int]
               ) -> tuple[np.ndarray, np.ndarray]:
        """(labels HxW uint8, IGNORE where no hit or unknown; depth HxW float32 metres, 0 no hit)."""
        h, w = size
        if self._scene is None:
            return np.full((h, w), IGNORE, np.uint8), np.zeros((h, w), np.float32)
        key = (tuple(np.asarray(K, np.float64).ravel()), h, w)
        if key != self._dirs_key:  # camera-frame directions only change with K or size
            self._dirs = pixel_rays(K, size).reshape(-1, 3).astype(np.float32)
            self._dirs_key = key
        rays = pinhole_rays(T_world_cam, K, size, self._dirs)
        ans = self._scene.cast_rays(o3d.core.Tensor.from_numpy(rays))
        t = ans["t_hit"].numpy()
        hit = np.isfinite(t)
        labels = np.full(h * w, IGNORE, np.uint8)
        labels[hit] = self._tri_labels[ans["primitive_ids"].numpy()[hit]]
        t[~hit] = 0.0
        return labels.reshape(h, w), t.reshape(h, w)
