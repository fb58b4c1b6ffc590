"""Uniform read access to the files of a folder, a zip archive or a (compressed) tar archive.

Every reader bounds what it reads: a member larger than ``MAX_MEMBER_BYTES`` is refused before it
is read, and a tar archive is streamed (only the members asked for are held in memory).
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

from ..errors import DataError

MAX_MEMBER_BYTES = 4 << 30  # six times all of CIFAR-10 as raw uint8; bounds what a crafted header can make us allocate


class Reader:
    path: Path

    def names(self) -> list[str]:
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        return self.read_many([name])[0]

    def read_many(self, names: list[str]) -> list[bytes]:
        return [self.read(n) for n in names]

    def _too_big(self, name: str, size: int) -> DataError:
        return DataError(
            f"data: {name} in {self.path} is {size:,d} bytes, over the {MAX_MEMBER_BYTES:,d}-byte limit "
            "for one file; this is not a CIFAR-sized dataset"
        )


class DirReader(Reader):
    def __init__(self, root: Path):
        self.path = self.root = root

    def names(self) -> list[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())

    def read(self, name: str) -> bytes:
        p = self.root / name
        try:
            if p.stat().st_size > MAX_MEMBER_BYTES:
                raise self._too_big(name, p.stat().st_size)
            return p.read_bytes()
        except OSError as e:
            raise DataError(f"data: cannot read {p} ({e.strerror}); check its permissions") from None


class ZipReader(Reader):
    def __init__(self, path: Path):
        self.path = path
        try:
            self.zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise DataError(f"data: {path} is not a readable zip archive ({e}); re-download or re-export it") from None

    def names(self) -> list[str]:
        return sorted(i.filename for i in self.zf.infolist() if not i.is_dir())

    def read(self, name: str) -> bytes:
        try:
            info = self.zf.getinfo(name)
            if info.file_size > MAX_MEMBER_BYTES:
                raise self._too_big(name, info.file_size)
            return self.zf.read(info)
        except (zipfile.BadZipFile, OSError, EOFError, zipfile.LargeZipFile, ValueError) as e:
            raise DataError(f"data: {self.path} is truncated or corrupt at {name} ({e}); re-download it") from None


class TarReader(Reader):
    """Streams a (compressed) tar: one pass lists it, one pass per ``read_many`` reads the wanted
    members (random access into a .tar.gz is quadratic; holding every member would waste memory)."""

    def __init__(self, path: Path):
        self.path = path
        self._sizes = {m.name: m.size for m, _ in self._members()}

    def _members(self):
        try:
            with tarfile.open(self.path) as tf:
                for m in tf:
                    if m.isfile():
                        yield m, tf
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"data: {self.path} is truncated or not a tar archive ({e}); re-download it") from None

    def names(self) -> list[str]:
        return sorted(self._sizes)

    def read_many(self, names: list[str]) -> list[bytes]:
        wanted = set(names)
        for n in wanted:
            if self._sizes.get(n, 0) > MAX_MEMBER_BYTES:
                raise self._too_big(n, self._sizes[n])
        got: dict[str, bytes] = {}
        try:
            for m, tf in self._members():
                if m.name in wanted:
                    got[m.name] = tf.extractfile(m).read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"data: {self.path} is truncated or corrupt ({e}); re-download it") from None
        missing = wanted - set(got)
        if missing:
            raise DataError(f"data: {self.path} lacks {sorted(missing)[0]}; re-download it")
        return [got[n] for n in names]
