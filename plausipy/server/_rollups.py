"""Daily rollups: what the dashboard reads instead of the raw records.

A dashboard over a million raw records must answer in milliseconds, and the
numbers must outlive the raw records (retention deletes those, DESIGN.md §5).
So every (package, day) is folded once into two small tables:

``rollup_cells``
    one row per (package, version, day, dimension, value) with ``runs``,
    ``exits`` (runs that reported an exit code), ``failures`` (non-zero exit
    codes) and ``distinct_ids`` (distinct pseudonymous IDs that day). The
    version ``*`` holds the same cells for all versions together, so a
    dashboard without a version filter never adds up per-version distinct
    counts (one person running two versions would count twice).
``rollup_sketches``
    one HyperLogLog sketch per (package, version, day, scope) of the user and
    package scope IDs, so the distinct IDs of any date range can be estimated
    by merging daily sketches (about 3 % error; exact-ish below a few hundred).
``rollup_refreshes``
    when each (package, day) was last rolled up and how many raw records it read (see
    :func:`refresh_dirty_days` on busy days).
``rollup_histograms``
    one log-scale histogram per (package, version, day, measure) of
    ``duration_ms`` and ``peak_rss_kib`` (:data:`HISTOGRAM_BUCKETS` unsigned
    32-bit little-endian counts, see :func:`bucket_of`): percentiles of any
    range and version come from summing a few thousand small arrays.

Dimensions: ``total`` (value ``""``), ``scope``, ``version`` (under ``*``
only), ``python`` (major.minor), ``implementation``, ``os``, ``arch``,
``country``, ``region``, ``timezone``, and ``prop:<name>`` for each
custom property (the top :data:`MAX_PROP_VALUES` values of a day).
An unknown value (a category the user turned off) is stored as ``""``.

Counting IDs: user and package scope IDs are counted by their hash, the two
scopes apart (they cannot be linked, so a person seen under both counts
twice); every anonymous-scope run counts as one ID of its own.

:func:`refresh_dirty_days` recomputes the days that ingest or deletion
marked in ``dirty_days`` from the raw records, then clears the marks.
Retention never marks a day, so its rollups survive the raw records.
"""

from __future__ import annotations

import math
import sys
import time
from array import array
from collections import Counter
from itertools import compress, repeat
from operator import itemgetter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "ALL_VERSIONS",
    "Cell",
    "MAX_PROP_VALUES",
    "ROLLUP_DDL",
    "Sketch",
    "bucket_of",
    "bucket_value",
    "histogram_bytes",
    "histogram_from_bytes",
    "compute_day",
    "refresh_dirty_days",
]

#: The pseudo-version under which the cells of all versions together are stored.
ALL_VERSIONS = "*"
#: Custom property values kept per (day, version, property); the long tail is dropped.
MAX_PROP_VALUES = 50
#: Histogram resolution: buckets per doubling (2 ** (1/8) ≈ 9 % wide).
BUCKETS_PER_DOUBLING = 8
#: Histogram buckets: bucket 264 is 2 ** 32.9, beyond any duration in ms or memory in KiB.
HISTOGRAM_BUCKETS = 264
#: The measures kept as histograms, and their column in a raw row.
MEASURES = (("duration", 4), ("rss", 5))
#: A day whose roll-up read more raw records than this is "busy" (about 250 ms of
#: work here); counted, not timed, so a loaded machine does not change the rule ...
BUSY_DAY_RECORDS = 10_000
#: ... and is rolled up again at most this often (seconds).
BUSY_DAY_INTERVAL_S = 60.0
#: HyperLogLog precision: 2 ** 10 registers, about 3.25 % standard error.
SKETCH_BITS = 10
SKETCH_REGISTERS = 1 << SKETCH_BITS

# Rows per INSERT statement (9 columns x 200 stays far below every placeholder limit).
_INSERT_CHUNK = 200
_CELLS_COLUMNS = "package_id, version, day, dimension, value, runs, exits, failures, distinct_ids"

ROLLUP_DDL: dict[str, list[str]] = {
    "sqlite": [
        """CREATE TABLE IF NOT EXISTS rollup_cells (
            package_id INTEGER NOT NULL,
            version TEXT NOT NULL,
            day TEXT NOT NULL,
            dimension TEXT NOT NULL,
            value TEXT NOT NULL,
            runs INTEGER NOT NULL,
            exits INTEGER NOT NULL,
            failures INTEGER NOT NULL,
            distinct_ids INTEGER NOT NULL,
            PRIMARY KEY (package_id, version, day, dimension, value)
        ) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS rollup_sketches (
            package_id INTEGER NOT NULL,
            version TEXT NOT NULL,
            day TEXT NOT NULL,
            scope TEXT NOT NULL,
            sketch BLOB NOT NULL,
            PRIMARY KEY (package_id, version, day, scope)
        ) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS rollup_histograms (
            package_id INTEGER NOT NULL,
            version TEXT NOT NULL,
            day TEXT NOT NULL,
            measure TEXT NOT NULL,
            counts BLOB NOT NULL,
            PRIMARY KEY (package_id, version, day, measure)
        ) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS rollup_refreshes (
            package_id INTEGER NOT NULL,
            day TEXT NOT NULL,
            refreshed_at REAL NOT NULL,
            records_read INTEGER NOT NULL,
            PRIMARY KEY (package_id, day)
        ) WITHOUT ROWID""",
    ],
    "postgresql": [
        """CREATE TABLE IF NOT EXISTS rollup_cells (
            package_id BIGINT NOT NULL,
            version TEXT NOT NULL,
            day TEXT NOT NULL,
            dimension TEXT NOT NULL,
            value TEXT NOT NULL,
            runs BIGINT NOT NULL,
            exits BIGINT NOT NULL,
            failures BIGINT NOT NULL,
            distinct_ids BIGINT NOT NULL,
            PRIMARY KEY (package_id, version, day, dimension, value)
        )""",
        """CREATE TABLE IF NOT EXISTS rollup_sketches (
            package_id BIGINT NOT NULL,
            version TEXT NOT NULL,
            day TEXT NOT NULL,
            scope TEXT NOT NULL,
            sketch BYTEA NOT NULL,
            PRIMARY KEY (package_id, version, day, scope)
        )""",
        """CREATE TABLE IF NOT EXISTS rollup_histograms (
            package_id BIGINT NOT NULL,
            version TEXT NOT NULL,
            day TEXT NOT NULL,
            measure TEXT NOT NULL,
            counts BYTEA NOT NULL,
            PRIMARY KEY (package_id, version, day, measure)
        )""",
        """CREATE TABLE IF NOT EXISTS rollup_refreshes (
            package_id BIGINT NOT NULL,
            day TEXT NOT NULL,
            refreshed_at DOUBLE PRECISION NOT NULL,
            records_read BIGINT NOT NULL,
            PRIMARY KEY (package_id, day)
        )""",
    ],
}

# The raw columns one day's refresh reads, in this order.
RAW_COLUMNS = (
    "uid_hash, scope, version, exit_code, duration_ms, peak_rss_kib, os, arch, python, "
    "implementation, country, region, timezone, props"
)

# Dimensions copied straight from a raw column (index into a RAW_COLUMNS row).
_PLAIN_DIMENSIONS = (
    ("os", 6),
    ("arch", 7),
    ("implementation", 9),
    ("country", 10),
    ("region", 11),
    ("timezone", 12),
)


def bucket_of(amount: int) -> int:
    """Return the log-scale histogram bucket of a duration or memory figure.

    Bucket 0 holds 0; bucket ``b ≥ 1`` holds ``[2**((b-1)/8), 2**(b/8))``.

    >>> bucket_of(0), bucket_of(1), bucket_of(1000)
    (0, 1, 80)
    """
    if amount < 1:
        return 0
    return min(int(math.log2(amount) * BUCKETS_PER_DOUBLING) + 1, HISTOGRAM_BUCKETS - 1)


def bucket_value(bucket: int) -> float:
    """Return the value a bucket stands for (its geometric middle).

    >>> round(bucket_value(80))
    981
    """
    if bucket <= 0:
        return 0.0
    return 2.0 ** ((bucket - 0.5) / BUCKETS_PER_DOUBLING)


@dataclass
class Sketch:
    """A HyperLogLog sketch of pseudonymous IDs, mergeable across days.

    >>> sketch = Sketch()
    >>> for uid_hash in ("a", "b", "c", "a"):
    ...     sketch.add(uid_hash)
    >>> sketch.estimate()
    3
    """

    registers: bytearray = field(default_factory=lambda: bytearray(SKETCH_REGISTERS))

    def add(self, uid_hash: str) -> None:
        """Count one ID (any string; it is hashed again so its format does not matter)."""
        import hashlib

        hashed = int.from_bytes(hashlib.blake2b(uid_hash.encode(), digest_size=8).digest(), "big")
        index = hashed >> (64 - SKETCH_BITS)
        rest_bits = 64 - SKETCH_BITS
        rest = hashed & ((1 << rest_bits) - 1)
        rank = rest_bits - rest.bit_length() + 1
        if rank > self.registers[index]:
            self.registers[index] = rank

    def merge(self, other: bytes) -> None:
        """Fold another sketch's registers into this one."""
        if len(other) != SKETCH_REGISTERS:
            return  # a sketch of another precision: skip it rather than fail the page
        self.registers = bytearray(map(max, self.registers, other))

    @classmethod
    def union(cls, sketches: Iterable[bytes]) -> Sketch:
        """One sketch counting every ID of ``sketches`` (daily sketches of a date range)."""
        usable = [bytes(sketch) for sketch in sketches if len(sketch) == SKETCH_REGISTERS]
        if not usable:
            return cls()
        if len(usable) == 1:
            return cls(bytearray(usable[0]))
        # One C-level max per register over all days, instead of a merge per day.
        return cls(bytearray(map(max, *usable)))

    def estimate(self) -> int:
        """Return the estimated number of distinct IDs added."""
        registers = self.registers
        empty = registers.count(0)
        if empty == SKETCH_REGISTERS:
            return 0
        harmonic = sum(2.0**-rank for rank in registers)
        alpha = 0.7213 / (1 + 1.079 / SKETCH_REGISTERS)
        raw = alpha * SKETCH_REGISTERS * SKETCH_REGISTERS / harmonic
        if raw <= 2.5 * SKETCH_REGISTERS and empty:
            # Linear counting: near-exact while most registers are empty.
            return round(SKETCH_REGISTERS * math.log(SKETCH_REGISTERS / empty))
        return round(raw)


class Cell(NamedTuple):
    """The counts of one (version, dimension, value) on one day."""

    runs: int
    exits: int
    failures: int
    distinct_ids: int


CellKey = tuple[str, str, str]  # (version, dimension, value)


@dataclass
class DayRollup:
    """One day of one package, folded: cells and sketches ready to insert."""

    cells: dict[CellKey, Cell] = field(default_factory=dict)
    sketches: dict[tuple[str, str], Sketch] = field(default_factory=dict)  # (version, scope)
    histograms: dict[tuple[str, str], Counter[int]] = field(default_factory=dict)  # (version, measure)

    def cell_rows(self, package_id: int, day: str) -> Iterator[tuple[Any, ...]]:
        """Rows for ``rollup_cells``, the long tail of property values dropped."""
        kept = _kept_property_cells(self.cells)
        for (version, dimension, value), cell in self.cells.items():
            if dimension.startswith("prop:") and (version, dimension, value) not in kept:
                continue
            yield (package_id, version, day, dimension, value, *cell)

    def sketch_rows(self, package_id: int, day: str) -> Iterator[tuple[Any, ...]]:
        """Rows for ``rollup_sketches``."""
        for (version, scope), sketch in self.sketches.items():
            yield (package_id, version, day, scope, bytes(sketch.registers))

    def histogram_rows(self, package_id: int, day: str) -> Iterator[tuple[Any, ...]]:
        """Rows for ``rollup_histograms``."""
        for (version, measure), counted in self.histograms.items():
            yield (package_id, version, day, measure, histogram_bytes(counted))


def histogram_bytes(counted: dict[int, int]) -> bytes:
    """Pack bucket counts as :data:`HISTOGRAM_BUCKETS` little-endian uint32.

    >>> len(histogram_bytes({3: 2})), histogram_from_bytes(histogram_bytes({3: 2}))[3]
    (1056, 2)
    """
    counts = array("I", bytes(4 * HISTOGRAM_BUCKETS))
    for bucket, count in counted.items():
        counts[bucket] = min(count, 0xFFFFFFFF)
    if sys.byteorder == "big":
        counts.byteswap()
    return counts.tobytes()


def histogram_from_bytes(packed: bytes) -> array[int]:
    """The counts :func:`histogram_bytes` packed (all zero for a blob of another size)."""
    counts = array("I")
    if len(packed) != 4 * HISTOGRAM_BUCKETS:
        return array("I", bytes(4 * HISTOGRAM_BUCKETS))
    counts.frombytes(packed)
    if sys.byteorder == "big":
        counts.byteswap()
    return counts


def _kept_property_cells(cells: dict[CellKey, Cell]) -> set[CellKey]:
    by_property: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for (version, dimension, value), cell in cells.items():
        if dimension.startswith("prop:"):
            by_property.setdefault((version, dimension), []).append((cell.runs, value))
    kept: set[CellKey] = set()
    for (version, dimension), counted in by_property.items():
        counted.sort(key=lambda runs_value: (-runs_value[0], runs_value[1]))
        kept.update((version, dimension, value) for _, value in counted[:MAX_PROP_VALUES])
    return kept


@dataclass
class _Column:
    """One dimension's values, aligned with the records they came from."""

    dimension: str | list[str]  # one name for every value, or one name per value (properties)
    values: list[str]
    records: list[int] | None  # the record each value belongs to; None: one value per record, in order


def compute_day(raw_rows: Iterable[Sequence[Any]]) -> DayRollup:
    """Fold one day's raw records (columns of :data:`RAW_COLUMNS`) into a :class:`DayRollup`.

    The counting runs column by column through :class:`collections.Counter`
    (C loops), because a day of a busy package holds tens of thousands of runs.

    >>> rollup = compute_day([("h1", "package", "1.0", 0, 120, 9000, "linux", "x86_64",
    ...                        "3.12.4", "cpython", "DE", "Western Europe", "Europe/Berlin", None)])
    >>> rollup.cells[("*", "total", "")]
    Cell(runs=1, exits=1, failures=0, distinct_ids=1)
    """
    rows = list(raw_rows)
    rollup = DayRollup()
    if not rows:
        return rollup
    uid_hashes, scopes, versions, exit_codes = (list(column) for column in list(zip(*rows))[:4])
    versions = [version or "" for version in versions]
    # Every anonymous run is an ID of its own; the two linkable scopes never mix.
    identities = [
        ("anonymous", number) if scope == "anonymous" else (scope, uid_hash)
        for number, (scope, uid_hash) in enumerate(zip(scopes, uid_hashes))
    ]
    has_exit = [code is not None for code in exit_codes]
    failed = [code is not None and code != 0 for code in exit_codes]
    for column in _columns(rows):
        for version_keys in (None, versions):
            if version_keys is not None and column.dimension == "version":
                continue  # the version of a version-filtered view is the filter itself
            _count_column(rollup.cells, column, version_keys, identities, has_exit, failed)
    _sketch_ids(rollup, versions, scopes, uid_hashes)
    _histograms(rollup, rows, versions)
    return rollup


def _histograms(rollup: DayRollup, rows: list[Sequence[Any]], versions: list[str]) -> None:
    for measure, index in MEASURES:
        buckets = [(version, bucket_of(int(row[index]))) for version, row in zip(versions, rows) if row[index] is not None]
        if not buckets:
            continue
        rollup.histograms[(ALL_VERSIONS, measure)] = Counter(bucket for _, bucket in buckets)
        for (version, bucket), count in Counter(buckets).items():
            rollup.histograms.setdefault((version, measure), Counter())[bucket] += count


def _columns(rows: list[Sequence[Any]]) -> Iterator[_Column]:
    every = None  # the column has one value per record
    yield _Column("total", [""] * len(rows), every)
    yield _Column("scope", [row[1] or "" for row in rows], every)
    yield _Column("version", [row[2] or "" for row in rows], every)
    yield _Column("python", [_python_minor(row[8]) for row in rows], every)
    for dimension, index in _PLAIN_DIMENSIONS:
        yield _Column(dimension, [row[index] or "" for row in rows], every)
    names: list[str] = []
    values: list[str] = []
    records: list[int] = []
    for number, row in enumerate(rows):
        for name, value in _property_cells(row[13]):
            names.append(name)
            values.append(value)
            records.append(number)
    yield _Column(names, values, records)


def _count_column(
    cells: dict[CellKey, Cell],
    column: _Column,
    versions: list[str] | None,
    identities: Sequence[object],
    has_exit: Sequence[bool],
    failed: Sequence[bool],
) -> None:
    records = column.records
    if records is None:  # a value for every record: use the day's lists as they are
        version_of: Iterable[str] = repeat(ALL_VERSIONS) if versions is None else versions
    else:
        pick = itemgetter(*records) if len(records) > 1 else (lambda values: tuple(values[number] for number in records))
        version_of = repeat(ALL_VERSIONS) if versions is None else pick(versions)
        identities, has_exit, failed = pick(identities), pick(has_exit), pick(failed)
    names = repeat(column.dimension) if isinstance(column.dimension, str) else column.dimension
    keys = list(zip(version_of, names, column.values))
    runs = Counter(keys)
    exits = Counter(compress(keys, has_exit))
    failures = Counter(compress(keys, failed))
    distinct = Counter(map(itemgetter(0), set(zip(keys, identities))))
    for key, count in runs.items():
        cells[key] = Cell(count, exits[key], failures[key], distinct[key])


def _sketch_ids(rollup: DayRollup, versions: list[str], scopes: list[str], uid_hashes: list[str]) -> None:
    # Hash each distinct ID once per (version, scope): days repeat the same people.
    seen = {
        (version_key, scope, uid_hash)
        for version, scope, uid_hash in zip(versions, scopes, uid_hashes)
        if scope in ("user", "package") and uid_hash
        for version_key in (ALL_VERSIONS, version)
    }
    for version_key, scope, uid_hash in seen:
        sketch = rollup.sketches.get((version_key, scope))
        if sketch is None:
            sketch = rollup.sketches[(version_key, scope)] = Sketch()
        sketch.add(uid_hash)


def _python_minor(python: str | None) -> str:
    if not python:
        return ""
    return ".".join(python.split(".")[:2])


def _property_cells(props: object) -> Iterator[tuple[str, str]]:
    if props is None or props == "":
        return
    if isinstance(props, str):
        import json

        try:
            props = json.loads(props)
        except ValueError:
            return  # ingest validated it; a broken row must not break the dashboard
    if not isinstance(props, dict):
        return
    for name, value in props.items():
        yield f"prop:{name}", _property_text(value)


def _property_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def refresh_dirty_days(
    storage: Any,
    package_id: int,
    first_day: str | None = None,
    last_day: str | None = None,
    *,
    busy_day_records: int | None = None,
    busy_day_interval_s: float | None = None,
    now: float | None = None,
) -> int:
    """Recompute the rollups of the days ``dirty_days`` marks for a package (within a range); return how many.

    Each day is one transaction: the mark is removed first, then the raw
    records are read, so a record ingested meanwhile either is read here or
    marks the day again for the next refresh — never lost. Days outside the
    range stay marked until a summary covers them.

    A *busy* day, whose last roll-up read more than ``busy_day_records`` raw
    records (default :data:`BUSY_DAY_RECORDS`), is rolled up again at most every ``busy_day_interval_s``
    seconds (default :data:`BUSY_DAY_INTERVAL_S`): while a popular
    package receives records all day, its dashboard may lag the newest ones
    by up to a minute instead of re-reading tens of thousands of records on
    every view. Quiet days are always current.
    """
    sql, params = "SELECT day FROM dirty_days WHERE package_id = ?", [package_id]
    state_sql, state_params = "SELECT day, refreshed_at, records_read FROM rollup_refreshes WHERE package_id = ?", [package_id]
    if first_day is not None and last_day is not None:
        sql += " AND day >= ? AND day <= ?"
        params += [first_day, last_day]
        state_sql += " AND day >= ? AND day <= ?"
        state_params += [first_day, last_day]
    days = [_day_text(row[0]) for row in storage.read(sql, params)]
    if not days:
        return 0
    last_refresh = {str(day): (float(at), int(read)) for day, at, read in storage.read(state_sql, state_params)}
    now = time.time() if now is None else now
    busy_day_records = BUSY_DAY_RECORDS if busy_day_records is None else busy_day_records
    busy_day_interval_s = BUSY_DAY_INTERVAL_S if busy_day_interval_s is None else busy_day_interval_s
    refreshed = 0
    for day in sorted(days):
        at, records_read = last_refresh.get(day, (0.0, 0))
        if records_read > busy_day_records and now - at < busy_day_interval_s:
            continue  # busy and fresh enough: the mark stays for a later view
        refresh_day(storage, package_id, day)
        refreshed += 1
    return refreshed


def refresh_day(storage: Any, package_id: int, day: str) -> None:
    """Recompute one (package, day) from its raw records."""
    with storage.transaction() as transaction:
        transaction.execute("DELETE FROM dirty_days WHERE package_id = ? AND day = ?", (package_id, day))
        raw_rows = _fetch(
            transaction,
            f"SELECT {RAW_COLUMNS} FROM records WHERE package_id = ? AND day = ?",
            (package_id, day),
        )
        rollup = compute_day(raw_rows)
        transaction.execute("DELETE FROM rollup_cells WHERE package_id = ? AND day = ?", (package_id, day))
        transaction.execute("DELETE FROM rollup_sketches WHERE package_id = ? AND day = ?", (package_id, day))
        transaction.execute("DELETE FROM rollup_histograms WHERE package_id = ? AND day = ?", (package_id, day))
        _insert_many(transaction, f"rollup_cells ({_CELLS_COLUMNS})", list(rollup.cell_rows(package_id, day)))
        _insert_many(transaction, "rollup_sketches (package_id, version, day, scope, sketch)",
                     list(rollup.sketch_rows(package_id, day)))
        _insert_many(transaction, "rollup_histograms (package_id, version, day, measure, counts)",
                     list(rollup.histogram_rows(package_id, day)))
        transaction.execute(
            "INSERT INTO rollup_refreshes (package_id, day, refreshed_at, records_read) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (package_id, day) DO UPDATE SET refreshed_at = excluded.refreshed_at,"
            " records_read = excluded.records_read",
            (package_id, day, time.time(), len(raw_rows)),
        )


def _fetch(transaction: Any, sql: str, params: Sequence[Any]) -> list[Sequence[Any]]:
    result = transaction.execute(sql, params)
    return list(result.fetchall() if hasattr(result, "fetchall") else result)


def _insert_many(transaction: Any, table_and_columns: str, rows: list[tuple[Any, ...]]) -> None:
    # Multi-row VALUES: one round trip per chunk on PostgreSQL, valid SQL on both.
    for start in range(0, len(rows), _INSERT_CHUNK):
        chunk = rows[start : start + _INSERT_CHUNK]
        placeholders = "(" + ", ".join("?" * len(chunk[0])) + ")"
        sql = f"INSERT INTO {table_and_columns} VALUES " + ", ".join([placeholders] * len(chunk))
        transaction.execute(sql, [value for row in chunk for value in row])


def _day_text(day: object) -> str:
    # SQLite keeps 'YYYY-MM-DD' text; PostgreSQL answers datetime.date.
    return day if isinstance(day, str) else day.isoformat()  # type: ignore[attr-defined]
