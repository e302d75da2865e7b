"""Label remaps: shipped ADE20K-150 / COCO-panoptic-133 tables, identity detection, error cases."""
import logging

import numpy as np
import pytest
import yaml

from gnesf_ros.classes import default_class_table
from gnesf_ros.errors import ModelError
from gnesf_ros.segmentation.remap import build_remap, read_remap_file

TABLE = default_class_table()
CLS = {n: i for i, n in enumerate(TABLE.names)}


def id2label(names):
    return {str(i): n for i, n in enumerate(names)}


def target_of(remap, label):
    return int(remap.target[list(remap.source_labels).index(label)])


def test_ade20k_names_map_to_expected_classes(caplog):
    names = read_remap_file("config/remap_ade20k150.yaml")["labels"]
    assert len(names) == 150 and len(set(names)) == 150
    assert names[:5] == ["wall", "building", "sky", "floor", "tree"] and names[149] == "flag"
    hub = list(names)
    hub[7] = "bed "  # the hub's ADE id2label spells it with a trailing space
    with caplog.at_level(logging.WARNING):
        remap = build_remap(id2label(hub), TABLE)
    assert remap.origin.endswith("remap_ade20k150.yaml")
    expected = {"wall": "wall", "floor": "floor", "bed": "bed", "windowpane": "window", "cabinet": "cabinet",
                "door": "door", "table": "table", "curtain": "curtain", "chair": "chair", "painting": "picture",
                "sofa": "sofa", "desk": "desk", "bathtub": "bathtub", "counter": "counter", "sink": "sink",
                "refrigerator": "refrigerator", "bookcase": "bookshelf", "toilet": "toilet",
                "coffee table": "table", "swivel chair": "chair"}
    for ade, cls in expected.items():
        assert target_of(remap, ade) == CLS[cls], ade
    for ignored in ("sky", "person", "tree", "car"):
        assert target_of(remap, ignored) == -1
    assert "sky" in caplog.text and "person" in caplog.text
    m = remap.matrix(20)
    assert m.shape == (150, 20) and set(np.unique(m.sum(1))) == {0.0, 1.0}


def test_coco_panoptic_names_map_to_expected_classes():
    names = read_remap_file("config/remap_coco133.yaml")["labels"]
    assert len(names) == 133 and names[0] == "person" and names[80] == "banner" and names[132] == "rug-merged"
    remap = build_remap(id2label(names), TABLE)
    assert remap.origin.endswith("remap_coco133.yaml")
    expected = {"chair": "chair", "couch": "sofa", "bed": "bed", "dining table": "table", "toilet": "toilet",
                "sink": "sink", "refrigerator": "refrigerator", "wall-brick": "wall", "wall-other-merged": "wall",
                "floor-wood": "floor", "door-stuff": "door", "window-other": "window", "cabinet-merged": "cabinet",
                "curtain": "curtain", "counter": "counter", "table-merged": "table"}
    for coco, cls in expected.items():
        assert target_of(remap, coco) == CLS[cls], coco
    assert target_of(remap, "person") == -1 and target_of(remap, "tv") == -1


def test_20_class_checkpoint_in_any_order_is_identity_by_name():
    perm = np.random.default_rng(0).permutation(20)
    names = [TABLE.names[i].upper() for i in perm]
    remap = build_remap(id2label(names), TABLE)
    assert remap.origin.startswith("identity") and not remap.unmapped
    np.testing.assert_array_equal(remap.target, perm)


def test_remap_file_with_wrong_label_count_raises(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"labels": ["wall", "floor", "sky"], "map": {"wall": "wall"}}))
    with pytest.raises(ModelError, match="lists 3 labels but the checkpoint predicts 2"):
        build_remap(id2label(["wall", "floor"]), TABLE, path)


def test_remap_errors_name_the_problem(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"map": {"wall": "wal"}}))
    with pytest.raises(ModelError, match="unknown classes .*wall -> wal"):
        build_remap(id2label(["wall", "floor"]), TABLE, path)
    path.write_text(yaml.safe_dump({"map": {"ceiling": "wall"}}))
    with pytest.raises(ModelError, match="does not have: ceiling"):
        build_remap(id2label(["wall", "floor"]), TABLE, path)
    with pytest.raises(ModelError, match="not found"):
        build_remap(id2label(["wall"]), TABLE, tmp_path / "missing.yaml")
    with pytest.raises(ModelError, match="none has a class name"):
        build_remap(id2label([f"LABEL_{i}" for i in range(5)]), TABLE)


def test_explicit_ignore_is_not_warned_and_generic_names_use_the_file(tmp_path, caplog):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"labels": ["muur", "vloer", "lucht"],
                                    "map": {"muur": "wall", "vloer": "floor", "lucht": "ignore"}}))
    with caplog.at_level(logging.WARNING):
        remap = build_remap(id2label(["LABEL_0", "LABEL_1", "LABEL_2"]), TABLE, path)
    np.testing.assert_array_equal(remap.target, [CLS["wall"], CLS["floor"], -1])
    assert remap.unmapped == () and caplog.text == ""
