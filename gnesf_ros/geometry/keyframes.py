"""Keyframe selection (NeuralRecon rule) and fragment windows over any stream of frames."""
from __future__ import annotations

import logging

import numpy as np

from gnesf_ros.config import CameraConfig, ConfigError, KeyframeConfig
from gnesf_ros.geometry.camera import frustum_corners, is_valid_pose, view_angle_deg
from gnesf_ros.types import Fragment, Frame

log = logging.getLogger(__name__)


class KeyframeSelector:
    """Accepts a pose as keyframe when the optical axis turned more than ``min_rotation_deg`` or
    the camera centre moved more than ``min_translation_m`` since the last keyframe (NeuralRecon:
    the angle is between viewing directions, so pure roll does not count). The first valid pose
    is always a keyframe; invalid (non-finite / non-rigid) poses are never accepted."""

    def __init__(self, cfg: KeyframeConfig | None = None):
        self.cfg = cfg or KeyframeConfig()
        self._last: np.ndarray | None = None

    def accept(self, T_world_cam: np.ndarray) -> bool:
        """True if ``T_world_cam`` (4x4 camera-to-world) is a new keyframe; it then becomes the
        reference for the next decision."""
        if not is_valid_pose(T_world_cam):
            return False
        T = np.asarray(T_world_cam, np.float64)
        if self._last is not None:
            moved = float(np.linalg.norm(T[:3, 3] - self._last[:3, 3]))
            turned = view_angle_deg(self._last, T)
            if moved <= self.cfg.min_translation_m and turned <= self.cfg.min_rotation_deg:
                return False
        self._last = T.copy()
        return True

    def reset(self) -> None:
        self._last = None


def frames_bounds(frames: list[Frame], max_depth_m: float, voxel_size: float | None = None) -> np.ndarray:
    """2x3 world AABB (min row, max row; metres) of the frames' view frusta up to ``max_depth_m``,
    snapped outwards to multiples of ``voxel_size`` when given. No assumption about the floor."""
    pts = np.vstack([frustum_corners(f.K, f.size, f.T_world_cam, max_depth_m) for f in frames])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    if voxel_size:
        lo = np.floor(lo / voxel_size) * voxel_size
        hi = np.ceil(hi / voxel_size) * voxel_size
    return np.stack([lo, hi])


class FragmentBuilder:
    """Groups keyframes into fragment windows of ``cfg.fragment_size`` keyframes, the last
    ``cfg.fragment_overlap`` of each window starting the next one.

    ``push(frame)`` takes every frame of a stream; with ``select_keyframes`` (default) it keeps
    only keyframes (``KeyframeSelector``), otherwise every frame with a valid pose. A Fragment's
    ``bounds`` is the world AABB of its frusta up to ``max_depth_m`` (snapped to ``voxel_size``).
    """

    def __init__(self, cfg: KeyframeConfig | None = None, voxel_size: float = 0.04,
                 max_depth_m: float = CameraConfig.max_depth_m, select_keyframes: bool = True):
        self.cfg = cfg or KeyframeConfig()
        if self.cfg.fragment_size < 1:
            raise ConfigError(f"keyframe.fragment_size must be >= 1, got {self.cfg.fragment_size}")
        if not 0 <= self.cfg.fragment_overlap < self.cfg.fragment_size:
            raise ConfigError(f"keyframe.fragment_overlap must be in [0, fragment_size), got "
                              f"{self.cfg.fragment_overlap} (fragment_size {self.cfg.fragment_size})")
        self.voxel_size = float(voxel_size)
        self.max_depth_m = float(max_depth_m)
        self.selector = KeyframeSelector(self.cfg) if select_keyframes else None
        self._window: list[Frame] = []
        self._new = 0  # frames in the window not yet emitted in a fragment
        self._count = 0
        self._last: list[Frame] = []  # the frames of the last emitted fragment (flush borrows from them)

    def push(self, frame: Frame) -> Fragment | None:
        """Add a frame; returns a Fragment when a window is complete, else None."""
        if self.selector is not None:
            if not self.selector.accept(frame.T_world_cam):
                return None
        elif not is_valid_pose(frame.T_world_cam):
            log.debug("frame %d: invalid pose, not used", frame.index)
            return None
        self._window.append(frame)
        self._new += 1
        if len(self._window) >= self.cfg.fragment_size:
            return self._emit()
        return None

    @property
    def pending(self) -> int:
        """Keyframes in the window not yet emitted in a fragment."""
        return self._new

    def flush(self, min_frames: int = 1) -> Fragment | None:
        """Emit the incomplete window (end of stream), or None if it holds no new keyframe. A
        window of fewer than ``min_frames`` keyframes is completed with the last keyframes of the
        previous fragment (context only: they were mapped already); None when there are too few."""
        if not self._new:
            return None
        missing = min_frames - len(self._window)
        if missing > 0:
            context = [f for f in self._last if not any(f is g for g in self._window)][-missing:]
            if len(context) < missing:
                log.info("%d keyframe(s) pending: a fragment needs >= %d; waiting for more", self._new, min_frames)
                return None
            self._window = context + self._window
        return self._emit()

    def reset(self) -> None:
        self._window, self._new, self._count, self._last = [], 0, 0, []
        if self.selector is not None:
            self.selector.reset()

    def _emit(self) -> Fragment:
        frames = self._window
        frag = Fragment(frames=list(frames), bounds=frames_bounds(frames, self.max_depth_m, self.voxel_size),
                        voxel_size=self.voxel_size, index=self._count)
        self._count += 1
        self._last = frames
        keep = self.cfg.fragment_overlap
        self._window = frames[len(frames) - keep:] if keep else []
        self._new = 0
        return frag
