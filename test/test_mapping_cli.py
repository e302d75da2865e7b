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
