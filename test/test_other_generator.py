"""The independent room generator of benchmarks/other_generator.py: depth, classes and GT points agree
with the analytic geometry."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "other_generator.py"
_spec = importlib.util.spec_from_file_location("other_generator", _PATH)
og = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("other_generator", og)  # dataclasses look their module up
_spec.loader.exec_module(og)

SMALL = (60, 80)


def _room(boxes=()) -> "og.Room":
    rng = np.random.default_rng(0)
    return og.Room(np.array([4.0, 5.0, 2.5]), list(boxes), [], [og.make_material(rng, "paint")] * 4,
                   og.make_material(rng, "planks"), og.make_material(rng, "ceiling"),
                   og.make_material(rng, "wood"), 0.08, np.array([[2.0, 2.5, 2.3]]), np.array([3.0]), 0.3)


def test_facing_wall_depth_and_class():
    room = _room()
    T = og.look_pose(np.array([2.0, 2.5, 1.25]), 0.0, 0.0)  # looking along +x at wall x = 4, 2 m away
    K = og.intrinsics(SMALL)
    rgb, depth, lab = og.render(room, T, K, SMALL, noise_seed=0)
    h, w = SMALL
    # a flat wall facing the camera: z-depth 2 m at every pixel that sees it
    assert depth[h // 2, w // 2] == pytest.approx(2.0, abs=1e-5)
    assert lab[h // 2, w // 2] == og.WALL
    assert np.allclose(depth[lab == og.WALL], 2.0, atol=1e-4)
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8


def test_floor_depth_and_box_top():
    box = og.Box(np.array([2.0, 2.5]), np.array([0.5, 0.4]), 0.75, 0.3, og.TABLE,
                 og.make_material(np.random.default_rng(1), "wood"))
    room = _room([box])
    K = og.intrinsics(SMALL)
    T = og.look_pose(np.array([2.0, 2.5, 1.5]), 0.0, -np.pi / 2)  # straight down over the box centre
    _, depth, lab = og.render(room, T, K, SMALL)
    h, w = SMALL
    assert lab[h // 2, w // 2] == og.TABLE
    assert depth[h // 2, w // 2] == pytest.approx(1.5 - 0.75, abs=1e-5)  # top of the box at its height
    assert np.allclose(depth[lab == og.FLOOR], 1.5, atol=1e-4)  # the floor around it
    assert (lab == og.FLOOR).any()
    # world point of a floor pixel lies on z = 0 (back-projection with the OpenCV convention)
    v, u = np.argwhere(lab == og.FLOOR)[0]
    p = T[:3, :3] @ (np.linalg.inv(K) @ np.array([u, v, 1.0]) * depth[v, u]) + T[:3, 3]
    assert p[2] == pytest.approx(0.0, abs=1e-4)


def test_gt_points_on_surfaces_and_culled_to_view():
    from gnesf_ros.classes import default_class_table

    box = og.Box(np.array([1.5, 2.0]), np.array([0.4, 0.3]), 0.8, 0.5, og.CABINET,
                 og.make_material(np.random.default_rng(2), "wood"))
    room = _room([box])
    table = default_class_table()
    gt = og.gt_points(room, table)
    v = gt.vertices.astype(np.float64)
    W, D, H = room.size
    d_room = np.min(np.abs(np.c_[v, v - room.size]), axis=1)  # distance to the nearest room plane
    loc = box.to_local(np.c_[v[:, :2] - box.centre, v[:, 2]])
    on_box = np.all(np.abs(loc[:, :2]) <= box.half + 1e-6, 1) & (loc[:, 2] <= box.height + 1e-6)
    on_box &= (np.abs(np.abs(loc[:, 0]) - box.half[0]) < 1e-6) | (np.abs(np.abs(loc[:, 1]) - box.half[1]) < 1e-6) \
        | (np.abs(loc[:, 2] - box.height) < 1e-6)
    assert np.all((d_room < 1e-5) | on_box)
    assert set(np.unique(gt.labels)) <= {0, 1, 2, 3}  # ceiling 0, wall 1, floor 2, cabinet 3 (NYU40)
    assert np.all(gt.labels[np.abs(v[:, 2] - H) < 1e-6] == 0)
    K = og.intrinsics(SMALL)
    T = og.look_pose(np.array([3.0, 4.0, 1.4]), np.arctan2(-2.0, -1.5), -0.3)
    _, depth, _ = og.render(room, T, K, SMALL)
    seen = og.cull_to_observed(gt, T[None], K, [depth])
    assert 0 < len(seen.vertices) < len(gt.vertices)
    cam = (seen.vertices.astype(np.float64) - T[:3, 3]) @ T[:3, :3]
    assert np.all(cam[:, 2] > 0)


def test_camera_path_inside_room_and_smooth():
    room, poses = og.build_room(3, 60)
    p = poses[:, :3, 3]
    assert np.all(p[:, :2] > 0.5) and np.all(p[:, :2] < room.size[:2] - 0.5)
    assert np.all((p[:, 2] > 1.1) & (p[:, 2] < 1.7))
    speed = np.linalg.norm(np.diff(p, axis=0), axis=1) * og.FPS
    assert np.all(speed < 0.6)
    for T in poses[:3]:
        assert np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-9)
