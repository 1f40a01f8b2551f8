"""The summary over real rollups in a real SQLite file (and PostgreSQL when it runs).

Records are written straight into ``records`` (with their ``dirty_days``
marks, as ingest does) so each test controls exactly who ran what, then the
summary is computed the way the dashboard computes it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi")

from plausipy.server._rollups import Sketch, bucket_of, bucket_value, refresh_dirty_days  # noqa: E402
from plausipy.server._schema import migrate  # noqa: E402
from plausipy.server._storage import open_storage  # noqa: E402
from plausipy.server._summary import (  # noqa: E402
    SummaryError,
    SummaryQuery,
    build_summary,
    parse_day,
    query_from_parameters,
)

DAY1 = dt.date(2026, 3, 1)
DAY2 = dt.date(2026, 3, 2)
DAY3 = dt.date(2026, 3, 3)

_RECORD_COLUMNS = (
    "package_id, run_id, uid_hash, scope, version, role, hour, day, duration_ms, peak_rss_kib, exit_code, "
    "os, arch, python, implementation, country, region, timezone, props, received_at"
)


def make_record(**fields: Any) -> dict[str, Any]:
    """A stored record with sensible defaults; ``uid`` is hashed as ingest hashes it."""
    record: dict[str, Any] = {
        "uid": "u0", "scope": "package", "version": "1.0", "day": DAY1, "duration_ms": 100,
        "peak_rss_kib": 20_000, "exit_code": 0, "os": "linux", "arch": "x86_64", "python": "3.12.4",
        "implementation": "cpython", "country": "DE", "region": "Western Europe",
        "timezone": "Europe/Berlin", "props": None,
    }  # fmt: skip
    record.update(fields)
    return record


def insert_records(storage: Any, package_id: int, records: list[dict[str, Any]]) -> None:
    """Store records and mark their days dirty, in one transaction, like ingest."""
    placeholders = ", ".join("?" * 20)
    with storage.transaction() as tx:
        for record in records:
            day: dt.date = record["day"]
            tx.execute(
                f"INSERT INTO records ({_RECORD_COLUMNS}) VALUES ({placeholders})",
                (
                    package_id, str(uuid.uuid4()), hashlib.sha256(record["uid"].encode()).hexdigest(),
                    record["scope"], record["version"], "app", f"{day.isoformat()}T10:00:00Z", day.isoformat(),
                    record["duration_ms"], record["peak_rss_kib"], record["exit_code"], record["os"],
                    record["arch"], record["python"], record["implementation"], record["country"],
                    record["region"], record["timezone"],
                    None if record["props"] is None else json.dumps(record["props"]),
                    f"{day.isoformat()}T10:05:00Z",
                ),
            )  # fmt: skip
            if storage.dialect == "postgresql":
                upsert = "INSERT INTO dirty_days (package_id, day) VALUES (?, ?) ON CONFLICT DO NOTHING"
            else:
                upsert = "INSERT OR IGNORE INTO dirty_days (package_id, day) VALUES (?, ?)"
            tx.execute(upsert, (package_id, day.isoformat()))


def create_package(storage: Any, name: str = "acme", k: int = 5) -> int:
    with storage.transaction() as tx:
        tx.execute(
            "INSERT INTO users (email, password_hash, created_at) VALUES (?, ?, ?)",
            (f"{name}@example.org", "x", "2026-01-01T00:00:00Z"),
        )
        owner = tx.execute("SELECT id FROM users WHERE email = ?", (f"{name}@example.org",)).fetchone()[0]
        tx.execute(
            "INSERT INTO packages (name, key, owner_id, k_threshold, created_at) VALUES (?, ?, ?, ?, ?)",
            (name, "k" + uuid.uuid4().hex[:31], owner, k, "2026-01-01T00:00:00Z"),
        )
        return int(tx.execute("SELECT id FROM packages WHERE name = ?", (name,)).fetchone()[0])


def summarize(storage: Any, package_id: int, first: dt.date = DAY1, last: dt.date = DAY3, **options: Any) -> dict[str, Any]:
    query = SummaryQuery(package_id=package_id, k=options.pop("k", 5), first_day=first, last_day=last, **options)
    return build_summary(storage, query)


def entry(entries: list[dict[str, Any]], value: Any) -> dict[str, Any]:
    matches = [item for item in entries if item["value"] == value]
    assert len(matches) == 1, (value, entries)
    return matches[0]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def storage(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'collector.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened = open_storage(url)
    migrate(opened)
    yield opened
    opened.close()


def test_a_cell_of_fewer_than_k_ids_is_suppressed_and_k_ids_are_shown(storage: Any) -> None:
    package_id = create_package(storage)
    # 5 people on linux (shown at k = 5), 4 on darwin (suppressed), each running twice.
    records = [make_record(uid=f"linux{n}") for n in range(5) for _ in range(2)]
    records += [make_record(uid=f"mac{n}", os="darwin", arch="arm64") for n in range(4) for _ in range(2)]
    insert_records(storage, package_id, records)

    summary = summarize(storage, package_id)

    assert summary["runs"] == 18
    assert entry(summary["by_os"], "linux") == {"value": "linux", "runs": 10}
    assert entry(summary["by_os"], "darwin") == {"value": "darwin", "runs": None, "suppressed": True}
    assert entry(summary["by_arch"], "arm64")["suppressed"] is True
    assert summary["by_os"][-1]["value"] == "darwin", "suppressed cells come last"
    assert "8" not in json.dumps(entry(summary["by_os"], "darwin"))


def test_the_threshold_is_the_packages_own_k(storage: Any) -> None:
    package_id = create_package(storage)
    insert_records(storage, package_id, [make_record(uid=f"p{n}", os="darwin") for n in range(3)])

    assert entry(summarize(storage, package_id, k=3)["by_os"], "darwin")["runs"] == 3
    assert entry(summarize(storage, package_id, k=4)["by_os"], "darwin")["suppressed"] is True


def test_a_package_with_fewer_than_k_ids_shows_no_totals(storage: Any) -> None:
    package_id = create_package(storage)
    insert_records(storage, package_id, [make_record(uid="alone", exit_code=1) for _ in range(30)])

    summary = summarize(storage, package_id)

    assert summary["runs"] is None and summary["suppressed"] is True
    assert summary["distinct_ids"] is None and summary["failure_rate"] is None
    assert summary["duration_ms"] == {"p50": None, "p95": None}
    assert all(day["runs"] is None for day in summary["by_day"] if day.get("suppressed"))
    day1 = next(day for day in summary["by_day"] if day["day"] == DAY1.isoformat())
    assert day1 == {"day": DAY1.isoformat(), "runs": None, "suppressed": True, "ids": {"user": 0, "package": None}}


def test_anonymous_runs_count_as_one_id_each(storage: Any) -> None:
    package_id = create_package(storage)
    # Five anonymous runs: each is its own ID, so the cell may be shown.
    insert_records(storage, package_id, [make_record(uid=f"random{n}", scope="anonymous") for n in range(5)])

    summary = summarize(storage, package_id)

    assert summary["runs"] == 5
    assert summary["distinct_ids_by_scope"] == {"user": 0, "package": 0, "anonymous": 5}


def test_distinct_ids_per_day_keep_user_and_package_scope_apart(storage: Any) -> None:
    package_id = create_package(storage)
    records = [make_record(uid=f"user{n}", scope="user", day=DAY1) for n in range(6)]
    records += [make_record(uid=f"pkg{n}", scope="package", day=DAY1) for n in range(7)]
    records += [make_record(uid=f"pkg{n}", scope="package", day=DAY2) for n in range(7)]  # the same people again
    records += [make_record(uid="user0", scope="package", day=DAY2)]  # one hash under another scope
    insert_records(storage, package_id, records)

    summary = summarize(storage, package_id)
    days = {day["day"]: day for day in summary["by_day"]}

    assert days[DAY1.isoformat()]["ids"] == {"user": 6, "package": 7}
    assert days[DAY2.isoformat()]["ids"] == {"user": 0, "package": 8}
    assert days[DAY3.isoformat()] == {"day": DAY3.isoformat(), "runs": 0, "ids": {"user": 0, "package": 0}}
    # Over the range: 6 user IDs, 8 package IDs (the 7 of day 1 came back on day 2).
    assert summary["distinct_ids_by_scope"] == {"user": 6, "package": 8, "anonymous": 0}
    assert summary["distinct_ids"] == 14


def test_failure_rate_and_percentiles_by_version(storage: Any) -> None:
    package_id = create_package(storage)
    records = [make_record(uid=f"a{n}", version="1.0", exit_code=0, duration_ms=100 * (n + 1)) for n in range(10)]
    records += [make_record(uid=f"b{n}", version="2.0", exit_code=n % 2, peak_rss_kib=50_000) for n in range(6)]
    records += [make_record(uid="c0", version="3.0", exit_code=1)]  # one person: suppressed
    records += [make_record(uid=f"d{n}", version="2.0", exit_code=None, duration_ms=None) for n in range(5)]
    insert_records(storage, package_id, records)

    summary = summarize(storage, package_id)
    version1 = entry(summary["by_version"], "1.0")
    version2 = entry(summary["by_version"], "2.0")
    version3 = entry(summary["by_version"], "3.0")

    assert version1["runs"] == 10 and version1["failure_rate"] == 0.0
    # Runs without an exit code (runtime category off) are not counted as successes.
    assert version2["runs"] == 11 and version2["failure_rate"] == 0.5
    assert abs(version1["duration_ms"]["p50"] - 500) <= 500 * 0.05
    assert abs(version1["duration_ms"]["p95"] - 1000) <= 1000 * 0.05
    assert abs(version2["peak_rss_kib"]["p50"] - 50_000) <= 50_000 * 0.05
    assert version3 == {
        "value": "3.0", "runs": None, "suppressed": True, "failure_rate": None,
        "duration_ms": {"p50": None, "p95": None}, "peak_rss_kib": {"p50": None, "p95": None},
    }  # fmt: skip
    assert summary["failure_rate"] == round(4 / 17, 4)
    assert summary["versions"] == ["3.0", "2.0", "1.0"]


def test_the_version_filter_narrows_every_cell(storage: Any) -> None:
    package_id = create_package(storage)
    records = [make_record(uid=f"a{n}", version="1.0", os="linux") for n in range(5)]
    records += [make_record(uid=f"b{n}", version="2.0", os="windows") for n in range(6)]
    insert_records(storage, package_id, records)

    summary = summarize(storage, package_id, version="2.0")

    assert summary["runs"] == 6
    assert [item["value"] for item in summary["by_os"]] == ["windows"]
    assert [item["value"] for item in summary["by_version"]] == ["2.0"]
    assert summary["versions"] == ["2.0", "1.0"], "the filter still offers every version"


def test_the_date_range_excludes_other_days(storage: Any) -> None:
    package_id = create_package(storage)
    insert_records(storage, package_id, [make_record(uid=f"a{n}", day=DAY1) for n in range(5)])
    insert_records(storage, package_id, [make_record(uid=f"a{n}", day=DAY3) for n in range(7)])

    summary = summarize(storage, package_id, first=DAY2, last=DAY3)

    assert summary["runs"] == 7
    assert [day["day"] for day in summary["by_day"]] == [DAY2.isoformat(), DAY3.isoformat()]


def test_top_values_of_custom_properties(storage: Any) -> None:
    package_id = create_package(storage)
    records = [make_record(uid=f"a{n}", props={"command": "build", "fast": True}) for n in range(6)]
    records += [make_record(uid=f"b{n}", props={"command": "serve"}) for n in range(2)]
    insert_records(storage, package_id, records)

    properties = summarize(storage, package_id)["properties"]

    assert properties["command"] == [
        {"value": "build", "runs": 6},
        {"value": "serve", "runs": None, "suppressed": True},
    ]
    assert properties["fast"] == [{"value": "true", "runs": 6}]


def test_unknown_values_are_null_and_python_is_grouped_by_minor(storage: Any) -> None:
    package_id = create_package(storage)
    records = [make_record(uid=f"a{n}", country=None, region=None, python=f"3.11.{n}") for n in range(5)]
    insert_records(storage, package_id, records)

    summary = summarize(storage, package_id)

    assert summary["by_country"] == [{"value": None, "runs": 5}]
    assert summary["by_python"] == [{"value": "3.11", "runs": 5}]


def test_new_records_mark_their_day_and_the_next_summary_counts_them(storage: Any) -> None:
    package_id = create_package(storage)
    insert_records(storage, package_id, [make_record(uid=f"a{n}") for n in range(5)])
    assert summarize(storage, package_id)["runs"] == 5
    assert storage.read("SELECT COUNT(*) FROM dirty_days")[0][0] == 0

    insert_records(storage, package_id, [make_record(uid=f"b{n}") for n in range(3)])

    assert summarize(storage, package_id)["runs"] == 8


def test_only_the_days_of_the_range_are_rolled_up(storage: Any) -> None:
    package_id = create_package(storage)
    insert_records(storage, package_id, [make_record(uid=f"a{n}", day=day) for n in range(5) for day in (DAY1, DAY3)])

    assert summarize(storage, package_id, first=DAY3, last=DAY3)["runs"] == 5

    assert [str(row[0]) for row in storage.read("SELECT day FROM dirty_days")] == [DAY1.isoformat()]
    assert summarize(storage, package_id)["runs"] == 10


def test_a_busy_day_is_rolled_up_at_most_once_per_interval(storage: Any) -> None:
    package_id = create_package(storage)
    insert_records(storage, package_id, [make_record(uid=f"a{n}") for n in range(5)])
    assert refresh_dirty_days(storage, package_id) == 1
    insert_records(storage, package_id, [make_record(uid=f"b{n}") for n in range(3)])
    every_day_is_busy = {"busy_day_records": -1, "busy_day_interval_s": 60.0}

    assert refresh_dirty_days(storage, package_id, **every_day_is_busy) == 0, "refreshed a moment ago: skipped"
    assert storage.read("SELECT COUNT(*) FROM dirty_days")[0][0] == 1, "the mark stays for later"
    assert refresh_dirty_days(storage, package_id, **every_day_is_busy, now=time.time() + 61) == 1
    assert summarize(storage, package_id)["runs"] == 8


def test_aggregates_survive_retention_of_raw_records(storage: Any) -> None:
    package_id = create_package(storage)
    insert_records(storage, package_id, [make_record(uid=f"a{n}") for n in range(5)])
    before = summarize(storage, package_id)

    # Retention deletes raw records without marking their days dirty.
    with storage.transaction() as tx:
        tx.execute("DELETE FROM records WHERE package_id = ?", (package_id,))

    assert summarize(storage, package_id) == before


def test_a_deletion_marks_the_day_and_the_rollup_forgets_the_person(storage: Any) -> None:
    package_id = create_package(storage)
    insert_records(storage, package_id, [make_record(uid=f"a{n}") for n in range(6)])
    assert summarize(storage, package_id)["runs"] == 6

    gone = hashlib.sha256(b"a0").hexdigest()
    with storage.transaction() as tx:
        tx.execute("DELETE FROM records WHERE package_id = ? AND uid_hash = ?", (package_id, gone))
        tx.execute("INSERT INTO dirty_days (package_id, day) VALUES (?, ?)", (package_id, DAY1.isoformat()))

    assert summarize(storage, package_id)["runs"] == 5
    assert refresh_dirty_days(storage, package_id) == 0


def test_packages_do_not_see_each_others_records(storage: Any) -> None:
    first = create_package(storage, "first")
    second = create_package(storage, "second")
    insert_records(storage, first, [make_record(uid=f"a{n}") for n in range(5)])

    empty = summarize(storage, second)
    assert (empty["runs"], empty["distinct_ids"], empty["suppressed"], empty["failure_rate"]) == (0, 0, False, None)
    assert empty["by_version"] == [] and empty["by_os"] == []


@pytest.mark.parametrize(
    ("first", "last", "message"),
    [
        ("2026-13-01", None, "`from` must be a date"),
        ("yesterday", None, "`from` must be a date"),
        (None, "2026-3-1", "`to` must be a date"),
        ("2026-03-05", "2026-03-01", "is after"),
        ("2020-01-01", "2026-01-01", "at most"),
        ("0000-01-01", None, "`from` must be a date"),
    ],
)
def test_bad_dates_are_refused_with_a_message(first: str | None, last: str | None, message: str) -> None:
    with pytest.raises(SummaryError, match=message):
        query_from_parameters(package_id=1, k=5, first=first, last=last, version=None)


def test_the_default_range_is_the_last_30_days() -> None:
    query = query_from_parameters(package_id=1, k=5, first=None, last=None, version=None, today=DAY3)
    assert (query.first_day, query.last_day) == (DAY3 - dt.timedelta(days=29), DAY3)
    assert parse_day("2026-03-01", "from") == DAY1


def test_sketch_estimates_within_a_few_percent_and_merges_overlapping_days() -> None:
    small = Sketch()
    for n in range(40):
        small.add(hashlib.sha256(f"{n}".encode()).hexdigest())
        small.add(hashlib.sha256(f"{n}".encode()).hexdigest())  # seen twice, counted once
    assert abs(small.estimate() - 40) <= 2

    merged = Sketch()
    for day in range(10):
        daily = Sketch()
        for n in range(day * 1000, day * 1000 + 3000):  # overlapping days: 12,000 distinct in all
            daily.add(hashlib.sha256(f"{n}".encode()).hexdigest())
        merged.merge(bytes(daily.registers))
    assert abs(merged.estimate() - 12_000) <= 12_000 * 0.08


def test_histogram_buckets_are_within_five_percent() -> None:
    for amount in (1, 7, 100, 12_345, 9_000_000):
        assert abs(bucket_value(bucket_of(amount)) - amount) <= amount * 0.05
    assert bucket_value(bucket_of(0)) == 0


def test_the_last_representable_day_and_odd_versions_do_not_break_the_summary(storage: Any) -> None:
    package_id = create_package(storage)
    query = query_from_parameters(package_id=package_id, k=5, first="9999-12-30", last="9999-12-31", version=None)

    assert [day["day"] for day in build_summary(storage, query)["by_day"]] == ["9999-12-30", "9999-12-31"]
    with pytest.raises(SummaryError, match="`version`"):
        query_from_parameters(package_id=package_id, k=5, first=None, last=None, version="1.0\x00")
