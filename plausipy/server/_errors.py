"""One exception tree for the collector, each error carrying its HTTP status.

::

    CollectorError (500)
     ├── BadRequest (400)            malformed JSON, broken gzip
     ├── Unauthorized (401)          unknown or missing package key / owner token
     ├── Forbidden (403)             CSRF check failed, not the owner
     ├── NotFound (404)
     ├── Conflict (409)              name or e-mail already taken
     ├── PayloadTooLarge (413)       > 256 KiB, > 100 records, gzip bomb
     ├── UnsupportedMediaType (415)  a Content-Encoding other than gzip
     ├── Unprocessable (422)         schema errors, stale or future records
     ├── TooManyRequests (429)       a token bucket is empty (Retry-After)
     ├── ServiceUnavailable (503)    the database is locked or unreachable (Retry-After)
     └── LoginRequired (303)         a portal page needs a session: redirect to /login

Handlers raise these; :func:`install_error_handlers` renders every one of
them (and FastAPI's own validation and routing errors) in one place: a JSON
body ``{"error": "..."}`` for the API, a small HTML page for the portal.
Messages never contain the client address.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from starlette.responses import Response

__all__ = [
    "BadRequest",
    "CollectorError",
    "Conflict",
    "Forbidden",
    "LoginRequired",
    "NotFound",
    "PayloadTooLarge",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "Unprocessable",
    "UnsupportedMediaType",
    "install_error_handlers",
]

logger = logging.getLogger("plausipy.server")


class CollectorError(Exception):
    """Base of every error the collector answers with; ``status`` is the HTTP status."""

    status = 500

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        """Extra response headers, e.g. ``{"Retry-After": "2"}``."""
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


class BadRequest(CollectorError):
    """The body is not JSON (or not gzip it claims to be): 400."""

    status = 400


class Unauthorized(CollectorError):
    """No key, or a key no package has: 401."""

    status = 401

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(CollectorError):
    """A form without a valid CSRF token, or someone else's package: 403."""

    status = 403


class NotFound(CollectorError):
    """No such package or page: 404."""

    status = 404


class Conflict(CollectorError):
    """The name or e-mail is taken: 409."""

    status = 409


class PayloadTooLarge(CollectorError):
    """More than 256 KiB (before or after gzip) or more than 100 records: 413."""

    status = 413


class UnsupportedMediaType(CollectorError):
    """A Content-Encoding other than identity or gzip: 415."""

    status = 415


class Unprocessable(CollectorError):
    """JSON that breaks the schema; the message names the field: 422."""

    status = 422


class TooManyRequests(CollectorError):
    """A rate-limit bucket is empty; ``retry_after`` says when to come back: 429."""

    status = 429


class ServiceUnavailable(CollectorError):
    """The database is locked, restarting or unreachable: 503 with Retry-After."""

    status = 503


class LoginRequired(CollectorError):
    """A portal page needs a session: answered with a redirect to ``/login``."""

    status = 303

    def __init__(self, next_path: str = "/") -> None:
        super().__init__("log in first")
        self.next_path = next_path


def _wants_html(request: Request) -> bool:
    path = request.url.path
    if path.startswith("/api/"):
        return False
    return "text/html" in request.headers.get("accept", "")


def render_error(request: Request, error: CollectorError) -> Response:
    """The one place that turns a :class:`CollectorError` into a response."""
    from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse

    if isinstance(error, LoginRequired):
        from urllib.parse import quote

        return RedirectResponse(f"/login?next={quote(error.next_path, safe='/')}", status_code=303)
    if _wants_html(request):
        from html import escape

        page = (
            "<!doctype html><meta charset=utf-8><title>plausipy: error</title>"
            '<link rel="stylesheet" href="/static/style.css">'
            f"<main class=narrow><h1>{error.status}</h1><p class=error>{escape(error.message)}</p>"
            '<p><a href="/packages">Back to your packages</a></p></main>'
        )
        return HTMLResponse(page, status_code=error.status, headers=error.headers())
    return JSONResponse({"error": error.message}, status_code=error.status, headers=error.headers())


def _describe_validation(errors: list[dict[str, object]]) -> str:
    """``records.0.hour: String should match pattern …`` for the first few errors."""
    parts = []
    for error in errors[:3]:
        location = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body",))  # type: ignore[union-attr]
        parts.append(f"{location or 'body'}: {error.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def install_error_handlers(app: FastAPI) -> None:
    """Render our errors, FastAPI's validation errors and routing errors alike."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    async def on_collector_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CollectorError)
        return render_error(request, exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        error = Unprocessable(_describe_validation(list(exc.errors())))  # type: ignore[arg-type]
        return render_error(request, error)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error = CollectorError(str(exc.detail))
        error.status = exc.status_code
        response = render_error(request, error)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value  # e.g. Allow on a 405
        return response

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # Log the traceback, never the request line or the client address.
        logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return render_error(request, CollectorError("internal error; it has been logged"))

    app.add_exception_handler(CollectorError, on_collector_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
