"""Metrics against hand-computed cases, and the gnesf-eval CLI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gnesf_ros.classes import IGNORE, default_class_table
from gnesf_ros.config import EvalConfig
from gnesf_ros.data.ply import LabeledMesh, write_labeled_ply
from gnesf_ros.eval import (ConfusionAccumulator, evaluate_meshes, format_markdown, mesh_points, mesh_quality,
                            miou_2d, sample_surface, semantic_3d, voxel_downsample)

TABLE = default_class_table()
WALL, FLOOR, CHAIR = 1, 2, 5  # NYU40 ids; class indices 0, 1, 4
EVAL_CLI = Path(sys.executable).parent / "gnesf-eval"


def test_confusion_known_ious_and_unknown_counts_wrong():
    acc = ConfusionAccumulator(4, ["a", "b", "c", "d"])
    # gt:   a a a b b c ;  pred: a a b b b unknown  (+ one ignored GT pixel)
    acc.add(np.array([0, 0, 0, 1, 1, 2, IGNORE]), np.array([0, 0, 1, 1, 1, IGNORE, 3]))
    r = acc.results()
    iou = {k: v["iou"] for k, v in r["per_class"].items()}
    # a: TP 2, FN 1, FP 0 -> 2/3; b: TP 2, FP 1 -> 2/3; c: TP 0, FN 1 (unknown) -> 0; d: absent -> None
    assert iou == pytest.approx({"a": 2 / 3, "b": 2 / 3, "c": 0.0, "d": None})
    assert r["miou"] == pytest.approx(4 / 9)
    assert r["macc"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert r["overall_acc"] == pytest.approx(4 / 6)
    assert r["num_points"] == 6 and r["num_unknown"] == 1


def test_class_only_predicted_is_averaged_absent_from_both_is_not():
    acc = ConfusionAccumulator(3)
    acc.add(np.array([0, 0]), np.array([0, 1]))  # class 1 predicted, never in GT; class 2 nowhere
    r = acc.results()
    assert r["per_class"]["1"]["iou"] == 0.0 and r["per_class"]["2"]["iou"] is None
    assert r["per_class"]["1"]["acc"] is None  # accuracy only for classes in GT
    assert r["miou"] == pytest.approx((1 / 2 + 0) / 2)
    assert r["macc"] == pytest.approx(1 / 2)


def test_accumulating_two_scenes_equals_one_matrix():
    a, b, both = ConfusionAccumulator(3), ConfusionAccumulator(3), ConfusionAccumulator(3)
    g1, p1, g2, p2 = np.array([0, 1, 2]), np.array([0, 2, 2]), np.array([1, 1]), np.array([1, 0])
    a.add(g1, p1)
    b.add(g2, p2)
    a.merge(b)
    both.add(np.r_[g1, g2], np.r_[p1, p2])
    np.testing.assert_array_equal(a.matrix, both.matrix)


def _line(xs, labels):
    return LabeledMesh(np.c_[xs, np.zeros(len(xs)), np.zeros(len(xs))], labels=labels)


def test_label_transfer_two_classes_by_hand():
    # GT: x = 0 1 2 3 (wall wall floor floor), x = 5 unannotated (0), x = 6 ceiling (22, not in table)
    gt = _line([0, 1, 2, 3, 5, 6], [WALL, WALL, FLOOR, FLOOR, 0, 22])
    # pred: nearest of GT 0 -> 0.1 wall, GT 1 -> 1.4 floor (wrong), GT 2, 3 -> 2.6 floor; chair at 10 never nearest
    pred = _line([0.1, 1.4, 2.6, 10.0], [WALL, FLOOR, FLOOR, CHAIR])
    r = semantic_3d(pred, gt, TABLE)
    assert r["num_points"] == 4  # the two GT vertices outside the table are ignored
    assert r["per_class"]["wall"]["iou"] == pytest.approx(1 / 2)  # TP 1, FN 1
    assert r["per_class"]["floor"]["iou"] == pytest.approx(2 / 3)  # TP 2, FP 1
    assert r["per_class"]["chair"]["iou"] is None
    assert r["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert r["macc"] == pytest.approx((1 / 2 + 1) / 2)


def test_unknown_prediction_is_wrong_and_gt_vs_gt_is_perfect():
    gt = _line([0, 1, 2, 3], [WALL, WALL, FLOOR, FLOOR])
    pred = _line([0, 1, 2, 3], [0, WALL, FLOOR, 22])  # unknown (0) and outside the table (22)
    r = semantic_3d(pred, gt, TABLE)
    assert r["per_class"]["wall"]["iou"] == pytest.approx(1 / 2)
    assert r["per_class"]["floor"]["iou"] == pytest.approx(1 / 2)
    assert r["num_unknown"] == 2
    assert semantic_3d(gt, gt, TABLE)["miou"] == 1.0
    empty = semantic_3d(LabeledMesh(np.zeros((0, 3))), gt, TABLE)
    assert empty["miou"] == 0.0 and empty["num_unknown"] == 4


def test_coincident_duplicates_tie_break_to_gt_only_on_exact_ties():
    # two coincident GT vertices with different labels (part seams): the mesh against itself is exact
    gt = _line([0, 0, 1], [WALL, FLOOR, FLOOR])
    assert semantic_3d(gt, gt, TABLE)["miou"] == 1.0
    # a nearer wrong vertex is not overridden by a farther right one
    pred = _line([0.1, 0.2, 1], [FLOOR, WALL, FLOOR])
    assert semantic_3d(pred, _line([0, 1], [WALL, FLOOR]), TABLE)["per_class"]["wall"]["iou"] == 0.0


def test_mesh_quality_by_hand():
    gt = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]], float)
    pred = np.array([[0.03, 0, 0], [1.04, 0, 0], [2.2, 0, 0]])
    r = mesh_quality(pred, gt, threshold=0.05)
    assert r["acc"] == pytest.approx((0.03 + 0.04 + 0.2) / 3)  # pred -> GT
    assert r["comp"] == pytest.approx((0.03 + 0.04 + 0.2 + 0.8) / 4)  # GT -> pred
    assert r["prec"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(2 / 4)
    assert r["f_score"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert mesh_quality(gt, gt)["f_score"] == 1.0
    none = mesh_quality(np.zeros((0, 3)), gt)
    assert none["f_score"] == 0.0 and none["acc"] is None


def test_voxel_downsample_centroids():
    pts = np.array([[0.001, 0.001, 0.001], [0.009, 0.003, 0.005], [0.015, 0, 0], [0.019, 0.002, 0]])
    out = voxel_downsample(pts, 0.01)
    expected = np.array([[0.005, 0.002, 0.003], [0.017, 0.001, 0]])
    np.testing.assert_allclose(out[np.argsort(out[:, 0])], expected, atol=1e-12)


def _square(size=1.0, labels=(WALL, WALL, FLOOR, FLOOR)):
    v = np.array([[0, 0, 0], [size, 0, 0], [size, size, 0], [0, size, 0]], float)
    return LabeledMesh(v, [[0, 1, 2], [0, 2, 3]], labels=list(labels))


def test_surface_sampling_is_uniform_on_faces():
    pts = sample_surface(_square(), points_per_m2=4000, seed=1)
    assert len(pts) == 4000
    assert np.all((pts[:, :2] >= 0) & (pts[:, :2] <= 1)) and np.all(pts[:, 2] == 0)
    in_first = np.mean(pts[:, 0] >= pts[:, 1])  # triangle (0, 1, 2) is the half below the diagonal
    assert abs(in_first - 0.5) < 0.05
    assert np.all(np.abs(np.histogram(pts[:, 0], bins=4, range=(0, 1))[0] / 4000 - 0.25) < 0.04)


def test_evaluate_meshes_shifted_prediction():
    gt = _square()
    shifted = LabeledMesh(gt.vertices + [0, 0, 0.1], gt.faces, labels=gt.labels)
    for sampling in ("vertices", "surface"):
        cfg = EvalConfig(sampling=sampling, surface_points_per_m2=2000, downsample_m=0.02)
        r = evaluate_meshes(shifted, gt, TABLE, cfg)
        assert r["mesh"]["acc"] == pytest.approx(0.1, abs=1e-6) and r["mesh"]["f_score"] == 0.0
        assert r["semantic"]["miou"] == 1.0  # labels transfer straight down
        same = evaluate_meshes(gt, gt, TABLE, cfg)
        assert same["mesh"]["f_score"] == 1.0 and same["semantic"]["miou"] == 1.0
    assert len(mesh_points(gt, EvalConfig(sampling="surface", surface_points_per_m2=2000, downsample_m=0.1))) == 100


def test_miou_2d_by_hand():
    gt = [np.array([[0, 0, 1], [1, 255, 255]]), np.array([[2, 2]])]
    pred = [np.array([[0, 1, 1], [1, 0, 2]]), np.array([[2, 255]])]
    r = miou_2d(pred, gt, 3, ["x", "y", "z"])
    # x: TP1 FN1 -> 1/2; y: TP2 FP1 -> 2/3; z: TP1 FN1 (unknown) -> 1/2; GT 255 ignored
    assert r["per_class"]["x"]["iou"] == pytest.approx(1 / 2)
    assert r["per_class"]["y"]["iou"] == pytest.approx(2 / 3)
    assert r["per_class"]["z"]["iou"] == pytest.approx(1 / 2)
    assert r["num_points"] == 6
    with pytest.raises(ValueError, match="shapes differ"):
        miou_2d([np.zeros((2, 2))], [np.zeros((2, 3))], 3)


def test_format_markdown_tables():
    r = evaluate_meshes(_square(), _square(), TABLE)
    md = format_markdown(r, title="t")
    assert "| mIoU | 1.000 |" in md and "| F-score @ 5 cm | 1.000 |" in md
    assert "| wall | 1.000 | 1.000 | 2 | 2 |" in md and "| chair | - | - | 0 | 0 |" in md


def _run(*args):
    return subprocess.run([str(EVAL_CLI), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_cli_gt_vs_gt_and_exit_codes(tmp_path):
    gt = write_labeled_ply(tmp_path / "gt.ply", _square())
    res = _run("--pred", gt, "--gt", gt, "--json", tmp_path / "m.json")
    assert res.returncode == 0, res.stderr
    assert "| mIoU | 1.000 |" in res.stdout and "| F-score @ 5 cm | 1.000 |" in res.stdout
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["semantic"]["miou"] == 1.0 and data["mesh"]["f_score"] == 1.0

    res = _run("--pred", tmp_path / "missing.ply", "--gt", gt)
    assert res.returncode == 2 and "missing.ply" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    (tmp_path / "cut.ply").write_bytes(gt.read_bytes()[:-7])
    res = _run("--pred", tmp_path / "cut.ply", "--gt", gt)
    assert res.returncode == 2 and "cut.ply" in res.stderr and "Traceback" not in res.stderr


def test_cli_refuses_a_prediction_without_label_property(tmp_path, capsys):
    """A PLY without a per-vertex 'label' (e.g. a plain Open3D mesh) scored mIoU 0.000 silently."""
    from gnesf_ros.cli.evaluate import main
    from gnesf_ros.data.ply import read_labeled_ply
    from gnesf_ros.errors import DataError

    gt = write_labeled_ply(tmp_path / "gt.ply", _square())
    m = _square()
    header = (f"ply\nformat ascii 1.0\nelement vertex {m.num_vertices}\nproperty float x\nproperty float y\n"
              f"property float z\nelement face {m.num_faces}\nproperty list uchar int vertex_indices\nend_header\n")
    rows = [" ".join(f"{c:g}" for c in v) for v in m.vertices] + ["3 " + " ".join(map(str, f)) for f in m.faces]
    pred = tmp_path / "plain.ply"
    pred.write_text(header + "\n".join(rows) + "\n")
    mesh = read_labeled_ply(pred)
    assert not mesh.has_labels and mesh.source == str(pred) and read_labeled_ply(gt).has_labels
    with pytest.raises(DataError, match="plain.ply: predicted PLY has no per-vertex 'label' property"):
        evaluate_meshes(mesh, read_labeled_ply(gt), TABLE)
    assert main(["--pred", str(pred), "--gt", str(gt), "--json", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(pred) in err[0] and "'label'" in err[0], err
    assert not (tmp_path / "m.json").exists()
    assert main(["--pred", str(gt), "--gt", str(pred)]) == 2  # a GT without labels neither
    assert "ground-truth PLY has no per-vertex 'label'" in capsys.readouterr().err
    assert main(["--pred", str(gt), "--gt", str(gt)]) == 0
    # in-memory meshes (labels given or defaulted) are scored as before
    assert semantic_3d(LabeledMesh(m.vertices), m, TABLE)["miou"] == 0.0
