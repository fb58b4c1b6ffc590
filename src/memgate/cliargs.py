"""The command line's argument types and its parser class: one-line usage errors, range-checked numbers."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """argparse with memgate's error contract: one line on stderr naming the fix, exit status 2."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.removeprefix("memgate").strip()  # "train", "data info"; "" for memgate itself
        stderr_line(f"memgate: error: {where + ': ' if where else ''}{message} (see {self.prog} --help)")
        sys.exit(2)


def stderr_line(text: str) -> None:
    """Write one line to stderr in one write: under torchrun, ranks share the stream, and a line written
    as text then newline (print's two writes) can interleave with another rank's into one line."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def count(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{v} must be at least {low}")
        return v

    return parse


def integers(low: int) -> Callable[[str], tuple[int, ...]]:
    """An argparse type: comma-separated integers, each >= ``low`` ("0,1,2")."""
    one = count(low)

    def parse(text: str) -> tuple[int, ...]:
        try:
            return tuple(one(part) for part in text.split(","))
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(
                f"{text!r}: {e}; give comma-separated integers, e.g. {low},{low + 1}"
            ) from None

    return parse


def number(low: float, high: float = math.inf, open_low: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] (low excluded when ``open_low``)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(v) or v < low or v > high or (open_low and v == low):
            bounds = f"{'(' if open_low else '['}{low:g}, {high:g}]"
            raise argparse.ArgumentTypeError(f"{text} must be a finite number in {bounds}")
        return v

    return parse
