"""Minimal stand-in of ROS 2 `launch` (not installable from PyPI): records what a launch file builds.

Names and signatures follow the real package (launch.LaunchDescription, launch.LaunchContext,
launch.actions.DeclareLaunchArgument / OpaqueFunction, launch.conditions.IfCondition,
launch.substitutions.LaunchConfiguration / PythonExpression); behaviour is only what a test needs
to evaluate a description: launch configurations, substitutions, conditions, opaque functions.
"""
from launch.action import Action  # noqa: F401  (launch.Action in the real package)


class LaunchDescription:
    def __init__(self, initial_entities=None, *, deprecated_reason=None):
        self.entities = list(initial_entities or [])


class LaunchContext:
    """Holds the launch configurations (argument values) while a description is visited."""

    def __init__(self, *, argv=None, noninteractive=False):
        self.argv = list(argv or [])
        self.noninteractive = noninteractive
        self.__launch_configurations = {}

    @property
    def launch_configurations(self):
        return self.__launch_configurations

    def perform_substitution(self, substitution):
        return substitution.perform(self)
