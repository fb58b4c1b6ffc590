"""The one way memgate writes a file: to a temporary name beside it, fsync, then rename.

A crash, kill -9 or full disk mid-write leaves the previous file intact; an OS error becomes a
one-line ``StorageError`` that names the path and the fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .errors import StorageError


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a temporary file, then atomically move it to ``path``. Temporary files
    that a killed process left beside ``path`` are removed first."""
    path = Path(path)
    _remove_stale(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise StorageError(
            f"storage: cannot write {path} ({e.strerror or e.__class__.__name__}); "
            "free disk space or choose a writable folder"
        ) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return path


def _remove_stale(path: Path) -> None:
    """Delete ``.NAME.tmp-PID`` files beside ``path`` whose process is gone (a kill mid-write)."""
    try:
        leftovers = list(path.parent.glob(f".{path.name}.tmp-*"))
    except OSError:
        return
    for tmp in leftovers:
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            try:
                tmp.unlink()
            except OSError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def write_text(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda f: f.write(text.encode()))


def write_json(path: str | Path, obj: Any) -> Path:
    """Strict JSON (no NaN or Infinity: ``sanitize`` turns them into null first)."""
    return write_text(path, json.dumps(sanitize(obj), indent=2, allow_nan=False))


def sanitize(obj: Any) -> Any:
    """A copy of ``obj`` with every non-finite float replaced by None, so that it is valid JSON."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    return obj
