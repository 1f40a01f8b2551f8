"""The collector on a real PostgreSQL: ingest, deletion, and a restart mid-run."""

from __future__ import annotations

import hashlib
import subprocess

import httpx
import pytest

pytestmark = pytest.mark.postgres


def post(base_url, path, key, body):
    return httpx.post(base_url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_ingest_and_deletion_on_postgresql(server_factory, postgres_url, package_factory, record_factory, rows):
    package = package_factory(postgres_url)
    base_url = server_factory(postgres_url)
    records = [record_factory(props={"flag": True, "ratio": 0.5, "name": "x"}) for _ in range(100)]
    response = post(base_url, "/api/v1/records", package["key"], {"records": records})
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 100, "duplicates": 0}
    assert post(base_url, "/api/v1/records", package["key"], {"records": records[:10]}).json() == {
        "accepted": 0,
        "duplicates": 10,
    }
    # A batch of one takes the single-statement path; its count must be as right.
    assert post(base_url, "/api/v1/records", package["key"], {"records": records[:1]}).json() == {
        "accepted": 0,
        "duplicates": 1,
    }
    one = record_factory()
    assert post(base_url, "/api/v1/records", package["key"], {"records": [one]}).json() == {"accepted": 1, "duplicates": 0}
    stored = rows(postgres_url, "SELECT uid_hash, hour, day FROM records WHERE run_id = ?", (records[0]["run_id"],))
    assert stored[0][0] == hashlib.sha256(records[0]["uid"].encode()).hexdigest()
    assert stored[0][1].strftime("%Y-%m-%dT%H:00:00Z") == records[0]["hour"]
    assert rows(postgres_url, "SELECT COUNT(*) FROM dirty_days") == [(1,)]

    deleted = post(base_url, "/api/v1/deletions", package["key"], {"run_ids": [records[0]["run_id"]], "uids": [records[1]["uid"]]})
    assert deleted.json() == {"deleted": 2}
    assert rows(postgres_url, "SELECT COUNT(*) FROM records") == [(99,)]


def test_schema_errors_store_nothing_on_postgresql(server_factory, postgres_url, package_factory, record_factory, rows):
    package = package_factory(postgres_url)
    base_url = server_factory(postgres_url)
    bad = record_factory(version="1.0\u0000")
    response = post(base_url, "/api/v1/records", package["key"], {"records": [record_factory(), bad]})
    assert response.status_code == 422
    assert rows(postgres_url, "SELECT COUNT(*) FROM records") == [(0,)]


def test_a_restarted_database_is_503_with_retry_after_then_recovers(
    server_factory, private_postgres, package_factory, record_factory, rows
):
    cluster = private_postgres
    database_url = cluster.create_database()
    package = package_factory(database_url)
    base_url = server_factory(database_url)
    assert post(base_url, "/api/v1/records", package["key"], {"records": [record_factory()]}).status_code == 202

    # The key is cached by now: the next request fails at the write.
    cluster.stop()
    record = record_factory()
    response = post(base_url, "/api/v1/records", package["key"], {"records": [record]})
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1

    cluster.start()
    again = post(base_url, "/api/v1/records", package["key"], {"records": [record]})
    assert again.status_code == 202, again.text
    assert again.json() == {"accepted": 1, "duplicates": 0}
    assert rows(database_url, "SELECT COUNT(*) FROM records") == [(2,)]


def test_migrate_command_is_idempotent_on_postgresql(postgres_url):
    import os
    import sys

    environment = {**os.environ, "PLAUSIPY_DATABASE_URL": postgres_url}
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-m", "plausipy", "server", "migrate"], capture_output=True, text=True, env=environment
        )
        assert result.returncode == 0, result.stderr
        assert "schema version 1" in result.stdout


def test_portal_sign_up_and_package_on_postgresql(server_factory, postgres_url, rows):
    import re

    base_url = server_factory(postgres_url)
    with httpx.Client(base_url=base_url, timeout=30) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/signup").text).group(1)
        signed_up = client.post("/signup", data={"email": "pg@example.org", "password": "long enough", "csrf_token": token})
        assert signed_up.status_code == 303
        page = client.get("/packages")
        assert page.status_code == 200 and "pg@example.org" in page.text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        created = client.post("/packages", data={"name": "pg-lib", "csrf_token": token})
        assert created.status_code == 303
        assert 'id="package-key"' in client.get("/packages/pg-lib").text
        tokens = client.post("/tokens", data={"csrf_token": token, "label": "ci"})
        assert tokens.status_code == 200
    assert rows(postgres_url, "SELECT name, k_threshold, retention_days FROM packages") == [("pg-lib", 5, 395)]


def test_retention_on_postgresql(postgres_url, package_factory, rows):
    from click.testing import CliRunner

    from plausipy.server._cli import server

    package_factory(postgres_url, "old-lib")
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as connection:
        package_id = connection.execute("SELECT id FROM packages").fetchone()[0]
        for age in ("400 days", "2 days"):
            connection.execute(
                "INSERT INTO records (package_id, run_id, uid_hash, scope, version, role, hour, day, received_at)"
                " VALUES (%s, gen_random_uuid()::text, 'h', 'package', '1', 'lib', now() - %s::interval,"
                " (now() - %s::interval)::date, now())",
                (package_id, age, age),
            )
    result = CliRunner().invoke(server, ["purge", "--database", postgres_url])
    assert result.exit_code == 0, result.output
    assert "deleted 1 expired record(s)" in result.output
    assert rows(postgres_url, "SELECT COUNT(*) FROM records") == [(1,)]


def test_a_slow_database_is_503_not_a_hang(server_factory, postgres_url, package_factory, record_factory, rows):
    import psycopg

    package = package_factory(postgres_url)
    base_url = server_factory(postgres_url, PLAUSIPY_PG_STATEMENT_TIMEOUT_MS="500")
    assert post(base_url, "/api/v1/records", package["key"], {"records": [record_factory()]}).status_code == 202
    with psycopg.connect(postgres_url) as blocker:
        blocker.execute("LOCK TABLE records IN EXCLUSIVE MODE")  # held until the block ends
        record = record_factory()
        response = post(base_url, "/api/v1/records", package["key"], {"records": [record]})
        assert response.status_code == 503, response.text
        assert int(response.headers["Retry-After"]) >= 1
    assert rows(postgres_url, "SELECT COUNT(*) FROM records WHERE run_id = ?", (record["run_id"],)) == [(0,)]
    assert post(base_url, "/api/v1/records", package["key"], {"records": [record]}).json() == {"accepted": 1, "duplicates": 0}
