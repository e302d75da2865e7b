"""Minimal stand-in of ROS 2 `launch_ros` (see launch/__init__.py)."""
