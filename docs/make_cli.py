"""Writes docs/cli.md from memgate's argparse parsers, so the reference cannot go stale:
`python docs/make_cli.py` (tests/test_docs.py fails when docs/cli.md differs from its output)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from memgate.cli import build_parser

WIDTH = "100"  # argparse wraps to $COLUMNS; fixed so that the page is the same everywhere


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """(help line, parser) of every command, nested ones (data info, holdout plan) included, in order."""
    found = []
    for action in parser._actions:  # noqa: SLF001 - argparse keeps its subparsers here
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            helps = {a.dest: a.help for a in action._choices_actions}  # noqa: SLF001
            for name, sub in action.choices.items():
                found.append((helps.get(name) or "", sub))
                found += _subparsers(sub)
    return found


def render() -> str:
    os.environ["COLUMNS"] = WIDTH
    parser = build_parser()
    lines = [
        "# Command line",
        "",
        "Every `memgate` command and its options, as `memgate COMMAND --help` prints them. This page is",
        "written by `python docs/make_cli.py` from the parsers themselves; a test fails when it is stale.",
        "",
        "```text",
        parser.format_help().rstrip(),
        "```",
    ]
    for help_line, sub in _subparsers(parser):
        if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions):  # noqa: SLF001
            continue  # a group (data, holdout): its commands follow
        lines += ["", f"## {sub.prog}", "", help_line[:1].upper() + help_line[1:] + ".", "", "```text"]
        lines += [sub.format_help().rstrip(), "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    out = Path(__file__).with_name("cli.md")
    out.write_text(render())
    print(f"wrote {out}")
