"""The node's parameter table, config/mapping.yaml, and the lifecycle (in-process, no traffic)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ros_env import ros_domain  # noqa: E402

from gnesf_ros.config import ConfigError, MapperConfig  # noqa: E402
from gnesf_ros.ros.parameters import (MAPPER_RANGES, NODE_NAME, build_configs,  # noqa: E402
                                      mapping_yaml, parameter_table)

ROOT = Path(__file__).resolve().parents[1]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_every_parameter_has_a_description_and_numbers_a_range():
    rows = parameter_table()
    assert len({p.name for p in rows}) == len(rows)
    for p in rows:
        assert len(p.description) >= 10, f"parameter {p.name} lacks a description"
        numeric = isinstance(p.default, (int, float)) and not isinstance(p.default, bool)
        if numeric:
            assert p.range is not None, f"numeric parameter {p.name} lacks a range"
            assert p.range[0] <= p.default <= p.range[1], p
        if p.choices:
            assert p.default in p.choices


def test_table_covers_every_mapper_config_field():
    names = {p.name for p in parameter_table()}
    assert set(MAPPER_RANGES) <= names  # no stale entries
    flat = _flatten(yaml.safe_load((ROOT / "config" / "default.yaml").read_text()), "mapper.")
    assert set(flat) <= names


def test_mapping_yaml_matches_the_table():
    text = (ROOT / "config" / "mapping.yaml").read_text()
    assert text == mapping_yaml(), "config/mapping.yaml is stale: python -m gnesf_ros.ros.parameters > config/mapping.yaml"
    params = _flatten(yaml.safe_load(text)[NODE_NAME]["ros__parameters"])
    table = {p.name: p.default for p in parameter_table()}
    assert params == table  # every parameter present, at its default


def test_build_configs_maps_dotted_names_and_rejects_bad_values():
    values = {p.name: p.default for p in parameter_table()}
    values.update({"mapper.map.voxel_size_m": 0.05, "mapper.model.occ_band_vox": [1.0, 1.0, 1.0],
                   "queue_size": 3})
    node, mapper = build_configs(values)
    assert mapper.map.voxel_size_m == 0.05 and mapper.model.occ_band_vox == (1.0, 1.0, 1.0)
    assert node.queue_size == 3 and isinstance(mapper, MapperConfig)
    with pytest.raises(ConfigError, match="on_time_jump"):
        build_configs({**values, "on_time_jump": "rewind"})
    with pytest.raises(ConfigError, match="mapper.map.nope"):
        build_configs({**values, "mapper.map.nope": 1})
    # within the ROS range but impossible together with the rest of the config rules
    with pytest.raises(ConfigError, match="mapper.segmenter.threads"):
        build_configs({**values, "mapper.segmenter.threads": 0})


def _posed_frame(i: int):
    """A frame looking at a wall 1.5 m ahead (depth only matters here)."""
    from gnesf_ros.types import Frame

    K = np.array([[100.0, 0, 39.5], [0, 100.0, 29.5], [0, 0, 1]])
    T = np.eye(4)
    T[0, 3] = 0.2 * i
    return Frame(stamp=float(i), rgb=np.full((60, 80, 3), 128, np.uint8), K=K, T_world_cam=T,
                 depth=np.full((60, 80), 1.5, np.float32), probs=np.full((60, 80), 1, np.uint8), index=i)


def seed_map(tmp_path: Path) -> tuple[Path, int]:
    """A small saved baseline map (4 frames at a wall) -> (path, number of blocks)."""
    from gnesf_ros.pipeline import Mapper

    cfg = MapperConfig(mode="baseline_average")
    cfg.segmenter.backend = "external"
    cfg.keyframe.fragment_size = 2
    seed = Mapper(cfg)
    for i in range(4):
        seed.add_frame(_posed_frame(i))
    assert seed.map.num_blocks > 0
    return seed.map.save(tmp_path / "seed_map.npz"), seed.map.num_blocks


def test_lifecycle_configure_activate_deactivate_cleanup(tmp_path):
    from rclpy.lifecycle import TransitionCallbackReturn as R
    from rclpy.parameter import Parameter

    from gnesf_ros.ros.node import MappingNode

    map_path, blocks = seed_map(tmp_path)

    overrides = [Parameter("use_lifecycle", value=True), Parameter("mapper.mode", value="baseline_average"),
                 Parameter("mapper.segmenter.backend", value="external"),
                 Parameter("load_map_path", value=str(map_path))]
    with ros_domain():
        rclpy.init()
        try:
            node = MappingNode(parameter_overrides=overrides)
            described = node.describe_parameters([p.name for p in parameter_table()])
            assert all(d.description for d in described)
            assert node.describe_parameters(["queue_size"])[0].integer_range[0].from_value == 1
            assert node.mapper is None  # managed: nothing happens before configure
            assert node.trigger_configure() == R.SUCCESS
            assert node.mapper.map.num_blocks == blocks  # the map was loaded
            assert node.trigger_activate() == R.SUCCESS
            topics = {s.topic_name for s in node.subscriptions}
            assert {"/camera/color/image_raw", "/camera/depth/image_rect_raw", "/segmentation/probabilities",
                    "/tf", "/tf_static"} <= topics
            assert node.trigger_deactivate() == R.SUCCESS
            assert "/camera/color/image_raw" not in {s.topic_name for s in node.subscriptions}
            assert node.mapper.map.num_blocks == blocks  # paused, map kept
            assert node.trigger_activate() == R.SUCCESS and node.trigger_deactivate() == R.SUCCESS
            assert node.trigger_cleanup() == R.SUCCESS
            assert node.mapper is None and not list(node.subscriptions)
            node.destroy_node()
        finally:
            rclpy.shutdown()


def test_pose_topic_fallback_feeds_the_camera_pose():
    from geometry_msgs.msg import PoseStamped
    from rclpy.parameter import Parameter

    from gnesf_ros.ros import conversions as conv
    from gnesf_ros.ros.node import MappingNode

    T = np.eye(4)
    T[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]
    T[:3, 3] = [1.0, 2.0, 1.5]
    overrides = [Parameter("mapper.mode", value="baseline_average"), Parameter("mapper.segmenter.backend", value="external"),
                 Parameter("pose_source", value="pose")]
    with ros_domain():
        rclpy.init()
        try:
            node = MappingNode(parameter_overrides=overrides)  # configures and activates itself
            assert "/camera/pose" in {s.topic_name for s in node.subscriptions}
            for stamp, dx in ((10.0, 0.0), (10.2, 0.2)):
                T_i = T.copy()
                T_i[0, 3] += dx
                node._on_pose(PoseStamped(header=conv.make_header(stamp, "map"), pose=conv.matrix_to_pose(T_i)))
            # An image in any frame at t = 10.1 gets the interpolated pose-topic pose.
            got = node._lookup_pose("camera_color_optical_frame", 10.1, received=0.0)
            expected = T.copy()
            expected[0, 3] += 0.1
            np.testing.assert_allclose(got, expected, atol=1e-9)
            node.destroy_node()
        finally:
            rclpy.shutdown()
