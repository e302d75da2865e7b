"""Minimal stand-in of ROS 2 `launch` (not installable from PyPI): records what a launch file builds."""


class LaunchDescription:
    def __init__(self, entities=None):
        self.entities = list(entities or [])
