"""``plausipy data delete``, ``plausipy data export`` and ``plausipy policy reset-id``.

Thin commands over :mod:`plausipy._deletion` and the ledger; they are
attached to the ``data`` and ``policy`` groups by those groups' modules.

    $ plausipy data delete 3f2a9c1e
    $ plausipy data delete --package acmelib
    $ plausipy data delete --all --yes
    $ plausipy data export > my-records.jsonl
    $ plausipy policy reset-id --delete-first
"""

from __future__ import annotations

import json
import sys

import click

from plausipy._cli._common import echo_json, style

__all__ = ["delete", "export", "reset_id"]


def _open_ledger():  # type: ignore[no-untyped-def]
    from plausipy._ledger import Ledger, LedgerError

    try:
        return Ledger()
    except LedgerError as exc:
        raise click.ClickException(str(exc)) from exc


def _describe(outcome: dict[str, object]) -> str:
    where = f"{outcome['package']} at {outcome['endpoint']} ({len(outcome['run_ids'])} run(s))"  # type: ignore[arg-type]
    if outcome["status"] == "done":
        return f"{style('deleted', fg='green')}  {where}: the collector answered {outcome['answer']}"
    if outcome["status"] == "rejected":
        return f"{style('refused', fg='red')}  {where}: {outcome['answer']}"
    return f"{style('queued', fg='yellow')}   {where}: {outcome['answer']}; retried by the sender and `plausipy flush`"


def run_deletion(run_ids: tuple[str, ...], package: str | None, everything: bool) -> dict[str, object]:
    """Delete the chosen records here and at their collectors; what happened, JSON-ready."""
    from plausipy import _deletion

    with _open_ledger() as ledger:
        try:
            plan = _deletion.plan_deletion(ledger, run_ids=run_ids, package=package, everything=everything)
        except LookupError as exc:
            raise click.ClickException(str(exc).strip("'\"")) from exc
        outcomes = _deletion.request_deletion(ledger, plan, send_uids=package is not None or everything)
    return {
        "deleted_locally": [row.run_id for row in plan.local_only],
        "requests": [outcome.as_dict() for outcome in outcomes],
    }


@click.command()
@click.argument("run_ids", nargs=-1, metavar="[RUN_ID]...")
@click.option("--package", "-p", metavar="NAME", help="Every record of this package.")
@click.option("--all", "everything", is_flag=True, help="Every record on this machine.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting everything.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def delete(run_ids: tuple[str, ...], package: str | None, everything: bool, yes: bool, as_json: bool) -> None:
    """Delete records here and ask their collectors to delete them too.

    Records that were never sent are simply deleted here. For the others a
    deletion request goes to every collector that received them; while a
    collector cannot be reached the request waits and is retried like
    records. Exits with status 1 if a collector refused.
    """
    if sum((bool(run_ids), package is not None, everything)) != 1:
        raise click.UsageError("name RUN_IDs, or --package NAME, or --all (exactly one of them)")
    if everything and not yes:
        click.confirm("Delete every record, here and at the collectors?", abort=True)
    result = run_deletion(run_ids, package, everything)
    requests = result["requests"]
    if as_json:
        echo_json(result)
    else:
        local = result["deleted_locally"]
        if local:
            click.echo(f"{len(local)} record(s) never sent: deleted here, nothing to ask a collector.")  # type: ignore[arg-type]
        for outcome in requests:  # type: ignore[union-attr]
            click.echo(_describe(outcome))
        if not local and not requests:
            click.echo("Nothing to delete.")
    if any(outcome["status"] == "rejected" for outcome in requests):  # type: ignore[union-attr]
        raise SystemExit(1)


@click.command()
@click.option("--package", "-p", metavar="NAME", help="Only the records of this package.")
@click.option("--output", "-o", type=click.File("w"), default="-", help="Write to this file instead of stdout.")
def export(package: str | None, output) -> None:  # type: ignore[no-untyped-def]
    """Export every record as JSON lines: one object per line, full body included."""
    from plausipy._cli._data import all_records

    for row in all_records(package):
        output.write(json.dumps(row.as_dict(), separators=(",", ":"), default=str) + "\n")


@click.command(name="reset-id")
@click.option("--delete-first/--keep-records", default=None,
              help="Delete your records at the collectors before the ID changes (asked when omitted).")  # fmt: skip
def reset_id(delete_first: bool | None) -> None:
    """Replace the local secret, so later IDs cannot be linked to earlier ones.

    Offers to delete your records first: after the reset, nothing links you
    to them any more, not even for you.
    """
    if delete_first is None:
        delete_first = sys.stdin.isatty() and click.confirm("Delete your records at the collectors first?", default=True)
    if delete_first:
        result = run_deletion((), None, True)
        for outcome in result["requests"]:  # type: ignore[union-attr]
            click.echo(_describe(outcome))
    from plausipy._identity import reset_secret

    reset_secret()
    click.echo("New ID secret created: records from now on cannot be linked to earlier ones.")
