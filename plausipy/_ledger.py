"""The local ledger: every record built on this machine and what became of it.

One SQLite file in the data dir (``~/.local/share/plausipy/ledger.sqlite3``,
WAL mode, a busy timeout so concurrent readers such as ``plausipy data list``
never fail while the sender writes). It is what ``plausipy data`` shows.

Tables (``PRAGMA user_version`` is the schema version, see ``_MIGRATIONS``):

- ``records``: one row per record. ``raw`` is the record as the host built
  it, ``body`` the wire record (DESIGN.md §4) computed once, at ingest, with
  the local secret; ``endpoint`` and ``key`` are where it goes. ``status`` is
  one of ``queued sent rejected expired deleted``; ``collector`` is where it
  was actually delivered (``PLAUSIPY_ENDPOINT`` may differ from ``endpoint``);
  ``error`` is the last reason it is not sent yet, or the collector's message.
- ``endpoints``: backoff per collector URL (``failures``, ``next_attempt``)
  and the last error, for ``plausipy status``.
- ``problems``: what went wrong with local state (a corrupt ledger moved
  aside, an unreadable spool file), for ``plausipy status``.

- ``deletions``: deletion requests per (collector, key) and what the collector
  answered (:mod:`plausipy._deletion`).

A new schema version appends a step to ``_MIGRATIONS``; never edit a step
that has shipped.

Status flow::

    spool file ──ingest_spool()──► queued ──mark_sent()────► sent
                                     │  ├──mark_rejected()─► rejected
                                     │  └──mark_retry()────► queued (endpoint backs off)
                                     └──expire_old()───────► expired (after 30 days)

>>> with Ledger.open() as ledger:  # doctest: +SKIP
...     ledger.ingest_spool(secret)
...     ledger.counts()
{'queued': 1, 'sent': 0, ...}
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from plausipy import _paths, _spool

__all__ = [
    "BATCH_MAX_BYTES",
    "BATCH_MAX_RECORDS",
    "EXPIRY_SECONDS",
    "STATUSES",
    "Batch",
    "EndpointState",
    "Ledger",
    "LedgerError",
    "LedgerRow",
    "backoff_seconds",
    "spooled_records",
]

STATUSES = ("queued", "sent", "rejected", "expired", "deleted")
#: DESIGN.md §5: a request holds at most 100 records and 256 KiB; keep a margin for the envelope.
BATCH_MAX_RECORDS = 100
BATCH_MAX_BYTES = 200 * 1024
#: Queued records older than this are never sent (the collector refuses records older than 31 days).
EXPIRY_SECONDS = 30 * 24 * 3600
BACKOFF_FIRST_SECONDS = 60.0
BACKOFF_MAX_SECONDS = 6 * 3600.0
_BUSY_TIMEOUT_MS = 10_000
_STOPPED_MID_REQUEST = "the sender was stopped before the collector answered"

_MIGRATIONS: tuple[str, ...] = (
    # version 1
    """
    CREATE TABLE records (
        run_id       TEXT PRIMARY KEY,
        package      TEXT NOT NULL,
        version      TEXT NOT NULL,
        endpoint     TEXT NOT NULL,
        key          TEXT NOT NULL,
        created      REAL NOT NULL,
        status       TEXT NOT NULL DEFAULT 'queued',
        raw          TEXT NOT NULL,
        body         TEXT NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        last_attempt REAL,
        sent_at      REAL,
        collector    TEXT,
        error        TEXT
    );
    CREATE INDEX records_by_status ON records (status, created);
    CREATE INDEX records_by_package ON records (package, created);
    CREATE TABLE endpoints (
        endpoint      TEXT PRIMARY KEY,
        failures      INTEGER NOT NULL DEFAULT 0,
        next_attempt  REAL NOT NULL DEFAULT 0,
        last_error    TEXT,
        last_error_at REAL,
        last_success  REAL
    );
    CREATE TABLE problems (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        at      REAL NOT NULL,
        message TEXT NOT NULL
    );
    """,
    # version 2: deletion requests waiting for (or answered by) a collector (plausipy._deletion)
    """
    CREATE TABLE deletions (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        endpoint     TEXT NOT NULL,
        key          TEXT NOT NULL,
        run_ids      TEXT NOT NULL,
        uids         TEXT NOT NULL,
        created      REAL NOT NULL,
        status       TEXT NOT NULL DEFAULT 'queued',
        attempts     INTEGER NOT NULL DEFAULT 0,
        last_attempt REAL,
        deleted      INTEGER,
        answer       TEXT
    );
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


class LedgerError(Exception):
    """The ledger cannot be opened, not even as a fresh file."""


class _NewerSchema(sqlite3.DatabaseError):
    """The ledger was written by a newer plausipy."""


@dataclass(frozen=True)
class LedgerRow:
    """One record as the ledger holds it."""

    run_id: str
    package: str
    version: str
    endpoint: str
    key: str
    created: float
    status: str
    body: dict[str, object]
    attempts: int = 0
    last_attempt: float | None = None
    sent_at: float | None = None
    collector: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready view for ``plausipy data --json`` (the key stays local: it is not personal, but it is not data either)."""
        return {
            "run_id": self.run_id,
            "package": self.package,
            "version": self.version,
            "status": self.status,
            "created": _iso(self.created),
            "sent_at": _iso(self.sent_at) if self.sent_at is not None else None,
            "endpoint": self.endpoint,
            "collector": self.collector,
            "attempts": self.attempts,
            "error": self.error,
            "body": self.body,
        }


@dataclass
class Batch:
    """Queued records that travel in one request: one collector, one key."""

    endpoint: str
    key: str
    run_ids: list[str] = field(default_factory=list)
    bodies: list[dict[str, object]] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)
    size: int = 0

    def split(self) -> tuple[Batch, Batch]:
        """Two halves, to find the one record a collector refuses without refusing its neighbours."""
        middle = len(self.run_ids) // 2
        first = Batch(self.endpoint, self.key, self.run_ids[:middle], self.bodies[:middle], self.packages[:middle])
        second = Batch(self.endpoint, self.key, self.run_ids[middle:], self.bodies[middle:], self.packages[middle:])
        return first, second


@dataclass(frozen=True)
class EndpointState:
    """Backoff and last error of one collector."""

    endpoint: str
    failures: int
    next_attempt: float
    last_error: str | None
    last_error_at: float | None
    last_success: float | None


def backoff_seconds(failures: int) -> float:
    """Wait after ``failures`` failures in a row: 1 min, doubling, at most 6 h.

    >>> [backoff_seconds(n) for n in (1, 2, 3)]
    [60.0, 120.0, 240.0]
    """
    if failures <= 0:
        return 0.0
    return min(BACKOFF_FIRST_SECONDS * 2 ** min(failures - 1, 32), BACKOFF_MAX_SECONDS)


class Ledger:
    """The SQLite ledger at ``path`` (default :func:`plausipy._paths.ledger_file`).

    A file that is not a readable SQLite ledger is moved aside to
    ``ledger.sqlite3.corrupt-<timestamp>`` and a fresh ledger is started;
    :meth:`problems` says so afterwards.
    """

    def __init__(self, path: str | None = None) -> None:
        self.path = path or _paths.ledger_file()
        self._connection = _open_or_recover(self)

    @classmethod
    def open(cls, path: str | None = None) -> Ledger:
        """Open (creating or migrating) the ledger; the same as ``Ledger(path)``."""
        return cls(path)

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- filling -----------------------------------------------------------------

    def ingest_spool(self, secret: bytes, *, directory: str | None = None) -> int:
        """Move every spool file into the ledger as ``queued``; return how many records are new.

        Each file's records are committed before the file is unlinked, and the
        insert ignores a ``run_id`` already present, so a crash between the two
        steps never duplicates a record. Unreadable files are quarantined.
        """
        added = 0
        for path, raws in _spool.iter_spool(directory):
            if raws is None:
                self._quarantine(path, "not a readable spool file")
                continue
            try:
                added += self.queue_records(raws, secret)
            except (KeyError, TypeError, ValueError) as exc:
                self._quarantine(path, f"a record could not be prepared ({exc!r})")
                continue
            _unlink_quietly(path)
        return added

    def queue_records(self, raws: Iterable[dict[str, object]], secret: bytes) -> int:
        """Insert raw records as ``queued`` (wire body computed now); return how many were new."""
        from plausipy._record import finalize_record

        rows = [_row_values(raw, finalize_record(raw, secret)) for raw in raws]
        with self._connection:
            before = self._connection.total_changes
            self._connection.executemany(
                "INSERT OR IGNORE INTO records (run_id, package, version, endpoint, key, created, raw, body)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return self._connection.total_changes - before

    # -- choosing what to send ---------------------------------------------------

    def due_batches(
        self,
        now: float,
        *,
        endpoint_override: str | None = None,
        ignore_backoff: bool = False,
    ) -> list[Batch]:
        """Queued records whose collector is not backing off, grouped by (collector, key).

        ``endpoint_override`` (``PLAUSIPY_ENDPOINT``) replaces every record's
        endpoint. Batches hold at most :data:`BATCH_MAX_RECORDS` records and
        about :data:`BATCH_MAX_BYTES` of JSON; oldest records go first.
        """
        batches: list[Batch] = []
        open_batches: dict[tuple[str, str], Batch] = {}
        waiting = {state.endpoint: state.next_attempt for state in self.endpoint_states()}
        cursor = self._connection.execute(
            "SELECT run_id, package, endpoint, key, body FROM records WHERE status = 'queued' ORDER BY created, run_id"
        )
        for run_id, package, endpoint, key, body in cursor:
            target = endpoint_override or endpoint
            if not ignore_backoff and waiting.get(target, 0.0) > now:
                continue
            size = len(body.encode("utf-8")) + 2
            batch = open_batches.get((target, key))
            if batch is None or len(batch.run_ids) >= BATCH_MAX_RECORDS or batch.size + size > BATCH_MAX_BYTES:
                batch = Batch(target, key)
                open_batches[(target, key)] = batch
                batches.append(batch)
            batch.run_ids.append(run_id)
            batch.bodies.append(json.loads(body))
            batch.packages.append(package)
            batch.size += size
        return batches

    # -- outcomes ------------------------------------------------------------------

    def mark_in_flight(self, collector: str, *, now: float) -> tuple[float, str | None]:
        """Before a request: back the collector off as if it will fail; return what to restore.

        A sender killed mid-request (its hard stop) records no outcome; this
        way the next sender still waits instead of hanging on the same
        collector at every run. Every outcome overwrites it.
        """
        with self._connection:
            row = self._connection.execute(
                "SELECT failures, next_attempt, last_error FROM endpoints WHERE endpoint = ?", (collector,)
            ).fetchone()
            failures, next_attempt, last_error = row if row else (0, 0.0, None)
            self._connection.execute(
                "INSERT INTO endpoints (endpoint, failures, next_attempt, last_error, last_error_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (endpoint) DO UPDATE SET next_attempt = excluded.next_attempt,"
                " last_error = excluded.last_error, last_error_at = excluded.last_error_at",
                (collector, failures, now + backoff_seconds(failures + 1), _STOPPED_MID_REQUEST, now),
            )
        return float(next_attempt), last_error

    def restore_backoff(self, collector: str, previous: tuple[float, str | None]) -> None:
        """Undo :meth:`mark_in_flight` when the answer says nothing about the collector's health (a rejection)."""
        next_attempt, last_error = previous
        with self._connection:
            self._connection.execute(
                "UPDATE endpoints SET next_attempt = ?, last_error = ? WHERE endpoint = ?", (next_attempt, last_error, collector)
            )

    def mark_sent(self, run_ids: list[str], *, collector: str, now: float) -> None:
        """The collector accepted these records; its backlog is due again at once."""
        with self._connection:
            self._connection.executemany(
                "UPDATE records SET status = 'sent', sent_at = ?, collector = ?, error = NULL,"
                " attempts = attempts + 1, last_attempt = ? WHERE run_id = ? AND status = 'queued'",
                [(now, collector, now, run_id) for run_id in run_ids],
            )
            self._connection.execute(
                "INSERT INTO endpoints (endpoint, failures, next_attempt, last_success) VALUES (?, 0, 0, ?)"
                " ON CONFLICT (endpoint) DO UPDATE SET failures = 0, next_attempt = 0, last_error = NULL,"
                " last_success = excluded.last_success",
                (collector, now),
            )

    def mark_rejected(self, run_ids: list[str], *, collector: str, error: str, now: float) -> None:
        """The collector refused these records for good; they stay here, with its message."""
        with self._connection:
            self._connection.executemany(
                "UPDATE records SET status = 'rejected', collector = ?, error = ?,"
                " attempts = attempts + 1, last_attempt = ? WHERE run_id = ? AND status = 'queued'",
                [(collector, error, now, run_id) for run_id in run_ids],
            )

    def mark_retry(
        self,
        run_ids: list[str],
        *,
        collector: str,
        error: str,
        now: float,
        retry_after: float | None = None,
    ) -> float:
        """These records stay queued; the collector backs off. Return when it is due again.

        The wait is the exponential backoff or the collector's ``Retry-After``,
        whichever is longer.
        """
        with self._connection:
            self._connection.executemany(
                "UPDATE records SET error = ?, attempts = attempts + 1, last_attempt = ?"
                " WHERE run_id = ? AND status = 'queued'",
                [(error, now, run_id) for run_id in run_ids],
            )
            row = self._connection.execute("SELECT failures FROM endpoints WHERE endpoint = ?", (collector,)).fetchone()
            failures = (row[0] if row else 0) + 1
            next_attempt = now + max(backoff_seconds(failures), retry_after or 0.0)
            self._connection.execute(
                "INSERT INTO endpoints (endpoint, failures, next_attempt, last_error, last_error_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (endpoint) DO UPDATE SET failures = excluded.failures,"
                " next_attempt = excluded.next_attempt, last_error = excluded.last_error,"
                " last_error_at = excluded.last_error_at",
                (collector, failures, next_attempt, error, now),
            )
        return next_attempt

    def expire_old(self, now: float) -> int:
        """Mark queued records older than 30 days ``expired``; return how many."""
        with self._connection:
            cursor = self._connection.execute(
                "UPDATE records SET status = 'expired', error = 'not delivered within 30 days'"
                " WHERE status = 'queued' AND created < ?",
                (now - EXPIRY_SECONDS,),
            )
            return cursor.rowcount

    def note_problem(self, message: str, *, now: float | None = None) -> None:
        """Remember a problem with local state for ``plausipy status``."""
        with self._connection:
            self._connection.execute(
                "INSERT INTO problems (at, message) VALUES (?, ?)", (time.time() if now is None else now, message)
            )

    # -- reading -------------------------------------------------------------------

    def records(self, package: str | None = None) -> list[LedgerRow]:
        """Every record, oldest first, optionally of one package."""
        query = f"SELECT {_ROW_COLUMNS} FROM records"
        parameters: tuple[object, ...] = ()
        if package is not None:
            query += " WHERE package = ?"
            parameters = (package,)
        query += " ORDER BY created, run_id"
        return [_ledger_row(values) for values in self._connection.execute(query, parameters)]

    def record(self, run_id: str) -> LedgerRow | None:
        """The record with this ``run_id`` (or a unique prefix of it), or None."""
        row = self._connection.execute(f"SELECT {_ROW_COLUMNS} FROM records WHERE run_id = ?", (run_id,)).fetchone()
        if row is None and run_id:
            matches = self._connection.execute(
                f"SELECT {_ROW_COLUMNS} FROM records WHERE substr(run_id, 1, ?) = ? LIMIT 2", (len(run_id), run_id)
            ).fetchall()
            row = matches[0] if len(matches) == 1 else None
        return _ledger_row(row) if row is not None else None

    def counts(self) -> dict[str, int]:
        """How many records have each status, plus ``problems`` when local state had some (see :attr:`problems`)."""
        counts = dict.fromkeys(STATUSES, 0)
        for status, number in self._connection.execute("SELECT status, count(*) FROM records GROUP BY status"):
            counts[status] = number
        problems = self._connection.execute("SELECT count(*) FROM problems").fetchone()[0]
        if problems:
            counts["problems"] = problems
        return counts

    @property
    def problems(self) -> list[str]:
        """Problems with local state, oldest first, each with its time."""
        return [
            f"{_iso(at)} {message}"
            for at, message in self._connection.execute("SELECT at, message FROM problems ORDER BY id")
        ]

    def last_errors(self) -> list[EndpointState]:
        """Collectors whose last attempt failed, with the error and when they are due again."""
        return [state for state in self.endpoint_states() if state.failures > 0 or state.last_error is not None]

    def endpoint_states(self) -> list[EndpointState]:
        """Backoff state of every collector ever tried."""
        return [
            EndpointState(*values)
            for values in self._connection.execute(
                "SELECT endpoint, failures, next_attempt, last_error, last_error_at, last_success"
                " FROM endpoints ORDER BY endpoint"
            )
        ]

    def schema_version(self) -> int:
        """The ledger's schema version (``PRAGMA user_version``)."""
        return int(self._connection.execute("PRAGMA user_version").fetchone()[0])

    # -- helpers -------------------------------------------------------------------

    def _quarantine(self, path: str, why: str) -> None:
        try:
            _spool.quarantine(path)
        except OSError as exc:
            why += f"; could not move it aside ({exc})"
        self.note_problem(f"spool file {os.path.basename(path)}: {why}; moved to spool/corrupt/")


def _open_or_recover(ledger: Ledger) -> sqlite3.Connection:
    """Connect to ``ledger.path``; move a corrupt or unreadable file aside and start afresh."""
    path = ledger.path
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        return _connect(path)
    except _NewerSchema as exc:
        # Written by a newer plausipy: leave it for that version rather than guess.
        raise LedgerError(str(exc)) from exc
    except sqlite3.OperationalError as exc:
        # "locked" or "unable to open" is not corruption: only a file we may not read is moved aside.
        if not os.path.exists(path) or os.access(path, os.R_OK | os.W_OK):
            raise LedgerError(f"cannot open the ledger at {path}: {exc}") from exc
        reason = f"not readable and writable ({exc})"
    except sqlite3.DatabaseError as exc:
        reason = f"not a readable ledger ({exc})"
    moved_to = _move_aside(path)
    try:
        connection = _connect(path)
    except sqlite3.Error as exc:
        raise LedgerError(f"cannot open the ledger at {path}: {exc}") from exc
    with connection:
        connection.execute(
            "INSERT INTO problems (at, message) VALUES (?, ?)",
            (time.time(), f"the ledger was {reason}; moved it to {moved_to} and started a fresh one"),
        )
    return connection


_ROW_COLUMNS = (
    "run_id, package, version, endpoint, key, created, status, body, attempts, last_attempt, sent_at, collector, error"
)


def _ledger_row(values: tuple[object, ...]) -> LedgerRow:
    run_id, package, version, endpoint, key, created, status, body, *rest = values
    return LedgerRow(
        str(run_id), str(package), str(version), str(endpoint), str(key), float(created),  # type: ignore[arg-type]
        str(status), json.loads(str(body)), *rest,  # type: ignore[arg-type]
    )  # fmt: skip


def _row_values(raw: dict[str, object], body: dict[str, object]) -> tuple[object, ...]:
    created = raw.get("created")
    return (
        str(raw["run_id"]),
        str(raw["package"]),
        str(raw["version"]),
        str(raw["endpoint"]),
        str(raw["key"]),
        float(created) if isinstance(created, (int, float)) else time.time(),
        json.dumps(raw, sort_keys=True, default=list),
        json.dumps(body, separators=(",", ":")),
    )


def _connect(path: str) -> sqlite3.Connection:
    if not os.path.exists(path):
        # The ledger holds the user's records: readable by them alone (SQLite gives -wal/-shm the same mode).
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    connection = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level="DEFERRED")
    try:
        connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        _migrate(connection)
        # Reading the tables proves the file is a ledger, not just any SQLite file with our version number.
        connection.execute("SELECT count(*) FROM records").fetchone()
    except sqlite3.Error:
        connection.close()
        raise
    return connection


def _migrate(connection: sqlite3.Connection) -> None:
    version = int(connection.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        # A newer plausipy wrote this ledger; leave it alone rather than guess.
        raise _NewerSchema(f"ledger schema {version} is newer than this plausipy ({SCHEMA_VERSION})")
    if version == SCHEMA_VERSION:
        return
    # BEGIN IMMEDIATE: two processes opening a new ledger at once must not both migrate.
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        for step in _MIGRATIONS[version:]:
            for statement in _statements(step):
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _statements(script: str) -> Iterator[str]:
    for statement in script.split(";"):
        if statement.strip():
            yield statement


def _move_aside(path: str) -> str:
    moved_to = f"{path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    try:
        os.replace(path, moved_to)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise LedgerError(f"the ledger at {path} is unreadable and cannot be moved aside: {exc}") from exc
    for suffix in ("-wal", "-shm"):
        try:
            os.replace(path + suffix, moved_to + suffix)
        except OSError:
            pass
    return moved_to


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def spooled_records(secret: bytes, directory: str | None = None) -> list[LedgerRow]:
    """Records still in the spool, not yet moved into the ledger, shown as ``queued``.

    Read-only: the sender alone moves spool files. Unreadable files are skipped
    (the sender quarantines them).
    """
    from plausipy._record import finalize_record

    rows: list[LedgerRow] = []
    for _path, raws in _spool.iter_spool(directory):
        for raw in raws or ():
            try:
                run_id, package, version, endpoint, key, created, _raw, body = _row_values(raw, finalize_record(raw, secret))
            except (KeyError, TypeError, ValueError):
                continue
            rows.append(
                LedgerRow(str(run_id), str(package), str(version), str(endpoint), str(key), float(created),  # type: ignore[arg-type]
                          "queued", json.loads(str(body)), error="in the spool, waiting for the sender")  # fmt: skip
            )
    return rows
