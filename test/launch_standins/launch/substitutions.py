from launch.utilities import perform_substitutions


class LaunchConfiguration:
    def __init__(self, variable_name, *, default=None):
        self.name, self.default = variable_name, default

    def perform(self, context):
        if self.name in context.launch_configurations:
            return context.launch_configurations[self.name]
        if self.default is None:
            raise RuntimeError(f"launch configuration '{self.name}' does not exist")
        return perform_substitutions(context, self.default)

    def __repr__(self):
        return f"$({self.name})"


class PythonExpression:
    def __init__(self, expression):
        self.parts = expression

    def perform(self, context):
        return str(eval(perform_substitutions(context, self.parts)))  # noqa: S307 - as launch does
