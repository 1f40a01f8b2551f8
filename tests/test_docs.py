"""The docs cannot fall behind the code: privacy.md against the record schema,
cli.md against the click command tree, and the README links both."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from plausipy._cli import _COMMANDS, main
from plausipy._record import CATEGORIES, WIRE_FIELDS

DOCS = Path(__file__).resolve().parent.parent / "docs"


def privacy_table() -> list[tuple[str, str]]:
    """(field, category) of every row of the field table in privacy.md, in order."""
    rows = []
    for line in (DOCS / "privacy.md").read_text().splitlines():
        match = re.match(r"\|\s*`([a-z_]+)`\s*\|\s*([a-z]+)\s*\|", line)
        if match:
            rows.append((match.group(1), match.group(2)))
    return rows


def test_privacy_lists_exactly_the_wire_fields_in_order():
    assert [field for field, _category in privacy_table()] == list(WIRE_FIELDS)


def test_privacy_names_the_category_that_turns_each_field_off():
    category_of = {field: category for category, fields in CATEGORIES.items() for field in fields}
    for field, category in privacy_table():
        assert category == category_of.get(field, "always"), field


def command_paths() -> list[tuple[str, click.Command | None]]:
    """Every leaf command as ("plausipy data delete", command); None when its module is not importable here."""
    found: list[tuple[str, click.Command | None]] = []

    def walk(command: click.Command, path: str) -> None:
        if isinstance(command, click.Group):
            context = click.Context(command)
            for name in command.list_commands(context):
                try:
                    child = command.get_command(context, name)
                except ImportError:
                    child = None  # an optional part not installed here: still documented
                if child is None:
                    found.append((f"{path} {name}", None))
                else:
                    walk(child, f"{path} {name}")
        else:
            found.append((path, command))

    walk(main, "plausipy")
    return found


def cli_sections() -> dict[str, str]:
    """``### plausipy …`` heading -> the text of its section."""
    text = (DOCS / "cli.md").read_text()
    parts = re.split(r"^### (plausipy[^\n]*)$", text, flags=re.MULTILINE)
    return {heading.strip(): body for heading, body in zip(parts[1::2], parts[2::2])}


def test_the_walk_finds_the_commands_of_the_table():
    top = {path.split()[1] for path, _command in command_paths()}
    assert top == set(_COMMANDS)


@pytest.mark.parametrize(("path", "command"), command_paths(), ids=lambda value: value if isinstance(value, str) else "")
def test_every_command_and_option_is_documented(path, command):
    sections = cli_sections()
    assert path in sections, f"docs/cli.md has no section '### {path}'"
    if command is None:
        return
    for parameter in command.params:
        if isinstance(parameter, click.Option) and not parameter.hidden:
            longest = max(parameter.opts + parameter.secondary_opts, key=len)
            assert longest in sections[path], f"{path}: option {longest} is not documented"


def test_readme_links_both_documents():
    readme = (DOCS.parent / "README.md").read_text()
    assert "docs/privacy.md" in readme and "docs/cli.md" in readme
