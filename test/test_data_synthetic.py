"""Synthetic scene generator: determinism, variety, class coverage, geometry/label consistency,
camera-path limits, ScanNet-layout output and the gnesf-synth CLI."""
from __future__ import annotations

import hashlib

import numpy as np
import open3d as o3d
import pytest
from scipy.spatial import cKDTree

from gnesf_ros.classes import default_class_table
from gnesf_ros.data.synthetic import (NYU40_PALETTE, build_scene, camera_path, default_intrinsics,
                                      generate_scene)

SIZE = (60, 80)


@pytest.fixture(scope="module")
def scene():
    return build_scene(7)


@pytest.fixture(scope="module")
def path(scene):
    return camera_path(scene, 240, seed=7)


@pytest.fixture(scope="module")
def gt(scene):
    return scene.gt_mesh()


def _backproject(depth, K, T):
    v, u = np.nonzero(depth > 0)
    z = depth[v, u].astype(np.float64)
    pc = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1)
    return pc @ T[:3, :3].T + T[:3, 3], v, u


def test_same_seed_same_scene_and_images(scene, path):
    again = build_scene(7)
    K = default_intrinsics(SIZE)
    a = scene.render(path[10], K, SIZE)
    b = again.render(path[10], K, SIZE)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)
    p2 = camera_path(again, 240, seed=7)
    assert all(np.array_equal(x, y) for x, y in zip(path, p2))


def test_different_seeds_give_different_layouts():
    sigs = set()
    for seed in (0, 1, 2, 3):
        s = build_scene(seed)
        sigs.add((s.num_triangles, tuple(np.round(s.bounds.ravel(), 3))))
    assert len(sigs) == 4


@pytest.mark.parametrize("seed", [0, 1, 2, 11, 2000])
def test_at_least_12_of_20_classes(seed):
    table = default_class_table()
    present = build_scene(seed).classes_present() & set(table.nyu40_ids)
    assert len(present) >= 12, sorted(present)


def test_render_outputs(scene, path):
    K = default_intrinsics(SIZE)
    rgb, depth, nyu = scene.render(path[0], K, SIZE)
    assert rgb.shape == (*SIZE, 3) and rgb.dtype == np.uint8
    assert depth.shape == SIZE and depth.dtype == np.float32
    assert nyu.shape == SIZE and nyu.dtype == np.uint8
    assert (depth > 0).mean() > 0.99  # closed rooms: every ray hits something
    assert depth.max() <= 10.0
    assert np.array_equal(depth > 0, nyu > 0)
    assert rgb.std() > 5  # shaded and textured, not flat


def test_depth_backprojects_onto_gt_mesh_and_labels_agree(scene, path, gt):
    tree = cKDTree(gt.vertices)
    K = default_intrinsics(SIZE)
    dists, agree = [], []
    for T in path[::40]:
        _, depth, nyu = scene.render(T, K, SIZE)
        pts, v, u = _backproject(depth, K, T)
        d, idx = tree.query(pts)
        dists.append(d)
        agree.append(gt.labels[idx] == nyu[v, u])
    dists, agree = np.concatenate(dists), np.concatenate(agree)
    assert np.median(dists) < 0.01
    assert np.quantile(dists, 0.99) < 0.03
    assert agree.mean() > 0.95


def test_gt_mesh_is_dense_and_labelled(gt):
    e = gt.vertices[gt.faces]
    lengths = np.linalg.norm(e - np.roll(e, 1, axis=1), axis=2)
    assert lengths.max() <= 0.0301
    assert 22 in set(gt.labels.tolist())  # ceiling kept as NYU40 22 (outside the 20 classes)
    assert np.array_equal(gt.colors, NYU40_PALETTE[gt.labels])


def test_camera_path_limits(scene, path, gt):
    hz = 30.0
    T = np.stack(path)
    R = T[:, :3, :3]
    assert np.allclose(np.einsum("nji,njk->nik", R, R), np.eye(3), atol=1e-6)
    assert np.allclose(np.linalg.det(R), 1.0)
    z = T[:, 2, 3]  # world z is up for this generator (floor at z = 0)
    assert z.min() >= 1.2 - 1e-6 and z.max() <= 1.8 + 1e-6
    speed = np.linalg.norm(np.diff(T[:, :3, 3], axis=0), axis=1) * hz
    assert speed.max() <= 0.5
    assert np.median(speed) > 0.1
    acc = np.linalg.norm(np.diff(T[:, :3, 3], n=2, axis=0), axis=1) * hz * hz
    assert np.quantile(acc, 0.99) < 1.5  # smooth: no jumps or sudden turns
    rel = np.einsum("nji,njk->nik", R[:-1], R[1:])
    ang = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1))) * hz
    assert ang.max() <= 40.0
    # clearance to the ground-truth surface (independent mesh: dense GT tessellation)
    rc = o3d.t.geometry.RaycastingScene()
    rc.add_triangles(o3d.core.Tensor(gt.vertices), o3d.core.Tensor(gt.faces.astype(np.uint32)))
    clear = rc.compute_distance(o3d.core.Tensor(T[:, :3, 3].astype(np.float32))).numpy()
    assert clear.min() >= 0.3 - 1e-3
    # inside the rooms (layout frame) or in a doorway
    xy = scene.world_to_layout(T[:, :3, 3])[:, :2]
    inside = np.zeros(len(xy), bool)
    for r in scene.rooms:
        inside |= r.contains(xy)
    for c in scene.doorways:
        inside |= np.linalg.norm(xy - c, axis=1) < 0.6
    assert inside.all()
    # looks around: the viewing direction covers a wide range of headings and some pitch down
    fwd = R[:, :, 2]
    heading = np.degrees(np.arctan2(fwd[:, 1], fwd[:, 0]))
    assert np.ptp(np.unwrap(np.radians(heading))) > np.radians(60)
    assert fwd[:, 2].min() < -0.2


def test_multi_room_scene_has_doorways_and_path_visits_rooms():
    s = build_scene(5, rooms=3)
    assert len(s.rooms) == 3 and len(s.doorways) == 2
    P = camera_path(s, 600, seed=5)
    xy = s.world_to_layout(np.stack([T[:3, 3] for T in P]))[:, :2]
    visited = {i for i, r in enumerate(s.rooms) if r.contains(xy).any()}
    assert len(visited) >= 2


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_generate_scene_layout_and_determinism(tmp_path):
    from gnesf_ros.data.labelmap import load_label_map
    import cv2

    a = generate_scene(tmp_path / "a", seed=4, frames=3, size=SIZE)
    b = generate_scene(tmp_path / "b", seed=4, frames=3, size=SIZE)
    assert a.name == "scene0004_00"
    da, db = _digest(a), _digest(b)
    assert da == db
    for f in ("color/0.jpg", "depth/2.png", "pose/1.txt", "label-filt/0.png", "intrinsic/intrinsic_color.txt",
              "intrinsic/intrinsic_depth.txt", "scene0004_00.sens", "scene0004_00_vh_clean_2.labels.ply",
              "scannetv2-labels.combined.tsv"):
        assert f in da, f
    # label-filt holds ScanNet raw ids that map (through the copied tsv) to the rendered classes
    scene = build_scene(4)
    T = camera_path(scene, 3, seed=4)[0]
    assert np.allclose(np.loadtxt(a / "pose" / "0.txt"), T, atol=1e-5)
    _, _, nyu = scene.render(T, default_intrinsics(SIZE), SIZE)
    raw = cv2.imread(str(a / "label-filt" / "0.png"), cv2.IMREAD_UNCHANGED)
    lut = load_label_map(a / "scannetv2-labels.combined.tsv")
    table = default_class_table()
    assert np.array_equal(lut[raw], table.nyu40_to_index_lut()[nyu])
    depth = cv2.imread(str(a / "depth" / "0.png"), cv2.IMREAD_UNCHANGED)
    assert depth.shape == (480, 640) and depth.dtype == np.uint16


def test_cli_bad_arguments_exit_2(tmp_path, capsys):
    from gnesf_ros.cli.synth import main

    assert main(["--seed", "1", "--frames", "0", "--out", str(tmp_path)]) == 2
    assert "frames" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--seed", "1", "--out", str(tmp_path), "--size", "640"])
    assert e.value.code == 2


def test_generate_scene_again_into_the_same_folder_replaces_the_scene(tmp_path):
    """30 frames, then 5 into the same place: the folder and the .sens hold 5 (before: the .sens 5,
    the folder 30, and gnesf-map mapped 30); files that are not the generator's own stay."""
    from gnesf_ros.data import open_scene

    scene_dir = generate_scene(tmp_path, seed=5, frames=30, size=SIZE)
    (scene_dir / "notes.txt").write_text("mine")
    (tmp_path / "other.txt").write_text("mine too")
    assert len(list((scene_dir / "color").glob("*.jpg"))) == 30
    again = generate_scene(tmp_path, seed=5, frames=5, size=SIZE)
    assert again == scene_dir
    for sub in ("color", "depth", "pose", "label-filt"):
        assert sorted(p.name for p in (scene_dir / sub).iterdir()) == sorted(
            f"{i}.{'jpg' if sub == 'color' else 'txt' if sub == 'pose' else 'png'}" for i in range(5)), sub
    assert len(open_scene(scene_dir)) == 5 and len(open_scene(scene_dir / "scene0005_00.sens")) == 5
    assert len(open_scene(tmp_path)) == 5  # no partial folder left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt", "scene0005_00"]
    assert (scene_dir / "notes.txt").read_text() == "mine"
