"""User-facing errors: each carries a one-line message naming the problem and the fix.

The CLI prints them as ``memgate: error: ...`` and exits with status 2; library users catch
``MemgateError``.
"""

import reprlib

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, 40, 40


def short_repr(value: object) -> str:
    """repr of a value from a user's file, bounded in size (a crafted list of shared lists would
    expand to billions of elements)."""
    return _SHORT.repr(value)


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
