class LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"$({self.name})"


class PythonExpression:
    def __init__(self, parts):
        self.parts = parts
