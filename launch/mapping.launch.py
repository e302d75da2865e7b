"""Launch the gnesf_mapping node (and optionally RViz2 with the shipped view).

    ros2 launch gnesf_ros mapping.launch.py [params_file:=...] [use_sim_time:=true] [rviz:=true]
        [camera_ns:=camera] [map_frame:=map] [mode:=...] [segmenter:=...] [checkpoint:=...]
        [namespace:=robot1]

Arguments (`ros2 launch gnesf_ros mapping.launch.py --show-args` lists them too):
  params_file   node parameters, ROS 2 YAML (default: <share>/config/mapping.yaml)
  use_sim_time  true: use /clock (bag replay with --clock); default false
  rviz          true: also start RViz2 with <share>/config/gnesf.rviz; default false
  camera_ns     namespace of the camera topics (<camera_ns>/color/..., <camera_ns>/depth/...);
                default camera (relative: inside `namespace`)
  map_frame     fixed frame of the map (parameter map_frame); default map
  mode          mapper.mode: rgb | rgbd | baseline_bayesian | baseline_average
                (gnesf_ros.pipeline.MODES)
  segmenter     mapper.segmenter.backend: mask2former | external | oracle
  checkpoint    mapper.segmenter.checkpoint: a Mask2Former checkpoint folder (relative: to the
                working directory, else to the package's data)
  namespace     namespace of the node and so of its topics and services (RViz is remapped to it);
                default none
mode, segmenter and checkpoint default to '' = whatever params_file says; only non-empty values
override it. An unknown mode or segmenter stops the launch with an error naming the valid values.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

SEGMENTERS = ("mask2former", "external", "oracle")  # gnesf_ros.segmentation.base.BACKENDS
_CAMERA_TOPICS = ("color/image_raw", "color/camera_info", "depth/image_rect_raw")


def mapper_overrides(mode: str, segmenter: str, checkpoint: str) -> dict:
    """Parameter overrides for the non-empty ones of mode / segmenter / checkpoint (validated)."""
    out = {}
    if mode:
        from gnesf_ros.pipeline import MODES  # imported only when needed (pulls open3d: ~2 s)

        if mode not in MODES:
            raise RuntimeError(f"mapping.launch.py: mode:='{mode}' is not a mapping mode; use one of "
                               f"{', '.join(MODES)} (or leave it empty for the params file's mapper.mode)")
        out["mapper.mode"] = mode
    if segmenter:
        if segmenter not in SEGMENTERS:
            raise RuntimeError(f"mapping.launch.py: segmenter:='{segmenter}' is not a segmenter backend; use "
                               f"one of {', '.join(SEGMENTERS)} (or leave it empty for the params file's "
                               "mapper.segmenter.backend)")
        out["mapper.segmenter.backend"] = segmenter
    if checkpoint:
        out["mapper.segmenter.checkpoint"] = checkpoint
    return out


def _rviz_topics(rviz_config: str) -> list[str]:
    """The /gnesf/... topics the shipped RViz view subscribes to (remapped into `namespace`)."""
    import yaml

    with open(rviz_config, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            topic = node.get("Topic")
            if isinstance(topic, dict) and str(topic.get("Value", "")).startswith("/gnesf/"):
                found.append(topic["Value"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(cfg)
    return sorted(set(found))


def _launch_setup(context, share: str):
    def arg(name: str) -> str:
        return context.perform_substitution(LaunchConfiguration(name)).strip()

    use_sim_time = arg("use_sim_time").lower() in ("true", "1")
    namespace = arg("namespace").strip("/")
    camera_ns = arg("camera_ns").rstrip("/")
    parameters = {"use_sim_time": use_sim_time, "map_frame": arg("map_frame"),
                  **mapper_overrides(arg("mode"), arg("segmenter"), arg("checkpoint"))}
    mapping = Node(
        package="gnesf_ros",
        executable="mapping_node",
        name="gnesf_mapping",
        namespace=namespace or None,
        output="screen",
        emulate_tty=True,
        parameters=[arg("params_file"), parameters],
        remappings=[(f"camera/{t}", f"{camera_ns}/{t}") for t in _CAMERA_TOPICS],
    )
    rviz_config = os.path.join(share, "config", "gnesf.rviz")
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", rviz_config],
        parameters=[{"use_sim_time": use_sim_time}],
        remappings=[(t, f"/{namespace}{t}") for t in _rviz_topics(rviz_config)] if namespace else [],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return [mapping, rviz]


def generate_launch_description():
    share = get_package_share_directory("gnesf_ros")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "mapping.yaml"),
                              description="Node parameters (ROS 2 YAML)."),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use /clock (bag replay)."),
        DeclareLaunchArgument("rviz", default_value="false", description="Start RViz2 with config/gnesf.rviz."),
        DeclareLaunchArgument("camera_ns", default_value="camera",
                              description="Namespace of the camera topics (color/, depth/)."),
        DeclareLaunchArgument("map_frame", default_value="map", description="Fixed frame of the map."),
        DeclareLaunchArgument("mode", default_value="",
                              description="mapper.mode: rgb | rgbd | baseline_bayesian | baseline_average; "
                                          "'' = the params file's."),
        DeclareLaunchArgument("segmenter", default_value="",
                              description="mapper.segmenter.backend: " + " | ".join(SEGMENTERS)
                                          + "; '' = the params file's."),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="mapper.segmenter.checkpoint (Mask2Former folder); "
                                          "'' = the params file's."),
        DeclareLaunchArgument("namespace", default_value="",
                              description="Namespace of the node (its topics and services); '' = none."),
        OpaqueFunction(function=_launch_setup, args=[share]),
    ])
