"""``plausipy data``: every record built on this machine, and what became of it.

``list`` shows the ledger and the spool (records not yet picked up by the
sender appear as ``queued``); ``show`` prints one record's full body, exactly
the bytes that were (or will be) sent.

    $ plausipy data list --package acme
    $ plausipy data show 3f2a9c1e --json
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import click

from plausipy._cli._common import echo_json, echo_table

if TYPE_CHECKING:
    from plausipy._ledger import LedgerRow

__all__ = ["all_records", "data"]


def all_records(package: str | None = None) -> list[LedgerRow]:
    """Ledger rows and spooled records (as ``queued``), oldest first, optionally of one package."""
    from plausipy._identity import load_or_create_secret
    from plausipy._ledger import Ledger, LedgerError, spooled_records

    try:
        with Ledger() as ledger:
            rows = ledger.records(package)
    except LedgerError as exc:
        raise click.ClickException(str(exc)) from exc
    known = {row.run_id for row in rows}
    spooled = [row for row in spooled_records(load_or_create_secret()) if row.run_id not in known]
    rows.extend(row for row in spooled if package is None or row.package == package)
    rows.sort(key=lambda row: (row.created, row.run_id))
    return rows


@click.group()
def data() -> None:
    """List, show, export or delete the records plausipy built on this machine."""


@data.command(name="list")
@click.option("--package", "-p", metavar="NAME", help="Only the records of this package.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts, full bodies included.")
def list_records(package: str | None, as_json: bool) -> None:
    """List every record: run_id, package, version, when, status and collector."""
    rows = all_records(package)
    if as_json:
        echo_json([row.as_dict() for row in rows])
        return
    if not rows:
        click.echo(f"No records{f' of {package}' if package else ''} yet.")
        return
    echo_table(
        ["RUN_ID", "PACKAGE", "VERSION", "WHEN", "STATUS", "COLLECTOR"],
        [_table_row(row) for row in rows],
    )
    click.echo(f"\n{len(rows)} record(s). The full body of one: plausipy data show RUN_ID")


@data.command(name="show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def show_record(run_id: str, as_json: bool) -> None:
    """Show one record (RUN_ID or a unique prefix of it) with its full body."""
    row = _find(run_id)
    if as_json:
        echo_json(row.as_dict())
        return
    details = row.as_dict()
    for name in ("run_id", "package", "version", "status", "created", "sent_at", "collector", "endpoint", "attempts", "error"):
        value = details[name]
        if value is not None:
            click.echo(f"{name + ':':<11}{value}")
    click.echo("body:")
    echo_json(details["body"])


def _find(run_id: str) -> LedgerRow:
    from plausipy._ledger import Ledger, LedgerError

    try:
        with Ledger() as ledger:
            row = ledger.record(run_id)
    except LedgerError as exc:
        raise click.ClickException(str(exc)) from exc
    if row is None:
        spooled = [candidate for candidate in all_records() if candidate.run_id.startswith(run_id)]
        if len(spooled) == 1:
            row = spooled[0]
    if row is None:
        raise click.ClickException(f"no record with run_id {run_id!r} (plausipy data list shows them all)")
    return row


def _table_row(row: LedgerRow) -> list[str]:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(row.created))
    collector = row.collector or row.endpoint
    return [row.run_id, row.package, row.version, when, row.status, collector]


# Deletion and export live in their own module (plausipy._cli._delete).
from plausipy._cli._delete import delete as _delete, export as _export  # noqa: E402

data.add_command(_delete)
data.add_command(_export)
