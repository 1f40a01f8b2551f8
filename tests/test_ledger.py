"""The ledger and the identity secret, over real SQLite files and real processes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plausipy import _paths, _spool
from plausipy._identity import load_or_create_secret, reset_secret
from plausipy._ledger import BATCH_MAX_RECORDS, EXPIRY_SECONDS, Ledger, LedgerError, SCHEMA_VERSION, backoff_seconds
from plausipy._record import WIRE_FIELDS, build_raw_record

KEY_A = "Acme0000000000000000000000000001"
KEY_B = "Beta0000000000000000000000000002"
SECRET = bytes(range(32))
ALL_CATEGORIES = ("runtime", "system", "location", "properties")


def raw_record(*, package: str = "acmelib", key: str = KEY_A, endpoint: str = "http://127.0.0.1:9", created: float | None = None,
               props: dict[str, object] | None = None) -> dict[str, object]:  # fmt: skip
    raw = build_raw_record(
        package=package, version="1.2.3", role="lib", key=key, endpoint=endpoint, scope="package",
        categories=ALL_CATEGORIES, started=time.time() - 2, exit_code=0, props=props or {},
    )  # fmt: skip
    if created is not None:
        raw["created"] = created
    return raw


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PLAUSIPY_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def ledger(home: Path):
    with Ledger() as opened:
        yield opened


def test_a_new_ledger_has_the_current_schema_and_private_mode(ledger: Ledger) -> None:
    assert ledger.schema_version() == SCHEMA_VERSION == 2
    assert ledger.counts() == {"queued": 0, "sent": 0, "rejected": 0, "expired": 0, "deleted": 0}
    if os.name == "posix":
        assert stat.S_IMODE(os.stat(ledger.path).st_mode) == 0o600


def test_ingest_moves_spool_files_in_as_queued_wire_records(ledger: Ledger) -> None:
    first, second = raw_record(), raw_record(package="betalib", key=KEY_B)
    _spool.write_spool([first, second])

    assert ledger.ingest_spool(SECRET) == 2

    assert _spool.spool_files() == []
    assert ledger.counts()["queued"] == 2
    row = ledger.record(str(first["run_id"]))
    assert row is not None and row.status == "queued"
    assert tuple(row.body) == WIRE_FIELDS
    assert row.body["uid"] != first.get("anonymous_uid") and len(str(row.body["uid"])) == 32
    assert (row.endpoint, row.key) == (first["endpoint"], KEY_A)


def test_a_spool_file_ingested_twice_is_counted_once(ledger: Ledger, home: Path) -> None:
    # A crash after the commit and before the unlink leaves the file behind.
    path = _spool.write_spool([raw_record()])
    backup = home / "backup.rec"
    shutil.copy(path, backup)
    assert ledger.ingest_spool(SECRET) == 1
    shutil.copy(backup, path)

    assert ledger.ingest_spool(SECRET) == 0
    assert ledger.counts()["queued"] == 1
    assert _spool.spool_files() == []


def test_an_unreadable_spool_file_is_quarantined_and_the_rest_ingested(ledger: Ledger) -> None:
    spool = Path(_paths.spool_dir())
    good = _spool.write_spool([raw_record()])
    bad = spool / "0-1-deadbeef.rec"
    bad.write_bytes(b"not marshal at all")

    assert ledger.ingest_spool(SECRET) == 1

    assert not bad.exists() and not os.path.exists(good)
    assert (spool / "corrupt" / bad.name).read_bytes() == b"not marshal at all"
    assert ledger.counts()["problems"] == 1
    assert "0-1-deadbeef.rec" in ledger.problems[0]


def test_a_corrupt_ledger_is_moved_aside_and_a_fresh_one_started(home: Path) -> None:
    path = Path(_paths.ledger_file())
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not SQLite" * 100)

    with Ledger() as ledger:
        assert ledger.counts()["queued"] == 0
        assert ledger.counts()["problems"] == 1
        assert "moved it to" in ledger.problems[0]
    aside = [name for name in os.listdir(path.parent) if name.startswith("ledger.sqlite3.corrupt-")]
    assert len(aside) == 1
    assert (path.parent / aside[0]).read_bytes() == b"this is not SQLite" * 100


def test_a_ledger_from_a_newer_plausipy_is_left_alone(home: Path) -> None:
    import sqlite3

    path = Path(_paths.ledger_file())
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 99")
    connection.close()

    with pytest.raises(LedgerError, match="newer"):
        Ledger()
    assert path.exists()


def test_batches_never_mix_keys_or_collectors_and_hold_at_most_100(ledger: Ledger) -> None:
    raws = [raw_record(created=1000.0 + n) for n in range(150)]
    raws += [raw_record(package="betalib", key=KEY_B, created=2000.0 + n) for n in range(3)]
    raws += [raw_record(endpoint="http://127.0.0.1:10", created=3000.0 + n) for n in range(2)]
    ledger.queue_records(raws, SECRET)

    batches = ledger.due_batches(now=3100.0)

    shapes = sorted((batch.endpoint, batch.key, len(batch.run_ids)) for batch in batches)
    assert shapes == [
        ("http://127.0.0.1:10", KEY_A, 2),
        ("http://127.0.0.1:9", KEY_A, 50),
        ("http://127.0.0.1:9", KEY_A, 100),
        ("http://127.0.0.1:9", KEY_B, 3),
    ]
    for batch in batches:
        assert len(batch.run_ids) <= BATCH_MAX_RECORDS
        assert {body["package"] for body in batch.bodies} == ({"betalib"} if batch.key == KEY_B else {"acmelib"})


def test_batches_stay_under_the_request_size_limit(ledger: Ledger) -> None:
    bulky = {f"p{n}": "x" * 200 for n in range(20)}
    ledger.queue_records([raw_record(props=bulky) for _ in range(100)], SECRET)

    batches = ledger.due_batches(now=time.time())

    assert len(batches) > 1
    assert sum(len(batch.run_ids) for batch in batches) == 100
    for batch in batches:
        # What send() posts, against the collector's limit (DESIGN.md §5).
        assert len(json.dumps({"records": batch.bodies}, separators=(",", ":")).encode()) <= 256 * 1024


def test_endpoint_override_sends_everything_to_one_collector(ledger: Ledger) -> None:
    ledger.queue_records([raw_record(endpoint="http://a.invalid"), raw_record(endpoint="http://b.invalid")], SECRET)

    batches = ledger.due_batches(now=time.time(), endpoint_override="http://127.0.0.1:7")

    assert [(batch.endpoint, len(batch.run_ids)) for batch in batches] == [("http://127.0.0.1:7", 2)]


def test_backoff_doubles_per_failure_and_a_success_makes_the_backlog_due(ledger: Ledger) -> None:
    now = 1_000_000.0
    ledger.queue_records([raw_record(created=now), raw_record(created=now)], SECRET)
    endpoint = "http://127.0.0.1:9"
    run_ids = [row.run_id for row in ledger.records()]

    due = ledger.mark_retry(run_ids[:1], collector=endpoint, error="HTTP 500", now=now)
    assert due == now + 60
    assert ledger.due_batches(now + 59) == []
    assert len(ledger.due_batches(now + 60)) == 1
    assert ledger.mark_retry(run_ids[:1], collector=endpoint, error="HTTP 500", now=now + 60) == now + 60 + 120
    assert ledger.last_errors()[0].last_error == "HTTP 500"

    ledger.mark_sent(run_ids[:1], collector=endpoint, now=now + 200)

    assert ledger.last_errors() == []
    assert [batch.run_ids for batch in ledger.due_batches(now + 200)] == [run_ids[1:]]


def test_retry_after_wins_when_it_is_longer_than_the_backoff(ledger: Ledger) -> None:
    ledger.queue_records([raw_record(created=100.0)], SECRET)
    run_ids = [row.run_id for row in ledger.records()]

    assert ledger.mark_retry(run_ids, collector="http://127.0.0.1:9", error="HTTP 429", now=100.0, retry_after=600) == 700.0


def test_backoff_is_capped_at_six_hours() -> None:
    assert [backoff_seconds(n) for n in (0, 1, 2, 3)] == [0.0, 60.0, 120.0, 240.0]
    assert backoff_seconds(30) == backoff_seconds(1000) == 6 * 3600


def test_rejected_records_keep_the_collectors_message(ledger: Ledger) -> None:
    ledger.queue_records([raw_record()], SECRET)
    run_id = ledger.records()[0].run_id

    ledger.mark_rejected([run_id], collector="http://127.0.0.1:9", error="HTTP 422 bad hour", now=time.time())

    row = ledger.record(run_id)
    assert row is not None and (row.status, row.error, row.collector) == ("rejected", "HTTP 422 bad hour", "http://127.0.0.1:9")
    assert ledger.due_batches(time.time()) == []


def test_queued_records_expire_after_30_days(ledger: Ledger) -> None:
    created = 1_700_000_000.0
    ledger.queue_records([raw_record(created=created), raw_record(created=created + 3600)], SECRET)

    assert ledger.expire_old(created + EXPIRY_SECONDS - 1) == 0
    assert ledger.expire_old(created + EXPIRY_SECONDS + 1) == 1

    assert ledger.counts()["expired"] == 1 and ledger.counts()["queued"] == 1


def test_records_can_be_filtered_by_package_and_found_by_prefix(ledger: Ledger) -> None:
    ledger.queue_records([raw_record(), raw_record(package="betalib", key=KEY_B)], SECRET)

    (beta,) = ledger.records(package="betalib")
    assert beta.package == "betalib"
    found = ledger.record(beta.run_id[:13])
    assert found is not None and found.run_id == beta.run_id
    assert ledger.record("") is None
    assert ledger.record("no-such-run") is None


# -- the identity secret ---------------------------------------------------------------


def test_the_secret_is_32_private_bytes_and_stable(home: Path) -> None:
    secret = load_or_create_secret()

    assert len(secret) == 32
    assert load_or_create_secret() == secret
    if os.name == "posix":
        assert stat.S_IMODE(os.stat(_paths.secret_file()).st_mode) == 0o600


def test_reset_replaces_the_secret(home: Path) -> None:
    before = load_or_create_secret()

    after = reset_secret()

    assert after != before and load_or_create_secret() == after


def test_a_damaged_secret_is_replaced(home: Path) -> None:
    path = Path(_paths.secret_file())
    path.parent.mkdir(parents=True)
    path.write_bytes(b"short")

    secret = load_or_create_secret()

    assert len(secret) == 32 and path.read_bytes() == secret


def test_thirty_racing_processes_agree_on_one_secret(home: Path) -> None:
    code = "import sys; from plausipy._identity import load_or_create_secret; sys.stdout.write(load_or_create_secret().hex())"
    processes = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env={**os.environ, "PLAUSIPY_SENDER": "1"})
        for _ in range(30)
    ]
    secrets = {process.communicate(timeout=120)[0].decode() for process in processes}

    assert all(process.returncode == 0 for process in processes)
    assert secrets == {Path(_paths.secret_file()).read_bytes().hex()}
    assert not [name for name in os.listdir(_paths.data_dir()) if name.endswith(".tmp")]
