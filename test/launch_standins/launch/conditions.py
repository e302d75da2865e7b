class IfCondition:
    def __init__(self, predicate):
        self.predicate = predicate
