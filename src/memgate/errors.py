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


class StorageError(MemgateError, OSError):
    """A folder or file memgate must write is not writable (read-only, missing, full disk)."""


class Interrupted(RunError):
    """Ctrl-C or SIGTERM: a checkpoint was saved; the same command resumes."""
