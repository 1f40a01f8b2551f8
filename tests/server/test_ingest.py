"""POST /api/v1/records over real HTTP against a server on a real SQLite file."""

from __future__ import annotations

import gzip
import json
import sqlite3
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

SPOOFED_ADDRESS = "203.0.113.77"  # TEST-NET-3, sent as X-Forwarded-For by "the proxy"


@pytest.fixture
def collector(shared_sqlite_server, package_factory):
    """A package of its own on the module's server, so tests share a process, not rows."""
    package = package_factory(shared_sqlite_server["db"], f"pkg-{uuid.uuid4().hex[:10]}")
    return {"url": shared_sqlite_server["url"], "db": shared_sqlite_server["db"], **package}


@pytest.fixture
def record_factory(collector, record_factory):
    """Records of the test's own package."""

    def make(**fields):
        return record_factory(**{"package": collector["name"], **fields})

    return make


def post(collector, body, *, key=None, headers=None, raw=None):
    sent_headers = {"Authorization": f"Bearer {key or collector['key']}", **(headers or {})}
    if raw is None:
        raw = json.dumps(body).encode()
        sent_headers.setdefault("Content-Type", "application/json")
    return httpx.post(collector["url"] + "/api/v1/records", content=raw, headers=sent_headers, timeout=30)


def stored_run_ids(rows, collector):
    return {
        row[0]
        for row in rows(
            collector["db"],
            "SELECT run_id FROM records JOIN packages ON packages.id = records.package_id WHERE packages.name = ?",
            (collector["name"],),
        )
    }


def test_a_batch_is_accepted_and_stored(collector, record_factory, rows):
    records = [record_factory() for _ in range(3)]
    response = post(collector, {"records": records})
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 3, "duplicates": 0}
    assert stored_run_ids(rows, collector) == {record["run_id"] for record in records}
    day = records[0]["hour"][:10]
    assert rows(
        collector["db"],
        "SELECT day FROM dirty_days JOIN packages ON packages.id = dirty_days.package_id WHERE packages.name = ?",
        (collector["name"],),
    ) == [(day,)]


def test_a_retried_batch_is_counted_once(collector, record_factory, rows):
    records = [record_factory() for _ in range(2)]
    assert post(collector, {"records": records}).json() == {"accepted": 2, "duplicates": 0}
    again = post(collector, {"records": [*records, record_factory()]})
    assert again.status_code == 202
    assert again.json() == {"accepted": 1, "duplicates": 2}
    assert len(stored_run_ids(rows, collector)) == 3


def test_uid_is_stored_only_as_its_sha256(collector, record_factory, rows):
    import hashlib

    record = record_factory(uid="0123456789abcdef0123456789abcdef")
    assert post(collector, {"records": [record]}, headers={"X-Forwarded-For": SPOOFED_ADDRESS}).status_code == 202
    stored = rows(collector["db"], "SELECT uid_hash FROM records WHERE run_id = ?", (record["run_id"],))
    assert stored == [(hashlib.sha256(record["uid"].encode()).hexdigest(),)]
    path = Path(collector["db"].removeprefix("sqlite:///"))
    connection = sqlite3.connect(path)
    dump = "\n".join(connection.iterdump())
    connection.close()
    assert record["uid"] not in dump
    assert SPOOFED_ADDRESS not in dump


def test_optional_fields_may_be_null_or_missing(collector, record_factory, rows):
    nulls = record_factory(duration_ms=None, country=None, region=None, timezone=None, props=None)
    missing = record_factory()
    for field in ("duration_ms", "peak_rss_kib", "exit_code", "os", "arch", "python", "implementation", "props"):
        del missing[field]
    response = post(collector, {"records": [nulls, missing]})
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"surprise": 1}, "surprise"),
        ({"v": 2}, "v"),
        ({"run_id": "not-a-uuid"}, "run_id"),
        ({"uid": "ABC"}, "uid"),
        ({"scope": "everyone"}, "scope"),
        ({"duration_ms": "12"}, "duration_ms"),
        ({"duration_ms": -1}, "duration_ms"),
        ({"exit_code": 1.5}, "exit_code"),
        ({"country": "Germany"}, "country"),
        ({"props": {"Bad-Name": 1}}, "props"),
        ({"props": {"nested": {"a": 1}}}, "props"),
        ({"props": {f"k{i}": i for i in range(21)}}, "props"),
        ({"props": {"text": "x" * 201}}, "props"),
        ({"version": "1.0\u0000"}, "version"),
        ({"hour": "2026-01-02T03:04:00Z"}, "hour"),
    ],
)
def test_schema_errors_are_422_naming_the_field(collector, record_factory, rows, change, field):
    good = record_factory()
    bad = record_factory(**change)
    response = post(collector, {"records": [good, bad]})
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]
    assert stored_run_ids(rows, collector) == set(), "nothing of a rejected batch is stored"


def test_malformed_json_is_400(collector):
    response = post(collector, None, raw=b'{"records": [')
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]


def test_deep_nesting_is_a_4xx(collector):
    response = post(collector, None, raw=b'{"records": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert 400 <= response.status_code < 500


def test_too_many_records_is_413(collector, record_factory, rows):
    response = post(collector, {"records": [record_factory() for _ in range(101)]})
    assert response.status_code == 413
    assert "records" in response.json()["error"]
    assert stored_run_ids(rows, collector) == set()


def test_a_body_over_256_kib_is_413(collector, record_factory):
    body = json.dumps({"records": [record_factory()]}).encode() + b" " * (256 * 1024)
    assert post(collector, None, raw=body).status_code == 413


def test_gzip_bodies_are_accepted(collector, record_factory, rows):
    records = [record_factory() for _ in range(100)]
    raw = gzip.compress(json.dumps({"records": records}).encode())
    response = post(collector, None, raw=raw, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 100


def test_a_gzip_bomb_is_413(collector):
    # 50 MB of spaces compress to about 50 KB: small on the wire, huge inflated.
    raw = gzip.compress(b'{"records": []' + b" " * 50_000_000 + b"}", compresslevel=9)
    assert len(raw) < 256 * 1024
    response = post(collector, None, raw=raw, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413


def test_broken_gzip_is_400_and_other_encodings_415(collector, record_factory):
    assert post(collector, None, raw=b"not gzip", headers={"Content-Encoding": "gzip"}).status_code == 400
    assert post(collector, None, raw=b"{}", headers={"Content-Encoding": "br"}).status_code == 415


@pytest.mark.parametrize("authorization", [None, "Bearer", "Basic abc", "Bearer Zzzz0000000000000000000000000000", "Bearer x"])
def test_missing_or_unknown_keys_are_401(collector, record_factory, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.post(collector["url"] + "/api/v1/records", json={"records": [record_factory()]}, headers=headers)
    assert response.status_code == 401
    assert "key" in response.json()["error"]


def test_a_record_of_another_package_is_422(collector, record_factory, rows):
    response = post(collector, {"records": [record_factory(), record_factory(package="other-lib")]})
    assert response.status_code == 422
    assert "package" in response.json()["error"]
    assert stored_run_ids(rows, collector) == set()


def test_package_names_match_after_normalisation(collector, record_factory):
    unnormalised = collector["name"].upper().replace("-", "_")
    assert post(collector, {"records": [record_factory(package=unnormalised)]}).status_code == 202


@pytest.mark.parametrize("offset", [timedelta(days=32), -timedelta(hours=3)])
def test_clock_skewed_records_reject_the_whole_batch(collector, record_factory, rows, offset):
    skewed_hour = (datetime.now(timezone.utc) - offset).strftime("%Y-%m-%dT%H:00:00Z")
    response = post(collector, {"records": [record_factory(), record_factory(hour=skewed_hour)]})
    assert response.status_code == 422
    assert "hour" in response.json()["error"]
    assert stored_run_ids(rows, collector) == set()


@pytest.mark.parametrize("impossible", ["{year}-02-30T03:00:00Z", "{year}-13-01T03:00:00Z", "{year}-01-02T24:00:00Z"])
def test_an_hour_that_is_no_real_date_is_422(collector, record_factory, rows, impossible):
    hour = impossible.format(year=datetime.now(timezone.utc).year)
    response = post(collector, {"records": [record_factory(), record_factory(hour=hour)]})
    assert response.status_code == 422
    assert response.json()["error"] == f"records.1.hour: {hour!r} is not a real date and hour"
    assert stored_run_ids(rows, collector) == set()


def test_records_from_thirty_days_ago_are_accepted(collector, record_factory):
    hour = (datetime.now(timezone.utc) - timedelta(days=30)).strftime("%Y-%m-%dT%H:00:00Z")
    assert post(collector, {"records": [record_factory(hour=hour)]}).status_code == 202


def test_no_client_address_in_the_server_log(server_factory, sqlite_url, package_factory, plain_record):
    package = package_factory(sqlite_url)
    base_url = server_factory(sqlite_url)
    collector = {"url": base_url, "db": sqlite_url, **package}
    headers = {"X-Forwarded-For": SPOOFED_ADDRESS}
    assert post(collector, {"records": [plain_record()]}, headers=headers).status_code == 202
    assert post(collector, None, raw=b"{", headers=headers).status_code == 400
    assert post(collector, {"records": []}, key="Zzzz0000000000000000000000000000", headers=headers).status_code == 401
    httpx.get(base_url + "/nowhere", headers=headers)
    server_factory.stop(base_url)
    log = server_factory.log(base_url)
    assert "Uvicorn running" in log, "the log was captured"
    assert SPOOFED_ADDRESS not in log


def test_rate_limits_answer_429_with_retry_after(server_factory, sqlite_url, package_factory, plain_record):
    package = package_factory(sqlite_url)
    base_url = server_factory(sqlite_url, PLAUSIPY_RATE_PER_KEY="0.01", PLAUSIPY_BURST_PER_KEY="3")
    collector = {"url": base_url, "db": sqlite_url, **package}
    statuses = [post(collector, {"records": [plain_record()]}).status_code for _ in range(3)]
    assert statuses == [202, 202, 202]
    limited = post(collector, {"records": [plain_record()]})
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1


def test_rate_limits_per_client_address(server_factory, sqlite_url, package_factory, plain_record):
    package = package_factory(sqlite_url)
    base_url = server_factory(sqlite_url, PLAUSIPY_RATE_PER_ADDRESS="0.01", PLAUSIPY_BURST_PER_ADDRESS="2")
    collector = {"url": base_url, "db": sqlite_url, **package}
    first = {"X-Forwarded-For": "198.51.100.1"}
    second = {"X-Forwarded-For": "198.51.100.2"}
    assert [post(collector, {"records": []}, headers=first).status_code for _ in range(2)] == [202, 202]
    assert post(collector, {"records": []}, headers=first).status_code == 429
    assert post(collector, {"records": []}, headers=second).status_code == 202, "another address has its own bucket"


def test_a_locked_database_is_503_with_retry_after_then_recovers(
    server_factory, sqlite_url, package_factory, plain_record, rows
):
    package = package_factory(sqlite_url)
    base_url = server_factory(sqlite_url, PLAUSIPY_SQLITE_BUSY_TIMEOUT_MS="300")
    collector = {"url": base_url, "db": sqlite_url, **package}
    assert post(collector, {"records": [plain_record()]}).status_code == 202  # key now cached
    blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        record = plain_record()
        response = post(collector, {"records": [record]})
        assert response.status_code == 503, response.text
        assert int(response.headers["Retry-After"]) >= 1
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert record["run_id"] not in stored_run_ids(rows, collector)
    assert post(collector, {"records": [record]}).json() == {"accepted": 1, "duplicates": 0}


def test_concurrent_duplicate_batches_store_each_record_once(collector, record_factory, rows):
    records = [record_factory() for _ in range(50)]
    results: list[dict[str, int]] = []

    def send() -> None:
        results.append(post(collector, {"records": records}).json())

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(result["accepted"] for result in results) == 50
    assert sum(result["duplicates"] for result in results) == 150
    assert len(stored_run_ids(rows, collector)) == 50


def test_unknown_routes_answer_json_errors(collector):
    response = httpx.get(collector["url"] + "/api/v1/nothing-here")
    assert response.status_code == 404
    assert "error" in response.json()
    response = httpx.get(collector["url"] + "/api/v1/records")
    assert response.status_code == 405
    assert "error" in response.json()


def test_run_ids_are_kept_apart_per_package(server_factory, sqlite_url, package_factory, plain_record, rows):
    first = package_factory(sqlite_url, "acme-lib")
    second = package_factory(sqlite_url, "beta-app", owner_email="beta@example.org")
    base_url = server_factory(sqlite_url)
    run_id = str(uuid.uuid4())
    assert post({"url": base_url, **first}, {"records": [plain_record(run_id=run_id)]}).json()["accepted"] == 1
    response = post({"url": base_url, **second}, {"records": [plain_record(run_id=run_id, package="beta-app")]})
    assert response.json()["accepted"] == 1
    assert len(rows(sqlite_url, "SELECT run_id FROM records WHERE run_id = ?", (run_id,))) == 2
