"""gnesf-map accepts a ROS 2 bag (written by gnesf-bag convert) and maps it like the scene it came from."""
import json

import numpy as np

from gnesf_ros.cli.map import main
from gnesf_ros.data.scannet import open_scene
from gnesf_ros.data.synthetic import generate_scene
from gnesf_ros.ros.bag import BagFrameSource, write_bag

CONFIG = "camera: {width: 160, height: 120}\nkeyframe: {fragment_size: 4}\n"


def test_bag_input_maps_like_the_scene(tmp_path):
    scene = generate_scene(tmp_path / "data", seed=2002, frames=40, size=(120, 160))
    bag = tmp_path / "scene.bag"
    write_bag(open_scene(scene), bag)
    src = BagFrameSource(bag, size=(120, 160), stride=2)
    frames = list(src)
    assert len(src) == len(frames) == 20
    ref = list(open_scene(scene, size=(120, 160), stride=2))
    np.testing.assert_allclose(frames[3].T_world_cam, ref[3].T_world_cam, atol=1e-5)
    np.testing.assert_allclose(frames[3].depth, ref[3].depth, atol=1e-3)  # 16UC1 mm in the bag

    cfg = tmp_path / "small.yaml"
    cfg.write_text(CONFIG)
    gt = scene / f"{scene.name}_vh_clean_2.labels.ply"
    outs = {}
    for name, inp in (("bag", bag), ("scene", scene)):
        out = tmp_path / name
        # Average baseline with depth geometry; the bag has no labels, so both use the segmenter.
        assert main([str(inp), "--out", str(out), "--config", str(cfg), "--mode", "baseline_average",
                     "--segmenter", "mask2former", "--gt", str(gt), "--heldout-every", "0"]) == 0
        outs[name] = json.loads((out / "metrics.json").read_text())
    assert outs["bag"]["counters"]["keyframes"] == outs["scene"]["counters"]["keyframes"] > 0
    assert abs(outs["bag"]["mesh"]["f_score"] - outs["scene"]["mesh"]["f_score"]) < 0.02
    assert abs(outs["bag"]["semantic"]["miou"] - outs["scene"]["semantic"]["miou"]) < 0.05


def test_missing_bag_topic_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "notabag").mkdir()
    (tmp_path / "notabag" / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    assert main([str(tmp_path / "notabag"), "--out", str(tmp_path / "o")]) == 2
    assert "notabag" in capsys.readouterr().err
