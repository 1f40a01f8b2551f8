"""Build the collector's ASGI application.

``create_app()`` wires storage, the ingest API, the portal, the dashboard
(when present), static files, error rendering and the retention task::

    app = create_app("sqlite:////tmp/collector.sqlite3")
    app.state.storage.read("SELECT COUNT(*) FROM records")   # -> [(0,)]

Settings come from the environment (``PLAUSIPY_*``, see :class:`Settings`)
unless passed in, so that every uvicorn worker builds the same app.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.templating import Jinja2Templates

if TYPE_CHECKING:
    from plausipy.server._storage import Storage

__all__ = ["Settings", "create_app", "create_app_from_environment", "templates"]

_HERE = Path(__file__).parent



def _page_context(request: Any) -> dict[str, Any]:
    # Every page (portal and dashboard) gets the nav's user and the CSRF token.
    from plausipy.server._auth import csrf_token, current_user

    return {"user": current_user(request), "csrf_token": csrf_token(request)}


#: The Jinja2 environment every page shares (portal and dashboard); templates
#: see ``user`` ({"id", "email"} or None) and ``csrf_token`` without being passed them.
templates = Jinja2Templates(directory=str(_HERE / "templates"), context_processors=[_page_context])


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        return default


@dataclass(frozen=True)
class Settings:
    """Operator knobs; each has a ``PLAUSIPY_…`` environment variable.

    >>> Settings().address_rate
    20.0
    """

    database_url: str | None = None  # PLAUSIPY_DATABASE_URL
    address_rate: float = 20.0  # PLAUSIPY_RATE_PER_ADDRESS: requests per second per client address
    address_burst: float = 200.0  # PLAUSIPY_BURST_PER_ADDRESS
    key_rate: float = 200.0  # PLAUSIPY_RATE_PER_KEY: requests per second per package key
    key_burst: float = 2000.0  # PLAUSIPY_BURST_PER_KEY
    key_cache_seconds: float = 10.0  # PLAUSIPY_KEY_CACHE_SECONDS: how long other workers honour a rotated key
    retention_interval_seconds: float = 3600.0  # PLAUSIPY_RETENTION_INTERVAL: 0 turns the task off
    sqlite_busy_timeout_ms: int = 5000  # PLAUSIPY_SQLITE_BUSY_TIMEOUT_MS: wait for the lock, then 503
    pg_statement_timeout_ms: int = 15000  # PLAUSIPY_PG_STATEMENT_TIMEOUT_MS: a slower statement is cancelled: 503
    allow_signup: bool = True  # PLAUSIPY_ALLOW_SIGNUP=0 closes /signup (use the admin CLI)

    @classmethod
    def from_environment(cls) -> Settings:
        """Read every ``PLAUSIPY_…`` knob, falling back to the defaults above."""
        defaults = cls()
        return cls(
            database_url=os.environ.get("PLAUSIPY_DATABASE_URL") or None,
            address_rate=_env_number("PLAUSIPY_RATE_PER_ADDRESS", defaults.address_rate),
            address_burst=_env_number("PLAUSIPY_BURST_PER_ADDRESS", defaults.address_burst),
            key_rate=_env_number("PLAUSIPY_RATE_PER_KEY", defaults.key_rate),
            key_burst=_env_number("PLAUSIPY_BURST_PER_KEY", defaults.key_burst),
            key_cache_seconds=_env_number("PLAUSIPY_KEY_CACHE_SECONDS", defaults.key_cache_seconds),
            retention_interval_seconds=_env_number("PLAUSIPY_RETENTION_INTERVAL", defaults.retention_interval_seconds),
            sqlite_busy_timeout_ms=int(_env_number("PLAUSIPY_SQLITE_BUSY_TIMEOUT_MS", defaults.sqlite_busy_timeout_ms)),
            pg_statement_timeout_ms=int(_env_number("PLAUSIPY_PG_STATEMENT_TIMEOUT_MS", defaults.pg_statement_timeout_ms)),
            allow_signup=os.environ.get("PLAUSIPY_ALLOW_SIGNUP", "1").strip().lower() not in ("0", "false", "no"),
        )


def _dashboard_router() -> Any:
    try:
        from plausipy.server._dashboard import router
    except ModuleNotFoundError as exc:
        if exc.name != "plausipy.server._dashboard":
            raise
        return None
    return router


def _lifespan(storage: Storage, settings: Settings) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from plausipy.server._retention import retention_loop

        task = None
        if settings.retention_interval_seconds > 0:
            task = asyncio.create_task(retention_loop(storage, settings.retention_interval_seconds))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            storage.close()

    return lifespan


def _install_openapi(app: FastAPI) -> None:
    from fastapi.openapi.utils import get_openapi

    from plausipy.server._ingest import openapi_components

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes, description=app.description)
            components = schema.setdefault("components", {})
            extra = openapi_components()
            components.setdefault("schemas", {}).update(extra["schemas"])
            components.setdefault("securitySchemes", {}).update(extra["securitySchemes"])
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(database_url: str | None = None, *, settings: Settings | None = None) -> FastAPI:
    """The collector app on ``database_url`` (default: the SQLite file in the user data dir).

    The schema is created or migrated here, before the first request.
    """
    from fastapi.staticfiles import StaticFiles

    from plausipy import __version__
    from plausipy.server._errors import install_error_handlers
    from plausipy.server._ingest import KeyCache, RateLimiter, build_router
    from plausipy.server._portal import router as portal_router
    from plausipy.server._schema import migrate
    from plausipy.server._storage import open_storage

    settings = settings or Settings.from_environment()
    storage = open_storage(
        database_url or settings.database_url,
        sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        pg_statement_timeout_ms=settings.pg_statement_timeout_ms,
    )
    migrate(storage)

    app = FastAPI(
        title="plausipy collector",
        version=__version__,
        description="Privacy-first usage analytics for Python packages: ingest, deletion and summaries.",
        lifespan=_lifespan(storage, settings),
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.storage = storage
    app.state.settings = settings
    app.state.key_cache = KeyCache(settings.key_cache_seconds)
    app.state.address_limiter = RateLimiter(settings.address_rate, settings.address_burst)
    app.state.key_limiter = RateLimiter(settings.key_rate, settings.key_burst)

    install_error_handlers(app)
    app.include_router(build_router())

    @app.get("/api/v1/health", include_in_schema=False)
    def health() -> dict[str, bool]:
        return {"ok": True}

    app.include_router(portal_router)
    dashboard = _dashboard_router()
    if dashboard is not None:
        app.include_router(dashboard)
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")
    _install_openapi(app)
    return app


def create_app_from_environment() -> FastAPI:
    """Factory for ``uvicorn --factory`` with several workers: everything from ``PLAUSIPY_*``."""
    return create_app()
