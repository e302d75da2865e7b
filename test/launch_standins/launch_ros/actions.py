from launch.action import Action


class Node(Action):
    """Records what launch_ros would start; other keyword arguments (output, emulate_tty, ...) go to
    ExecuteProcess in the real class and are ignored here."""

    def __init__(self, *, executable, package=None, name=None, namespace=None, exec_name=None,
                 parameters=None, remappings=None, ros_arguments=None, arguments=None, **kwargs):
        super().__init__(condition=kwargs.pop("condition", None))
        self.package, self.executable, self.name, self.namespace = package, executable, name, namespace
        self.parameters = list(parameters or [])
        self.remappings = list(remappings or [])
        self.ros_arguments = list(ros_arguments or [])
        self.arguments = list(arguments or [])
