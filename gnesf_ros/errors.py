"""User-facing errors: the CLIs print their message (no traceback) and exit non-zero."""


class GnesfError(Exception):
    """Base of errors a person can fix (bad input file, missing model, bad config)."""


class DataError(GnesfError):
    """A data file or folder is missing, truncated, corrupt or of the wrong shape."""


class ModelError(GnesfError):
    """A model checkpoint is missing or does not match the configuration."""
