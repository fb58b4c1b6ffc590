"""The README must tell a new user the truth: every config key documented, commands that exist."""

import re
from pathlib import Path

from memgate.cli import build_parser
from memgate.config import describe_keys

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_config_key_is_in_the_readme_table():
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", README, flags=re.M))
    assert documented == {key for key, _, _ in describe_keys()}


def test_readme_commands_exist():
    parser = build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)  # noqa: SLF001
    used = set(re.findall(r"^memgate (\w+)", README, flags=re.M))
    assert used and used <= commands
    for target in ("demo", "test"):
        assert re.search(rf"^{target}:", (ROOT / "Makefile").read_text(), flags=re.M)


def test_configs_referenced_in_readme_exist():
    for name in re.findall(r"`((?:table\d|quick|baseline|gated_b3)[\w_]*\.toml)`", README):
        assert (ROOT / "configs" / name).exists() or (ROOT / "experiments" / name).exists(), name
