"""The detached sender as it really runs: ``python -m plausipy._sender`` subprocesses.

Spool files are written with the real ``write_spool`` and records built with the
real ``build_raw_record``; the collector is a real HTTP server on 127.0.0.1.
Wall time is only ever checked against generous upper bounds.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _helpers import collector_per_test  # noqa: F401 - the fixture "collector"
from collector import RecordingCollector

from plausipy import _paths, _spool
from plausipy._ledger import Ledger
from plausipy._record import build_raw_record
from plausipy._host import release_lock, try_lock

KEY = "Acme0000000000000000000000000001"
OTHER_KEY = "Beta0000000000000000000000000002"


def raw_record(endpoint: str, *, key: str = KEY, package: str = "acmelib") -> dict[str, object]:
    return build_raw_record(
        package=package, version="2.0", role="app", key=key, endpoint=endpoint, scope="package",
        categories=("runtime", "system", "location", "properties"), started=time.time(), exit_code=0, props={"mode": "test"},
    )  # fmt: skip


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PLAUSIPY_HOME", str(tmp_path))
    for name in ("PLAUSIPY_ENDPOINT", "PLAUSIPY_DEBUG", "DO_NOT_TRACK", "PLAUSIPY_DISABLE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def run_sender(**extra_env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "plausipy._sender"],
        env={**os.environ, "PLAUSIPY_SENDER": "1", **extra_env},
        capture_output=True,
        timeout=90,
    )


def spool_a_record(collector: RecordingCollector, mode: str) -> dict[str, object]:
    """Spool one record for ``collector`` and set how it answers, e.g. ``spool_a_record(collector, "hang")``."""
    record = raw_record(collector.url)
    _spool.write_spool([record])
    collector.mode = mode
    return record


def timed_run_sender() -> tuple[subprocess.CompletedProcess[bytes], float]:
    """``run_sender()`` and the seconds it took, e.g. ``result, elapsed = timed_run_sender()``."""
    started = time.monotonic()
    result = run_sender()
    return result, time.monotonic() - started


def run_flush(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plausipy", "flush", *args], env=dict(os.environ), capture_output=True, text=True, timeout=90
    )


def ledger_statuses() -> dict[str, str]:
    with Ledger() as ledger:
        return {row.run_id: row.status for row in ledger.records()}


def wait_for(predicate, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


def sender_idle() -> bool:
    lock = try_lock(_paths.sender_lock_file())
    if lock is None:
        return False
    release_lock(lock)
    return True


def dead_endpoint() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_a_spooled_record_is_delivered_once_and_the_sender_stays_silent(home: Path, collector: RecordingCollector) -> None:
    record = raw_record(collector.url)
    _spool.write_spool([record])

    result = run_sender()

    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
    assert collector.run_ids() == [record["run_id"]]
    assert _spool.spool_files() == []
    assert ledger_statuses() == {record["run_id"]: "sent"}
    assert not (home / "data" / "sender.log").exists()
    assert run_sender().returncode == 0 and len(collector.record_requests) == 1


def test_offline_then_online_delivers_exactly_once(home: Path) -> None:
    offline = RecordingCollector()
    offline.start()
    url = offline.url
    offline.stop()  # the port is known and nothing listens on it
    record = raw_record(url)
    _spool.write_spool([record])

    assert run_sender().returncode == 0
    assert ledger_statuses() == {record["run_id"]: "queued"}

    online = RecordingCollector().start(port=int(url.rsplit(":", 1)[1]))
    try:
        flushed = run_flush()
        run_sender()
        assert flushed.returncode == 0, flushed.stdout + flushed.stderr
        assert online.sent_run_ids() == [record["run_id"]]
        assert ledger_statuses() == {record["run_id"]: "sent"}
    finally:
        online.stop()


def test_a_500_stays_queued_and_the_sender_backs_off(home: Path, collector: RecordingCollector) -> None:
    record = spool_a_record(collector, "error500")

    run_sender()
    collector.mode = "accept"
    run_sender()  # within the backoff: no request

    assert len(collector.record_requests) == 1 and collector.records == []
    assert ledger_statuses() == {record["run_id"]: "queued"}
    assert run_flush().returncode == 0
    assert collector.run_ids() == [record["run_id"]] and collector.duplicates == 0


def test_a_429_is_honoured_by_the_next_sender(home: Path, collector: RecordingCollector) -> None:
    _spool.write_spool([raw_record(collector.url)])
    collector.mode, collector.retry_after = "throttle", 3600

    run_sender()
    collector.mode = "accept"
    _spool.write_spool([raw_record(collector.url)])  # a new run: the sender starts again
    run_sender()

    assert len(collector.record_requests) == 1
    assert set(ledger_statuses().values()) == {"queued"}
    with Ledger() as ledger:
        (state,) = ledger.last_errors()
    assert state.next_attempt >= time.time() + 3000 and "429" in str(state.last_error)


def test_a_422_is_rejected_and_kept_with_the_message(home: Path, collector: RecordingCollector) -> None:
    record = spool_a_record(collector, "reject")

    run_sender()

    with Ledger() as ledger:
        row = ledger.record(str(record["run_id"]))
    assert row is not None and row.status == "rejected"
    assert collector.reject_message in str(row.error)
    assert row.body["run_id"] == record["run_id"]


def test_a_hanging_collector_cannot_keep_the_sender_alive(home: Path, collector: RecordingCollector) -> None:
    record = spool_a_record(collector, "hang")

    result, elapsed = timed_run_sender()

    assert result.returncode == 0
    assert elapsed < 60  # a generous bound: the sender's own limit is 30 s
    assert ledger_statuses() == {record["run_id"]: "queued"}


def test_thirty_concurrent_exits_deliver_each_record_exactly_once(home: Path, collector: RecordingCollector) -> None:
    # Each process does what an exiting host does: write its spool file, then spawn unless a sender runs.
    code = (
        "import sys, time\n"
        "from plausipy._record import build_raw_record\n"
        "from plausipy._spool import write_spool\n"
        "from plausipy._host import spawn_sender_unless_running\n"
        "raw = build_raw_record(package='acmelib', version='1', role='lib', key=sys.argv[1], endpoint=sys.argv[2],\n"
        "    scope='package', categories=('runtime',), started=time.time(), exit_code=0, props={})\n"
        "write_spool([raw])\n"
        "spawn_sender_unless_running()\n"
        "print(raw['run_id'])\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", code, KEY, collector.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(30)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    expected = sorted(stdout.strip() for stdout, _stderr in outputs)

    assert all(stderr == "" for _stdout, stderr in outputs)
    assert wait_for(lambda: len(collector.records) >= 30 and sender_idle() and not _spool.spool_files(), timeout=90)
    counts = collections.Counter(collector.sent_run_ids())
    assert sorted(counts) == expected
    assert set(counts.values()) == {1}, "a record was sent twice"
    assert set(ledger_statuses().values()) == {"sent"}


@contextlib.contextmanager
def lock_held_by_another_process():  # type: ignore[no-untyped-def]
    """The sender lock, held by a separate process (the lock keeps other processes out)."""
    code = (
        "import sys\n"
        "from plausipy import _paths\n"
        "from plausipy._host import try_lock\n"
        "print(try_lock(_paths.sender_lock_file()) is not None, flush=True)\n"
        "sys.stdin.read()\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "True\n"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_spawn_does_nothing_while_a_sender_holds_the_lock(home: Path, collector: RecordingCollector) -> None:
    from plausipy._host import spawn_sender_unless_running

    _spool.write_spool([raw_record(collector.url)])
    with lock_held_by_another_process():
        assert sender_idle() is False
        assert spawn_sender_unless_running() is False
        assert run_sender().returncode == 0  # a sender started anyway steps aside
        assert len(_spool.spool_files()) == 1 and collector.requests == []

    assert spawn_sender_unless_running() is True
    assert wait_for(lambda: len(collector.records) == 1 and sender_idle())


def test_spawn_never_raises_or_prints_when_state_is_unusable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    code = "from plausipy._host import spawn_sender_unless_running as s; print(s())"

    result = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PLAUSIPY_HOME": str(blocker)}, capture_output=True, text=True, timeout=60
    )

    assert (result.returncode, result.stdout, result.stderr) == (0, "False\n", "")


def test_a_file_spooled_while_the_lock_is_held_is_picked_up_before_the_sender_ends(home: Path, collector: RecordingCollector) -> None:
    first = raw_record(collector.url)
    _spool.write_spool([first])
    collector.mode = "hang"
    other = RecordingCollector().start()
    sender = subprocess.Popen([sys.executable, "-m", "plausipy._sender"], env={**os.environ, "PLAUSIPY_SENDER": "1"})
    try:
        assert wait_for(lambda: collector.requests, timeout=60)  # the sender holds the lock and waits on the collector
        second = raw_record(other.url, key=OTHER_KEY, package="betalib")
        _spool.write_spool([second])  # the host of this run sees the lock taken and spawns nothing
        assert sender.wait(timeout=60) == 0
    finally:
        sender.kill()
        sender.wait()
        other.stop()

    statuses = ledger_statuses()
    assert _spool.spool_files() == []
    assert statuses[str(first["run_id"])] == "queued"
    # The second round ingested the late file and delivered it; only the hung collector's record waits.
    assert statuses[str(second["run_id"])] == "sent"
    assert other.run_ids() == [second["run_id"]]


def test_a_corrupt_ledger_and_a_corrupt_spool_file_do_not_stop_delivery(home: Path, collector: RecordingCollector) -> None:
    data = home / "data"
    (data / "spool").mkdir(parents=True)
    (data / "ledger.sqlite3").write_bytes(b"\x00garbage" * 512)
    (data / "spool" / "1-2-cafebabe.rec").write_bytes(b"\xff\xfe truncated")
    record = raw_record(collector.url)
    _spool.write_spool([record])

    result = run_sender()

    assert (result.returncode, result.stderr) == (0, b"")
    assert collector.run_ids() == [record["run_id"]]
    assert (data / "spool" / "corrupt" / "1-2-cafebabe.rec").exists()
    assert [name for name in os.listdir(data) if name.startswith("ledger.sqlite3.corrupt-")]
    with Ledger() as ledger:
        assert len(ledger.problems) == 2


def test_different_keys_travel_in_different_requests(home: Path, collector: RecordingCollector) -> None:
    _spool.write_spool([raw_record(collector.url), raw_record(collector.url, key=OTHER_KEY, package="betalib")])

    run_sender()

    assert sorted(request.key for request in collector.record_requests) == sorted([KEY, OTHER_KEY])  # type: ignore[type-var]
    for request in collector.record_requests:
        assert len(request.body["records"]) == 1  # type: ignore[index]


def test_plausipy_endpoint_overrides_the_declared_collector(home: Path, collector: RecordingCollector) -> None:
    record = raw_record(dead_endpoint())
    _spool.write_spool([record])

    run_sender(PLAUSIPY_ENDPOINT=collector.url)

    assert collector.run_ids() == [record["run_id"]]


def test_debug_writes_one_line_per_batch_to_the_log_and_nothing_to_stderr(home: Path, collector: RecordingCollector) -> None:
    _spool.write_spool([raw_record(collector.url)])

    result = run_sender(PLAUSIPY_DEBUG="1")

    assert result.stderr == b""
    log = (home / "data" / "sender.log").read_text()
    assert f"{collector.url} 1 record(s) of acmelib: sent" in log


def test_the_wire_body_holds_exactly_the_schema_fields(home: Path, collector: RecordingCollector) -> None:
    from plausipy._record import WIRE_FIELDS

    _spool.write_spool([raw_record(collector.url)])
    run_sender()

    (request,) = collector.record_requests
    (body,) = json.loads(request.raw)["records"]
    assert tuple(body) == WIRE_FIELDS


def test_a_sender_that_cannot_open_the_ledger_keeps_the_spool_and_says_why(home: Path, collector: RecordingCollector) -> None:
    import sqlite3

    data = home / "data"
    data.mkdir()
    with sqlite3.connect(data / "ledger.sqlite3") as connection:
        connection.execute("PRAGMA user_version = 99")  # written by a newer plausipy: left alone
    connection.close()
    _spool.write_spool([raw_record(collector.url)])

    result = run_sender()

    assert (result.stdout, result.stderr) == (b"", b"")
    assert len(_spool.spool_files()) == 1 and collector.requests == []
    assert "sender\tLedgerError: ledger schema 99 is newer" in (data / "problems.log").read_text()


def test_a_collector_that_answers_a_byte_at_a_time_meets_the_hard_stop(home: Path, collector: RecordingCollector) -> None:
    # Every read gets data within a second, so only the sender's own lifetime limit ends this.
    record = spool_a_record(collector, "drip")

    result, elapsed = timed_run_sender()

    assert elapsed < 60  # a generous bound: the sender's own limit is 30 s
    assert result.stderr == b""
    assert ledger_statuses() == {record["run_id"]: "queued"}
    assert sender_idle()
    # The backoff was written before the request, so the next run does not hang on it again.
    requests_so_far = len(collector.requests)
    run_sender()
    assert len(collector.requests) == requests_so_far
    with Ledger() as ledger:
        assert "stopped before the collector answered" in str(ledger.last_errors()[0].last_error)
