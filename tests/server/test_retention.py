"""Raw records older than the package's retention go; aggregates (dirty days) stay."""

from __future__ import annotations

import sqlite3
import time
import uuid
from datetime import datetime, timedelta, timezone

from click.testing import CliRunner

from plausipy.server._cli import server


def hour_ago(days: int) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=days)).strftime("%Y-%m-%dT%H:00:00Z")


def insert_raw(database_url: str, package_name: str, hours: list[str]) -> None:
    """Write rows straight into the table: ingest would refuse hours this old."""
    connection = sqlite3.connect(database_url.removeprefix("sqlite:///"))
    package_id = connection.execute("SELECT id FROM packages WHERE name = ?", (package_name,)).fetchone()[0]
    for hour in hours:
        connection.execute(
            "INSERT INTO records (package_id, run_id, uid_hash, scope, version, role, hour, day, received_at)"
            " VALUES (?, ?, ?, 'package', '1.0', 'lib', ?, ?, ?)",
            (package_id, str(uuid.uuid4()), uuid.uuid4().hex * 2, hour, hour[:10], hour),
        )
        connection.execute("INSERT OR IGNORE INTO dirty_days (package_id, day) VALUES (?, ?)", (package_id, hour[:10]))
    connection.commit()
    connection.close()


def hours_of(rows, database_url: str, name: str) -> list[str]:
    query = "SELECT hour FROM records JOIN packages ON packages.id = records.package_id WHERE name = ? ORDER BY hour"
    return [row[0] for row in rows(database_url, query, (name,))]


def test_purge_command_honours_each_packages_retention(sqlite_url, package_factory, rows):
    package_factory(sqlite_url, "short-lived")
    package_factory(sqlite_url, "long-lived", owner_email="b@example.org")
    connection = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    connection.execute("UPDATE packages SET retention_days = 10 WHERE name = 'short-lived'")
    connection.commit()
    connection.close()
    hours = [hour_ago(400), hour_ago(20), hour_ago(1)]
    insert_raw(sqlite_url, "short-lived", hours)
    insert_raw(sqlite_url, "long-lived", hours)
    dirty_before = rows(sqlite_url, "SELECT COUNT(*) FROM dirty_days")

    result = CliRunner().invoke(server, ["purge", "--database", sqlite_url])
    assert result.exit_code == 0, result.output
    assert "deleted 3 expired record(s)" in result.output
    assert hours_of(rows, sqlite_url, "short-lived") == [hours[2]]
    assert hours_of(rows, sqlite_url, "long-lived") == [hours[1], hours[2]], "default retention: 395 days"
    assert rows(sqlite_url, "SELECT COUNT(*) FROM dirty_days") == dirty_before, "retention leaves aggregates alone"


def test_the_server_purges_on_its_own(server_factory, sqlite_url, package_factory, rows):
    package_factory(sqlite_url, "auto")
    insert_raw(sqlite_url, "auto", [hour_ago(500), hour_ago(2)])
    server_factory(sqlite_url, PLAUSIPY_RETENTION_INTERVAL="0.2")
    deadline = time.monotonic() + 60  # a safety net for a hung server, not a timing claim
    while len(hours_of(rows, sqlite_url, "auto")) > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert hours_of(rows, sqlite_url, "auto") == [hour_ago(2)]
