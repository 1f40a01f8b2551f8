"""Delete raw records older than each package's retention (default 395 days).

Retention deletes raw rows only and does not mark days dirty: the daily
rollups already hold those days and must survive. The server runs
:func:`retention_loop` in the background; ``plausipy server purge`` runs
:func:`purge_expired` once::

    purge_expired(storage)   # -> {"acme-lib": 120}
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from plausipy.server._storage import Storage

__all__ = ["purge_expired", "retention_loop"]

logger = logging.getLogger("plausipy.server")


def _cutoff_day(now: datetime, retention_days: int) -> str:
    return (now - timedelta(days=retention_days)).strftime("%Y-%m-%d")


def purge_expired(storage: Storage, *, now: datetime | None = None) -> dict[str, int]:
    """Delete expired raw records of every package; return the count per package name."""
    now = now or datetime.now(timezone.utc)
    purged: dict[str, int] = {}
    for package_id, name, retention_days in storage.read("SELECT id, name, retention_days FROM packages ORDER BY id"):
        # One transaction per package keeps each write lock short; whole days
        # go at once, along the (package_id, day) index.
        with storage.transaction() as tx:
            deleted = tx.execute(
                "DELETE FROM records WHERE package_id = ? AND day < ?", (package_id, _cutoff_day(now, int(retention_days)))
            ).rowcount
        if deleted:
            purged[str(name)] = int(deleted)
    return purged


async def retention_loop(storage: Storage, interval_seconds: float) -> None:
    """Purge now and then every ``interval_seconds``, never letting an error stop the loop."""
    from starlette.concurrency import run_in_threadpool

    while True:
        try:
            purged = await run_in_threadpool(purge_expired, storage)
            if purged:
                logger.info("retention: deleted %s raw records", sum(purged.values()))
        except Exception as exc:  # noqa: BLE001 - a locked or restarting database: try again next time
            logger.warning("retention: skipped this round (%s)", type(exc).__name__)
        await asyncio.sleep(interval_seconds)
