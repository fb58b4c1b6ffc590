"""The one place memgate writes a markdown table (report.md, detection.md, ood.md)."""

from __future__ import annotations

from collections.abc import Iterable


def table(head: list[str], rows: Iterable[Iterable[object]]) -> list[str]:
    """A markdown table's lines: header, rule, one line per row (cells formatted with ``str``)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
