"""The storage seam on real SQLite files (and PostgreSQL where marked): group commit keeps each caller's work all or nothing."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from plausipy.server._errors import ServiceUnavailable
from plausipy.server._schema import migrate
from plausipy.server._storage import open_storage


@pytest.fixture
def storage(sqlite_url):
    opened = open_storage(sqlite_url, sqlite_busy_timeout_ms=300)
    migrate(opened)
    yield opened
    opened.close()


@pytest.fixture(params=["sqlite_url", pytest.param("postgres_url", marks=pytest.mark.postgres)])
def either_storage(request):
    """A migrated storage on each backend (the param names the database URL fixture)."""
    opened = open_storage(request.getfixturevalue(request.param))
    migrate(opened)
    yield opened
    opened.close()


def test_concurrent_work_commits_except_the_pieces_that_fail(either_storage):
    # On PostgreSQL a failed group is retried piece by piece; on SQLite each
    # piece has a savepoint. Either way only the failing pieces are lost.
    storage = either_storage
    storage.run_in_transaction(lambda tx: tx.execute("INSERT INTO dirty_days (package_id, day) VALUES (99, '2026-01-01')"))
    start = threading.Barrier(12)
    outcomes: dict[int, object] = {}

    def work_for(index: int):
        def work(tx):
            tx.execute("INSERT INTO dirty_days (package_id, day) VALUES (?, ?)", (index, "2026-01-01"))
            if index == 5:
                raise ValueError("this caller's own failure")
            if index == 7:  # a database error of its own: this key exists
                tx.execute("INSERT INTO dirty_days (package_id, day) VALUES (99, '2026-01-01')")
            return index

        return work

    def caller(index: int) -> None:
        start.wait()
        try:
            outcomes[index] = storage.run_in_transaction(work_for(index))
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes[index] = exc

    threads = [threading.Thread(target=caller, args=(index,)) for index in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert isinstance(outcomes.pop(5), ValueError)
    assert type(outcomes.pop(7)).__name__ in ("IntegrityError", "UniqueViolation")
    assert outcomes == {index: index for index in range(12) if index not in (5, 7)}
    stored = {row[0] for row in storage.read("SELECT package_id FROM dirty_days")}
    assert stored == set(range(12)) - {5, 7} | {99}


def test_one_statement_work_beside_transactions_fails_alone(either_storage):
    # PostgreSQL runs work of one statement without BEGIN/COMMIT; SQLite in
    # the group. Either way a failing statement loses only its own work.
    storage = either_storage
    storage.run_in_transaction(lambda tx: tx.execute("INSERT INTO dirty_days (package_id, day) VALUES (99, '2026-01-01')"))
    insert = "INSERT INTO dirty_days (package_id, day) VALUES (?, '2026-01-01') RETURNING package_id"

    def statement(index: int):
        return lambda tx: tx.execute(insert, (index,)).fetchone()[0]

    def transaction(index: int):
        def work(tx):
            tx.execute("INSERT INTO dirty_days (package_id, day) VALUES (?, '2026-01-02')", (index,))
            return tx.execute(insert, (index,)).fetchone()[0]

        return work

    futures = {}
    for index in range(10):
        one = index % 2 == 0
        futures[index] = storage.submit(statement(index) if one else transaction(index), one_statement=one)
    futures[99] = storage.submit(statement(99), one_statement=True)  # exists: a unique violation
    outcomes = {}
    for index, future in futures.items():
        try:
            outcomes[index] = future.result(timeout=30)
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes[index] = exc
    assert type(outcomes.pop(99)).__name__ in ("IntegrityError", "UniqueViolation")
    assert outcomes == {index: index for index in range(10)}
    stored = sorted(storage.read("SELECT package_id, day FROM dirty_days ORDER BY package_id, day"))
    assert [(row[0], str(row[1])) for row in stored] == sorted(
        [(index, "2026-01-01") for index in range(10)] + [(index, "2026-01-02") for index in range(1, 10, 2)]
        + [(99, "2026-01-01")]
    )
    # The connection a failed statement used serves the next work as usual.
    assert storage.submit(statement(42), one_statement=True).result(timeout=30) == 42


def test_a_locked_file_is_service_unavailable_and_stores_nothing(storage, sqlite_url):
    blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ServiceUnavailable) as raised:
            storage.run_in_transaction(
                lambda tx: tx.execute("INSERT INTO dirty_days (package_id, day) VALUES (1, '2026-01-01')").rowcount
            )
        assert raised.value.retry_after and raised.value.retry_after >= 1
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert storage.read("SELECT COUNT(*) FROM dirty_days") == [(0,)]
    assert storage.run_in_transaction(lambda tx: 7) == 7, "usable again once the lock is gone"


def insert_day(package_id: int):
    return lambda tx: tx.execute("INSERT INTO dirty_days (package_id, day) VALUES (?, '2026-01-01')", (package_id,)).rowcount


def test_work_cancelled_while_queued_is_never_written(storage, sqlite_url):
    blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    first = storage.submit(insert_day(1))
    time.sleep(0.05)  # the writer thread is now inside BEGIN IMMEDIATE, waiting for the file
    queued = storage.submit(insert_day(2))
    assert queued.cancel(), "queued work can still be cancelled"
    blocker.execute("ROLLBACK")
    blocker.close()
    assert first.result(timeout=10) == 1
    assert storage.submit(insert_day(3)).result(timeout=10) == 1
    assert sorted(row[0] for row in storage.read("SELECT package_id FROM dirty_days")) == [1, 3]


def test_work_queued_behind_a_locked_file_is_service_unavailable_too(storage, sqlite_url):
    blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        futures = [storage.submit(insert_day(index)) for index in range(5)]
        for future in futures:
            assert isinstance(future.exception(timeout=30), ServiceUnavailable)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert storage.read("SELECT COUNT(*) FROM dirty_days") == [(0,)]


def test_close_finishes_the_queued_work_first(sqlite_url):
    opened = open_storage(sqlite_url)
    migrate(opened)
    futures = [opened.submit(insert_day(index)) for index in range(50)]
    opened.close()
    assert [future.result(timeout=0) for future in futures] == [1] * 50
    reopened = open_storage(sqlite_url)
    try:
        assert reopened.read("SELECT COUNT(*) FROM dirty_days") == [(50,)]
    finally:
        reopened.close()


def test_question_marks_work_on_both_dialects_through_one_api(storage):
    with storage.transaction() as tx:
        tx.execute("INSERT INTO dirty_days (package_id, day) VALUES (?, ?)", (3, "2026-02-03"))
    assert storage.read("SELECT day FROM dirty_days WHERE package_id = ?", (3,)) == [("2026-02-03",)]
    with pytest.raises(ValueError):
        with storage.transaction() as tx:
            tx.execute("DELETE FROM dirty_days")
            raise ValueError("roll back")
    assert storage.read("SELECT COUNT(*) FROM dirty_days") == [(1,)]


def test_unknown_url_schemes_are_refused():
    with pytest.raises(ValueError, match="unsupported database URL"):
        open_storage("mysql://localhost/db")
