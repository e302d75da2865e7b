"""Pinhole camera helpers: intrinsics scaling, back-projection, projection, pose checks.

Conventions: metres; ``T_world_cam`` is the 4x4 camera-to-world pose of an optical frame
(x right, y down, z forward); ``K`` is 3x3 in pixels with integer pixel coordinates at pixel
centres (OpenCV); sizes are ``(height, width)``.
"""
from __future__ import annotations

import math

import numpy as np

from gnesf_ros.errors import DataError

Size = tuple[int, int]


MIN_FOV_DEG, MAX_FOV_DEG = 0.01, 179.0  # field of view of each image axis: w / (2 fx) -> 2 atan(...)


class CameraModelError(DataError):
    """Intrinsics that are not a usable pinhole camera for an image of the given size. The
    offline readers let it through (it is a DataError naming the file); the node counts it as
    InputRejected ``bad_camera_info``."""


def _fmt_matrix(K: np.ndarray) -> str:
    return "[" + "; ".join(" ".join(f"{v:.6g}" for v in row) for row in K) + "]"


def validate_camera(K, size: Size, what: str, described_size: Size | None = None) -> np.ndarray:
    """The one check of a camera model: ``K`` (3x3, 4x4 ScanNet form, or 9 values row-major) of an
    image of ``size`` = (height, width) pixels -> K as 3x3 float64, or CameraModelError naming
    ``what`` (the file or message the intrinsics come from) and the offending value.

    Valid: every entry finite; pinhole form ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` with fx, fy > 0
    and zero skew (the 4x4 form with last row and column ``0 0 0 1``); image size >= 1x1; a field
    of view ``2 atan(w / 2 fx)`` (and with h, fy) of 0.01 to 179 degrees; the
    principal point inside the image (pixel edges: -0.5 .. w - 0.5); where the source states the
    size the intrinsics are for (``described_size``, e.g. a CameraInfo), the same size within one
    rounding pixel, else (an intrinsics file without a size) a principal point within 20 % of the
    image size of its centre (one near the border means intrinsics of another image size, e.g.
    depth images written at the colour resolution; a stated size makes cropped cameras legal).
    """
    try:
        M = np.array(K, dtype=np.float64)
    except (TypeError, ValueError):
        raise CameraModelError(f"{what}: intrinsics are not numbers") from None
    if M.shape == (9,):
        M = M.reshape(3, 3)
    if M.shape not in ((3, 3), (4, 4)):
        raise CameraModelError(f"{what}: intrinsics must be a 3x3 (or 4x4) matrix, got shape {M.shape}")
    if not np.isfinite(M).all():
        raise CameraModelError(f"{what}: intrinsics contain NaN or inf: K = {_fmt_matrix(M)}")
    if M.shape == (4, 4) and not (np.all(M[3, :3] == 0) and np.all(M[:3, 3] == 0) and M[3, 3] == 1):
        raise CameraModelError(f"{what}: 4x4 intrinsics must end in the row and column 0 0 0 1: "
                               f"K = {_fmt_matrix(M)}")
    K3 = M[:3, :3].copy()
    fx, fy, cx, cy = K3[0, 0], K3[1, 1], K3[0, 2], K3[1, 2]
    if not (fx > 0 and fy > 0):
        raise CameraModelError(f"{what}: focal lengths must be positive, got fx = {fx:.6g}, fy = {fy:.6g}")
    if K3[0, 1] != 0 or K3[1, 0] != 0 or K3[2, 0] != 0 or K3[2, 1] != 0 or K3[2, 2] != 1:
        raise CameraModelError(f"{what}: intrinsics are not a pinhole matrix [[fx, 0, cx], [0, fy, cy], "
                               f"[0, 0, 1]]: K = {_fmt_matrix(K3)}")
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise CameraModelError(f"{what}: image size {size!r} is not (height, width)") from None
    if h < 1 or w < 1:
        raise CameraModelError(f"{what}: image size {w}x{h} is empty")
    fov = [math.degrees(2 * math.atan2(n / 2, float(f))) for n, f in ((w, fx), (h, fy))]
    if not all(MIN_FOV_DEG <= a <= MAX_FOV_DEG for a in fov):
        raise CameraModelError(f"{what}: fx = {fx:.6g}, fy = {fy:.6g} give a {fov[0]:.3g} x {fov[1]:.3g} degree field "
                               f"of view for a {w}x{h} image (a pinhole camera has {MIN_FOV_DEG:g} to "
                               f"{MAX_FOV_DEG:g}): focal lengths of another unit or image size?")
    if described_size is not None:
        dh, dw = (int(v) for v in described_size)
        if abs(dh - h) > 1 or abs(dw - w) > 1:
            raise CameraModelError(f"{what}: intrinsics are for a {dw}x{dh} image, the image is {w}x{h}: "
                                   f"intrinsics and image size do not match")
    if not (-0.5 <= cx <= w - 0.5 and -0.5 <= cy <= h - 0.5):
        raise CameraModelError(f"{what}: image is {w}x{h} but its intrinsics put the principal point at "
                               f"({cx:.6g}, {cy:.6g}), outside the image: intrinsics and image size do not match")
    if described_size is None and (abs(cx + 0.5 - w / 2) > 0.2 * w or abs(cy + 0.5 - h / 2) > 0.2 * h):
        raise CameraModelError(f"{what}: image is {w}x{h} but its intrinsics put the principal point at "
                               f"({cx:.6g}, {cy:.6g}), far from the image centre (intrinsics of another "
                               f"image size?): intrinsics and image size do not match")
    return K3


def scale_intrinsics(K: np.ndarray, src_size: Size, dst_size: Size) -> np.ndarray:
    """K of an image of ``src_size`` -> K of the same camera resized to ``dst_size``.

    Exact for a resize that maps pixel *edges* onto each other (cv2.resize): with pixel centres
    at integer coordinates, ``c' = (c + 0.5) * s - 0.5`` and ``f' = f * s`` per axis.
    """
    K = np.asarray(K, np.float64)[:3, :3]
    sy = dst_size[0] / src_size[0]
    sx = dst_size[1] / src_size[1]
    out = K.copy()
    out[0, 0] *= sx
    out[0, 1] *= sx
    out[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    out[1, 1] *= sy
    out[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return out


def remap_intrinsics_nearest(image: np.ndarray, K_src: np.ndarray, K_dst: np.ndarray,
                             dst_size: Size, fill: float | int = 0) -> np.ndarray:
    """Re-sample ``image`` (camera ``K_src``) into a camera ``K_dst`` with the same optical centre
    and orientation, nearest neighbour (no value mixing: safe for depth and labels).

    image: HxW[xC] any dtype; returns dst_size[0] x dst_size[1] [xC] of the same dtype, ``fill``
    where the destination ray leaves the source image. K_src/K_dst must have zero skew.
    """
    K_src = np.asarray(K_src, np.float64)
    K_dst = np.asarray(K_dst, np.float64)
    h, w = dst_size
    # Same centre and axes: the pixel map is separable and affine per axis.
    u_src = (np.arange(w) - K_dst[0, 2]) * (K_src[0, 0] / K_dst[0, 0]) + K_src[0, 2]
    v_src = (np.arange(h) - K_dst[1, 2]) * (K_src[1, 1] / K_dst[1, 1]) + K_src[1, 2]
    cols = np.floor(u_src + 0.5).astype(np.int64)  # round half up, deterministic
    rows = np.floor(v_src + 0.5).astype(np.int64)
    col_ok = (cols >= 0) & (cols < image.shape[1])
    row_ok = (rows >= 0) & (rows < image.shape[0])
    out = image[rows.clip(0, image.shape[0] - 1)[:, None], cols.clip(0, image.shape[1] - 1)[None, :]]
    out[~(row_ok[:, None] & col_ok[None, :])] = fill
    return out


def pixel_rays(K: np.ndarray, size: Size) -> np.ndarray:
    """Camera-frame ray directions with z = 1 for every pixel centre: HxWx3 float64."""
    h, w = size
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    Kinv = np.linalg.inv(np.asarray(K, np.float64))
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)
    return pix @ Kinv.T


def backproject_depth(depth: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray,
                      max_depth_m: float | None = None) -> np.ndarray:
    """Depth image (HxW metres along the optical axis, 0 / non-finite = invalid) -> Nx3 float64
    world points of the valid pixels, row-major pixel order. ``max_depth_m`` drops farther pixels."""
    depth = np.asarray(depth)
    valid = np.isfinite(depth) & (depth > 0)
    if max_depth_m is not None:
        valid &= depth <= max_depth_m
    rays = pixel_rays(K, depth.shape[:2])[valid]
    pts_cam = rays * depth[valid][:, None].astype(np.float64)
    T = np.asarray(T_world_cam, np.float64)
    return pts_cam @ T[:3, :3].T + T[:3, 3]


def project(points_world: np.ndarray, K: np.ndarray,
            T_world_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nx3 world points -> (uv Nx2 pixel coordinates, z N depth in the camera, metres).

    uv is only meaningful where z > 0; no visibility or image-bounds test is made.
    """
    T = np.asarray(T_world_cam, np.float64)
    R, t = T[:3, :3], T[:3, 3]
    pts_cam = (np.asarray(points_world, np.float64) - t) @ R  # R^T (p - t), row-wise
    z = pts_cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        pix = pts_cam @ np.asarray(K, np.float64).T
        uv = pix[:, :2] / z[:, None]
    return uv, z


def is_valid_pose(T: np.ndarray, tol: float = 1e-2) -> bool:
    """True when T is a finite 4x4 rigid transform (orthonormal rotation with det +1 within
    ``tol``, last row 0 0 0 1). ScanNet marks lost tracking with -inf poses."""
    T = np.asarray(T, np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        return False
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=tol):
        return False
    R = T[:3, :3]
    return bool(np.allclose(R.T @ R, np.eye(3), atol=tol) and abs(np.linalg.det(R) - 1.0) < tol)


def view_angle_deg(T_a: np.ndarray, T_b: np.ndarray) -> float:
    """Angle in degrees between the optical axes (camera +z) of two poses; roll is ignored."""
    za = np.asarray(T_a, np.float64)[:3, 2]
    zb = np.asarray(T_b, np.float64)[:3, 2]
    cos = float(np.dot(za, zb) / (np.linalg.norm(za) * np.linalg.norm(zb)))
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def frustum_corners(K: np.ndarray, size: Size, T_world_cam: np.ndarray,
                    max_depth_m: float) -> np.ndarray:
    """5x3 world points spanning the view frustum up to ``max_depth_m``: the camera centre and
    the four image-corner rays (pixel edges) at depth ``max_depth_m``."""
    h, w = size
    corners = np.array([[-0.5, -0.5, 1], [w - 0.5, -0.5, 1], [-0.5, h - 0.5, 1], [w - 0.5, h - 0.5, 1]])
    rays = corners @ np.linalg.inv(np.asarray(K, np.float64)).T
    T = np.asarray(T_world_cam, np.float64)
    far = (rays * max_depth_m) @ T[:3, :3].T + T[:3, 3]
    return np.vstack([T[:3, 3][None], far])
