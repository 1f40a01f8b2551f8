"""The summary of one package: the numbers behind the dashboard and its JSON API.

Everything here reads the daily rollups (:mod:`plausipy.server._rollups`),
never the raw records, so a summary over a million records costs a few
thousand rollup rows. The SQL is plain enough for SQLite and PostgreSQL alike.

k-anonymity: a cell that might describe fewer than ``k`` distinct IDs is
suppressed — its count is ``None`` and it carries ``"suppressed": True``.
Over a date range the number of distinct IDs of a cell is taken as the
*largest daily* distinct count of that cell: the true number over the range
can only be larger, so the test never shows a cell that should be hidden
(it may hide a few that could be shown). Anonymous-scope runs count as one
ID each. The headline ``distinct_ids`` is estimated by merging daily
HyperLogLog sketches (user and package scope, kept apart) plus the
anonymous runs.

>>> parse_day("2026-01-31", "from")
datetime.date(2026, 1, 31)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from plausipy.server._rollups import ALL_VERSIONS, Sketch, bucket_value, histogram_from_bytes, refresh_dirty_days

__all__ = [
    "CATEGORY_DIMENSIONS",
    "MAX_RANGE_DAYS",
    "SummaryError",
    "SummaryQuery",
    "build_summary",
    "parse_day",
    "query_from_parameters",
]

#: Longest date range one summary may cover.
MAX_RANGE_DAYS = 800
#: Range shown when the request names none: the last 30 days.
DEFAULT_RANGE_DAYS = 30
#: Dimensions shown as "value → runs" lists, as ``by_<dimension>`` in the JSON.
CATEGORY_DIMENSIONS = ("version", "python", "implementation", "os", "arch", "country", "region", "timezone")
_ID_SCOPES = ("user", "package")


class SummaryError(ValueError):
    """A request the summary cannot answer; the message is shown to the caller (HTTP 422)."""


@dataclass(frozen=True)
class SummaryQuery:
    """What one summary covers.

    >>> SummaryQuery(package_id=1, k=5, first_day=dt.date(2026, 1, 1), last_day=dt.date(2026, 1, 31)).version_key
    '*'
    """

    package_id: int
    k: int
    first_day: dt.date
    last_day: dt.date
    version: str | None = None

    @property
    def version_key(self) -> str:
        """The rollup version these numbers come from: the filter, or ``*`` for all."""
        return self.version if self.version else ALL_VERSIONS

    def day_params(self) -> tuple[str, str]:
        """The range as 'YYYY-MM-DD' texts, inclusive."""
        return self.first_day.isoformat(), self.last_day.isoformat()


def parse_day(text: str, name: str) -> dt.date:
    """Parse a 'YYYY-MM-DD' query parameter, or raise :class:`SummaryError` naming it."""
    try:
        if len(text) != 10:
            raise ValueError
        return dt.date.fromisoformat(text)
    except ValueError:
        raise SummaryError(f"`{name}` must be a date written YYYY-MM-DD, got {text!r}") from None


def query_from_parameters(
    *,
    package_id: int,
    k: int,
    first: str | None,
    last: str | None,
    version: str | None,
    today: dt.date | None = None,
) -> SummaryQuery:
    """Build a :class:`SummaryQuery` from raw query parameters (defaults: the last 30 days).

    >>> query_from_parameters(package_id=1, k=5, first="2026-01-01", last=None, version="",
    ...                       today=dt.date(2026, 2, 1)).last_day
    datetime.date(2026, 2, 1)
    """
    today = today or dt.datetime.now(dt.timezone.utc).date()
    last_day = parse_day(last, "to") if last else today
    first_day = parse_day(first, "from") if first else last_day - dt.timedelta(days=DEFAULT_RANGE_DAYS - 1)
    if first_day > last_day:
        raise SummaryError(f"`from` ({first_day}) is after `to` ({last_day})")
    if (last_day - first_day).days >= MAX_RANGE_DAYS:
        raise SummaryError(f"the date range may cover at most {MAX_RANGE_DAYS} days")
    if version is not None and (len(version) > 200 or "\x00" in version):
        raise SummaryError("`version` is not a version a record can carry")
    return SummaryQuery(package_id=package_id, k=max(1, k), first_day=first_day, last_day=last_day,
                        version=version or None)


def build_summary(storage: Any, query: SummaryQuery) -> dict[str, Any]:
    """Refresh the package's dirty days, then return its summary as JSON-ready data."""
    refresh_dirty_days(storage, query.package_id, *query.day_params())
    cells = _read_cells(storage, query)
    histograms = _read_histograms(storage, query)
    total = cells.get(("total", ""))
    # No runs at all describes nobody: shown as 0, not hidden.
    total = total or _RangeCell(runs=0, exits=0, failures=0, distinct_ids=query.k)
    total_hidden = total.distinct_ids < query.k
    summary: dict[str, Any] = {
        "from": query.first_day.isoformat(),
        "to": query.last_day.isoformat(),
        "version": query.version,
        "k": query.k,
        "runs": None if total_hidden else total.runs,
        "suppressed": total_hidden,
        "failure_rate": None if total_hidden else _rate(total),
        "versions": _versions(storage, query),
        "by_day": _by_day(storage, query),
        "duration_ms": _percentiles(histograms.get((query.version_key, "duration")), hidden=total_hidden),
        "peak_rss_kib": _percentiles(histograms.get((query.version_key, "rss")), hidden=total_hidden),
        "properties": _properties(cells, query.k),
    }
    summary.update(_distinct_ids(storage, query, cells, hidden=total_hidden))
    for dimension in CATEGORY_DIMENSIONS:
        summary[f"by_{dimension}"] = _category(cells, dimension, query.k)
    if query.version:
        summary["by_version"] = _category(cells, "version", query.k, only=query.version, total=cells.get(("total", "")))
    _add_version_details(summary["by_version"], cells, histograms, query)
    return summary


@dataclass
class _RangeCell:
    runs: int
    exits: int
    failures: int
    distinct_ids: int  # the largest daily distinct count: a lower bound over the range


def _read_cells(storage: Any, query: SummaryQuery) -> dict[tuple[str, str], _RangeCell]:
    rows = storage.read(
        "SELECT dimension, value, SUM(runs), SUM(exits), SUM(failures), MAX(distinct_ids) FROM rollup_cells"
        " WHERE package_id = ? AND version = ? AND day >= ? AND day <= ? GROUP BY dimension, value",
        (query.package_id, query.version_key, *query.day_params()),
    )
    return {(row[0], row[1]): _RangeCell(int(row[2]), int(row[3]), int(row[4]), int(row[5])) for row in rows}


def _rate(cell: _RangeCell) -> float | None:
    return round(cell.failures / cell.exits, 4) if cell.exits else None


def _value_or_unknown(value: str) -> str | None:
    return value if value != "" else None


def _category(
    cells: dict[tuple[str, str], _RangeCell],
    dimension: str,
    k: int,
    *,
    only: str | None = None,
    total: _RangeCell | None = None,
) -> list[dict[str, Any]]:
    if only is not None:
        # Under a version filter the cells are that version's own: one entry, from the total.
        selected = [(only, total)] if total is not None else []
    else:
        selected = [(value, cell) for (cell_dimension, value), cell in cells.items() if cell_dimension == dimension]
    entries = [_entry(value, cell, k) for value, cell in selected]
    return _ordered(entries)


def _entry(value: str, cell: _RangeCell | None, k: int) -> dict[str, Any]:
    if cell is None or cell.distinct_ids < k:
        return {"value": _value_or_unknown(value), "runs": None, "suppressed": True}
    return {"value": _value_or_unknown(value), "runs": cell.runs}


def _ordered(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Largest first, suppressed cells last, ties by value so the order is stable.
    return sorted(entries, key=lambda entry: (entry["runs"] is None, -(entry["runs"] or 0), str(entry["value"])))


def _read_histograms(storage: Any, query: SummaryQuery) -> dict[tuple[str, str], list[int]]:
    """Duration and memory histograms over the range: ``*`` and every version (or just the filter)."""
    version_filter = " AND version = ?" if query.version else ""
    rows = storage.read(
        "SELECT version, measure, counts FROM rollup_histograms WHERE package_id = ? AND day >= ? AND day <= ?"
        + version_filter,
        (query.package_id, *query.day_params(), *([query.version] if query.version else [])),
    )
    grouped: dict[tuple[str, str], list[Any]] = {}
    for version, measure, counts in rows:
        grouped.setdefault((version, measure), []).append(histogram_from_bytes(bytes(counts)))
    # zip(*days) walks bucket by bucket in C: a few thousand small arrays cost milliseconds.
    return {key: list(map(sum, zip(*days))) for key, days in grouped.items()}


def _percentiles(histogram: list[int] | None, *, hidden: bool) -> dict[str, int | None]:
    if hidden or not histogram or not any(histogram):
        return {"p50": None, "p95": None}
    return {"p50": _percentile(histogram, 0.50), "p95": _percentile(histogram, 0.95)}


def _percentile(histogram: list[int], fraction: float) -> int:
    """The value below which ``fraction`` of the runs fall, to the bucket's resolution (≈ 4.5 %)."""
    wanted = fraction * sum(histogram)
    seen = 0
    for bucket, count in enumerate(histogram):
        seen += count
        if count and seen >= wanted:
            return round(bucket_value(bucket))
    return round(bucket_value(len(histogram) - 1))


def _properties(cells: dict[tuple[str, str], _RangeCell], k: int) -> dict[str, list[dict[str, Any]]]:
    names = sorted({dimension[5:] for dimension, _ in cells if dimension.startswith("prop:")})
    return {name: _category(cells, f"prop:{name}", k)[:20] for name in names}


def _versions(storage: Any, query: SummaryQuery) -> list[str]:
    rows = storage.read(
        "SELECT DISTINCT value FROM rollup_cells WHERE package_id = ? AND version = ? AND dimension = 'version'"
        " AND day >= ? AND day <= ?",
        (query.package_id, ALL_VERSIONS, *query.day_params()),
    )
    return sorted((row[0] for row in rows if row[0] != ""), key=_version_sort_key, reverse=True)


def _version_sort_key(version: str) -> tuple[Any, ...]:
    parts: list[tuple[int, Any]] = []
    for part in version.replace("-", ".").split("."):
        parts.append((0, int(part)) if part.isdigit() else (1, part))
    return tuple(parts)


def _by_day(storage: Any, query: SummaryQuery) -> list[dict[str, Any]]:
    rows = storage.read(
        "SELECT day, dimension, value, runs, distinct_ids FROM rollup_cells"
        " WHERE package_id = ? AND version = ? AND day >= ? AND day <= ? AND dimension IN ('total', 'scope')",
        (query.package_id, query.version_key, *query.day_params()),
    )
    days: dict[str, dict[str, Any]] = {}
    for day in _each_day(query.first_day, query.last_day):
        days[day] = {"day": day, "runs": 0, "ids": {scope: 0 for scope in _ID_SCOPES}}
    for day, dimension, value, runs, distinct_ids in rows:
        entry = days.get(str(day))
        if entry is None:
            continue
        if dimension == "total":
            _set_daily_runs(entry, int(runs), int(distinct_ids), query.k)
        elif value in _ID_SCOPES:
            entry["ids"][value] = None if int(distinct_ids) < query.k else int(distinct_ids)
    return list(days.values())


def _set_daily_runs(entry: dict[str, Any], runs: int, distinct_ids: int, k: int) -> None:
    if distinct_ids < k:
        entry["runs"] = None
        entry["suppressed"] = True
    else:
        entry["runs"] = runs


def _each_day(first: dt.date, last: dt.date) -> Iterable[str]:
    # Count days rather than step past `last`: 9999-12-31 has no next day.
    for offset in range((last - first).days + 1):
        yield (first + dt.timedelta(days=offset)).isoformat()


def _distinct_ids(
    storage: Any, query: SummaryQuery, cells: dict[tuple[str, str], _RangeCell], *, hidden: bool
) -> dict[str, Any]:
    rows = storage.read(
        "SELECT scope, sketch FROM rollup_sketches WHERE package_id = ? AND version = ? AND day >= ? AND day <= ?",
        (query.package_id, query.version_key, *query.day_params()),
    )
    registers: dict[str, list[bytes]] = {scope: [] for scope in _ID_SCOPES}
    for scope, sketch in rows:
        if scope in registers:
            registers[scope].append(bytes(sketch))
    sketches = {scope: Sketch.union(registers[scope]) for scope in _ID_SCOPES}
    by_scope: dict[str, int | None] = {scope: sketches[scope].estimate() for scope in _ID_SCOPES}
    anonymous = cells.get(("scope", "anonymous"))
    by_scope["anonymous"] = anonymous.runs if anonymous else 0
    total = sum(count or 0 for count in by_scope.values())
    shown = {scope: (count if (count or 0) >= query.k or count == 0 else None) for scope, count in by_scope.items()}
    return {"distinct_ids": None if hidden else total, "distinct_ids_by_scope": shown}


def _add_version_details(
    by_version: list[dict[str, Any]],
    cells: dict[tuple[str, str], _RangeCell],
    histograms: dict[tuple[str, str], list[int]],
    query: SummaryQuery,
) -> None:
    """Give each shown version its failure rate and duration / memory percentiles."""
    for entry in by_version:
        version = entry["value"] if entry["value"] is not None else ""
        hidden = bool(entry.get("suppressed"))
        cell = cells.get(("total", "")) if query.version else cells.get(("version", version))
        entry["failure_rate"] = None if hidden or cell is None else _rate(cell)
        entry["duration_ms"] = _percentiles(histograms.get((version, "duration")), hidden=hidden)
        entry["peak_rss_kib"] = _percentiles(histograms.get((version, "rss")), hidden=hidden)
