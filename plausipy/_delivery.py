"""Delivery: the one seam to a collector, and the loop that drains the ledger.

:func:`send` posts one batch to ``<endpoint>/api/v1/records`` (DESIGN.md §5)
and turns whatever happens into a :class:`SendResult`, never an exception:

- ``sent``: 2xx with the ``{"accepted": n, "duplicates": d}`` answer;
- ``rejected``: 400, 401, 413, 422 and any other 4xx except 429 — the
  collector will never take these records; its message is kept;
- ``retry``: 429 (with ``Retry-After``), 5xx, redirects, an answer that is
  not the contract's JSON, timeouts and network errors — try again later.

:func:`deliver` is the loop shared by the detached sender and
``plausipy flush``: expire old records, take the due batches from the ledger,
send them while time remains, and record each outcome in the ledger.

>>> with Ledger.open() as ledger:  # doctest: +SKIP
...     report = deliver(ledger, deadline=time.monotonic() + 25, now=time.time())
>>> report.failed
False
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from plausipy._ledger import Batch, Ledger

__all__ = ["DeliveryReport", "PackageOutcome", "SendResult", "deliver", "send"]

#: No single request waits longer than this, whatever the deadline allows.
REQUEST_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5.0
#: Not worth starting a request with less time than this left.
MINIMUM_REQUEST_SECONDS = 0.5
#: A Retry-After longer than the longest backoff is treated as the longest backoff.
MAX_RETRY_AFTER_SECONDS = 6 * 3600.0
_MAX_ANSWER_BYTES = 64 * 1024
_SPLITTABLE = frozenset({400, 413, 422})


@dataclass(frozen=True)
class SendResult:
    """What became of one request: ``outcome`` is ``sent``, ``rejected`` or ``retry``."""

    outcome: str
    status: int | None
    message: str
    retry_after: float | None = None
    accepted: int = 0
    duplicates: int = 0


def send(endpoint: str, key: str, records: list[dict[str, object]], *, timeout: float = REQUEST_TIMEOUT_SECONDS) -> SendResult:
    """POST ``records`` to ``endpoint`` with ``key``; never raises.

    ``timeout`` bounds the connection and each wait for the collector.

    >>> send("http://127.0.0.1:8000", "sayrrCCNbXY70ci6xHn8qlYwKyAUawgp", [record])  # doctest: +SKIP
    SendResult(outcome='sent', status=202, message='accepted 1, duplicates 0', ...)
    """
    import requests

    from plausipy import __version__

    url = endpoint.rstrip("/") + "/api/v1/records"
    body = json.dumps({"records": records}, separators=(",", ":")).encode("utf-8")
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
        "User-Agent": f"plausipy/{__version__}",
    }
    try:
        with requests.post(
            url,
            data=body,
            headers=headers,
            timeout=(min(CONNECT_TIMEOUT_SECONDS, timeout), timeout),
            allow_redirects=False,
            stream=True,
        ) as response:
            answer = response.raw.read(_MAX_ANSWER_BYTES, decode_content=True)
            return interpret_answer(response.status_code, response.headers.get("Retry-After"), answer)
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema) as exc:
        return SendResult("rejected", None, f"invalid collector URL {endpoint!r}: {exc}")
    except requests.exceptions.Timeout:
        return SendResult("retry", None, f"no answer within {timeout:.0f} s")
    except requests.exceptions.ConnectionError as exc:
        return SendResult("retry", None, f"cannot reach the collector ({_short_reason(exc)})")
    except (requests.exceptions.RequestException, OSError, ValueError) as exc:
        return SendResult("retry", None, f"network error ({type(exc).__name__})")


def interpret_answer(status: int, retry_after: str | None, answer: bytes) -> SendResult:
    """Turn a collector's HTTP answer into a :class:`SendResult` (DESIGN.md §5)."""
    document = _json_object(answer)
    message = _error_message(document, answer)
    if 200 <= status < 300:
        accepted = document.get("accepted") if document else None
        if not isinstance(accepted, int):
            return SendResult("retry", status, f"HTTP {status} without the collector's JSON answer")
        duplicates = document.get("duplicates") if document else 0
        duplicates = duplicates if isinstance(duplicates, int) else 0
        return SendResult("sent", status, f"accepted {accepted}, duplicates {duplicates}", None, accepted, duplicates)
    if status == 429:
        wait = parse_retry_after(retry_after)
        return SendResult("retry", status, f"HTTP 429 {message or 'too many requests'}".strip(), wait)
    if 400 <= status < 500:
        return SendResult("rejected", status, f"HTTP {status} {message}".strip())
    if 300 <= status < 400:
        return SendResult("retry", status, f"HTTP {status} redirect; a collector URL should not redirect")
    return SendResult("retry", status, f"HTTP {status} {message}".strip())


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or None.

    >>> parse_retry_after("120")
    120.0
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


@dataclass
class PackageOutcome:
    """What happened to one package's records at one collector in one delivery."""

    endpoint: str
    package: str
    sent: int = 0
    duplicates: int = 0
    rejected: int = 0
    queued: int = 0
    rejected_messages: list[str] = field(default_factory=list)
    queued_reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready view."""
        return {
            "endpoint": self.endpoint,
            "package": self.package,
            "sent": self.sent,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "queued": self.queued,
            "rejected_messages": self.rejected_messages,
            "queued_reasons": self.queued_reasons,
        }


@dataclass
class DeliveryReport:
    """Everything one :func:`deliver` call did, per (collector, package)."""

    outcomes: dict[tuple[str, str], PackageOutcome] = field(default_factory=dict)
    expired: int = 0
    requests: int = 0

    @property
    def failed(self) -> bool:
        """True when a record stays queued because of the network, a 5xx, a 429 or lack of time."""
        return any(outcome.queued for outcome in self.outcomes.values())

    def outcome(self, endpoint: str, package: str) -> PackageOutcome:
        """The (created on first use) outcome of ``package`` at ``endpoint``."""
        key = (endpoint, package)
        if key not in self.outcomes:
            self.outcomes[key] = PackageOutcome(endpoint, package)
        return self.outcomes[key]


def deliver(
    ledger: Ledger,
    *,
    deadline: float,
    now: float,
    endpoint_override: str | None = None,
    ignore_backoff: bool = False,
    log: Callable[[str], None] | None = None,
) -> DeliveryReport:
    """Send every due queued record while time remains; return what happened.

    ``deadline`` is a :func:`time.monotonic` value: no request starts after
    it and none waits beyond it. ``now`` is the wall clock (seconds since the
    epoch) used for expiry and backoff, passed in so tests can move it.
    ``ignore_backoff`` sends to collectors that are backing off too (``plausipy
    flush``: the user asked for it). A collector that fails is not tried again
    in the same call.
    """
    started = time.monotonic()

    def clock() -> float:
        return now + (time.monotonic() - started)

    report = DeliveryReport()
    report.expired = ledger.expire_old(now)
    pending = deque(ledger.due_batches(now, endpoint_override=endpoint_override, ignore_backoff=ignore_backoff))
    unreachable: dict[str, str] = {}
    while pending:
        batch = pending.popleft()
        remaining = deadline - time.monotonic()
        if batch.endpoint in unreachable:
            _count_queued(report, batch, f"not tried again after: {unreachable[batch.endpoint]}")
            continue
        if remaining < MINIMUM_REQUEST_SECONDS:
            _count_queued(report, batch, "out of time; sent on a later run")
            continue
        previous_backoff = ledger.mark_in_flight(batch.endpoint, now=clock())
        result = send(batch.endpoint, batch.key, batch.bodies, timeout=min(remaining, REQUEST_TIMEOUT_SECONDS))
        report.requests += 1
        if log is not None:
            log(f"{batch.endpoint} {len(batch.run_ids)} record(s) of {', '.join(sorted(set(batch.packages)))}: {result.outcome} {result.message}")
        if result.outcome == "rejected":
            # A refusal says nothing about the collector's health.
            ledger.restore_backoff(batch.endpoint, previous_backoff)
        if result.outcome == "sent":
            ledger.mark_sent(batch.run_ids, collector=batch.endpoint, now=clock())
            _count(report, batch, "sent")
            report.outcome(batch.endpoint, batch.packages[0]).duplicates += result.duplicates
        elif result.outcome == "rejected" and result.status in _SPLITTABLE and len(batch.run_ids) > 1:
            # One bad record must not take its neighbours down with it: halve until it stands alone.
            first, second = batch.split()
            pending.extendleft((second, first))
        elif result.outcome == "rejected":
            ledger.mark_rejected(batch.run_ids, collector=batch.endpoint, error=result.message, now=clock())
            _count(report, batch, "rejected", result.message)
        else:
            ledger.mark_retry(
                batch.run_ids, collector=batch.endpoint, error=result.message, now=clock(), retry_after=result.retry_after
            )
            unreachable[batch.endpoint] = result.message
            _count_queued(report, batch, result.message)
    # Deletion requests wait in the same ledger and go out on the same occasions (issue 3).
    from plausipy._deletion import retry_pending_quietly

    retry_pending_quietly(ledger, deadline=deadline, now=clock())
    return report


def _count(report: DeliveryReport, batch: Batch, what: str, message: str | None = None) -> None:
    for package in batch.packages:
        outcome = report.outcome(batch.endpoint, package)
        setattr(outcome, what, getattr(outcome, what) + 1)
        if message and what == "rejected" and message not in outcome.rejected_messages:
            outcome.rejected_messages.append(message)


def _count_queued(report: DeliveryReport, batch: Batch, reason: str) -> None:
    for package in batch.packages:
        outcome = report.outcome(batch.endpoint, package)
        outcome.queued += 1
        if reason not in outcome.queued_reasons:
            outcome.queued_reasons.append(reason)


def _json_object(answer: bytes) -> dict[str, object] | None:
    try:
        document = json.loads(answer.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def _error_message(document: dict[str, object] | None, answer: bytes) -> str:
    if document is not None:
        for name in ("error", "detail", "message"):
            value = document.get(name)
            if value:
                return value if isinstance(value, str) else json.dumps(value)[:300]
        return ""
    text = answer.decode("utf-8", "replace").strip()
    return text[:200]


def _short_reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "Temporary failure in name resolution",
                   "Network is unreachable", "timed out", "Connection reset", "Remote end closed"):  # fmt: skip
        if marker in text:
            return marker.lower()
    return type(exc).__name__
