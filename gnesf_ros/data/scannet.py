"""ScanNet scenes: read exported folders or ``.sens`` files as a stream of ``Frame``; write both.

Every frame comes out in one camera: the colour camera resized to ``size`` (intrinsics scaled).
Depth (metres, 0 invalid) and labels (20-class indices, 255 ignore) are re-sampled from their own
cameras into it, nearest neighbour (ScanNet's depth is registered to colour: same optical centre).
"""
from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from gnesf_ros.classes import IGNORE
from gnesf_ros.data import exported, sens
from gnesf_ros.data.labelmap import LABEL_TSV_NAME, find_label_tsv, load_label_map
from gnesf_ros.errors import DataError
from gnesf_ros.geometry.camera import is_valid_pose, remap_intrinsics_nearest, scale_intrinsics
from gnesf_ros.types import Frame

log = logging.getLogger(__name__)

SCANNET_HZ = 30.0  # ScanNet's capture rate: stamps of frames without timestamps are index / 30 s
GT_MESH_SUFFIX = "_vh_clean_2.labels.ply"
Size = tuple[int, int]


@dataclass
class _Entry:
    index: int  # ScanNet frame number
    T_world_cam: np.ndarray
    stamp: float
    sens_entry: sens.SensFrameEntry | None = None


class FrameSource:
    """Frames of one ScanNet scene, re-readable; iterate for ``Frame`` objects.

    K: 3x3 intrinsics at ``size`` (h, w); skipped_poses: frames dropped for a non-finite or
    non-rigid pose; gt_mesh_path: ``<scene>_vh_clean_2.labels.ply`` beside the scene, or None.
    """

    def __init__(self, path: Path, scene_dir: Path, scene_name: str, K_color: np.ndarray, color_size: Size,
                 K_depth: np.ndarray, depth_size: Size, depth_shift: float, size: Size | None,
                 label_tsv: str | Path | None):
        self.path, self.scene_dir, self.scene_name = path, scene_dir, scene_name
        self.K_color, self.color_size = np.asarray(K_color, np.float64)[:3, :3], tuple(color_size)
        self.K_depth, self.depth_size = np.asarray(K_depth, np.float64)[:3, :3], tuple(depth_size)
        self.depth_shift = depth_shift
        self.size: Size = tuple(size) if size else self.color_size
        self.K = scale_intrinsics(self.K_color, self.color_size, self.size)
        self.label_dir = scene_dir / exported.LABEL_DIR
        if not self.label_dir.is_dir():
            self.label_dir, self._lut = None, None
        else:
            tsv = label_tsv if label_tsv is not None else find_label_tsv(scene_dir)
            if tsv is None:
                log.info("%s: no %s given or found beside the scene: label-filt values are read as NYU40 ids",
                         scene_dir, LABEL_TSV_NAME)
            self._lut = load_label_map(tsv)
        mesh = scene_dir / f"{scene_name}{GT_MESH_SUFFIX}"
        self.gt_mesh_path: Path | None = mesh if mesh.is_file() else None
        self._entries: list[_Entry] = []
        self.skipped_poses = 0

    def _select(self, candidates: Iterator[_Entry], max_frames: int | None) -> None:
        """Keep candidates (already strided) with a valid pose, up to max_frames; count the rest."""
        skipped: list[int] = []
        for entry in candidates:
            if max_frames is not None and len(self._entries) >= max_frames:
                break
            if is_valid_pose(entry.T_world_cam):
                self._entries.append(entry)
            else:
                skipped.append(entry.index)
        self.skipped_poses = len(skipped)
        if skipped:
            log.warning("%s: skipped %d frame(s) with an invalid (non-finite or non-rigid) pose: %s%s",
                        self.path, len(skipped), skipped[:10], " ..." if len(skipped) > 10 else "")

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.scene_name!r}, {len(self)} frames at {self.size[1]}x{self.size[0]}, "
                f"skipped_poses={self.skipped_poses}, labels={self.label_dir is not None})")

    @property
    def frame_numbers(self) -> list[int]:
        """ScanNet frame numbers of the frames, in order."""
        return [e.index for e in self._entries]

    @property
    def poses(self) -> np.ndarray:
        """Nx4x4 T_world_cam of the frames, known without decoding images (select keyframes
        first, then decode only those with ``source[k]``)."""
        return np.stack([e.T_world_cam for e in self._entries]) if self._entries else np.zeros((0, 4, 4))

    def __getitem__(self, k: int) -> Frame:
        """Decode frame ``k`` (position 0..len-1, not the ScanNet frame number)."""
        entry = self._entries[k]
        with self._open() as handle:
            return self._make_frame(entry, *self._read_raw(handle, entry))

    def __iter__(self) -> Iterator[Frame]:
        with self._open() as handle:
            for entry in self._entries:
                yield self._make_frame(entry, *self._read_raw(handle, entry))

    def _open(self):
        return contextlib.nullcontext()

    def _read_raw(self, handle, entry: _Entry) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _make_frame(self, entry: _Entry, rgb: np.ndarray, depth_raw: np.ndarray) -> Frame:
        if rgb.shape[:2] != self.size:
            interp = cv2.INTER_AREA if rgb.shape[0] > self.size[0] else cv2.INTER_LINEAR
            rgb = cv2.resize(rgb, (self.size[1], self.size[0]), interpolation=interp)
        depth = remap_intrinsics_nearest(depth_raw, self.K_depth, self.K, self.size, 0)
        depth = depth.astype(np.float32) / np.float32(self.depth_shift)
        return Frame(stamp=entry.stamp, rgb=rgb, K=self.K.copy(), T_world_cam=entry.T_world_cam.copy(),
                     depth=depth, labels=self._read_labels(entry.index), index=entry.index)

    def _read_labels(self, index: int) -> np.ndarray | None:
        if self.label_dir is None:
            return None
        path = self.label_dir / f"{index}.png"
        if not path.is_file():  # label-filt may cover a subset of the frames
            return None
        raw = exported.read_uint16(path, "label image")
        if raw.shape == self.color_size:
            K_src = self.K_color
        elif raw.shape == self.depth_size:
            K_src = self.K_depth
        else:
            raise DataError(f"{path}: label image is {raw.shape[1]}x{raw.shape[0]}, expected the colour "
                            f"({self.color_size[1]}x{self.color_size[0]}) or depth "
                            f"({self.depth_size[1]}x{self.depth_size[0]}) size")
        return remap_intrinsics_nearest(self._lut[raw], K_src, self.K, self.size, IGNORE)


class ExportedScene(FrameSource):
    """A scene in ScanNet's exported folder layout (see gnesf_ros.data.exported)."""

    def __init__(self, scene_dir: Path, size: Size | None, max_frames: int | None, stride: int,
                 label_tsv: str | Path | None):
        numbers = exported.list_frame_numbers(scene_dir)
        intr = scene_dir / "intrinsic"
        first = numbers[0]
        color_size = exported.read_color(scene_dir / "color" / f"{first}.jpg").shape[:2]
        depth_size = exported.read_uint16(scene_dir / "depth" / f"{first}.png", "depth image").shape
        # every frame is checked against the first one's size in _read_raw
        K_color = exported.read_intrinsics(intr / "intrinsic_color.txt", "colour intrinsics", color_size)
        K_depth = exported.read_intrinsics(intr / "intrinsic_depth.txt", "depth intrinsics", depth_size)
        super().__init__(scene_dir, scene_dir, scene_dir.name, K_color, color_size, K_depth, depth_size,
                         1000.0, size, label_tsv)
        self._select((_Entry(i, exported.read_matrix(scene_dir / "pose" / f"{i}.txt", "pose"), i / SCANNET_HZ)
                      for i in numbers[::stride]), max_frames)

    def _read_raw(self, handle, entry: _Entry) -> tuple[np.ndarray, np.ndarray]:
        color_path = self.scene_dir / "color" / f"{entry.index}.jpg"
        depth_path = self.scene_dir / "depth" / f"{entry.index}.png"
        rgb = exported.read_color(color_path)
        depth = exported.read_uint16(depth_path, "depth image")
        for img, want, path in ((rgb, self.color_size, color_path), (depth, self.depth_size, depth_path)):
            if img.shape[:2] != want:
                raise DataError(f"{path}: image is {img.shape[1]}x{img.shape[0]}, the scene's other frames "
                                f"are {want[1]}x{want[0]}")
        return rgb, depth


class SensScene(FrameSource):
    """A ScanNet ``.sens`` v4 file, read frame by frame (one seek + read per frame). Labels come
    from a ``label-filt/`` folder beside the file, if there is one."""

    def __init__(self, path: Path, size: Size | None, max_frames: int | None, stride: int,
                 label_tsv: str | Path | None):
        with path.open("rb") as fh:
            self.header = sens.read_header(fh, path)
            frames = sens.index_frames(fh, path, self.header)
        h = self.header  # read_header validated both cameras (geometry.camera.validate_camera)
        if not np.allclose(h.T_color_extrinsic, h.T_depth_extrinsic, atol=1e-3):
            log.warning("%s: colour and depth extrinsics differ; depth is used as if registered to colour", path)
        if frames:  # images of another size than the header states: refused at open, not mid-map
            with path.open("rb") as fh:
                sens.read_frame(fh, path, h, frames[0])
        super().__init__(path, path.parent, path.stem, h.K_color, h.color_size, h.K_depth, h.depth_size,
                         h.depth_shift, size, label_tsv)
        self._select((_Entry(e.index, e.T_world_cam,
                             e.timestamp_color_us * 1e-6 if e.timestamp_color_us else e.index / SCANNET_HZ, e)
                      for e in frames[::stride]), max_frames)

    def _open(self):
        return self.path.open("rb")

    def _read_raw(self, handle, entry: _Entry) -> tuple[np.ndarray, np.ndarray]:
        return sens.read_frame(handle, self.path, self.header, entry.sens_entry)


def open_scene(path: str | Path, size: Size | None = None, max_frames: int | None = None, stride: int = 1,
               label_tsv: str | Path | None = None) -> FrameSource:
    """Open a ScanNet scene: an exported folder, a ``.sens`` file, a folder holding one .sens (a
    folder with both is read as exported), or a folder holding exactly one such scene folder.
    Raises DataError naming what is missing or broken.

    size: (h, w) of the frames (None: native colour size); max_frames: stop after this many valid
    frames; stride: use every stride-th frame; label_tsv: ScanNet's label map (default: the
    ``scannetv2-labels.combined.tsv`` found beside the scene, else label values are NYU40 ids).
    """
    p = Path(path)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size must be (height, width) in pixels, got {size}")
    if not p.exists():
        raise DataError(f"ScanNet scene not found: {p}")
    if p.is_file():
        if p.suffix != ".sens":
            raise DataError(f"{p}: not a ScanNet scene (expected a folder or a .sens file)")
        return SensScene(p, size, max_frames, stride, label_tsv)
    if exported.is_exported_scene(p):
        return ExportedScene(p, size, max_frames, stride, label_tsv)
    sens_files = sorted(p.glob("*.sens"))
    preferred = [s for s in sens_files if s.stem == p.name]
    if preferred or len(sens_files) == 1:
        return SensScene((preferred or sens_files)[0], size, max_frames, stride, label_tsv)
    scenes = sorted(x for x in p.iterdir() if x.is_dir() and not x.name.startswith(".")  # e.g. gnesf-synth's
                    and (exported.is_exported_scene(x) or any(x.glob("*.sens"))))           # partial output
    if len(scenes) == 1:  # e.g. gnesf-synth's output folder, or a scans/ folder with one scene
        log.info("%s holds one scene; reading %s", p, scenes[0].name)
        return open_scene(scenes[0], size, max_frames, stride, label_tsv)
    if scenes:
        raise DataError(f"{p} holds {len(scenes)} scenes ({', '.join(x.name for x in scenes[:8])}); pass one of them")
    present = sorted(x.name for x in p.iterdir())[:8]
    raise DataError(f"{p} is not a ScanNet scene: expected color/, depth/, pose/, intrinsic/ or a .sens file "
                    f"(found: {', '.join(present) or 'nothing'})")


class ScanNetWriter:
    """Writes frames in ScanNet's exported layout AND as ``<scene_name>.sens`` (v4) in ``scene_dir``.

    K_color / K_depth: 3x3 (or 4x4) intrinsics of the colour (size color_size = (h, w)) and depth
    (depth_size) cameras, same optical centre. label_tsv: a scannetv2-labels.combined.tsv to copy
    into the scene (then label images hold ScanNet raw ids, else NYU40 ids). Use as a context
    manager or call ``close()``.
    """

    def __init__(self, scene_dir: str | Path, scene_name: str, K_color: np.ndarray, color_size: Size,
                 K_depth: np.ndarray, depth_size: Size, label_tsv: str | Path | None = None,
                 jpeg_quality: int = 90):
        self.scene_dir = Path(scene_dir)
        self.color_size, self.depth_size = tuple(color_size), tuple(depth_size)
        self.jpeg_quality = int(jpeg_quality)
        exported.write_calibration(self.scene_dir, sens.as_mat4(K_color), sens.as_mat4(K_depth))
        if label_tsv is not None:
            shutil.copyfile(label_tsv, self.scene_dir / LABEL_TSV_NAME)
        self._sens = sens.SensWriter(self.scene_dir / f"{scene_name}.sens", K_color, color_size, K_depth, depth_size)
        self.num_frames = 0

    def add(self, rgb: np.ndarray, depth_m: np.ndarray, T_world_cam: np.ndarray,
            label_raw: np.ndarray | None = None, stamp: float | None = None) -> int:
        """Append a frame; returns its frame number. rgb: color_size x 3 uint8; depth_m: depth_size
        float metres (0 / non-finite invalid); T_world_cam 4x4 (-inf marks an invalid pose);
        label_raw: uint16 ids at colour or depth size; stamp: seconds (default index / 30)."""
        i = self.num_frames
        if rgb.shape != (*self.color_size, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be uint8 {self.color_size} x 3, got {rgb.dtype} {rgb.shape}")
        if depth_m.shape != self.depth_size:
            raise ValueError(f"depth must be {self.depth_size}, got {depth_m.shape}")
        mm = np.where(np.isfinite(depth_m), np.round(np.asarray(depth_m, np.float64) * 1000.0), 0.0)
        depth_mm = np.where((mm > 0) & (mm <= 65535), mm, 0).astype(np.uint16)
        ok, jpeg = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        if label_raw is not None and label_raw.shape not in (self.color_size, self.depth_size):
            raise ValueError(f"label image must have the colour or depth size, got {label_raw.shape}")
        jpeg = jpeg.tobytes()  # the same bytes go to color/ and the .sens
        exported.write_frame(self.scene_dir, i, jpeg, depth_mm, T_world_cam,
                             None if label_raw is None else np.asarray(label_raw, np.uint16))
        stamp = i / SCANNET_HZ if stamp is None else stamp
        self._sens.add(T_world_cam, jpeg, depth_mm, int(round(stamp * 1e6)))
        self.num_frames += 1
        return i

    def close(self) -> None:
        self._sens.close()

    def __enter__(self) -> "ScanNetWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
