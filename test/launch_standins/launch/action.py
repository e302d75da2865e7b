class Action:
    """Base of all actions: an optional condition decides whether ``visit`` executes it."""

    def __init__(self, *, condition=None):
        self.__condition = condition

    @property
    def condition(self):
        return self.__condition

    def visit(self, context):
        if self.__condition is None or self.__condition.evaluate(context):
            return self.execute(context)
        return None

    def execute(self, context):
        return None
