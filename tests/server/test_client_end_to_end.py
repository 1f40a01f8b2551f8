"""The real client code (record building, ``send``, ``send_deletion``) against the real collector."""

from __future__ import annotations

import os
import time

import pytest


@pytest.mark.parametrize("categories", [("runtime", "system", "location", "properties"), ()], ids=["all", "none"])
def test_client_records_are_accepted_and_deletable(shared_sqlite_server, package_factory, rows, categories):
    from plausipy._deletion import send_deletion
    from plausipy._delivery import send
    from plausipy._record import build_raw_record, finalize_record

    package = package_factory(shared_sqlite_server["db"], f"e2e-{os.urandom(4).hex()}")
    secret = os.urandom(32)

    def record(exit_code: int) -> dict[str, object]:
        raw = build_raw_record(
            key=package["key"], endpoint=shared_sqlite_server["url"], package=package["name"], version="2.0.1",
            role="app", scope="package", categories=categories, started=time.time() - 1, exit_code=exit_code,
            props={"mode": "fast", "n": 3},
        )  # fmt: skip
        return finalize_record(raw, secret)

    records = [record(0), record(1)]
    result = send(shared_sqlite_server["url"], package["key"], records)
    assert (result.outcome, result.status, result.accepted) == ("sent", 202, 2), result.message
    again = send(shared_sqlite_server["url"], package["key"], records)
    assert (again.outcome, again.duplicates) == ("sent", 2)

    status, deleted, _ = send_deletion(shared_sqlite_server["url"], package["key"], [], [str(records[0]["uid"])])
    assert (status, deleted) == ("done", 2), "package scope: one uid for both runs"
    left = rows(shared_sqlite_server["db"], "SELECT COUNT(*) FROM records JOIN packages ON packages.id = package_id WHERE name = ?", (package["name"],))
    assert left == [(0,)]


def test_client_sees_a_wrong_key_as_rejected(shared_sqlite_server, plain_record):
    from plausipy._delivery import send

    result = send(shared_sqlite_server["url"], "Zzzz0000000000000000000000000000", [plain_record()])
    assert (result.outcome, result.status) == ("rejected", 401)
