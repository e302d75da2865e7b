"""Core data types passed between stages (plain dataclasses of numpy arrays).

Conventions: metres; poses are camera-to-world 4x4 (``T_world_cam``) with the camera in the
optical frame (x right, y down, z forward); intrinsics K are 3x3 pixels for the image size given.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Frame:
    """One posed image. rgb HxWx3 uint8; depth HxW float32 metres (0 = invalid) or None;
    labels HxW uint8 class indices (255 = ignore) or None; probs HxWxC float32 or None."""

    stamp: float
    rgb: np.ndarray
    K: np.ndarray
    T_world_cam: np.ndarray
    depth: np.ndarray | None = None
    labels: np.ndarray | None = None
    probs: np.ndarray | None = None
    index: int = -1

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.rgb.shape[0], self.rgb.shape[1]


@dataclass
class Fragment:
    """A window of keyframes mapped together. bounds: 2x3 world AABB (min, max) in metres."""

    frames: list[Frame]
    bounds: np.ndarray | None = None
    voxel_size: float = 0.04
    index: int = -1


@dataclass
class FragmentResult:
    """Per-voxel predictions of one fragment, on the global voxel grid.

    coords: Nx3 int32 voxel indices (world position = (coords + 0.5) * voxel_size)
    sdf: N float32 truncated SDF in metres; class_probs: NxC float32 (rows sum to 1);
    weight: N float32 fusion weight (0 = do not fuse); sem_weight: N float32 weight of the
    class distribution (0 where no view saw the voxel, e.g. after visibility masking).
    """

    coords: np.ndarray
    sdf: np.ndarray
    class_probs: np.ndarray
    weight: np.ndarray
    voxel_size: float
    sem_weight: np.ndarray | None = None
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.coords.shape[0])
