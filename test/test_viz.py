"""Headless rendering (known quads -> known pixels), overview framing/legend, contact sheet, gnesf-view CLI."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from gnesf_ros.classes import default_class_table
from gnesf_ros.cli.view import main as view_main
from gnesf_ros.data.ply import LabeledMesh, write_labeled_ply
from gnesf_ros.types import Frame
from gnesf_ros.viz import (UNKNOWN_COLOR, MeshRenderer, contact_sheet, legend_panel, look_at, overview_images,
                           pinhole_rays, render_mesh)

TABLE = default_class_table()
VIEW_CLI = Path(sys.executable).parent / "gnesf-view"
H, W, F = 60, 80, 50.0
K = np.array([[F, 0, 39.5], [0, F, 29.5], [0, 0, 1]])
AMBIENT = 0.35  # MeshRenderer default


def _quad(z=2.0, colors=None, labels=None):
    """Quad x, y in [-0.5, 0.5] at depth z (camera frame); vertices 0, 3 left (x < 0), 1, 2 right."""
    v = [[-0.5, -0.5, z], [0.5, -0.5, z], [0.5, 0.5, z], [-0.5, 0.5, z]]
    return LabeledMesh(v, [[0, 1, 2], [0, 2, 3]], colors, labels)


def _shade(u, v):
    """Head-light Lambert factor for a pixel looking at a plane facing the camera (independent formula)."""
    d = np.array([(u - 39.5) / F, (v - 29.5) / F, 1.0])
    return AMBIENT + (1 - AMBIENT) * (1 / np.linalg.norm(d))


def test_quad_covers_the_projected_pixels_with_its_colour():
    img = render_mesh(_quad(colors=np.full((4, 3), [200, 40, 0])), np.eye(4), K, (H, W))
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    # x = +-0.5 at z = 2 projects to u = 39.5 +- 12.5 -> pixels 27..52; likewise v 17..42
    hit = np.any(img != 255, axis=2)
    cols, rows = np.where(hit.any(0))[0], np.where(hit.any(1))[0]
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (27, 52, 17, 42)
    for u, v in [(39, 29), (28, 18), (50, 40)]:
        np.testing.assert_allclose(img[v, u], np.array([200, 40, 0]) * _shade(u, v), atol=1.0)


def test_vertex_colours_are_interpolated_with_barycentrics():
    left, right = np.array([0, 0, 240.0]), np.array([240.0, 0, 0])
    img = render_mesh(_quad(colors=[left, right, right, left]), np.eye(4), K, (H, W))
    for u in (30, 39, 47):
        t = ((u - 39.5) / F * 2.0 + 0.5)  # fraction of the way from x = -0.5 to x = 0.5
        expected = ((1 - t) * left + t * right) * _shade(u, 25)
        np.testing.assert_allclose(img[25, u], expected, atol=1.0)


def test_label_colours_are_crisp_and_pose_is_respected():
    # Quad on the floor (z = 0), camera 2 m above looking down; world +x must appear on the right.
    quad = _quad(z=0.0, labels=[1, 2, 2, 1])  # x < 0: wall, x > 0: floor
    T = look_at(np.array([0.0, 0, 2]), np.zeros(3), up=(0, 1, 0))
    img = render_mesh(quad, T, K, (H, W), color_by="labels", table=TABLE)
    wall, floor = TABLE.colors[0].astype(float), TABLE.colors[1].astype(float)
    np.testing.assert_allclose(img[29, 30], wall * _shade(30, 29), atol=1.0)
    np.testing.assert_allclose(img[29, 49], floor * _shade(49, 29), atol=1.0)


def test_backface_culling_sees_through_faces_seen_from_behind():
    near = _quad(z=2.0)  # counter-clockwise seen from +z: normal +z, pointing away from the camera
    far = _quad(z=3.0)
    both = LabeledMesh(np.vstack([near.vertices, far.vertices]), [[0, 1, 2], [0, 2, 3], [4, 6, 5], [4, 7, 6]],
                       [[255, 0, 0]] * 4 + [[0, 0, 255]] * 4)
    r = MeshRenderer(both)
    origins, dirs = pinhole_rays(np.eye(4), K, (H, W))
    centre = {c: r.render_rays(origins, dirs, cull=c)[29, 39] for c in (0, 1, -1)}
    assert centre[0][0] > 200 and centre[-1][0] > 200  # the near quad (red)
    assert centre[1][2] > 200 and centre[1][0] == 0  # culled: the far quad (blue) behind it
    hits = r.cast(origins, dirs, cull=1)
    assert hits["t"].reshape(H, W)[29, 39] == pytest.approx(3.0, abs=1e-3)  # distance along z = 1 rays


def _room():
    """4 x 3 m floor (label floor), a 0.6 m chair cube in the middle, ceiling at 2.6 m (NYU40 22)."""
    import open3d as o3d

    parts = []
    for lab, box, at in [(2, (4, 3, 0.01), (0, 0, -0.01)), (5, (0.6, 0.6, 0.6), (1.7, 1.2, 0)),
                         (22, (4, 3, 0.01), (0, 0, 2.6))]:
        b = o3d.geometry.TriangleMesh.create_box(*box).translate(at)
        parts.append((np.asarray(b.vertices), np.asarray(b.triangles), lab))
    v, f, labels, n = [], [], [], 0
    for pv, pf, lab in parts:
        v.append(pv), f.append(pf + n), labels.append(np.full(len(pv), lab))
        n += len(pv)
    return LabeledMesh(np.vstack(v), np.vstack(f), None, np.concatenate(labels))


def test_overview_frames_the_room_cuts_the_ceiling_and_lists_present_classes():
    room = _room()
    views = overview_images(room, TABLE, size=(120, 160), legend=False)
    top = views["top_down"]
    chair, floor = TABLE.colors[4], TABLE.colors[1]
    np.testing.assert_array_equal(top[60, 80], chair)  # orthographic rays hit the cube top head-on
    np.testing.assert_array_equal(top[60, 20], floor)
    assert np.all(top[:3, :3] == 255) or np.all(top[-3:, -3:] == 255)  # margin around the room
    assert not np.all(views["perspective"][60, 80] == 255)
    uncut = overview_images(room, TABLE, size=(120, 160), cut_height_m=None, legend=False)["top_down"]
    np.testing.assert_array_equal(uncut[60, 80], UNKNOWN_COLOR)  # the ceiling (not in the table)
    with_legend = overview_images(room, TABLE, size=(120, 160))["top_down"]
    panel = with_legend[:, 160:]
    np.testing.assert_array_equal(panel, legend_panel([1, 4], TABLE, 120))
    has = {i: bool(np.all(panel == TABLE.colors[i], axis=2).any()) for i in range(TABLE.num_classes)}
    assert has[1] and has[4] and sum(has.values()) == 2


def test_overview_uses_the_given_gravity_axis():
    room = _room()
    R = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # world z-up -> y-up (rotation about x)
    turned = LabeledMesh(room.vertices @ R.T, room.faces, None, room.labels)
    top = overview_images(turned, TABLE, up=(0, 1, 0), size=(120, 160), legend=False)["top_down"]
    np.testing.assert_array_equal(top[60, 80], TABLE.colors[4])  # chair top, ceiling cut away
    assert np.all(top == TABLE.colors[1], axis=2).mean() > 0.3  # mostly floor


def _frame(i, depth=True, labels=True):
    rng = np.random.default_rng(i)
    d = np.full((30, 40), 2.0, np.float32)
    d[:, :5] = 0
    lab = np.full((30, 40), 255, np.uint8)
    lab[10:20] = 4
    return Frame(stamp=i / 30, rgb=rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), K=K, T_world_cam=np.eye(4),
                 depth=d if depth else None, labels=lab if labels else None, index=i)


def test_contact_sheet_layout_and_panels():
    sheet = contact_sheet([_frame(0), _frame(7, depth=False, labels=False)], TABLE, depth_range_m=(0.0, 4.0))
    header, legend_w = 24, 170
    assert sheet.shape == (header + 2 * 30, 3 * 40 + legend_w, 3)
    row0 = sheet[header:header + 30]
    np.testing.assert_array_equal(row0[15, 80 + 20], TABLE.colors[4])  # label panel, chair row
    np.testing.assert_array_equal(row0[5, 80 + 20], [0, 0, 0])  # ignore -> black
    np.testing.assert_array_equal(row0[25, 40 + 2], [0, 0, 0])  # invalid depth -> black
    mid = cv2.applyColorMap(np.array([[127]], np.uint8), cv2.COLORMAP_TURBO)[0, 0, ::-1]
    np.testing.assert_allclose(row0[25, 40 + 20].astype(int), mid.astype(int), atol=8)  # 2 m of 4 m
    row1 = sheet[header + 30:]
    assert np.all(row1[25, 40 + 20] == 200)  # placeholder panel when a frame has no depth


def test_contact_sheet_prediction_column_and_accuracy():
    lab = np.full((60, 80), 255, np.uint8)
    lab[30:50] = 4
    frames = [Frame(stamp=0, rgb=np.zeros((60, 80, 3), np.uint8), K=K, T_world_cam=np.eye(4), labels=lab, index=0)]
    pred = np.where(lab == 255, 0, lab).astype(np.uint8)
    pred[30:40] = 1  # half of the chair rows called floor
    sheet = contact_sheet(frames, TABLE, depth_range_m=(0.0, 4.0), predictions=[pred], predictor="m2f")
    assert sheet.shape == (24 + 60, 4 * 80 + 170, 3)
    panel = sheet[24:, 240:320]
    np.testing.assert_array_equal(panel[55, 40], TABLE.colors[0])  # predicted wall where GT ignores
    np.testing.assert_array_equal(panel[35, 40], TABLE.colors[1])  # the wrong half: floor
    np.testing.assert_array_equal(panel[45, 40], TABLE.colors[4])
    assert (panel[5:20] != panel[55, 40]).any(axis=-1).sum() > 50  # the accuracy text (50 %) is written


def _cli(*args):
    return subprocess.run([str(VIEW_CLI), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_view_mesh_cli(tmp_path):
    ply = write_labeled_ply(tmp_path / "room.ply", _room())
    assert view_main(["mesh", str(ply), "--out", str(tmp_path / "o.png"), "--size", "160x120"]) == 0  # in-process:
    # a subprocess would spend seconds importing open3d again
    img = cv2.imread(str(tmp_path / "o.png"))
    assert img.shape == (120, 2 * 160 + 170, 3)
    res = _cli("mesh", tmp_path / "none.ply", "--out", tmp_path / "x.png")
    assert res.returncode == 2 and "none.ply" in res.stderr and "Traceback" not in res.stderr


def test_view_sheet_cli_on_a_written_scene(tmp_path):
    from gnesf_ros.data import scannet
    Kc = np.array([[60.0, 0, 39.5], [0, 60, 29.5], [0, 0, 1]])
    with scannet.ScanNetWriter(tmp_path / "scene0000_00", "scene0000_00", Kc, (60, 80), Kc, (60, 80)) as w:
        for i in range(8):
            T = np.eye(4)
            T[0, 3] = 0.1 * i
            label = np.full((60, 80), 5, np.uint16)
            w.add(np.full((60, 80, 3), 30 * i, np.uint8), np.full((60, 80), 1.5, np.float32), T, label)
    out = tmp_path / "sheet.png"
    scene = tmp_path / "scene0000_00"
    for source in (scene, scene / "scene0000_00.sens"):
        res = _cli("sheet", source, "--out", out, "--frames", "3", "--size", "80x60")
        assert res.returncode == 0, res.stderr
        sheet = cv2.imread(str(out))[..., ::-1]
        assert sheet.shape == (24 + 3 * 60, 3 * 80 + 170, 3)
        np.testing.assert_array_equal(sheet[24 + 30, 160 + 40], TABLE.colors[4])  # NYU40 5 = chair
    res = _cli("sheet", tmp_path / "nothing", "--out", out)
    assert res.returncode == 2 and "nothing" in res.stderr and "Traceback" not in res.stderr
