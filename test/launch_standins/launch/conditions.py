from launch.utilities import perform_substitutions


class IfCondition:
    def __init__(self, predicate_expression):
        self.predicate = predicate_expression

    def evaluate(self, context):
        value = perform_substitutions(context, self.predicate).strip().lower()
        if value in ("true", "1"):
            return True
        if value in ("false", "0"):
            return False
        raise RuntimeError(f"Unknown condition value: '{value}'")
