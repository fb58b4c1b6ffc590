"""JSON and TOML text parsed with one more guarantee than the standard library's: input nested too
deeply (a crafted file of 600 nested arrays) is a ``ValueError`` like any other malformed input, not
a ``RecursionError`` that escapes every handler."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAX_NESTING = 64  # far deeper than any file memgate writes or a user config needs


def _depth(text: str) -> int:
    """An upper bound of the bracket nesting of ``text`` (brackets inside strings count too)."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return deepest


def _check(text: str) -> None:
    if _depth(text) > MAX_NESTING:
        raise ValueError(f"nested more than {MAX_NESTING} levels deep")


def loads_json(text: str) -> Any:
    _check(text)
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def loads_toml(text: str) -> dict[str, Any]:
    """tomllib.loads; too deep a nesting raises ``tomllib.TOMLDecodeError`` like any syntax error."""
    try:
        _check(text)
        return tomllib.loads(text)
    except (ValueError, RecursionError) as e:
        if isinstance(e, tomllib.TOMLDecodeError):
            raise
        raise tomllib.TOMLDecodeError(str(e) if isinstance(e, ValueError) else "nested too deeply") from None


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file's table; a missing, unreadable or malformed file is a one-line ConfigError."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config: {p} is a folder, not a TOML file (pass a file, e.g. configs/baseline.toml)")
    if not p.is_file():
        raise ConfigError(f"config: file not found: {p} (pass an existing TOML file, e.g. configs/baseline.toml)")
    try:
        return loads_toml(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config: {p} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config: {p} is not UTF-8 text; save it as UTF-8 TOML") from None
    except OSError as e:
        raise ConfigError(f"config: cannot read {p} ({e.strerror}); check its permissions") from None
