"""User-facing errors: each carries a one-line message naming the problem and the fix.

The CLI prints them as ``memgate: error: ...`` and exits with status 2; library users catch
``MemgateError``.
"""


class MemgateError(Exception):
    """A problem with the user's input (config, data, checkpoint, run directory)."""


class ConfigError(MemgateError, ValueError):
    pass


class DataError(MemgateError):
    pass


class CheckpointError(MemgateError):
    pass


class RunError(MemgateError):
    pass
