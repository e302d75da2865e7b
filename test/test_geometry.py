"""Camera geometry, keyframe selection and fragment windows against hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest

from gnesf_ros.config import ConfigError, KeyframeConfig
from gnesf_ros.geometry import (FragmentBuilder, KeyframeSelector, backproject_depth, frames_bounds,
                                is_valid_pose, project, remap_intrinsics_nearest, scale_intrinsics,
                                view_angle_deg)
from gnesf_ros.types import Frame


def rot(axis: str, deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def pose(R=np.eye(3), t=(0, 0, 0)) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def test_scale_intrinsics_hand_values():
    K = np.array([[500.0, 0, 300.0], [0, 520.0, 239.5], [0, 0, 1]])
    out = scale_intrinsics(K, (480, 640), (240, 320))
    # f * 0.5; c' = (c + 0.5) * 0.5 - 0.5
    np.testing.assert_allclose(out, [[250, 0, 149.75], [0, 260, 119.5], [0, 0, 1]])
    out = scale_intrinsics(K, (480, 640), (968, 1296))  # anisotropic: sx 2.025, sy 968/480
    np.testing.assert_allclose(out[0], [1012.5, 0, 300.5 * 2.025 - 0.5])
    np.testing.assert_allclose(out[1], [0, 520 * 968 / 480, 240 * 968 / 480 - 0.5])


def test_remap_intrinsics_nearest_hand_values():
    src = np.arange(4 * 6, dtype=np.float32).reshape(4, 6) + 1
    K_src = np.array([[2.0, 0, 2.5], [0, 2.0, 1.5], [0, 0, 1]])
    # Destination: focal 1 (wider view), centre (1, 1), 3x3 image.
    # column map u_s = (u - 1) * 2 + 2.5 -> 0.5, 2.5, 4.5 -> rounded 1, 3, 5
    # row map    v_s = (v - 1) * 2 + 1.5 -> -0.5, 1.5, 3.5 -> rounded 0, 2, 4 (4 is outside)
    K_dst = np.array([[1.0, 0, 1.0], [0, 1.0, 1.0], [0, 0, 1]])
    out = remap_intrinsics_nearest(src, K_src, K_dst, (3, 3), fill=-1)
    expected = np.array([[2, 4, 6], [14, 16, 18], [-1, -1, -1]], np.float32)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float32


def test_backproject_and_project_hand_values():
    K = np.array([[100.0, 0, 2.0], [0, 100.0, 1.0], [0, 0, 1]])
    depth = np.zeros((3, 5), np.float32)
    depth[1, 2] = 2.0  # principal point
    depth[0, 4] = 1.0  # u - cx = 2, v - cy = -1 -> (0.02, -0.01, 1)
    T = pose(rot("z", 90), (1, 2, 3))  # camera x -> world y, camera y -> world -x
    pts = backproject_depth(depth, K, T)
    np.testing.assert_allclose(pts, [[1 + 0.01, 2 + 0.02, 4], [1, 2, 5]], atol=1e-12)
    uv, z = project(pts, K, T)
    np.testing.assert_allclose(uv, [[4, 0], [2, 1]], atol=1e-9)
    np.testing.assert_allclose(z, [1, 2])
    assert backproject_depth(depth, K, T, max_depth_m=1.5).shape == (1, 3)


def test_is_valid_pose():
    assert is_valid_pose(pose(rot("x", 33), (1, 2, 3)))
    assert not is_valid_pose(np.full((4, 4), -np.inf))
    assert not is_valid_pose(pose(2 * np.eye(3)))  # scaled, not a rotation
    assert not is_valid_pose(pose(np.diag([1, 1, -1])))  # reflection
    bad = pose()
    bad[3, 0] = 1
    assert not is_valid_pose(bad)
    assert not is_valid_pose(np.eye(3))


def test_view_angle_ignores_roll():
    assert view_angle_deg(pose(), pose(rot("y", 30))) == pytest.approx(30)
    assert view_angle_deg(pose(), pose(rot("z", 70))) == pytest.approx(0, abs=1e-6)


def test_keyframe_selection_on_hand_made_trajectory():
    traj = [pose(t=(0.03 * k, 0, 0)) for k in range(9)]  # 0..0.24 m along x
    # moves since last keyframe: k=4 (0.12 > 0.1), k=8 (0.24 - 0.12 = 0.12)
    base = traj[-1][:3, 3]
    traj += [pose(rot("y", 4 * k), base) for k in range(1, 6)]  # yaw 4..20 deg: indices 9..13
    # turned 16 deg at index 12 (> 15); 20 - 16 = 4 at index 13: no
    traj += [pose(rot("y", 16) @ rot("z", 40), base)]  # index 14: pure roll vs the last keyframe
    traj += [np.full((4, 4), -np.inf)]  # index 15: invalid, never a keyframe
    traj += [pose(rot("y", 16), base + [0, 0.05, 0.095])]  # 16: moved 0.107 m
    sel = KeyframeSelector(KeyframeConfig(min_rotation_deg=15, min_translation_m=0.1))
    accepted = [i for i, T in enumerate(traj) if sel.accept(T)]
    assert accepted == [0, 4, 8, 12, 16]
    sel.reset()
    assert sel.accept(traj[5])


def frame(i: int, T=None, K=None, size=(10, 20)) -> Frame:
    K = np.array([[10.0, 0, 9.5], [0, 10.0, 4.5], [0, 0, 1]]) if K is None else K
    T = pose(t=(i, 0, 0)) if T is None else T
    return Frame(stamp=i / 30, rgb=np.zeros((*size, 3), np.uint8), K=K, T_world_cam=T, index=i)


def run_builder(cfg: KeyframeConfig, n: int) -> tuple[list[list[int]], list[int]]:
    b = FragmentBuilder(cfg, voxel_size=0.5, select_keyframes=False)
    frags = [f for f in (b.push(frame(i)) for i in range(n)) if f is not None]
    last = b.flush()
    frags += [last] if last else []
    assert b.flush() is None
    return [[f.index for f in frag.frames] for frag in frags], [frag.index for frag in frags]


def test_fragment_windows():
    windows, ids = run_builder(KeyframeConfig(fragment_size=9, fragment_overlap=0), 20)
    assert windows == [list(range(0, 9)), list(range(9, 18)), [18, 19]] and ids == [0, 1, 2]
    windows, _ = run_builder(KeyframeConfig(fragment_size=9, fragment_overlap=2), 20)
    assert windows == [list(range(0, 9)), list(range(7, 16)), list(range(14, 20))]
    windows, _ = run_builder(KeyframeConfig(fragment_size=9, fragment_overlap=2), 16)
    assert windows == [list(range(0, 9)), list(range(7, 16))]  # nothing new left to flush
    with pytest.raises(ConfigError):
        FragmentBuilder(KeyframeConfig(fragment_size=4, fragment_overlap=4))


def test_fragment_builder_selects_keyframes_by_default():
    b = FragmentBuilder(KeyframeConfig(fragment_size=2), voxel_size=0.5)
    still = [frame(0, pose()), frame(1, pose(t=(0.05, 0, 0))), frame(2, np.full((4, 4), -np.inf)),
             frame(3, pose(t=(0.2, 0, 0)))]
    out = [b.push(f) for f in still]
    assert out[:3] == [None, None, None]
    assert [f.index for f in out[3].frames] == [0, 3]


def test_fragment_bounds_are_the_frusta_box_in_any_orientation():
    # Corner rays through pixel edges: x/z in [-1, 1], y/z in [-0.5, 0.5]; depth up to 4 m.
    f0 = frame(0, pose())
    np.testing.assert_allclose(frames_bounds([f0], 4.0), [[-4, -2, 0], [4, 2, 4]])
    # Camera looking along world -y (rotated 90 deg about x; no z-up assumption), at (1, 2, 3):
    # camera (x, y, z) -> world (x, -z, y) + t.
    f1 = frame(1, pose(rot("x", 90), (1, 2, 3)))
    np.testing.assert_allclose(frames_bounds([f1], 4.0), [[-3, -2, 1], [5, 2, 5]], atol=1e-12)
    b = FragmentBuilder(KeyframeConfig(fragment_size=2), voxel_size=0.5, max_depth_m=4.0,
                        select_keyframes=False)
    b.push(f0)
    frag = b.push(f1)
    np.testing.assert_allclose(frag.bounds, [[-4, -2, 0], [5, 2, 5]], atol=1e-12)
    assert frag.voxel_size == 0.5
    # Snapping to the voxel grid rounds outwards.
    np.testing.assert_allclose(frames_bounds([f0], 3.9, voxel_size=0.5), [[-4, -2, 0], [4, 2, 4]])


def test_remap_matches_per_pixel_projection_for_scannet_cameras():
    # ScanNet-like calibration: colour 1296x968, depth 640x480; target = colour camera at 240x320.
    K_color = np.array([[1170.19, 0, 647.75], [0, 1170.19, 483.75], [0, 0, 1]])
    K_depth = np.array([[571.62, 0, 319.5], [0, 571.62, 239.5], [0, 0, 1]])
    K_dst = scale_intrinsics(K_color, (968, 1296), (240, 320))
    depth = np.random.default_rng(1).uniform(0.5, 4, (480, 640)).astype(np.float32)
    out = remap_intrinsics_nearest(depth, K_depth, K_dst, (240, 320), fill=0)
    # Reference: each target pixel's ray at 1 m, projected into the depth camera, rounded.
    u, v = np.meshgrid(np.arange(320.0), np.arange(240.0))
    rays = np.stack([(u - K_dst[0, 2]) / K_dst[0, 0], (v - K_dst[1, 2]) / K_dst[1, 1], np.ones_like(u)], -1)
    uv, _ = project(rays.reshape(-1, 3), K_depth, np.eye(4))
    cols, rows = np.floor(uv[:, 0] + 0.5).astype(int), np.floor(uv[:, 1] + 0.5).astype(int)
    inside = (cols >= 0) & (cols < 640) & (rows >= 0) & (rows < 480)
    ref = np.zeros(320 * 240, np.float32)
    ref[inside] = depth[rows[inside], cols[inside]]
    np.testing.assert_array_equal(out.ravel(), ref)
    assert inside.all()  # ScanNet's depth camera covers the colour view


def test_validate_camera_accepts_pinhole_forms_and_names_what_is_wrong():
    from gnesf_ros.errors import DataError
    from gnesf_ros.geometry.camera import CameraModelError, validate_camera

    K = np.array([[577.9, 0, 319.5], [0, 577.9, 239.5], [0, 0, 1]])
    np.testing.assert_array_equal(validate_camera(K, (480, 640), "cam"), K)
    K4 = np.eye(4)
    K4[:3, :3] = K
    np.testing.assert_array_equal(validate_camera(K4, (480, 640), "cam"), K)  # ScanNet's 4x4 form
    np.testing.assert_array_equal(validate_camera(K.reshape(-1).tolist(), (480, 640), "cam"), K)  # CameraInfo.k
    assert issubclass(CameraModelError, DataError)

    def bad(M, size=(480, 640), described=None):
        with pytest.raises(CameraModelError) as e:
            validate_camera(M, size, "intrinsic/x.txt", described)
        assert str(e.value).startswith("intrinsic/x.txt: ")
        return str(e.value)

    for r, c, v, msg in [(0, 0, np.nan, "NaN or inf"), (1, 1, np.inf, "NaN or inf"),
                         (0, 0, 0.0, "fx = 0, fy = 577.9"), (0, 0, -577.9, "fx = -577.9"),
                         (1, 1, 0.0, "fy = 0"), (2, 2, 0.0, "not a pinhole"), (2, 2, 2.0, "not a pinhole"),
                         (0, 1, 1.0, "not a pinhole"), (2, 0, 1e-3, "not a pinhole"),
                         (0, 2, 640.0, "outside the image"), (1, 2, -1.0, "outside the image"),
                         (0, 2, 100.0, "far from the image centre")]:
        M = K.copy()
        M[r, c] = v
        assert msg in bad(M), (r, c, v)
    M = K4.copy()
    M[0, 3] = 1.0
    assert "0 0 0 1" in bad(M)
    assert "shape (2, 3)" in bad(np.zeros((2, 3)))
    assert "not numbers" in bad([["a"] * 3] * 3)
    assert "empty" in bad(K, (0, 640))
    # depth images written at the colour resolution (the intrinsics are for 640x480)
    assert "far from the image centre" in bad(K, (968, 1296))
    assert "intrinsics and image size do not match" in bad(K, (240, 320))
    # a header stating another size than the images have; one rounding pixel is fine
    assert "for a 320x240 image, the image is 640x480" in bad(K, (480, 640), (240, 320))
    validate_camera(K, (480, 640), "cam", (481, 639))
    # a source that states its size (a CameraInfo) may have an off-centre principal point (a crop)
    cropped = K.copy()
    cropped[0, 2] = 100.0
    validate_camera(cropped, (480, 640), "camera_info", (480, 640))
