"""A recording collector for the tests: real HTTP on 127.0.0.1, in a thread.

It speaks DESIGN.md §5 well enough for the client and remembers every
request. ``mode`` chooses how it answers ``POST /api/v1/records``:

=============== =====================================================
``accept``       202 ``{"accepted", "duplicates"}``, idempotent on (key, run_id)
``error500``     500 ``{"error"}``
``throttle``     429 ``{"error"}`` with ``Retry-After: <retry_after>``
``garbage``      200 with a body that is not JSON
``reject``       422 ``{"error": <reject_message>}``
``unauthorized`` 401 ``{"error": "unknown key"}``
``hang``         reads the request and never answers (until :meth:`stop`)
``drip``         starts a 202 answer and sends one header line a second,
                 so no per-read timeout ever fires (until :meth:`stop`)
=============== =====================================================

In ``accept`` mode a batch holding a ``run_id`` listed in ``poison`` gets
422, so tests can see one bad record refused without its neighbours.
``POST /api/v1/deletions`` is recorded too and answers ``{"deleted": n}``.

>>> collector = RecordingCollector().start()  # doctest: +SKIP
>>> collector.url
'http://127.0.0.1:41234'
>>> collector.stop()
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["MODES", "RecordingCollector", "RecordedRequest"]

MODES = ("accept", "error500", "throttle", "garbage", "reject", "unauthorized", "hang", "drip")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it arrived."""

    method: str
    path: str
    headers: dict[str, str]
    body: object
    raw: bytes

    @property
    def key(self) -> str | None:
        """The bearer key, or None."""
        value = self.headers.get("authorization", "")
        return value[len("Bearer ") :] if value.startswith("Bearer ") else None


class RecordingCollector:
    """A collector on a free port of 127.0.0.1 that records what it is sent."""

    def __init__(self, mode: str = "accept", *, retry_after: int = 120, reject_message: str = "record 0: field 'hour' is in the future") -> None:
        self.mode = mode
        self.retry_after = retry_after
        self.reject_message = reject_message
        self.requests: list[RecordedRequest] = []
        self.records: list[dict[str, object]] = []
        self.deletions: list[dict[str, object]] = []
        #: Status for ``/api/v1/deletions``: 200 answers ``{"deleted": n}``, anything else ``{"error"}``.
        self.deletion_status = 200
        self.duplicates = 0
        self.poison: set[str] = set()
        self._seen: set[tuple[str | None, object]] = set()
        self._lock = threading.Lock()
        self._release_hung = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        if self._server is None:
            raise RuntimeError("the collector is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def record_requests(self) -> list[RecordedRequest]:
        """The requests to ``/api/v1/records``, in order."""
        return [request for request in self.requests if request.path == "/api/v1/records"]

    def start(self, port: int = 0) -> RecordingCollector:
        """Listen on 127.0.0.1 (``port`` 0: a free one) and serve in a daemon thread."""
        self._release_hung.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="recording-collector", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release hung requests and close the socket."""
        self._release_hung.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> RecordingCollector:
        return self.start() if self._server is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every request and record; back to ``accept``."""
        with self._lock:
            self.mode = "accept"
            self.requests.clear()
            self.records.clear()
            self.deletions.clear()
            self.deletion_status = 200
            self.poison.clear()
            self.duplicates = 0
            self._seen.clear()

    def sent_run_ids(self) -> list[str]:
        """The ``run_id`` of every record in every request to ``/api/v1/records``, whatever the answer."""
        return [
            str(record.get("run_id"))
            for request in self.record_requests
            if isinstance(request.body, dict)
            for record in request.body.get("records") or []
            if isinstance(record, dict)
        ]

    def run_ids(self) -> list[str]:
        """The ``run_id`` of every accepted record, in arrival order."""
        return [str(record.get("run_id")) for record in self.records]

    # -- called by the handler -----------------------------------------------------

    def _remember(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _accept(self, key: str | None, records: list[object]) -> tuple[int, int]:
        accepted = duplicates = 0
        with self._lock:
            for record in records:
                if not isinstance(record, dict):
                    continue
                identity = (key, record.get("run_id"))
                if identity in self._seen:
                    duplicates += 1
                    continue
                self._seen.add(identity)
                self.records.append(record)
                accepted += 1
            self.duplicates += duplicates
        return accepted, duplicates

    def _wait_until_stopped(self) -> None:
        self._release_hung.wait()


def _handler_for(collector: RecordingCollector) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
            pass  # keep test output clean

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self._recorded(b"")
            self._answer(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            request = self._recorded(raw)
            if self.path == "/api/v1/deletions":
                self._deletion(request)
            elif self.path == "/api/v1/records":
                self._records(request)
            else:
                self._answer(404, {"error": "not found"})

        def _recorded(self, raw: bytes) -> RecordedRequest:
            try:
                body: object = json.loads(raw) if raw else None
            except ValueError:
                body = None
            request = RecordedRequest(
                self.command, self.path, {name.lower(): value for name, value in self.headers.items()}, body, raw
            )
            collector._remember(request)
            return request

        def _records(self, request: RecordedRequest) -> None:
            mode = collector.mode
            if mode == "hang":
                collector._wait_until_stopped()
                self.close_connection = True
                return
            if mode == "drip":
                self._drip()
                return
            if mode == "error500":
                self._answer(500, {"error": "internal error"})
            elif mode == "throttle":
                self._answer(429, {"error": "slow down"}, {"Retry-After": str(collector.retry_after)})
            elif mode == "garbage":
                self._answer_bytes(200, b"<html>captive portal</html>", "text/html")
            elif mode == "reject":
                self._answer(422, {"error": collector.reject_message})
            elif mode == "unauthorized":
                self._answer(401, {"error": "unknown key"})
            else:
                records = request.body.get("records") if isinstance(request.body, dict) else None
                if not isinstance(records, list):
                    self._answer(400, {"error": "body must be {\"records\": [...]}"})
                    return
                poisoned = [str(record.get("run_id")) for record in records if isinstance(record, dict) and record.get("run_id") in collector.poison]
                if poisoned:
                    self._answer(422, {"error": f"record {poisoned[0]}: {collector.reject_message}"})
                    return
                accepted, duplicates = collector._accept(request.key, records)
                self._answer(202, {"accepted": accepted, "duplicates": duplicates})

        def _drip(self) -> None:
            self.close_connection = True
            try:
                self.wfile.write(b"HTTP/1.1 202 Accepted\r\n")
                while not collector._release_hung.wait(1.0):
                    self.wfile.write(b"X-Still-Thinking: yes\r\n")
                    self.wfile.flush()
            except OSError:
                pass  # the client gave up

        def _deletion(self, request: RecordedRequest) -> None:
            body = request.body if isinstance(request.body, dict) else {}
            with collector._lock:
                collector.deletions.append(body)
            run_ids = body.get("run_ids") if isinstance(body.get("run_ids"), list) else []
            if collector.deletion_status != 200:
                self._answer(collector.deletion_status, {"error": "deletion refused by the test"})
                return
            self._answer(200, {"deleted": len(run_ids)})  # type: ignore[arg-type]

        def _answer(self, status: int, document: object, headers: dict[str, str] | None = None) -> None:
            self._answer_bytes(status, json.dumps(document).encode("utf-8"), "application/json", headers)

        def _answer_bytes(self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

    return Handler
