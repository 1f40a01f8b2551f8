"""send() and deliver() against a real recording collector on 127.0.0.1, over a real ledger.

The clock is passed in (``now``), never slept on.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from _helpers import collector_per_test  # noqa: F401 - the fixture "collector"
from collector import RecordingCollector

from plausipy._delivery import deliver, interpret_answer, parse_retry_after, send
from plausipy._ledger import Ledger
from plausipy._record import build_raw_record

KEYS = ["Acme0000000000000000000000000001", "Beta0000000000000000000000000002", "Gamma000000000000000000000000003"]
SECRET = b"s" * 32


def raw_record(endpoint: str, *, key: str = KEYS[0], package: str = "acmelib", created: float | None = None) -> dict[str, object]:
    raw = build_raw_record(
        package=package, version="1.0", role="lib", key=key, endpoint=endpoint, scope="package",
        categories=("runtime", "system", "location", "properties"), started=time.time(), exit_code=0, props={},
    )  # fmt: skip
    if created is not None:
        raw["created"] = created
    return raw


def dead_endpoint() -> str:
    """A URL where nothing listens: a port we bound and released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PLAUSIPY_HOME", str(tmp_path))
    with Ledger() as opened:
        yield opened


def soon(seconds: float = 20.0) -> float:
    return time.monotonic() + seconds


# -- send(): one request, every answer the collector can give ------------------------


@pytest.mark.parametrize(
    ("mode", "outcome", "status"),
    [
        ("accept", "sent", 202),
        ("error500", "retry", 500),
        ("throttle", "retry", 429),
        ("garbage", "retry", 200),
        ("reject", "rejected", 422),
        ("unauthorized", "rejected", 401),
    ],
)
def test_send_turns_each_answer_into_an_outcome(collector: RecordingCollector, mode: str, outcome: str, status: int) -> None:
    collector.mode = mode
    record = {"run_id": "r1", "v": 1}

    result = send(collector.url, KEYS[0], [record], timeout=5)

    assert (result.outcome, result.status) == (outcome, status)
    (request,) = collector.requests
    assert request.path == "/api/v1/records"
    assert request.headers["authorization"] == f"Bearer {KEYS[0]}"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {"records": [record]}


def test_send_keeps_the_collectors_message_and_retry_after(collector: RecordingCollector) -> None:
    collector.mode = "reject"
    assert collector.reject_message in send(collector.url, KEYS[0], [{"run_id": "r"}]).message
    collector.mode = "throttle"
    collector.retry_after = 300
    assert send(collector.url, KEYS[0], [{"run_id": "r"}]).retry_after == 300.0


def test_send_to_nothing_listening_is_a_retry_not_an_exception() -> None:
    result = send(dead_endpoint(), KEYS[0], [{"run_id": "r"}], timeout=5)

    assert result.outcome == "retry" and result.status is None
    assert "connection refused" in result.message


def test_send_to_a_collector_that_never_answers_gives_up_at_the_timeout(collector: RecordingCollector) -> None:
    collector.mode = "hang"

    result = send(collector.url, KEYS[0], [{"run_id": "r"}], timeout=1)

    assert result.outcome == "retry" and "no answer" in result.message


def test_send_with_a_malformed_url_rejects_instead_of_retrying_forever() -> None:
    assert send("not a url", KEYS[0], [{"run_id": "r"}]).outcome == "rejected"


def test_answers_outside_the_contract() -> None:
    assert interpret_answer(202, None, b'{"accepted": 2, "duplicates": 1}').duplicates == 1
    assert interpret_answer(202, None, b"[]").outcome == "retry"
    assert interpret_answer(302, None, b"").outcome == "retry"
    assert interpret_answer(503, "5", b"").outcome == "retry"
    assert interpret_answer(413, None, b'{"detail": "too large"}').message == "HTTP 413 too large"
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("99999999") == 6 * 3600


# -- deliver(): the loop over the ledger ------------------------------------------------


def test_deliver_sends_each_record_once_and_marks_it_sent(collector: RecordingCollector, ledger: Ledger) -> None:
    ledger.queue_records([raw_record(collector.url) for _ in range(3)], SECRET)

    report = deliver(ledger, deadline=soon(), now=time.time())
    again = deliver(ledger, deadline=soon(), now=time.time())

    assert not report.failed and report.requests == 1 and again.requests == 0
    assert sorted(collector.run_ids()) == sorted(row.run_id for row in ledger.records())
    assert {row.status for row in ledger.records()} == {"sent"}
    assert {row.collector for row in ledger.records()} == {collector.url}
    assert report.outcome(collector.url, "acmelib").sent == 3


def test_different_keys_never_share_a_request(collector: RecordingCollector, ledger: Ledger) -> None:
    raws = [raw_record(collector.url, key=key, package=f"pkg{index}") for index, key in enumerate(KEYS) for _ in range(4)]
    ledger.queue_records(raws, SECRET)

    deliver(ledger, deadline=soon(), now=time.time())

    assert len(collector.record_requests) == 3
    for request in collector.record_requests:
        packages = {record["package"] for record in request.body["records"]}  # type: ignore[index]
        assert packages == {f"pkg{KEYS.index(request.key)}"}  # type: ignore[arg-type]
    assert len(collector.records) == 12


def test_a_500_stays_queued_with_backoff_then_goes_once(collector: RecordingCollector, ledger: Ledger) -> None:
    now = time.time()
    ledger.queue_records([raw_record(collector.url, created=now)], SECRET)
    collector.mode = "error500"

    first = deliver(ledger, deadline=soon(), now=now)
    collector.mode = "accept"
    too_early = deliver(ledger, deadline=soon(), now=now + 30)
    later = deliver(ledger, deadline=soon(), now=now + 61)

    assert first.failed and "HTTP 500" in first.outcome(collector.url, "acmelib").queued_reasons[0]
    assert too_early.requests == 0
    assert not later.failed and later.requests == 1
    assert len(collector.record_requests) == 2 and len(collector.records) == 1
    assert ledger.counts()["sent"] == 1


def test_429_is_honoured_for_as_long_as_retry_after_says(collector: RecordingCollector, ledger: Ledger) -> None:
    now = time.time()
    ledger.queue_records([raw_record(collector.url, created=now)], SECRET)
    collector.mode, collector.retry_after = "throttle", 600

    deliver(ledger, deadline=soon(), now=now)
    collector.mode = "accept"

    assert deliver(ledger, deadline=soon(), now=now + 300).requests == 0  # the plain backoff (60 s) would have retried
    assert deliver(ledger, deadline=soon(), now=now + 601).requests == 1
    assert ledger.counts()["sent"] == 1


@pytest.mark.parametrize("mode", ["garbage", "hang"])
def test_garbage_and_silence_leave_records_queued(collector: RecordingCollector, ledger: Ledger, mode: str) -> None:
    ledger.queue_records([raw_record(collector.url)], SECRET)
    collector.mode = mode

    report = deliver(ledger, deadline=soon(2), now=time.time())

    assert report.failed and ledger.counts()["queued"] == 1


def test_a_rejected_batch_is_split_so_only_the_bad_record_is_rejected(collector: RecordingCollector, ledger: Ledger) -> None:
    raws = [raw_record(collector.url, created=time.time() + n) for n in range(5)]
    ledger.queue_records(raws, SECRET)
    bad = str(raws[3]["run_id"])
    collector.poison.add(bad)

    report = deliver(ledger, deadline=soon(), now=time.time())

    assert not report.failed
    statuses = {row.run_id: row.status for row in ledger.records()}
    assert statuses.pop(bad) == "rejected"
    assert set(statuses.values()) == {"sent"}
    rejected = ledger.record(bad)
    assert rejected is not None and collector.reject_message in str(rejected.error)
    assert sorted(collector.run_ids()) == sorted(statuses)


def test_unauthorized_rejects_the_whole_batch_at_once(collector: RecordingCollector, ledger: Ledger) -> None:
    ledger.queue_records([raw_record(collector.url) for _ in range(4)], SECRET)
    collector.mode = "unauthorized"

    report = deliver(ledger, deadline=soon(), now=time.time())

    assert report.requests == 1 and ledger.counts()["rejected"] == 4
    assert report.outcome(collector.url, "acmelib").rejected_messages == ["HTTP 401 unknown key"]


def test_a_failing_collector_does_not_hold_up_another(collector: RecordingCollector, ledger: Ledger) -> None:
    dead = dead_endpoint()
    ledger.queue_records([raw_record(dead), raw_record(dead, key=KEYS[1]), raw_record(collector.url)], SECRET)

    report = deliver(ledger, deadline=soon(), now=time.time())

    assert report.requests == 2  # the dead collector is tried once, not once per key
    assert report.outcome(collector.url, "acmelib").sent == 1
    assert report.outcome(dead, "acmelib").queued == 2


def test_endpoint_override_reaches_the_collector_whatever_the_record_says(collector: RecordingCollector, ledger: Ledger) -> None:
    ledger.queue_records([raw_record(dead_endpoint())], SECRET)

    deliver(ledger, deadline=soon(), now=time.time(), endpoint_override=collector.url)

    (row,) = ledger.records()
    assert (row.status, row.collector) == ("sent", collector.url)


def test_nothing_starts_after_the_deadline(collector: RecordingCollector, ledger: Ledger) -> None:
    ledger.queue_records([raw_record(collector.url)], SECRET)

    report = deliver(ledger, deadline=time.monotonic(), now=time.time())

    assert collector.requests == [] and report.failed
    assert "out of time" in report.outcome(collector.url, "acmelib").queued_reasons[0]


def test_records_older_than_30_days_expire_instead_of_being_sent(collector: RecordingCollector, ledger: Ledger) -> None:
    created = time.time()
    ledger.queue_records([raw_record(collector.url, created=created)], SECRET)

    report = deliver(ledger, deadline=soon(), now=created + 31 * 24 * 3600)

    assert report.expired == 1 and collector.requests == []
    assert ledger.counts()["expired"] == 1


def test_flush_style_delivery_ignores_the_backoff(collector: RecordingCollector, ledger: Ledger) -> None:
    now = time.time()
    ledger.queue_records([raw_record(collector.url, created=now)], SECRET)
    collector.mode = "error500"
    deliver(ledger, deadline=soon(), now=now)
    collector.mode = "accept"

    report = deliver(ledger, deadline=soon(), now=now + 1, ignore_backoff=True)

    assert report.requests == 1 and ledger.counts()["sent"] == 1
