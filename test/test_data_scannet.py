"""ScanNet data layer: writer, exported-folder and .sens readers, label maps, bad input."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from gnesf_ros.classes import IGNORE, default_class_table
from gnesf_ros.data import ScanNetWriter, load_label_map, open_scene
from gnesf_ros.errors import DataError

COLOR = (64, 80)
DEPTH = (32, 40)
# Depth camera = colour camera at half resolution (pixel-edge aligned): colour pixel (u, v) sees
# depth pixel (u // 2, v // 2).
K_COLOR = np.array([[80.0, 0, 39.5], [0, 80.0, 31.5], [0, 0, 1]])
K_DEPTH = np.array([[40.0, 0, 19.5], [0, 40.0, 15.5], [0, 0, 1]])
N_FRAMES = 6
BAD_POSE = 2  # frame written with a -inf pose

# Hand-made label map: raw ScanNet id -> NYU40 id (None = empty nyu40id cell).
TSV_ROWS = [(1, "wall", 1), (3, "chair", 5), (7, "office chair", 5), (40, "ceiling", 22),
            (1200, "toilet", 33), (55, "unlabelled thing", None)]
# Expected class index per raw id (class table: wall 0, chair 4, toilet 16; ceiling not a class).
RAW_TO_CLASS = {1: 0, 3: 4, 7: 4, 40: IGNORE, 1200: 16, 55: IGNORE, 9: IGNORE, 0: IGNORE}


def write_tsv(path: Path) -> Path:
    lines = ["id\traw_category\tcategory\tcount\tnyu40id\teigen13id\tnyuClass"]
    lines += [f"{i}\t{name}\t{name}\t1\t{'' if nyu is None else nyu}\t\t" for i, name, nyu in TSV_ROWS]
    path.write_text("\n".join(lines) + "\n")
    return path


def smooth_rgb(rng: np.random.Generator) -> np.ndarray:
    """Random but smooth image (JPEG keeps it within a few grey levels)."""
    coarse = rng.integers(30, 225, (4, 5, 3)).astype(np.float32)
    return cv2.resize(coarse, (COLOR[1], COLOR[0]), interpolation=cv2.INTER_LINEAR).round().astype(np.uint8)


def pose(i: int) -> np.ndarray:
    if i == BAD_POSE:
        return np.full((4, 4), -np.inf)
    c, s = np.cos(0.1 * i), np.sin(0.1 * i)
    T = np.eye(4)
    T[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    # 71.6 / 7: its 9-digit float64 text does not round back to float32(71.6 / 7) (double rounding).
    T[:3, 3] = [0.123456789 * i, 71.6 / 7, 1.5 + 0.01 * i]
    return T


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("scannet")
    tsv = write_tsv(root / "labels_in.tsv")
    rng = np.random.default_rng(7)
    written = []
    raw_ids = np.array(sorted(RAW_TO_CLASS), np.uint16)
    scene_dir = root / "scene0001_00"
    with ScanNetWriter(scene_dir, "scene0001_00", K_COLOR, COLOR, K_DEPTH, DEPTH, label_tsv=tsv) as w:
        for i in range(N_FRAMES):
            rgb = smooth_rgb(rng)
            depth = (rng.integers(500, 4000, DEPTH) / 1000.0).astype(np.float32)  # whole mm
            depth[0, :5] = 0.0  # invalid pixels stay 0
            labels = raw_ids[rng.integers(0, raw_ids.size, (COLOR[0] // 8, COLOR[1] // 8))]
            labels = np.kron(labels, np.ones((8, 8), np.uint16))
            w.add(rgb, depth, pose(i), labels)
            written.append((rgb, depth, pose(i), labels))
    return scene_dir, written


def read_all(path, **kw):
    src = open_scene(path, **kw)
    return src, list(src)


def test_sens_and_exported_readers_yield_the_same_frames(scene):
    scene_dir, _ = scene
    for size in (None, (32, 40)):
        a_src, a = read_all(scene_dir, size=size)
        b_src, b = read_all(scene_dir / "scene0001_00.sens", size=size)
        assert type(a_src).__name__ == "ExportedScene" and type(b_src).__name__ == "SensScene"
        assert len(a) == len(b) == N_FRAMES - 1
        np.testing.assert_array_equal(a_src.K, b_src.K)
        for fa, fb in zip(a, b):
            assert fa.index == fb.index
            assert fa.stamp == pytest.approx(fb.stamp, abs=1e-6)
            np.testing.assert_array_equal(fa.T_world_cam, fb.T_world_cam)
            np.testing.assert_array_equal(fa.depth, fb.depth)
            np.testing.assert_array_equal(fa.labels, fb.labels)  # label-filt/ beside the .sens
            assert np.abs(fa.rgb.astype(int) - fb.rgb.astype(int)).max() <= 2


def test_frames_match_what_was_written(scene):
    scene_dir, written = scene
    src, frames = read_all(scene_dir / "scene0001_00.sens")
    assert src.size == COLOR and src.scene_name == "scene0001_00"
    np.testing.assert_allclose(src.K, K_COLOR)
    assert [f.index for f in frames] == [i for i in range(N_FRAMES) if i != BAD_POSE]
    for f in frames:
        rgb, depth, T, labels = written[f.index]
        assert np.abs(f.rgb.astype(int) - rgb.astype(int)).mean() < 2.0  # JPEG tolerance
        np.testing.assert_allclose(f.T_world_cam, T, atol=1e-6)  # stored as float32
        expected_depth = np.repeat(np.repeat(depth, 2, axis=0), 2, axis=1)  # u // 2, v // 2
        np.testing.assert_allclose(f.depth, expected_depth, atol=1e-6)
        assert f.depth.dtype == np.float32 and f.depth[0, 0] == 0.0
        expected = np.vectorize(RAW_TO_CLASS.get)(labels).astype(np.uint8)
        np.testing.assert_array_equal(f.labels, expected)


def test_resized_frames_scale_intrinsics_and_resample_depth_and_labels(scene):
    scene_dir, written = scene
    src, frames = read_all(scene_dir, size=(32, 40))
    # Half size: fx 80 -> 40, cx (39.5 + 0.5) / 2 - 0.5 = 19.5; pixel (u, v) sees colour pixel
    # (2u + 1, 2v + 1) and depth pixel (u, v).
    np.testing.assert_allclose(src.K, [[40, 0, 19.5], [0, 40, 15.5], [0, 0, 1]])
    for f in frames:
        _, depth, _, labels = written[f.index]
        assert f.rgb.shape == (32, 40, 3)
        np.testing.assert_allclose(f.depth, depth, atol=1e-6)
        expected = np.vectorize(RAW_TO_CLASS.get)(labels[1::2, 1::2]).astype(np.uint8)
        np.testing.assert_array_equal(f.labels, expected)


def test_invalid_pose_frames_are_skipped_and_counted(scene):
    scene_dir, _ = scene
    for path in (scene_dir, scene_dir / "scene0001_00.sens"):
        src = open_scene(path)
        assert src.skipped_poses == 1 and len(src) == N_FRAMES - 1
        assert BAD_POSE not in [f.index for f in src]
        assert src.poses.shape == (N_FRAMES - 1, 4, 4)
        np.testing.assert_array_equal(src[2].T_world_cam, src.poses[2])  # position 2 = frame 3
        assert src[2].index == 3 and src[-1].index == N_FRAMES - 1
        strided = open_scene(path, stride=2)  # frames 0, 2 (bad), 4
        assert strided.frame_numbers == [0, 4] and strided.skipped_poses == 1
        first = open_scene(path, max_frames=2)
        assert first.frame_numbers == [0, 1] and first.skipped_poses == 0


def test_label_map_from_tsv_and_identity(tmp_path):
    lut = load_label_map(write_tsv(tmp_path / "l.tsv"))
    for raw, cls in RAW_TO_CLASS.items():
        assert lut[raw] == cls, raw
    assert lut.shape == (65536,) and lut[65535] == IGNORE
    table = default_class_table()
    ident = load_label_map(None)
    for idx, nyu in enumerate(table.nyu40_ids):
        assert ident[nyu] == idx
    assert ident[0] == IGNORE and ident[22] == IGNORE and ident[300] == IGNORE


def test_label_map_rejects_bad_tsv(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("id\tname\n1\twall\n")
    with pytest.raises(DataError, match="nyu40id"):
        load_label_map(bad)
    with pytest.raises(DataError, match="not found"):
        load_label_map(tmp_path / "missing.tsv")


def test_gt_mesh_path(scene, tmp_path):
    scene_dir, _ = scene
    copy = tmp_path / "scene0001_00"
    shutil.copytree(scene_dir, copy)
    assert open_scene(copy).gt_mesh_path is None
    (copy / "scene0001_00_vh_clean_2.labels.ply").write_bytes(b"ply\n")
    assert open_scene(copy).gt_mesh_path == copy / "scene0001_00_vh_clean_2.labels.ply"
    assert open_scene(copy / "scene0001_00.sens").gt_mesh_path == copy / "scene0001_00_vh_clean_2.labels.ply"


def test_sens_without_label_folder_has_no_labels(scene, tmp_path):
    scene_dir, _ = scene
    shutil.copy(scene_dir / "scene0001_00.sens", tmp_path / "s.sens")
    src = open_scene(tmp_path)  # a folder holding one .sens
    frames = list(src)
    assert len(frames) == N_FRAMES - 1 and all(f.labels is None for f in frames)


SENS_HEADER_BYTES = 4 + 8 + len("gnesf_ros") + 4 * 64 + 2 * 4 + 4 * 4 + 4 + 8  # see data/sens.py


def test_truncated_sens_names_file_and_frame(scene, tmp_path):
    data = (scene[0] / "scene0001_00.sens").read_bytes()
    cut = tmp_path / "cut.sens"
    cut.write_bytes(data[: len(data) - 8 - 10])  # drop the IMU count and the end of the last frame
    with pytest.raises(DataError, match=rf"cut\.sens.*frame {N_FRAMES - 1}\b"):
        open_scene(cut)
    cut.write_bytes(data[: SENS_HEADER_BYTES + 50])  # inside frame 0's head
    with pytest.raises(DataError, match=r"cut\.sens.*frame 0\b"):
        open_scene(cut)
    cut.write_bytes(data[:100])  # inside the header
    with pytest.raises(DataError, match=r"cut\.sens.*truncated"):
        open_scene(cut)


def test_corrupt_sens_names_file_and_frame(scene, tmp_path):
    data = bytearray((scene[0] / "scene0001_00.sens").read_bytes())
    data[-8 - 16:-8] = b"\xff" * 16  # garble the last frame's zlib depth stream
    bad = tmp_path / "bad.sens"
    bad.write_bytes(bytes(data))
    src = open_scene(bad)
    with pytest.raises(DataError, match=rf"bad\.sens: frame {N_FRAMES - 1}: depth"):
        list(src)
    good = bytearray((scene[0] / "scene0001_00.sens").read_bytes())
    width_offset = 4 + 8 + len("gnesf_ros") + 4 * 64 + 2 * 4 + 2 * 4  # uint32 depth width
    good[width_offset:width_offset + 4] = (41).to_bytes(4, "little")
    bad.write_bytes(bytes(good))
    with pytest.raises(DataError, match=r"bad\.sens: frame 0: depth has 2560 bytes, expected 2624 for 41x32"):
        next(iter(open_scene(bad)))
    data[0] = 3  # version 3
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match="version"):
        open_scene(bad)


def test_missing_inputs_say_what_was_expected(scene, tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_scene(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"expected color/, depth/, pose/, intrinsic/ or a \.sens file"):
        open_scene(tmp_path / "empty")
    copy = tmp_path / "scene"
    shutil.copytree(scene[0], copy)
    (copy / "pose" / "3.txt").unlink()
    with pytest.raises(DataError, match=r"missing pose: .*pose/3\.txt"):
        open_scene(copy)
    (copy / "intrinsic" / "intrinsic_depth.txt").unlink()
    with pytest.raises(DataError, match="missing depth intrinsics"):
        open_scene(copy)


def test_wrong_image_sizes_are_reported(scene, tmp_path):
    copy = tmp_path / "scene"
    shutil.copytree(scene[0], copy)
    cv2.imwrite(str(copy / "depth" / "4.png"), np.zeros((30, 40), np.uint16))
    with pytest.raises(DataError, match=r"depth/4\.png: image is 40x30, the scene's other frames are 40x32"):
        list(open_scene(copy))
    cv2.imwrite(str(copy / "depth" / "4.png"), np.zeros(DEPTH, np.uint16))
    cv2.imwrite(str(copy / "label-filt" / "1.png"), np.zeros((10, 10), np.uint16))
    with pytest.raises(DataError, match=r"label-filt/1\.png: label image is 10x10"):
        list(open_scene(copy))
    # Depth intrinsics of a 4x larger image: principal point outside the 40x32 depth image.
    np.savetxt(copy / "intrinsic" / "intrinsic_depth.txt", np.diag([160.0, 160.0, 1, 1]) + np.array(
        [[0, 0, 79.5, 0], [0, 0, 63.5, 0], [0, 0, 0, 0], [0, 0, 0, 0]]))
    with pytest.raises(DataError, match="intrinsics and image size do not match"):
        open_scene(copy)


def test_writer_rejects_wrong_shapes(tmp_path):
    with ScanNetWriter(tmp_path, "s", K_COLOR, COLOR, K_DEPTH, DEPTH) as w:
        with pytest.raises(ValueError, match="rgb"):
            w.add(np.zeros((10, 10, 3), np.uint8), np.zeros(DEPTH, np.float32), np.eye(4))
        with pytest.raises(ValueError, match="depth"):
            w.add(np.zeros((*COLOR, 3), np.uint8), np.zeros(COLOR, np.float32), np.eye(4))


def test_synthetic_scene_reads_identically_through_both_readers(tmp_path):
    import gnesf_ros.data.synthetic as synthetic
    scene_dir = Path(synthetic.generate_scene(tmp_path, seed=2000, frames=10, size=(120, 160), workers=1))
    sens_files = list(scene_dir.glob("*.sens"))
    assert len(sens_files) == 1
    a, b = list(open_scene(scene_dir)), list(open_scene(sens_files[0]))
    assert len(a) == len(b) > 0
    for fa, fb in zip(a, b):
        assert fa.index == fb.index
        np.testing.assert_array_equal(fa.T_world_cam, fb.T_world_cam)
        np.testing.assert_array_equal(fa.depth, fb.depth)
        assert np.abs(fa.rgb.astype(int) - fb.rgb.astype(int)).max() <= 2
        assert fa.labels is not None
        np.testing.assert_array_equal(fa.labels, fb.labels)


def test_parent_folder_with_one_scene_opens_it_and_with_two_names_them(scene, tmp_path):
    scene_dir, _ = scene
    parent = tmp_path / "scans"
    shutil.copytree(scene_dir, parent / "scene0001_00")
    (parent / "notes").mkdir()  # not a scene: ignored
    src = open_scene(parent)
    assert src.scene_name == "scene0001_00" and len(list(src)) == N_FRAMES - 1
    shutil.copytree(scene_dir, parent / "scene0002_00")
    with pytest.raises(DataError, match=r"holds 2 scenes \(scene0001_00, scene0002_00\); pass one"):
        open_scene(parent)


def _write_intrinsic(scene_dir: Path, cam: str, K: np.ndarray) -> Path:
    from gnesf_ros.data.sens import as_mat4

    path = scene_dir / "intrinsic" / f"intrinsic_{cam}.txt"
    np.savetxt(path, as_mat4(K), fmt="%.9g")
    return path


def _with(K: np.ndarray, **entries) -> np.ndarray:
    K = K.copy()
    for name, v in entries.items():
        K[{"fx": (0, 0), "fy": (1, 1), "cx": (0, 2), "cy": (1, 2)}[name]] = v
    return K


BAD_INTRINSICS = [  # (camera, K, what the one-line error says) -- each gave a wrong or empty map before
    ("depth", _with(K_DEPTH, fx=0.0, fy=0.0), "fx = 0, fy = 0"),
    ("color", _with(K_COLOR, fx=np.nan), "NaN or inf"),
    ("color", _with(K_COLOR, fx=-80.0), "fx = -80"),
    ("color", _with(K_COLOR, cx=90.0), "outside the image"),
]


@pytest.mark.parametrize("cam, K, message", BAD_INTRINSICS)
def test_exported_scene_with_bad_intrinsics_is_refused_at_open(scene, tmp_path, cam, K, message):
    copy = tmp_path / "scene"
    shutil.copytree(scene[0], copy)
    (copy / "scene0001_00.sens").unlink()
    path = _write_intrinsic(copy, cam, K)
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*" + re.escape(message)):
        open_scene(copy)


@pytest.mark.parametrize("cam, K, message", BAD_INTRINSICS)
def test_sens_with_bad_intrinsics_is_refused_at_open(scene, tmp_path, cam, K, message):
    from gnesf_ros.data.sens import as_mat4

    data = bytearray((scene[0] / "scene0001_00.sens").read_bytes())
    offset = 4 + 8 + len("gnesf_ros") + (0 if cam == "color" else 2 * 64)  # colour K, colour T, depth K
    data[offset:offset + 64] = as_mat4(K).astype("<f4").tobytes()
    bad = tmp_path / "bad.sens"
    bad.write_bytes(bytes(data))
    what = "colour" if cam == "color" else "depth"
    with pytest.raises(DataError, match=rf"bad\.sens: {what} intrinsics.*{re.escape(message)}"):
        open_scene(bad)


def test_depth_images_at_another_size_than_their_intrinsics_are_refused(scene, tmp_path):
    """Depth written at the colour resolution while intrinsic_depth still describes 40x32: the
    principal point lands far from the image centre (before: mapped, mesh precision 0.27)."""
    copy = tmp_path / "scene"
    shutil.copytree(scene[0], copy)
    for p in (copy / "depth").glob("*.png"):
        d = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(p), cv2.resize(d, (COLOR[1], COLOR[0]), interpolation=cv2.INTER_NEAREST))
    with pytest.raises(DataError, match=r"intrinsic_depth\.txt: depth intrinsics: image is 80x64 .*"
                                        r"intrinsics and image size do not match"):
        open_scene(copy)
    # .sens: frames whose depth is not the header's size are refused at open, not in the middle of a map
    data = bytearray((scene[0] / "scene0001_00.sens").read_bytes())
    width_offset = 4 + 8 + len("gnesf_ros") + 4 * 64 + 2 * 4 + 2 * 4
    data[width_offset:width_offset + 8] = np.array([48, 36], "<u4").tobytes()  # depth 48x36: K still fits
    bad = tmp_path / "bad.sens"
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"bad\.sens: frame 0: depth has \d+ bytes, expected 3456 for 48x36"):
        open_scene(bad)


def test_gnesf_map_refuses_bad_intrinsics_with_one_line(scene, tmp_path, capsys):
    from gnesf_ros.cli.map import main as map_main

    copy = tmp_path / "scene"
    shutil.copytree(scene[0], copy)
    (copy / "scene0001_00.sens").unlink()
    path = _write_intrinsic(copy, "color", _with(K_COLOR, fx=np.nan))
    assert map_main([str(copy), "--out", str(tmp_path / "out"), "--mode", "baseline_bayesian",
                     "--segmenter", "oracle", "--heldout-every", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "NaN" in err[0], err
    assert not (tmp_path / "out" / "metrics.json").exists()
