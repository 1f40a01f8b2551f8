"""POST /api/v1/deletions: by run_id, by uid, only within the key's package."""

from __future__ import annotations

import sqlite3
import uuid

import httpx
import pytest


@pytest.fixture
def setup(shared_sqlite_server, package_factory, plain_record):
    url, db = shared_sqlite_server["url"], shared_sqlite_server["db"]
    mine = package_factory(db, f"mine-{uuid.uuid4().hex[:8]}")
    theirs = package_factory(db, f"theirs-{uuid.uuid4().hex[:8]}", owner_email="them@example.org")
    return {"url": url, "db": db, "mine": mine, "theirs": theirs, "record": plain_record}


def send(setup, package, path, body):
    return httpx.post(setup["url"] + path, json=body, headers={"Authorization": f"Bearer {package['key']}"}, timeout=30)


def ingest(setup, package, records):
    response = send(setup, package, "/api/v1/records", {"records": records})
    assert response.status_code == 202, response.text


def run_ids_of(setup, rows, package):
    query = "SELECT run_id FROM records JOIN packages ON packages.id = records.package_id WHERE packages.name = ?"
    return {row[0] for row in rows(setup["db"], query, (package["name"],))}


def test_delete_by_run_id(setup, rows):
    records = [setup["record"](package=setup["mine"]["name"]) for _ in range(3)]
    ingest(setup, setup["mine"], records)
    response = send(setup, setup["mine"], "/api/v1/deletions", {"run_ids": [records[0]["run_id"]]})
    assert response.status_code == 200
    assert response.json() == {"deleted": 1}
    assert run_ids_of(setup, rows, setup["mine"]) == {records[1]["run_id"], records[2]["run_id"]}


def test_delete_by_uid_removes_every_run_of_that_person(setup, rows):
    person = uuid.uuid4().hex
    theirs = [setup["record"](package=setup["mine"]["name"], uid=person) for _ in range(3)]
    other = setup["record"](package=setup["mine"]["name"])
    ingest(setup, setup["mine"], [*theirs, other])
    assert send(setup, setup["mine"], "/api/v1/deletions", {"uids": [person]}).json() == {"deleted": 3}
    assert run_ids_of(setup, rows, setup["mine"]) == {other["run_id"]}


def test_run_ids_and_uids_together_and_repeated(setup, rows):
    person = uuid.uuid4().hex
    by_uid = setup["record"](package=setup["mine"]["name"], uid=person)
    by_run = setup["record"](package=setup["mine"]["name"])
    ingest(setup, setup["mine"], [by_uid, by_run])
    body = {"run_ids": [by_run["run_id"], by_uid["run_id"]], "uids": [person]}
    assert send(setup, setup["mine"], "/api/v1/deletions", body).json() == {"deleted": 2}
    assert send(setup, setup["mine"], "/api/v1/deletions", body).json() == {"deleted": 0}, "deleting twice is harmless"


def test_a_key_deletes_only_its_own_package(setup, rows):
    person = uuid.uuid4().hex
    mine = setup["record"](package=setup["mine"]["name"], uid=person)
    theirs = setup["record"](package=setup["theirs"]["name"], uid=person)
    ingest(setup, setup["mine"], [mine])
    ingest(setup, setup["theirs"], [theirs])
    body = {"run_ids": [theirs["run_id"]], "uids": [person]}
    assert send(setup, setup["mine"], "/api/v1/deletions", body).json() == {"deleted": 1}
    assert run_ids_of(setup, rows, setup["theirs"]) == {theirs["run_id"]}


def test_deletion_marks_the_days_dirty(setup, rows):
    record = setup["record"](package=setup["mine"]["name"])
    ingest(setup, setup["mine"], [record])
    connection = sqlite3.connect(setup["db"].removeprefix("sqlite:///"))
    connection.execute("DELETE FROM dirty_days")  # as if the rollups had caught up
    connection.commit()
    connection.close()
    assert send(setup, setup["mine"], "/api/v1/deletions", {"run_ids": [record["run_id"]]}).json() == {"deleted": 1}
    marked = rows(setup["db"], "SELECT day FROM dirty_days")
    assert marked == [(record["hour"][:10],)]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"run_ids": ["nope"]}, 422),
        ({"uids": ["0" * 31]}, 422),
        ({"run_ids": [], "extra": 1}, 422),
        ({"uids": [uuid.uuid4().hex for _ in range(1001)]}, 413),
        ("not an object", 422),
    ],
)
def test_bad_deletion_requests_are_4xx(setup, body, status):
    response = send(setup, setup["mine"], "/api/v1/deletions", body)
    assert response.status_code == status, response.text
    assert response.json()["error"]


def test_deletion_needs_a_known_key(setup):
    response = httpx.post(setup["url"] + "/api/v1/deletions", json={"uids": [uuid.uuid4().hex]})
    assert response.status_code == 401
