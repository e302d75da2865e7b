class Node:
    def __init__(self, package, executable, name=None, parameters=None, remappings=None,
                 arguments=None, output=None, emulate_tty=False, condition=None, **kwargs):
        self.package, self.executable, self.name = package, executable, name
        self.parameters = parameters or []
        self.remappings = remappings or []
        self.arguments = arguments or []
        self.condition = condition
