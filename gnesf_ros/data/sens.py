"""ScanNet ``.sens`` (SensorData version 4) codec, streamed frame by frame.

Layout (little endian, as ScanNet's SensorData.h writes it): uint32 version (4); uint64 name
length + sensor name; float32 4x4 colour intrinsic, colour extrinsic, depth intrinsic, depth
extrinsic (row major); int32 colour / depth compression; uint32 colour width, height, depth width,
height; float32 depth shift (1000 = mm); uint64 frame count; then per frame float32[16]
camera-to-world pose, uint64 colour and depth timestamps (microseconds), uint64 colour and depth
byte sizes, colour bytes, depth bytes; finally uint64 IMU frame count (0 here).
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from gnesf_ros.errors import DataError
from gnesf_ros.geometry.camera import validate_camera

SENS_VERSION = 4
COLOR_COMPRESSION = {-1: "unknown", 0: "raw", 1: "png", 2: "jpeg"}
DEPTH_COMPRESSION = {-1: "unknown", 0: "raw_ushort", 1: "zlib_ushort", 2: "occi_ushort"}
COLOR_JPEG, DEPTH_ZLIB_USHORT = 2, 1

_FRAME_HEAD = struct.Struct("<16f4Q")  # pose, ts colour, ts depth, colour bytes, depth bytes
_CALIB = struct.Struct("<64f")
_FORMATS = struct.Struct("<ii4If")
_MAX_NAME = 4096


@dataclass
class SensHeader:
    """Calibration and image formats of a .sens file. Matrices are 4x4 float64; sizes (h, w)."""

    sensor_name: str
    K_color: np.ndarray
    T_color_extrinsic: np.ndarray
    K_depth: np.ndarray
    T_depth_extrinsic: np.ndarray
    color_compression: int
    depth_compression: int
    color_size: tuple[int, int]
    depth_size: tuple[int, int]
    depth_shift: float
    num_frames: int
    frames_offset: int = 0  # byte offset of frame 0
    count_offset: int = 0  # byte offset of the uint64 frame count


@dataclass
class SensFrameEntry:
    """Where frame ``index`` lies in the file, and its pose (4x4 float64, may be -inf)."""

    index: int
    T_world_cam: np.ndarray
    timestamp_color_us: int
    timestamp_depth_us: int
    data_offset: int
    color_bytes: int
    depth_bytes: int


def _read_exact(fh: BinaryIO, n: int, path: Path, what: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise DataError(f"{path}: truncated .sens file: {what} needs {n} bytes, file ends after {len(data)}")
    return data


def read_header(fh: BinaryIO, path: Path) -> SensHeader:
    """Parse the header at the start of ``fh``; leaves the handle at frame 0. Raises DataError
    (CameraModelError for intrinsics that do not fit the stated image sizes) naming ``path``."""
    (version,) = struct.unpack("<I", _read_exact(fh, 4, path, "version"))
    if version != SENS_VERSION:
        raise DataError(f"{path}: not a ScanNet .sens v{SENS_VERSION} file (version field is {version})")
    (name_len,) = struct.unpack("<Q", _read_exact(fh, 8, path, "sensor name length"))
    if name_len > _MAX_NAME:
        raise DataError(f"{path}: corrupt .sens header (sensor name length {name_len})")
    name = _read_exact(fh, name_len, path, "sensor name").decode("utf-8", "replace")
    mats = np.array(_CALIB.unpack(_read_exact(fh, _CALIB.size, path, "calibration")), np.float64).reshape(4, 4, 4)
    c_comp, d_comp, cw, ch, dw, dh, shift = _FORMATS.unpack(_read_exact(fh, _FORMATS.size, path, "image formats"))
    count_offset = fh.tell()
    (count,) = struct.unpack("<Q", _read_exact(fh, 8, path, "frame count"))
    if min(cw, ch, dw, dh) == 0 or not np.isfinite(shift) or shift <= 0:
        raise DataError(f"{path}: corrupt .sens header (colour {cw}x{ch}, depth {dw}x{dh}, depth shift {shift})")
    validate_camera(mats[0], (ch, cw), f"{path}: colour intrinsics (header)")
    validate_camera(mats[2], (dh, dw), f"{path}: depth intrinsics (header)")
    return SensHeader(name, mats[0], mats[1], mats[2], mats[3], c_comp, d_comp, (ch, cw), (dh, dw),
                      float(shift), int(count), fh.tell(), count_offset)


def index_frames(fh: BinaryIO, path: Path, header: SensHeader) -> list[SensFrameEntry]:
    """Read every frame's fixed-size head (pose, timestamps, sizes) and seek over its images.

    Only the heads are read (96 bytes per frame). A file too short for its frame count raises
    DataError naming the file and the first incomplete frame.
    """
    size = os.fstat(fh.fileno()).st_size
    entries: list[SensFrameEntry] = []
    pos = header.frames_offset
    for i in range(header.num_frames):
        fh.seek(pos)
        head = fh.read(_FRAME_HEAD.size)
        if len(head) != _FRAME_HEAD.size:
            raise DataError(f"{path}: truncated .sens file: frame {i} of {header.num_frames} is missing "
                            f"(file ends at byte {size})")
        vals = _FRAME_HEAD.unpack(head)
        ts_c, ts_d, n_color, n_depth = vals[16:]
        data_offset = pos + _FRAME_HEAD.size
        end = data_offset + n_color + n_depth
        if n_color == 0 or n_depth == 0:
            raise DataError(f"{path}: corrupt .sens file: frame {i} has {n_color} colour / {n_depth} depth bytes")
        if end > size:
            raise DataError(f"{path}: truncated .sens file: frame {i} of {header.num_frames} needs bytes up to "
                            f"{end}, file ends at {size}")
        pose = np.array(vals[:16], np.float32).astype(np.float64).reshape(4, 4)
        entries.append(SensFrameEntry(i, pose, ts_c, ts_d, data_offset, n_color, n_depth))
        pos = end
    return entries


def decode_color(data: bytes, compression: int, size: tuple[int, int], where: str) -> np.ndarray:
    """Colour bytes -> HxWx3 uint8 RGB of the header's ``size``."""
    h, w = size
    if compression == 0:
        if len(data) != h * w * 3:
            raise DataError(f"{where}: raw colour has {len(data)} bytes, expected {h * w * 3} for {w}x{h}")
        return np.frombuffer(data, np.uint8).reshape(h, w, 3).copy()
    if compression not in (1, 2):
        raise DataError(f"{where}: unsupported colour compression {COLOR_COMPRESSION.get(compression, compression)}")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"{where}: colour image could not be decoded (corrupt data)")
    if bgr.shape[:2] != (h, w):
        raise DataError(f"{where}: colour image is {bgr.shape[1]}x{bgr.shape[0]}, header says {w}x{h}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_depth(data: bytes, compression: int, size: tuple[int, int], where: str) -> np.ndarray:
    """Depth bytes -> HxW uint16 (units of 1/depth_shift metres, 0 invalid)."""
    h, w = size
    if compression == 1:
        try:
            data = zlib.decompress(data)
        except zlib.error as e:
            raise DataError(f"{where}: depth could not be decompressed (corrupt data: {e})") from None
    elif compression != 0:
        raise DataError(f"{where}: unsupported depth compression {DEPTH_COMPRESSION.get(compression, compression)}")
    if len(data) != h * w * 2:
        raise DataError(f"{where}: depth has {len(data)} bytes, expected {h * w * 2} for {w}x{h} uint16 "
                        f"(image size does not match the header)")
    return np.frombuffer(data, "<u2").reshape(h, w).copy()


def read_frame(fh: BinaryIO, path: Path, header: SensHeader, entry: SensFrameEntry) -> tuple[np.ndarray, np.ndarray]:
    """Read and decode one frame: (rgb HxWx3 uint8, depth HxW uint16)."""
    where = f"{path}: frame {entry.index}"
    fh.seek(entry.data_offset)
    color = fh.read(entry.color_bytes)
    depth = fh.read(entry.depth_bytes)
    if len(color) != entry.color_bytes or len(depth) != entry.depth_bytes:
        raise DataError(f"{where}: truncated .sens file (frame data ends early)")
    return (decode_color(color, header.color_compression, header.color_size, where),
            decode_depth(depth, header.depth_compression, header.depth_size, where))


def as_mat4(M: np.ndarray) -> np.ndarray:
    """3x3 intrinsics -> the 4x4 form ScanNet stores (4x4 passes through)."""
    M = np.asarray(M, np.float64)
    if M.shape == (3, 3):
        out = np.eye(4)
        out[:3, :3] = M
        return out
    return M


class SensWriter:
    """Writes a .sens v4 file frame by frame (JPEG colour, zlib uint16 depth); the frame count
    is patched into the header on ``close()``."""

    def __init__(self, path: str | Path, K_color: np.ndarray, color_size: tuple[int, int],
                 K_depth: np.ndarray, depth_size: tuple[int, int], depth_shift: float = 1000.0,
                 sensor_name: str = "gnesf_ros"):
        self.path = Path(path)
        self.color_size, self.depth_size = tuple(color_size), tuple(depth_size)
        self._fh = self.path.open("wb")
        name = sensor_name.encode()
        self._fh.write(struct.pack("<IQ", SENS_VERSION, len(name)) + name)
        mats = [as_mat4(K_color), np.eye(4), as_mat4(K_depth), np.eye(4)]
        self._fh.write(_CALIB.pack(*np.concatenate([m.ravel() for m in mats]).astype(np.float32)))
        self._fh.write(_FORMATS.pack(COLOR_JPEG, DEPTH_ZLIB_USHORT, color_size[1], color_size[0],
                                     depth_size[1], depth_size[0], depth_shift))
        self._count_offset = self._fh.tell()
        self._fh.write(struct.pack("<Q", 0))
        self.num_frames = 0

    def add(self, T_world_cam: np.ndarray, color_jpeg: bytes, depth: np.ndarray,
            timestamp_us: int = 0) -> None:
        """Append a frame: pose 4x4 (may be -inf), JPEG bytes of the colour image, HxW uint16 depth."""
        if depth.shape != self.depth_size or depth.dtype != np.uint16:
            raise ValueError(f"depth must be uint16 {self.depth_size}, got {depth.dtype} {depth.shape}")
        depth_z = zlib.compress(np.ascontiguousarray(depth, "<u2").tobytes(), 1)
        pose = np.asarray(T_world_cam, np.float32).ravel()
        self._fh.write(_FRAME_HEAD.pack(*pose, timestamp_us, timestamp_us, len(color_jpeg), len(depth_z)))
        self._fh.write(color_jpeg)
        self._fh.write(depth_z)
        self.num_frames += 1

    def close(self) -> None:
        if self._fh.closed:
            return
        self._fh.write(struct.pack("<Q", 0))  # no IMU frames
        self._fh.seek(self._count_offset)
        self._fh.write(struct.pack("<Q", self.num_frames))
        self._fh.close()
