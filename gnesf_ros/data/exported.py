"""ScanNet's exported folder layout (what ScanNet's SensReader ``reader.py`` writes).

``color/{i}.jpg``, ``depth/{i}.png`` (uint16 millimetres), ``pose/{i}.txt`` (4x4 camera-to-world,
-inf when tracking was lost), ``intrinsic/{intrinsic,extrinsic}_{color,depth}.txt`` (4x4),
optional ``label-filt/{i}.png`` (uint16 ScanNet raw ids). ``i`` is the ScanNet frame number.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from gnesf_ros.errors import DataError
from gnesf_ros.geometry.camera import validate_camera

REQUIRED_DIRS = ("color", "depth", "pose", "intrinsic")
LABEL_DIR = "label-filt"


def is_exported_scene(folder: Path) -> bool:
    return all((folder / d).is_dir() for d in REQUIRED_DIRS)


def read_matrix(path: Path, what: str) -> np.ndarray:
    """A whitespace-separated 4x4 text matrix -> float64 4x4 (values rounded through float32, the
    precision ScanNet stores, so that exported and .sens poses compare exactly)."""
    if not path.is_file():
        raise DataError(f"missing {what}: {path}")
    try:
        M = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise DataError(f"{path}: {what} is not a 4x4 matrix of numbers ({e})") from None
    if M.shape != (4, 4):
        raise DataError(f"{path}: {what} must be 4x4, got {M.shape[0]}x{M.shape[1]}")
    return M.astype(np.float32).astype(np.float64)


def read_intrinsics(path: Path, what: str, image_size: tuple[int, int]) -> np.ndarray:
    """``intrinsic/intrinsic_{color,depth}.txt`` of images of ``image_size`` (h, w) -> 4x4 float64,
    checked by geometry.camera.validate_camera (CameraModelError, a DataError, naming the file)."""
    M = read_matrix(path, what)
    validate_camera(M, image_size, f"{path}: {what}")
    return M


def write_matrix(path: Path, M: np.ndarray) -> None:
    """4x4 matrix -> text of its float32 values (what .sens stores); 9 significant digits of a float32
    read back to the same float32 (-inf stays -inf)."""
    np.savetxt(path, np.asarray(M, np.float32).reshape(4, 4), fmt="%.9g")


def list_frame_numbers(scene_dir: Path) -> list[int]:
    """Sorted ScanNet frame numbers of ``color/{i}.jpg``."""
    numbers = sorted(int(p.stem) for p in (scene_dir / "color").glob("*.jpg") if p.stem.isdigit())
    if not numbers:
        raise DataError(f"{scene_dir / 'color'}: no frames (expected files named <frame number>.jpg)")
    return numbers


def read_image(path: Path, flags: int, what: str) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"missing {what}: {path}")
    img = cv2.imread(str(path), flags)
    if img is None:
        raise DataError(f"{path}: {what} could not be decoded (corrupt or not an image)")
    return img


def read_color(path: Path) -> np.ndarray:
    """JPEG -> HxWx3 uint8 RGB."""
    return cv2.cvtColor(read_image(path, cv2.IMREAD_COLOR, "colour image"), cv2.COLOR_BGR2RGB)


def read_uint16(path: Path, what: str) -> np.ndarray:
    """16-bit single-channel PNG (depth in mm, raw label ids) -> HxW uint16."""
    img = read_image(path, cv2.IMREAD_UNCHANGED, what)
    if img.ndim != 2 or img.dtype != np.uint16:
        raise DataError(f"{path}: {what} must be a single-channel 16-bit PNG, got {img.dtype} "
                        f"with shape {img.shape}")
    return img



def write_calibration(scene_dir: Path, K_color: np.ndarray, K_depth: np.ndarray) -> None:
    """Create the layout's folders and intrinsic/*.txt (4x4 intrinsics, identity extrinsics)."""
    for d in REQUIRED_DIRS:
        (scene_dir / d).mkdir(parents=True, exist_ok=True)
    for cam, K in (("color", K_color), ("depth", K_depth)):
        write_matrix(scene_dir / "intrinsic" / f"intrinsic_{cam}.txt", K)
        write_matrix(scene_dir / "intrinsic" / f"extrinsic_{cam}.txt", np.eye(4))


def write_frame(scene_dir: Path, i: int, color_jpeg: bytes, depth_mm: np.ndarray, T_world_cam: np.ndarray,
                label_raw: np.ndarray | None = None) -> None:
    """Write frame ``i``: JPEG bytes, uint16 mm depth PNG, pose text, optional uint16 label PNG."""
    (scene_dir / "color" / f"{i}.jpg").write_bytes(color_jpeg)
    cv2.imwrite(str(scene_dir / "depth" / f"{i}.png"), depth_mm)
    write_matrix(scene_dir / "pose" / f"{i}.txt", T_world_cam)
    if label_raw is not None:
        (scene_dir / LABEL_DIR).mkdir(exist_ok=True)
        cv2.imwrite(str(scene_dir / LABEL_DIR / f"{i}.png"), label_raw)
