"""``POST /api/v1/records`` and ``POST /api/v1/deletions`` (DESIGN.md §5).

A request goes through the cheapest checks first, so abuse costs little:

1. the client address's token bucket (memory only; the address is never stored or logged),
2. the package key (``Authorization: Bearer <key>``) and that key's bucket,
3. the body: ≤ 256 KiB on the wire and after gzip, valid JSON, the schema
   (Pydantic models below, which also describe the bodies in the OpenAPI schema),
4. the batch: every record of the key's package, every hour within the last
   31 days and at most 1 hour ahead,
5. one transaction: insert (idempotent on ``(package, run_id)``), mark the days dirty.

Any failure rejects the whole request before anything is written::

    POST /api/v1/records   {"records": [{...}]}   -> 202 {"accepted": 1, "duplicates": 0}
    POST /api/v1/deletions {"uids": ["3f…"]}      -> 200 {"deleted": 4}
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StringConstraints, ValidationError

from pydantic_core import to_json

from plausipy.server._errors import (
    BadRequest,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    Unprocessable,
    UnsupportedMediaType,
)

if TYPE_CHECKING:
    from plausipy.server._storage import Storage, Transaction

__all__ = [
    "DeletionRequest",
    "IngestBatch",
    "KeyCache",
    "RateLimiter",
    "WireRecord",
    "batch_insert",
    "build_router",
    "canonical_package_name",
    "deletion",
]

MAX_RECORDS = 100
MAX_BODY_BYTES = 256 * 1024
MAX_DELETION_ITEMS = 1000
MAX_AGE = timedelta(days=31)
MAX_AHEAD = timedelta(hours=1)

# No control characters: they have no business in a version or an OS name,
# and PostgreSQL refuses NUL in text.
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
_INT64 = 2**63 - 1

RunId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")]
Uid = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=_PRINTABLE)]
PropName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,40}$")]
PropValue = Union[
    StrictBool,
    Annotated[StrictInt, Field(ge=-_INT64, le=_INT64)],
    Annotated[float, Field(strict=True, allow_inf_nan=False)],
    Annotated[str, StringConstraints(max_length=200, pattern=_PRINTABLE)],
]
Count = Annotated[StrictInt, Field(ge=0, le=2**53)]


class WireRecord(BaseModel):
    """One record, wire schema version 1 (DESIGN.md §4); nullable fields may be omitted."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    v: Literal[1]
    run_id: RunId = Field(description="uuid4, random per (process, package)")
    scope: Literal["user", "package", "anonymous"]
    uid: Uid = Field(description="32 lowercase hex; stored only as sha256(uid)")
    package: Annotated[str, StringConstraints(max_length=100, pattern=r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")]
    version: Text
    role: Literal["app", "lib"]
    hour: Annotated[str, StringConstraints(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:00:00Z$")] = Field(
        description="UTC, truncated to the hour: 2026-01-02T03:00:00Z"
    )
    duration_ms: Count | None = None
    peak_rss_kib: Count | None = None
    exit_code: Annotated[StrictInt, Field(ge=-(2**31), le=2**32)] | None = None
    os: Text | None = None
    arch: Text | None = None
    python: Text | None = None
    implementation: Text | None = None
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] | None = None
    region: Text | None = None
    timezone: Annotated[str, StringConstraints(max_length=64, pattern=r"^[A-Za-z0-9_+/-]+$")] | None = None
    props: Annotated[dict[PropName, PropValue], Field(max_length=20)] | None = None


class IngestBatch(BaseModel):
    """The body of ``POST /api/v1/records``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    records: Annotated[list[WireRecord], Field(max_length=MAX_RECORDS)]


class IngestResult(BaseModel):
    """``202``: how many records were new and how many had been received before."""

    accepted: int
    duplicates: int


class DeletionRequest(BaseModel):
    """The body of ``POST /api/v1/deletions``: rows matching any run_id or any uid go."""

    model_config = ConfigDict(extra="forbid", strict=True)

    run_ids: Annotated[list[RunId], Field(max_length=MAX_DELETION_ITEMS)] = []
    uids: Annotated[list[Uid], Field(max_length=MAX_DELETION_ITEMS)] = []


class DeletionResult(BaseModel):
    """``200``: how many rows were deleted."""

    deleted: int


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: one sentence naming what is wrong."""

    error: str


# --- package names and keys --------------------------------------------------------------


def canonical_package_name(name: str) -> str:
    """PEP 503 normalisation: ``Acme_Lib`` -> ``acme-lib``."""
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def _looks_like_key(key: str) -> bool:
    return len(key) == 32 and key.isascii() and key.isalnum() and key[0].isalpha()


@dataclass(frozen=True)
class KnownPackage:
    """What a valid key resolves to."""

    id: int
    name: str


class KeyCache:
    """Key -> package, remembered for a few seconds so ingest costs no extra read.

    Rotating or deleting a key calls :meth:`forget` in this process; other
    workers notice within ``ttl_seconds``.
    """

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl_seconds = ttl_seconds
        self._entries: dict[str, tuple[KnownPackage, float]] = {}

    def cached(self, key: str) -> KnownPackage | None:
        """The package for ``key`` if it was seen recently, without touching the database."""
        entry = self._entries.get(key)
        return entry[0] if entry is not None and entry[1] > time.monotonic() else None

    def lookup(self, storage: Storage, key: str) -> KnownPackage | None:
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and entry[1] > now:
            return entry[0]
        rows = storage.read("SELECT id, name FROM packages WHERE key = ?", (key,))
        if not rows:
            self._entries.pop(key, None)
            return None
        package = KnownPackage(int(rows[0][0]), str(rows[0][1]))
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[key] = (package, now + self.ttl_seconds)
        return package

    def forget(self, key: str | None = None) -> None:
        if key is None:
            self._entries.clear()
        else:
            self._entries.pop(key, None)


# --- rate limiting ------------------------------------------------------------------------


class RateLimiter:
    """Token buckets by identity (a key, or a client address), in memory only.

    ``rate`` tokens per second refill a bucket holding at most ``burst``.
    Idle buckets are full buckets, so forgetting the least recently used ones
    when there are too many loses nothing::

        limiter = RateLimiter(rate=10, burst=20)
        limiter.wait_time("k") -> 0.0 (allowed), later maybe 0.1 (retry after)
    """

    def __init__(self, rate: float, burst: float, *, max_identities: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_identities = max_identities
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def wait_time(self, identity: str, cost: float = 1.0) -> float:
        """Take ``cost`` tokens and return 0, or take nothing and return the seconds to wait."""
        now = time.monotonic()
        tokens, updated = self._buckets.pop(identity, (self.burst, now))
        tokens = min(self.burst, tokens + (now - updated) * self.rate)
        if tokens >= cost:
            self._remember(identity, tokens - cost, now)
            return 0.0
        self._remember(identity, tokens, now)
        return (cost - tokens) / self.rate if self.rate > 0 else 3600.0

    def _remember(self, identity: str, tokens: float, now: float) -> None:
        self._buckets[identity] = (tokens, now)
        while len(self._buckets) > self.max_identities:
            self._buckets.popitem(last=False)

    def check(self, identity: str, what: str) -> None:
        """Raise :class:`TooManyRequests` with Retry-After when the bucket is empty."""
        wait = self.wait_time(identity)
        if wait > 0:
            raise TooManyRequests(f"too many requests for this {what}; retry later", retry_after=max(1, math.ceil(wait)))


# --- the body -----------------------------------------------------------------------------


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, at most ``limit`` bytes on the wire and after gzip."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is larger than {limit // 1024} KiB")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", ""):
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; use gzip or none")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than {limit // 1024} KiB")
        chunks.append(chunk)
    body = b"".join(chunks)
    return _gunzip(body, limit) if encoding == "gzip" else body


def _gunzip(body: bytes, limit: int) -> bytes:
    # Inflate at most limit + 1 bytes: a gzip bomb stops here, not in memory.
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"the body is not valid gzip ({exc})") from exc
    if len(data) > limit:
        raise PayloadTooLarge(f"the body is larger than {limit // 1024} KiB once decompressed")
    if not inflater.eof:
        raise BadRequest("the gzip body is truncated")
    return data


def _describe(error: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in error.get("loc", ()))
    return f"{location or 'body'}: {error.get('msg', 'invalid')}"


def parse_body(model: type[BaseModel], body: bytes) -> Any:
    """Validate JSON bytes against ``model``; 400 for bad JSON, 413 for too many items, else 422."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(error["type"] == "json_invalid" for error in errors):
            raise BadRequest(f"the body is not valid JSON ({errors[0]['msg']})") from None
        if any(error["type"] == "too_long" and len(error["loc"]) == 1 for error in errors):
            field = errors[0]["loc"][0]
            raise PayloadTooLarge(f"{field}: too many items (at most {MAX_RECORDS if field == 'records' else MAX_DELETION_ITEMS})") from None
        message = "; ".join(_describe(error) for error in errors[:3])  # type: ignore[arg-type]
        if len(errors) > 3:
            message += f" (and {len(errors) - 3} more)"
        raise Unprocessable(message) from None


# --- checks a schema cannot express -------------------------------------------------------


def check_batch(records: Iterable[WireRecord], package: KnownPackage, now: datetime) -> None:
    """Every record belongs to the key's package and started in the accepted window."""
    checked_hours: set[str] = set()
    for index, record in enumerate(records):
        if record.package != package.name and canonical_package_name(record.package) != package.name:
            raise Unprocessable(f"records.{index}.package: {record.package!r} does not belong to this key")
        if record.hour in checked_hours:
            continue
        _check_hour(record.hour, index, now)
        checked_hours.add(record.hour)


def _check_hour(hour: str, index: int, now: datetime) -> None:
    # The schema fixed the shape (2026-01-02T03:00:00Z); datetime() checks
    # that the date is real, in a tenth of strptime's time.
    try:
        started = datetime(int(hour[0:4]), int(hour[5:7]), int(hour[8:10]), int(hour[11:13]), tzinfo=timezone.utc)
    except ValueError:
        raise Unprocessable(f"records.{index}.hour: {hour!r} is not a real date and hour") from None
    if started < now - MAX_AGE:
        raise Unprocessable(f"records.{index}.hour: {hour} is older than 31 days")
    if started > now + MAX_AHEAD:
        raise Unprocessable(f"records.{index}.hour: {hour} is more than 1 hour in the future")


# --- writing ------------------------------------------------------------------------------

_RECORD_COLUMNS = (
    "package_id", "run_id", "uid_hash", "scope", "version", "role", "hour", "day", "duration_ms",
    "peak_rss_kib", "exit_code", "os", "arch", "python", "implementation", "country", "region",
    "timezone", "props", "received_at",
)  # fmt: skip
# One row per statement, run by executemany: the statement stays short, so
# both drivers prepare it once. (On PostgreSQL the former multi-row VALUES
# form had 2,000 placeholders for 100 records, longer than psycopg caches, and
# psycopg re-parsed it in Python on every batch: about 30 ms of CPU, more than
# everything else a request costs.)
_INSERT_RECORD = (
    f"INSERT INTO records ({', '.join(_RECORD_COLUMNS)}) VALUES ({', '.join('?' * len(_RECORD_COLUMNS))})"
    " ON CONFLICT (package_id, run_id) DO NOTHING"
)


def _uid_hash(uid: str) -> str:
    return hashlib.sha256(uid.encode("ascii")).hexdigest()


def _row(package_id: int, record: WireRecord, received_at: str) -> tuple[Any, ...]:
    # pydantic-core's serializer: the props are validated scalars, and it is
    # ten times quicker than json.dumps on the hot path.
    props = to_json(record.props).decode() if record.props is not None else None
    return (
        package_id, record.run_id, _uid_hash(record.uid), record.scope, record.version, record.role,
        record.hour, record.hour[:10], record.duration_ms, record.peak_rss_kib, record.exit_code,
        record.os, record.arch, record.python, record.implementation, record.country, record.region,
        record.timezone, props, received_at,
    )  # fmt: skip


def mark_days_dirty(tx: Any, package_id: int, days: Iterable[str]) -> None:
    """Tell the rollups which (package, day) pairs changed; same transaction as the change."""
    for day in sorted(set(days)):
        tx.execute("INSERT INTO dirty_days (package_id, day) VALUES (?, ?) ON CONFLICT DO NOTHING", (package_id, day))


# One record in one statement (PostgreSQL): the row, and its day marked dirty
# if the row was new. The statement is atomic, so it needs no BEGIN/COMMIT.
_INSERT_ONE_RECORD = (
    f"WITH new AS ({_INSERT_RECORD} RETURNING day),"
    " marked AS (INSERT INTO dirty_days (package_id, day) SELECT ?, day FROM new ON CONFLICT DO NOTHING)"
    " SELECT count(*) FROM new"
)


def batch_insert(
    package_id: int, records: list[WireRecord], dialect: str
) -> tuple[Callable[[Transaction], tuple[int, int]], bool]:
    """The work that stores a validated batch, for :meth:`Storage.submit`: ``work(tx) -> (accepted, duplicates)``.

    Returns the work and whether it is one statement (``submit(work, one_statement=…)``):
    a single record on PostgreSQL. The rows are built here, by the caller, so
    the writer spends its turn on the database alone.
    """
    from plausipy.server._storage import utc_now_text

    received_at = utc_now_text()
    if dialect == "postgresql" and len(records) == 1:
        params = (*_row(package_id, records[0], received_at), package_id)

        def insert_one(tx: Transaction) -> tuple[int, int]:
            accepted = int(tx.execute(_INSERT_ONE_RECORD, params).fetchone()[0])
            return accepted, 1 - accepted

        return insert_one, True

    # In run_id order: two transactions inserting the same records (a retry
    # racing the original) then take the keys in one order, not a deadlock.
    rows = sorted((_row(package_id, record, received_at) for record in records), key=lambda row: row[1])
    days = {record.hour[:10] for record in records}

    def insert(tx: Transaction) -> tuple[int, int]:
        # Both drivers sum the rows each statement inserted: a conflict adds 0.
        accepted = int(tx.executemany(_INSERT_RECORD, rows).rowcount)
        mark_days_dirty(tx, package_id, days)
        return accepted, len(rows) - accepted

    return insert, False


def deletion(package_id: int, run_ids: list[str], uids: list[str]) -> Callable[[Transaction], int]:
    """The work that deletes the package's rows with a listed run_id or sha256(uid): ``work(tx) -> deleted``."""
    hashes = sorted({_uid_hash(uid) for uid in uids})
    run_ids = sorted(set(run_ids))
    conditions = []
    params: list[Any] = [package_id]
    if run_ids:
        conditions.append(f"run_id IN ({', '.join('?' * len(run_ids))})")
        params.extend(run_ids)
    if hashes:
        conditions.append(f"uid_hash IN ({', '.join('?' * len(hashes))})")
        params.extend(hashes)
    sql = f"DELETE FROM records WHERE package_id = ? AND ({' OR '.join(conditions)}) RETURNING day"

    def delete(tx: Transaction) -> int:
        days = [str(row[0]) for row in tx.execute(sql, params).fetchall()]
        mark_days_dirty(tx, package_id, days)
        return len(days)

    return delete


# --- the routes ---------------------------------------------------------------------------


def _bearer_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("missing package key: send 'Authorization: Bearer <key>'")
    return key.strip()


def _client_identity(request: Request) -> str:
    # Used as a dictionary key in memory, and nowhere else.
    return request.client.host if request.client else "unknown"


async def _authorize(request: Request) -> KnownPackage:
    from starlette.concurrency import run_in_threadpool

    state = request.app.state
    state.address_limiter.check(_client_identity(request), "address")
    key = _bearer_key(request)
    if not _looks_like_key(key):
        raise Unauthorized("unknown package key")
    # A cached key costs no thread hop; a new one is read in the thread pool.
    package = state.key_cache.cached(key)
    if package is None:
        package = await run_in_threadpool(state.key_cache.lookup, state.storage, key)
    if package is None:
        raise Unauthorized("unknown package key")
    state.key_limiter.check(key, "package key")
    return package


def _now() -> datetime:
    return datetime.now(timezone.utc)


def build_router() -> APIRouter:
    """The two public API routes; bodies are read by hand for size limits and gzip."""
    from starlette.responses import JSONResponse

    router = APIRouter(tags=["ingest"])
    errors: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorBody, "description": description}
        for status, description in (
            (400, "Malformed JSON or gzip"),
            (401, "Unknown or missing package key"),
            (413, "Body over 256 KiB or more than 100 records"),
            (415, "Unsupported Content-Encoding"),
            (422, "Schema error; the message names the field"),
            (429, "Rate limited; see Retry-After"),
            (503, "Database unavailable; see Retry-After"),
        )
    }

    @router.post(
        "/api/v1/records",
        status_code=202,
        response_model=IngestResult,
        responses=errors,
        openapi_extra=_body_schema("IngestBatch"),
        summary="Ingest a batch of records",
    )
    async def ingest_records(request: Request) -> JSONResponse:
        package = await _authorize(request)
        batch: IngestBatch = parse_body(IngestBatch, await read_body(request))
        check_batch(batch.records, package, _now())
        # A batch is all or nothing; concurrent batches may share one commit.
        # The writer's future, not a thread per request: the hop through
        # the thread pool cost more CPU than a batch of one record.
        accepted = duplicates = 0
        if batch.records:
            storage = request.app.state.storage
            work, one_statement = batch_insert(package.id, batch.records, storage.dialect)
            accepted, duplicates = await asyncio.wrap_future(storage.submit(work, one_statement=one_statement))
        return JSONResponse({"accepted": accepted, "duplicates": duplicates}, status_code=202)

    @router.post(
        "/api/v1/deletions",
        response_model=DeletionResult,
        responses=errors,
        openapi_extra=_body_schema("DeletionRequest"),
        summary="Delete records by run_id or by uid",
    )
    async def delete(request: Request) -> JSONResponse:
        package = await _authorize(request)
        body: DeletionRequest = parse_body(DeletionRequest, await read_body(request))
        deleted = 0
        if body.run_ids or body.uids:
            work = deletion(package.id, body.run_ids, body.uids)
            deleted = await asyncio.wrap_future(request.app.state.storage.submit(work))
        return JSONResponse({"deleted": deleted})

    return router


def _body_schema(model_name: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model_name}"}}},
        },
        "security": [{"PackageKey": []}],
    }


def openapi_components() -> dict[str, Any]:
    """Schemas of the hand-read bodies and the bearer scheme, merged into the app's OpenAPI."""
    schemas: dict[str, Any] = {}
    for model in (IngestBatch, DeletionRequest):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return {
        "schemas": schemas,
        "securitySchemes": {"PackageKey": {"type": "http", "scheme": "bearer", "description": "the package key"}},
    }

