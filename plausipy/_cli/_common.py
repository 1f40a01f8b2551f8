"""Small helpers shared by the CLI commands: JSON output, tables, colour."""

from __future__ import annotations

import json
import os

import click

__all__ = ["echo_json", "echo_table", "style"]


def echo_json(value: object) -> None:
    """Print ``value`` as indented JSON (for ``--json``)."""
    click.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


def style(text: str, **styles: object) -> str:
    """``click.style`` unless ``NO_COLOR`` is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return text
    return click.style(text, **styles)  # type: ignore[arg-type]


def echo_table(headers: list[str], rows: list[list[str]]) -> None:
    """Print a plain aligned table for people."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(str(cell))) for width, cell in zip(widths, row)]
    click.echo(style("  ".join(header.ljust(width) for header, width in zip(headers, widths)).rstrip(), bold=True))
    for row in rows:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
