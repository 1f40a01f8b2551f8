"""``plausipy flush``: deliver queued records now, in the foreground.

The same work as the detached sender (:func:`plausipy._sender.run_once`),
under the same lock, but collectors that are backing off are tried anyway
(the user asked) and every outcome is printed per (collector, package). The
exit status is 0 when nothing failed and 1 when records stay queued because
of the network, a 5xx, a 429 or the timeout.

    $ plausipy flush --timeout 10
    http://127.0.0.1:8000  acme: 3 sent
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import click

from plausipy._cli._common import echo_json, style

if TYPE_CHECKING:
    from plausipy._delivery import DeliveryReport

__all__ = ["flush"]

_LOCK_POLL_SECONDS = 0.1


@click.command()
@click.option("--timeout", "timeout", type=click.FloatRange(min=1.0), default=30.0, show_default=True, metavar="S",
              help="Give up after S seconds; what is left stays queued.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def flush(timeout: float, as_json: bool) -> None:
    """Deliver queued records now and report what happened."""
    from plausipy import _paths
    from plausipy._delivery import deliver
    from plausipy._identity import load_or_create_secret
    from plausipy._ledger import Ledger, LedgerError
    from plausipy._host import release_lock

    deadline = time.monotonic() + timeout
    lock = _wait_for_lock(_paths.sender_lock_file(), deadline)
    if lock is None:
        raise click.ClickException(f"a sender kept the lock for {timeout:.0f} s; try again in a moment")
    try:
        with Ledger() as ledger:
            added = ledger.ingest_spool(load_or_create_secret())
            report = deliver(
                ledger,
                deadline=deadline,
                now=time.time(),
                endpoint_override=os.environ.get("PLAUSIPY_ENDPOINT") or None,
                ignore_backoff=True,
            )
    except LedgerError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        release_lock(lock)
    if as_json:
        echo_json({
            "ingested": added,
            "expired": report.expired,
            "failed": report.failed,
            "outcomes": [outcome.as_dict() for outcome in report.outcomes.values()],
        })  # fmt: skip
    else:
        _print_report(report)
    if report.failed:
        raise click.exceptions.Exit(1)


def _wait_for_lock(path: str, deadline: float) -> int | None:
    from plausipy._host import try_lock

    while True:
        lock = try_lock(path)
        if lock is not None or time.monotonic() >= deadline:
            return lock
        time.sleep(_LOCK_POLL_SECONDS)


def _print_report(report: DeliveryReport) -> None:
    if not report.outcomes:
        click.echo("Nothing to send: no record is queued.")
    for outcome in sorted(report.outcomes.values(), key=lambda item: (item.endpoint, item.package)):
        prefix = f"{outcome.endpoint}  {outcome.package}:"
        if outcome.sent:
            duplicates = f" ({outcome.duplicates} already there)" if outcome.duplicates else ""
            click.echo(f"{prefix} {style(f'{outcome.sent} sent', fg='green')}{duplicates}")
        if outcome.rejected:
            reasons = "; ".join(outcome.rejected_messages)
            click.echo(f"{prefix} {style(f'{outcome.rejected} rejected', fg='red')}: {reasons}")
        if outcome.queued:
            reasons = "; ".join(outcome.queued_reasons)
            click.echo(f"{prefix} {style(f'{outcome.queued} still queued', fg='yellow')}: {reasons}")
    if report.expired:
        click.echo(f"{report.expired} record(s) older than 30 days expired unsent.")
