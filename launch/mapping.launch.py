"""Launch the gnesf_mapping node (and optionally RViz2 with the shipped view).

    ros2 launch gnesf_ros mapping.launch.py [params_file:=...] [use_sim_time:=true] [rviz:=true]
        [camera_ns:=camera] [map_frame:=map]
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("gnesf_ros")
    params_file = LaunchConfiguration("params_file")
    use_sim_time = LaunchConfiguration("use_sim_time")
    camera_ns = LaunchConfiguration("camera_ns")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "mapping.yaml"),
                              description="Node parameters (ROS 2 YAML)."),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use /clock (bag replay)."),
        DeclareLaunchArgument("rviz", default_value="false", description="Start RViz2 with config/gnesf.rviz."),
        DeclareLaunchArgument("camera_ns", default_value="camera",
                              description="Namespace of the camera topics (color/, depth/)."),
        DeclareLaunchArgument("map_frame", default_value="map", description="Fixed frame of the map."),
        Node(
            package="gnesf_ros",
            executable="mapping_node",
            name="gnesf_mapping",
            output="screen",
            emulate_tty=True,
            parameters=[params_file, {"use_sim_time": PythonExpression(["'", use_sim_time, "' == 'true'"]),
                                      "map_frame": LaunchConfiguration("map_frame")}],
            remappings=[
                ("camera/color/image_raw", [camera_ns, "/color/image_raw"]),
                ("camera/color/camera_info", [camera_ns, "/color/camera_info"]),
                ("camera/depth/image_rect_raw", [camera_ns, "/depth/image_rect_raw"]),
            ],
        ),
        Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            arguments=["-d", os.path.join(share, "config", "gnesf.rviz")],
            parameters=[{"use_sim_time": PythonExpression(["'", use_sim_time, "' == 'true'"])}],
            condition=IfCondition(LaunchConfiguration("rviz")),
        ),
    ])
