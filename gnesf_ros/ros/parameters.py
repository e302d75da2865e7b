"""ROS parameter table: node settings (NodeConfig) plus the core MapperConfig, flattened.

Every parameter is declared once from this table with its description and, for numbers, a range.
Node settings carry their help text in the field metadata below; core settings
(``mapper.<section>.<field>``, e.g. ``mapper.map.voxel_size_m``) take theirs from the comment
on the field in gnesf_ros/config.py (``config.field_help``) and their ranges from ``MAPPER_RANGES``. ``config/mapping.yaml`` mirrors the defaults
(``mapping_yaml()`` writes it; test/test_node_params.py checks it).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterator

import yaml

from gnesf_ros.config import ConfigError, MapperConfig, _apply, field_help, validate_config

NODE_NAME = "gnesf_mapping"


def _p(default: Any, help: str, lo: float | None = None, hi: float | None = None, choices: tuple = ()):
    meta: dict[str, Any] = {"help": help}
    if lo is not None:
        meta["range"] = (lo, hi)
    if choices:
        meta["choices"] = choices
    return field(default=default, metadata=meta)


@dataclass
class NodeConfig:
    """Settings of the ROS adapter (topics, queues, rates, files); the core's are mapper.*."""

    map_frame: str = _p("map", "Fixed frame of the map (REP-105); camera poses are looked up as map_frame -> image frame_id.")
    color_topic: str = _p("camera/color/image_raw", "RGB image topic (rgb8, bgr8, rgba8, bgra8, mono8).")
    camera_info_topic: str = _p("camera/color/camera_info", "CameraInfo of the colour camera (K must match the image size).")
    depth_topic: str = _p("camera/depth/image_rect_raw", "Depth registered to colour (16UC1 mm or 32FC1 m); used when use_depth is true.")
    use_depth: bool = _p(True, "Subscribe to depth (needed by mapper.mode rgbd and the baseline_* modes; mode rgb ignores it).")
    segmentation_topic: str = _p("segmentation/probabilities", "External segmenter output stamped like the colour image (32FC<C> probabilities or mono8 class indices); used with mapper.segmenter.backend external.")
    pose_source: str = _p("tf", "Camera pose source: tf (map_frame -> image frame_id), pose (PoseStamped) or odometry (Odometry).", choices=("tf", "pose", "odometry"))
    pose_topic: str = _p("camera/pose", "PoseStamped/Odometry of the optical frame in map_frame when pose_source is pose or odometry.")
    input_qos: str = _p("sensor_data", "QoS of image inputs: sensor_data (best effort) or reliable; both keep the last input_qos_depth messages.", choices=("sensor_data", "reliable"))
    input_qos_depth: int = _p(10, "DDS history of each image input (keep last N): messages that arrive while the callbacks are busy wait here, the oldest is overwritten beyond N (invisible to /diagnostics). Raise it when replaying bags with reliable QoS.", 1, 10000)
    queue_size: int = _p(10, "Frames waiting for the pose look-up and the keyframe test (fast: this stage never waits for a fragment); the oldest is dropped (queue_full) when full.", 1, 10000)
    keyframe_queue_fragments: int = _p(3, "Keyframes waiting for the mapper, in fragment windows (x mapper.keyframe.fragment_size): a keyframe is dropped (keyframe_queue_full) only when the mapper is this far behind.", 1, 1000)
    tf_timeout_s: float = _p(0.5, "How long a frame waits for its transform (and depth/segmentation) before it is dropped (no_transform).", 0.0, 60.0)
    sync_slop_s: float = _p(0.02, "Max stamp difference (s) when pairing colour with depth and segmentation.", 0.0, 1.0)
    max_image_pixels: int = _p(4096 * 4096, "Colour images with more pixels are dropped (image_too_large); smaller ones are resized to mapper.camera.width x height.", 1, 1_000_000_000)
    render_every_n: int = _p(1, "Publish label / colour label / depth renders (at mapper.camera size) for every Nth mapped frame; 0 = never. Skipped when nobody subscribes.", 0, 10000)
    publish_rate_hz: float = _p(1.0, "Max rate of map outputs (mesh, cloud, grids, label_info): a changed map is republished at most this often (the first change after a pause at once); 0 = after every fragment.", 0.0, 100.0)
    idle_flush_s: float = _p(2.0, "Map the keyframes of an unfinished fragment window after this many seconds (steady clock, also when /clock stops) without a new frame (the end of a bag, a pause); 0 = only on the gnesf/flush service.", 0.0, 3600.0)
    mesh_max_vertices_per_marker: int = _p(300_000, "Split the mesh into several TRIANGLE_LIST markers beyond this many vertices.", 3, 100_000_000)
    on_time_jump: str = _p("reset", "When image stamps jump backwards (e.g. a looping bag): reset (clear map and TF) or ignore (drop older frames as time_backwards).", choices=("reset", "ignore"))
    time_jump_threshold_s: float = _p(1.0, "A stamp older than the newest by more than this is a time jump; smaller steps back are dropped as out_of_order.", 0.0, 3600.0)
    save_map_path: str = _p("", "Map file (.npz) written by gnesf/save_map and on SIGINT/SIGTERM; '' = no save at exit, the service then writes ./gnesf_map.npz.")
    load_map_path: str = _p("", "Map file (.npz) loaded at start / configure; '' = start empty.")
    use_lifecycle: bool = _p(False, "Managed lifecycle node: wait for configure/activate from a lifecycle manager instead of starting at once.")
    diagnostics_rate_hz: float = _p(1.0, "Rate of /diagnostics messages (steady clock: they go on when /clock stops); 0 = off.", 0.0, 100.0)
    mapper_config: str = _p("", "Optional core YAML (config/default.yaml format) applied under the mapper.* parameters that differ from their defaults.")


# Ranges of the numeric core settings (inclusive); ROS rejects values outside them.
MAPPER_RANGES: dict[str, tuple[float, float]] = {
    "mapper.camera.width": (8, 8192), "mapper.camera.height": (8, 8192), "mapper.camera.max_depth_m": (0.1, 100.0),
    "mapper.keyframe.min_rotation_deg": (0.0, 180.0), "mapper.keyframe.min_translation_m": (0.0, 100.0),
    "mapper.keyframe.fragment_size": (1, 1000), "mapper.keyframe.fragment_overlap": (0, 999),
    "mapper.segmenter.input_height": (8, 8192), "mapper.segmenter.input_width": (8, 8192),
    "mapper.segmenter.batch_size": (1, 1024), "mapper.segmenter.threads": (1, 256),
    "mapper.segmenter.oracle_miou": (0.0, 100.0), "mapper.segmenter.oracle_seed": (0, 2**31 - 1),
    "mapper.segmenter.oracle_temperature": (0.01, 100.0),
    "mapper.segmenter.external_label_confidence": (0.0, 1.0),
    "mapper.model.voxel_size_m": (0.001, 1.0), "mapper.model.volume_size_vox": (8, 1024),
    "mapper.model.trunc_vox": (0.5, 100.0), "mapper.model.max_depth_m": (0.1, 100.0),
    "mapper.model.min_views": (1, 1000), "mapper.model.fine_keep_tsdf_band": (0.0, 1.0), "mapper.model.occ_threshold": (0.0, 1.0),
    "mapper.model.sparse_convs": (0, 100), "mapper.model.max_fine_voxels": (1, 100_000_000),
    "mapper.model.vote_hidden": (1, 4096), "mapper.model.vis_samples": (1, 4096),
    "mapper.model.vote_band_vox": (0.1, 100.0),
    "mapper.model.vis_near_m": (0.0, 10.0), "mapper.model.render_samples": (1, 4096),
    "mapper.model.render_near_m": (0.0, 100.0), "mapper.model.render_far_m": (0.0, 100.0),
    "mapper.model.render_tau_vox": (0.001, 100.0), "mapper.model.threads": (0, 256),
    "mapper.model.mvs_sources": (1, 4), "mapper.model.mvs_min_confidence": (0.0, 1.0),
    "mapper.model.mvs_refine_steps": (0, 50),
    "mapper.model.mvs_agreement": (0.0, 1.0), "mapper.model.mvs_unverified_weight": (0.0, 1.0),
    "mapper.map.voxel_size_m": (0.001, 1.0), "mapper.map.block_size_vox": (2, 64),
    "mapper.map.trunc_vox": (0.5, 100.0), "mapper.map.max_blocks": (1, 100_000_000),
    "mapper.map.max_weight": (1.0, 1e6), "mapper.map.bayes_measurement_prob": (0.5, 1.0),
    "mapper.map.occupancy_min_height_m": (-100.0, 100.0), "mapper.map.occupancy_max_height_m": (-100.0, 100.0),
    "mapper.map.occupied_sdf_vox": (0.0, 100.0), "mapper.map.min_ray_m": (0.0, 100.0),
    "mapper.map.max_ray_m": (0.0, 1000.0), "mapper.map.alloc_pixel_stride": (1, 64),
}

def iter_fields(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any, dataclasses.Field, type]]:
    """Yield (dotted name, value, field, owning dataclass) for every leaf of a nested config."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            yield from iter_fields(value, name + ".")
        else:
            yield name, value, f, type(obj)


@dataclass(frozen=True)
class Param:
    """One ROS parameter: dotted name, default, description, numeric range or allowed values."""

    name: str
    default: Any
    description: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()


def _ros_value(value: Any) -> Any:
    """Config value -> a ROS parameter value (tuples become lists: ROS arrays)."""
    return list(value) if isinstance(value, tuple) else value


def parameter_table() -> list[Param]:
    """All node parameters, node settings first, then mapper.* (defaults of MapperConfig)."""
    rows = [Param(n, _ros_value(v), f.metadata.get("help", ""), f.metadata.get("range"),
                  tuple(f.metadata.get("choices", ())))
            for n, v, f, _ in iter_fields(NodeConfig())]
    for n, v, f, owner in iter_fields(MapperConfig(), "mapper."):
        rows.append(Param(n, _ros_value(v), field_help(owner).get(f.name, ""), MAPPER_RANGES.get(n)))
    return rows


def build_configs(values: dict[str, Any], base: MapperConfig | None = None) -> tuple[NodeConfig, MapperConfig]:
    """Parameter values (dotted names) -> (NodeConfig, MapperConfig). Raises ConfigError for
    unknown names, wrong types or a value outside a parameter's choices."""
    node_vals: dict[str, Any] = {}
    mapper_vals: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, list):
            value = tuple(value)
        if name.startswith("mapper."):
            cursor = mapper_vals
            *parents, leaf = name[len("mapper."):].split(".")
            for p in parents:
                cursor = cursor.setdefault(p, {})
            cursor[leaf] = value
        else:
            node_vals[name] = value
    node = _apply(NodeConfig(), node_vals, "")
    for n, v, f, _ in iter_fields(node):
        if "choices" in f.metadata and v not in f.metadata["choices"]:
            raise ConfigError(f"parameter '{n}' must be one of {', '.join(f.metadata['choices'])}, got {v!r}")
    mapper = validate_config(_apply(base or MapperConfig(), mapper_vals, "mapper"), "mapper")
    return node, mapper


def _nest(rows: list[Param]) -> dict:
    out: dict = {}
    for p in rows:
        cursor = out
        *parents, leaf = p.name.split(".")
        for k in parents:
            cursor = cursor.setdefault(k, {})
        cursor[leaf] = p.default
    return out


class _FlowListDumper(yaml.SafeDumper):
    """Block-style mappings, one-line lists."""


_FlowListDumper.add_representer(
    list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def mapping_yaml() -> str:
    """config/mapping.yaml: every parameter at its default, as a ROS 2 parameters file."""
    head = ("# Parameters of the gnesf_mapping node (ROS 2 params file), generated from\n"
            "# gnesf_ros/ros/parameters.py by `python -m gnesf_ros.ros.parameters > config/mapping.yaml`.\n"
            "# Descriptions: `ros2 param describe /gnesf_mapping <name>` or the table in parameters.py.\n"
            "# Core settings sit under mapper: (rcl flattens them to mapper.<section>.<field>).\n")
    body = yaml.dump({NODE_NAME: {"ros__parameters": _nest(parameter_table())}}, Dumper=_FlowListDumper,
                     sort_keys=False, default_flow_style=False, width=120)
    return head + body


__all__ = ["NodeConfig", "Param", "parameter_table", "build_configs", "mapping_yaml",
           "MAPPER_RANGES", "NODE_NAME"]

if __name__ == "__main__":
    print(mapping_yaml(), end="")
