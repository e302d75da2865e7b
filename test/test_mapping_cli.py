"""gnesf-map end to end on a small generated synthetic scene (baseline mode, oracle segmenter)."""
import json

import cv2
import numpy as np
import pytest
from scipy.spatial import cKDTree

from gnesf_ros.cli.map import main
from gnesf_ros.data.ply import LabeledMesh, read_labeled_ply
from gnesf_ros.data.synthetic import generate_scene
from gnesf_ros.eval.metrics import semantic_3d
from gnesf_ros.mapping import SemanticVoxelMap

CONFIG = """camera: {width: 160, height: 120}
segmenter: {backend: oracle}
keyframe: {fragment_size: 4}
"""


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    scene = generate_scene(root / "data", seed=2001, frames=60, size=(120, 160))
    cfg = root / "small.yaml"
    cfg.write_text(CONFIG)
    out = root / "out"
    rc = main([str(scene), "--out", str(out), "--config", str(cfg), "--mode", "baseline_bayesian",
               "--heldout-every", "5"])
    return rc, scene, out


def test_cli_writes_all_outputs(mapped):
    rc, scene, out = mapped
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    mesh = read_labeled_ply(out / "mesh.ply")
    assert len(mesh.faces) > 1000
    # Known labels except on the ceiling (NYU40 22 is outside the 20-class table: unknown, id 0).
    below = mesh.vertices[:, 2] < 2.0
    assert below.mean() > 0.5 and (mesh.labels[below] > 0).mean() > 0.95
    vmap = SemanticVoxelMap.load(out / "map.npz")
    assert vmap.num_blocks == metrics["counters"]["map_blocks"] > 0
    views = sorted((out / "views").glob("*_labels.png"))
    assert len(views) >= 3
    for v in views:
        labels = cv2.imread(str(v), cv2.IMREAD_UNCHANGED)
        depth = cv2.imread(str(v).replace("_labels.png", "_depth.png"), cv2.IMREAD_UNCHANGED)
        assert labels.shape == depth.shape == (120, 160) and depth.dtype == np.uint16
        assert (depth > 0).mean() > 0.5
        assert (out / "views" / v.name.replace("_labels.png", "_labels_color.png")).is_file()
    for name in ("overview_top_down.png", "overview_perspective.png"):
        assert cv2.imread(str(out / name)) is not None
    assert metrics["counters"]["keyframes"] >= 4 and metrics["counters"]["fragments"] >= 2
    assert metrics["semantic_2d"]["overall_acc"] > 0.7  # oracle segmenter fused over views
    assert 0 < metrics["mesh"]["prec"] <= 1 and metrics["throughput"]["keyframes_per_s"] > 0


def test_cli_3d_miou_well_above_chance(mapped):
    """3D mIoU on the ground-truth vertices the short scan observed (within 5 cm of the map),
    against random labels on the same vertices."""
    rc, scene, out = mapped
    metrics = json.loads((out / "metrics.json").read_text())
    pred = read_labeled_ply(out / "mesh.ply")
    full = read_labeled_ply(next(scene.glob("*_vh_clean_2.labels.ply")))
    gt = LabeledMesh(full.vertices[::4], labels=full.labels[::4])  # every 4th vertex keeps it quick
    near = cKDTree(pred.vertices).query(gt.vertices)[0] < 0.05
    seen = LabeledMesh(gt.vertices[near], labels=gt.labels[near])
    rng = np.random.default_rng(0)
    ids = np.unique(gt.labels[gt.labels > 0])
    chance = LabeledMesh(pred.vertices, pred.faces, labels=rng.choice(ids, len(pred.vertices)))
    miou, chance_miou = semantic_3d(pred, seen)["miou"], semantic_3d(chance, seen)["miou"]
    assert miou > 0.35 and miou > 3 * chance_miou  # noisy oracle (~65% 2D mIoU), 7 keyframes
    assert metrics["semantic"]["miou"] > 2 * semantic_3d(chance, gt)["miou"]  # whole scene


def test_cli_reports_a_missing_input(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err


def _outputs(out):
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))


def test_cli_rerun_replaces_the_previous_run_and_writes_metrics_last(mapped, tmp_path, monkeypatch):
    """An --out of another run (other mode, held-out views) holds only the new run's results;
    an interrupted run leaves no metrics.json (the mark of a complete run) and no partial file."""
    import os
    import shutil

    from gnesf_ros.mapping import voxel_map

    rc, scene, first = mapped
    out = tmp_path / "out"
    shutil.copytree(first, out)
    assert (out / "views").is_dir() and (out / "metrics.json").is_file()
    (out / ".mesh.ply.tmp-dead0001.ply").write_bytes(b"")  # left by a killed run
    (out / "notes.txt").write_text("mine")
    args = [str(scene), "--out", str(out), "--config", str(first.parent / "small.yaml"),
            "--mode", "baseline_average", "--heldout-every", "0", "--max-frames", "24"]

    def killed_save(self, path):
        raise KeyboardInterrupt  # e.g. Ctrl-C (or a kill) while the map file is written

    monkeypatch.setattr(voxel_map.SemanticVoxelMap, "save", killed_save)
    assert main(args) != 0
    monkeypatch.undo()
    left = _outputs(out)
    assert "metrics.json" not in left and "views" not in left and ".mesh.ply.tmp-dead0001.ply" not in left
    assert all((out / n).stat().st_size > 0 for n in left if (out / n).is_file())
    assert not [n for n in left if n.startswith(".")]

    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append(os.path.basename(dst)),
                                                         real_replace(src, dst))[1])
    assert main(args) == 0
    monkeypatch.undo()
    assert replaced[-1] == "metrics.json" and {"mesh.ply", "map.npz"} <= set(replaced)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "baseline_average" and metrics["frames"] == 24 and "semantic_2d" not in metrics
    assert _outputs(out) == ["map.npz", "mesh.ply", "metrics.json", "notes.txt", "overview_perspective.png",
                             "overview_top_down.png"]
    assert SemanticVoxelMap.load(out / "map.npz").num_blocks == metrics["counters"]["map_blocks"]
    newest = max((out / n).stat().st_mtime_ns for n in _outputs(out) if n not in ("metrics.json", "notes.txt"))
    assert (out / "metrics.json").stat().st_mtime_ns >= newest


@pytest.mark.parametrize("under", [False, True])
def test_cli_out_that_is_a_file_fails_before_mapping(mapped, tmp_path, capsys, under):
    import time

    _, scene, first = mapped
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "run" if under else tmp_path / "afile"
    capsys.readouterr()
    t0 = time.monotonic()
    rc = main([str(scene), "--out", str(out), "--config", str(first.parent / "small.yaml"),
               "--mode", "baseline_bayesian"])
    err = capsys.readouterr().err
    assert rc == 2 and time.monotonic() - t0 < 5, err  # refused before mapping, not after
    assert len(err.strip().splitlines()) == 1 and "--out" in err and "Traceback" not in err, err
    assert (tmp_path / "afile").read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_ground_truth_without_labels_is_refused_before_mapping(tmp_path):
    import time

    scene = generate_scene(tmp_path / "data", seed=2002, frames=20, size=(60, 80))
    gt = tmp_path / "plain.ply"  # a mesh without the per-vertex label property
    gt.write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                  "property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n"
                  "0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    t0 = time.monotonic()
    assert main([str(scene), "--out", str(tmp_path / "out"), "--gt", str(gt), "--segmenter", "oracle",
                 "--mode", "baseline_average"]) == 2
    assert time.monotonic() - t0 < 10 and not (tmp_path / "out" / "metrics.json").exists()
