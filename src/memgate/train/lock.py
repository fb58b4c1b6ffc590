"""The run folder's lock: one memgate process writes a folder at a time (``.lock`` holds its pid);
a lock left by a dead process is taken over."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import RunError, StorageError
from .rundir import LOCK


@contextmanager
def lock(out: Path) -> Iterator[None]:
    """Hold ``out/.lock`` (it holds our pid) while a run writes ``out``; a second memgate process
    that wants the same folder is refused. A lock left by a dead process is taken over."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"run: cannot create the run folder {out} ({e.strerror}); choose another out=") from None
    path = out / LOCK
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            holder = lock_holder(path)
            if holder is not None:
                raise RunError(
                    f"run: {out} is in use by memgate process {holder}; wait for it to finish or choose another out="
                ) from None
            path.unlink(missing_ok=True)  # stale: its process is gone
        except OSError as e:
            raise StorageError(f"run: cannot write in {out} ({e.strerror}); choose a writable out=") from None
    else:
        raise RunError(f"run: {out} is being taken by another memgate process; try again")
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def lock_holder(path: Path) -> int | None:
    """The pid holding a lock file if that process is alive, else None."""
    try:
        pid = int(path.read_text().strip() or "0")
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid
