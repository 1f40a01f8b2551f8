"""Deletion requests: ask the collectors to forget records they received (DESIGN.md §5).

    plausipy data delete RUN_ID…  /  --package NAME  /  --all
      ─► choose ledger rows
      ─► never sent (queued, expired, rejected): marked ``deleted`` here, nothing to ask
      ─► sent: one request per (collector, key), ``{"run_ids": […], "uids": […]}``,
         queued in the ledger's ``deletions`` table, tried at once
      ─► 200: rows ``deleted``, the collector's count kept; other 4xx: ``rejected``
         (rows stay ``sent``, with the collector's message); network, 429, 5xx:
         stays ``queued`` and :func:`retry_pending` (called by the sender and
         ``plausipy flush``) tries again later

``uids`` prove ownership: the collector stores only ``sha256(uid)``. A
deletion by ``run_id`` alone sends no uid, so it removes exactly those runs;
``--package`` and ``--all`` send the uids of the chosen rows as well, which
also reaches rows this ledger no longer lists.

The ``deletions`` table lives in the ledger file, created here with
``IF NOT EXISTS`` so older ledgers gain it on first use.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from plausipy._ledger import Ledger, LedgerRow

__all__ = ["DeletionOutcome", "DeletionPlan", "plan_deletion", "request_deletion", "retry_pending"]

#: DESIGN.md §5 allows this many run_ids (and uids) per request.
MAX_ITEMS_PER_REQUEST = 1000
REQUEST_TIMEOUT_SECONDS = 10.0
NEVER_SENT = ("queued", "expired", "rejected")



@dataclass
class DeletionOutcome:
    """One deletion request and what its collector answered."""

    id: int
    endpoint: str
    package: str
    run_ids: list[str]
    uids: list[str]
    status: str  # queued | done | rejected
    deleted: int | None = None
    answer: str | None = None

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready view."""
        return {
            "id": self.id, "endpoint": self.endpoint, "package": self.package, "run_ids": self.run_ids,
            "uids": self.uids, "status": self.status, "deleted": self.deleted, "answer": self.answer,
        }  # fmt: skip


@dataclass
class DeletionPlan:
    """Which rows a deletion covers: those only here, and those a collector holds."""

    local_only: list[LedgerRow] = field(default_factory=list)
    at_collectors: list[LedgerRow] = field(default_factory=list)


def _connection(ledger: Ledger):  # type: ignore[no-untyped-def]
    return ledger._connection  # the ledger's one connection: one transaction seam


def plan_deletion(ledger: Ledger, *, run_ids: Iterable[str] = (), package: str | None = None,
                  everything: bool = False) -> DeletionPlan:  # fmt: skip
    """The rows to delete; raises LookupError naming a run_id the ledger does not know."""
    if everything:
        rows = ledger.records()
    elif package is not None:
        rows = ledger.records(package)
    else:
        rows = []
        for run_id in run_ids:
            row = ledger.record(run_id)
            if row is None:
                raise LookupError(f"no record {run_id!r} in the ledger (see `plausipy data list`)")
            rows.append(row)
    plan = DeletionPlan()
    for row in rows:
        if row.status == "sent":
            plan.at_collectors.append(row)
        elif row.status in NEVER_SENT:
            plan.local_only.append(row)
    return plan


def request_deletion(ledger: Ledger, plan: DeletionPlan, *, send_uids: bool, now: float | None = None,
                     timeout: float = REQUEST_TIMEOUT_SECONDS) -> list[DeletionOutcome]:  # fmt: skip
    """Carry out ``plan``: local rows deleted at once, one queued request per (collector, key), tried now."""
    now = time.time() if now is None else now
    _mark_deleted(ledger, [row.run_id for row in plan.local_only], "deleted here; it was never sent")
    queued_ids = []
    for (endpoint, key), rows in _groups(plan.at_collectors).items():
        for start in range(0, len(rows), MAX_ITEMS_PER_REQUEST):
            chunk = rows[start : start + MAX_ITEMS_PER_REQUEST]
            uids = sorted({str(row.body.get("uid")) for row in chunk if row.body.get("uid")}) if send_uids else []
            queued_ids.append(_queue(ledger, endpoint, key, [row.run_id for row in chunk], uids, now))
    return retry_pending(ledger, now=now, timeout=timeout, only=queued_ids)


def _groups(rows: list[LedgerRow]) -> dict[tuple[str, str], list[LedgerRow]]:
    groups: dict[tuple[str, str], list[LedgerRow]] = {}
    for row in rows:
        groups.setdefault((row.collector or row.endpoint, row.key), []).append(row)
    return groups


def _queue(ledger: Ledger, endpoint: str, key: str, run_ids: list[str], uids: list[str], now: float) -> int:
    connection = _connection(ledger)
    with connection:
        cursor = connection.execute(
            "INSERT INTO deletions (endpoint, key, run_ids, uids, created) VALUES (?, ?, ?, ?, ?)",
            (endpoint, key, json.dumps(run_ids), json.dumps(uids), now),
        )
        connection.executemany(
            "UPDATE records SET error = ? WHERE run_id = ? AND status = 'sent'",
            [("deletion requested; waiting to reach the collector", run_id) for run_id in run_ids],
        )
    return int(cursor.lastrowid)


def pending(ledger: Ledger) -> list[DeletionOutcome]:
    """Deletion requests not yet answered by their collector."""
    return [outcome for outcome in all_deletions(ledger) if outcome.status == "queued"]


def all_deletions(ledger: Ledger) -> list[DeletionOutcome]:
    """Every deletion request ever made from this machine, oldest first."""
    connection = _connection(ledger)
    outcomes = []
    for identifier, endpoint, _key, run_ids, uids, status, deleted, answer in connection.execute(
        "SELECT id, endpoint, key, run_ids, uids, status, deleted, answer FROM deletions ORDER BY id"
    ):
        run_id_list = json.loads(run_ids)
        outcomes.append(DeletionOutcome(identifier, endpoint, _package_of(ledger, run_id_list), run_id_list,
                                        json.loads(uids), status, deleted, answer))  # fmt: skip
    return outcomes


def _package_of(ledger: Ledger, run_ids: list[str]) -> str:
    row = ledger.record(run_ids[0]) if run_ids else None
    return row.package if row is not None else "?"


def retry_pending(ledger: Ledger, *, now: float | None = None, timeout: float = REQUEST_TIMEOUT_SECONDS,
                  only: list[int] | None = None) -> list[DeletionOutcome]:  # fmt: skip
    """Send queued deletion requests (``only`` these ids, if given); a collector that fails is not tried twice."""
    now = time.time() if now is None else now
    connection = _connection(ledger)
    rows = connection.execute(
        "SELECT id, endpoint, key, run_ids, uids FROM deletions WHERE status = 'queued' ORDER BY id"
    ).fetchall()
    unreachable: dict[str, str] = {}
    for identifier, endpoint, key, run_ids, uids in rows:
        if only is not None and identifier not in only:
            continue
        if endpoint in unreachable:
            _record_attempt(ledger, identifier, "queued", None, f"not tried: {unreachable[endpoint]}", now)
            continue
        status, deleted, answer = send_deletion(endpoint, key, json.loads(run_ids), json.loads(uids), timeout=timeout)
        if status == "queued":
            unreachable[endpoint] = answer
        _record_attempt(ledger, identifier, status, deleted, answer, now)
        if status == "done":
            _mark_deleted(ledger, json.loads(run_ids), f"deleted at {endpoint}")
        elif status == "rejected":
            _note(ledger, json.loads(run_ids), f"the collector refused the deletion: {answer}")
    wanted = set(only) if only is not None else {row[0] for row in rows}
    return [outcome for outcome in all_deletions(ledger) if outcome.id in wanted]


def send_deletion(endpoint: str, key: str, run_ids: list[str], uids: list[str], *,
                  timeout: float = REQUEST_TIMEOUT_SECONDS) -> tuple[str, int | None, str]:  # fmt: skip
    """POST one deletion request; ``(status, deleted, answer)`` with status done, rejected or queued. Never raises."""
    import requests

    from plausipy import __version__

    try:
        response = requests.post(
            endpoint.rstrip("/") + "/api/v1/deletions",
            json={"run_ids": run_ids, "uids": uids},
            headers={"Authorization": f"Bearer {key}", "User-Agent": f"plausipy/{__version__}"},
            timeout=(min(5.0, timeout), timeout),
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        return "queued", None, f"collector unreachable ({type(exc).__name__})"
    try:
        document = response.json()
    except ValueError:
        document = None
    message = document.get("error") if isinstance(document, dict) else None
    if response.status_code == 200 and isinstance(document, dict) and isinstance(document.get("deleted"), int):
        return "done", int(document["deleted"]), f"deleted {document['deleted']}"
    if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
        return "rejected", None, f"HTTP {response.status_code}: {message or 'no reason given'}"
    return "queued", None, f"HTTP {response.status_code}: {message or 'unexpected answer'}; will retry"


def _record_attempt(ledger: Ledger, identifier: int, status: str, deleted: int | None, answer: str, now: float) -> None:
    connection = _connection(ledger)
    with connection:
        connection.execute(
            "UPDATE deletions SET status = ?, deleted = ?, answer = ?, attempts = attempts + 1, last_attempt = ?"
            " WHERE id = ?",
            (status, deleted, answer, now, identifier),
        )


def _mark_deleted(ledger: Ledger, run_ids: list[str], note: str) -> None:
    connection = _connection(ledger)
    with connection:
        connection.executemany(
            "UPDATE records SET status = 'deleted', error = ? WHERE run_id = ?", [(note, run_id) for run_id in run_ids]
        )


def _note(ledger: Ledger, run_ids: list[str], note: str) -> None:
    connection = _connection(ledger)
    with connection:
        connection.executemany("UPDATE records SET error = ? WHERE run_id = ?", [(note, run_id) for run_id in run_ids])


def retry_pending_quietly(ledger: Ledger, *, deadline: float, now: float) -> None:
    """Retry queued deletion requests within ``deadline`` (a monotonic time); never raises (the sender calls it)."""
    remaining = deadline - time.monotonic()
    if remaining < 0.5:
        return
    try:
        if ledger._connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'deletions'"
        ).fetchone() is None:
            return  # no deletion was ever requested: nothing to create, nothing to do
        retry_pending(ledger, now=now, timeout=min(remaining, REQUEST_TIMEOUT_SECONDS))
    except Exception:
        pass  # stays queued; `plausipy data delete` and the next run say what happened
