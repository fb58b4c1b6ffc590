"""Per-sample, per-epoch histories (epochs x N float16) stored so that an epoch end costs the same at
epoch 300 as at epoch 1.

Each history is one preallocated ``.npy`` file; when an epoch ends its row is written in place
(``pwrite`` + ``fsync``), before the checkpoint. Which rows are valid is the checkpoint's ``epoch``
alone: rows at and past it belong to an epoch that no checkpoint holds yet, and are written again
when that epoch is run again, so a kill -9 at any moment leaves exactly the history of the last
checkpoint. Only the run's main process writes; readers slice ``[:epochs]`` of a read-only map.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, RunError, StorageError

DTYPE = np.dtype(np.float16)
HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


class History:
    """The histories ``names`` of a run, ``epochs`` rows of ``n`` samples each, in ``folder``."""

    def __init__(self, folder: Path, names: list[str], epochs: int, n: int):
        self.folder, self.names, self.shape = Path(folder), list(names), (epochs, n)
        self._offsets: dict[str, int] = {}

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.npy"

    def exists(self) -> bool:
        return all(self.path(k).is_file() for k in self.names)

    def open(self, epochs_done: int) -> None:
        """Before any epoch is done, (re)create the files; later, check the ones there fit."""
        if epochs_done == 0:
            self._create()
        for k in self.names:
            self._offsets[k] = self._check(k)

    def _create(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for k in self.names:
                with open(self.path(k), "wb") as f:
                    np.lib.format.write_array_header_1_0(f, _header(self.shape))
                    f.truncate(f.tell() + self.shape[0] * self.shape[1] * DTYPE.itemsize)
        except OSError as e:
            raise StorageError(
                f"storage: cannot create the per-sample history in {self.folder} ({e.strerror}); "
                "free disk space or choose a writable out="
            ) from None

    def _check(self, name: str) -> int:
        """The data offset of a history file that fits this run; a CheckpointError otherwise."""
        path = self.path(name)
        try:
            shape, offset = read_header(path)
        except RunError:
            shape, offset = None, 0
        if shape != self.shape:
            raise CheckpointError(
                f"checkpoint: the run's per-sample history {path} is missing or does not fit it (shape {shape}, "
                f"expected {self.shape}); delete the run folder's files to start over"
            )
        return offset

    def write(self, epoch: int, rows: dict[str, np.ndarray]) -> None:
        """Row ``epoch`` of every history, durable before it returns."""
        n = self.shape[1]
        try:
            for k in self.names:
                row = np.ascontiguousarray(rows[k], dtype=DTYPE)
                if row.shape != (n,):
                    raise ValueError(f"history row {k} has shape {row.shape}, expected ({n},)")
                fd = os.open(self.path(k), os.O_WRONLY)
                try:
                    os.pwrite(fd, row.tobytes(), self._offsets[k] + epoch * n * DTYPE.itemsize)
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as e:
            raise StorageError(
                f"storage: cannot write the per-sample history in {self.folder} ({e.strerror}); "
                "free disk space; the last checkpoint is intact, run the same command to resume"
            ) from None


def _header(shape: tuple[int, int]) -> dict:
    return {"descr": np.lib.format.dtype_to_descr(DTYPE), "fortran_order": False, "shape": shape}


def read_header(path: Path) -> tuple[tuple[int, ...], int]:
    """(shape, data offset) of a history file; a one-line RunError for anything else (a link too:
    a run's files are its own)."""
    if path.is_symlink():
        raise RunError(f"run: {path} is a symbolic link; memgate reads a run's own files only (copy the file in)")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in HEADER_READERS:
                raise ValueError(f"npy format {version}")
            shape, fortran, dtype = HEADER_READERS[version](f)
            offset, size = f.tell(), os.fstat(f.fileno()).st_size
    except (OSError, ValueError) as e:
        raise RunError(
            f"run: {path} is missing or damaged ({e.__class__.__name__}); run `memgate train` again"
        ) from None
    if dtype != DTYPE or fortran or len(shape) != 2 or size < offset + shape[0] * shape[1] * DTYPE.itemsize:
        raise RunError(f"run: {path} is not a float16 epochs x N history of the size its header says")
    return shape, offset


def read_rows(path: Path, epochs: int) -> np.ndarray:
    """The first ``epochs`` rows of a history file (a copy; the header is checked against the file size)."""
    shape, offset = read_header(path)
    if not 0 <= epochs <= shape[0]:
        raise RunError(f"run: {path} holds {shape[0]} epochs, {epochs} were asked for")
    with open(path, "rb") as f:
        f.seek(offset)
        data = np.fromfile(f, dtype=DTYPE, count=epochs * shape[1])
    return data.reshape(epochs, shape[1])
