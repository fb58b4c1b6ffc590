"""JSON and TOML text parsed with one more guarantee than the standard library's: input nested too
deeply (a crafted file of 600 nested arrays) is a ``ValueError`` like any other malformed input, not
a ``RecursionError`` that escapes every handler."""

from __future__ import annotations

import json
import sys
from typing import Any

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
