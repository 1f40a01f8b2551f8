"""The dashboard page and the summary API of one package.

- ``GET /packages/{name}/dashboard?from=&to=&version=``: the page, for the
  logged-in owner. The summary is rendered into the page as JSON and drawn by
  ``static/dashboard.js`` (inline SVG, no network); the filter is a plain GET
  form, so every view has a URL.
- ``GET /api/v1/packages/{name}/summary?from=YYYY-MM-DD&to=YYYY-MM-DD[&version=V]``
  with ``Authorization: Bearer <owner token>``: the same numbers as JSON.
  401 without a valid token, 404 for a package that is not the token owner's,
  422 for a bad date. The numbers are described in :mod:`plausipy.server._summary`.

::

    curl -H "Authorization: Bearer pps_…" \\
         "http://127.0.0.1:8000/api/v1/packages/acme/summary?from=2026-01-01&to=2026-01-31"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from plausipy.server._errors import NotFound, Unauthorized, Unprocessable

if TYPE_CHECKING:
    from plausipy.server._summary import SummaryQuery

__all__ = ["router"]

router = APIRouter()


@dataclass(frozen=True)
class OwnedPackage:
    """The package a request is about, once its owner has been checked."""

    id: int
    name: str
    k: int


def _owned_package(storage: Any, name: str, user_id: int) -> OwnedPackage:
    from plausipy.server._ingest import canonical_package_name

    if "\x00" in name or len(name) > 200:
        raise NotFound(f"you own no package named {name!r}")  # PostgreSQL text cannot hold NUL
    rows = storage.read(
        "SELECT id, name, owner_id, k_threshold FROM packages WHERE name = ?", (canonical_package_name(name),)
    )
    # Someone else's package answers like a missing one, so names do not leak.
    if not rows or int(rows[0][2]) != user_id:
        raise NotFound(f"you own no package named {name!r}")
    return OwnedPackage(id=int(rows[0][0]), name=str(rows[0][1]), k=int(rows[0][3] or 5))


def _bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _summary_query(package: OwnedPackage, first: str | None, last: str | None, version: str | None) -> SummaryQuery:
    from plausipy.server._summary import SummaryError, query_from_parameters

    try:
        return query_from_parameters(package_id=package.id, k=package.k, first=first, last=last, version=version)
    except SummaryError as exc:
        raise Unprocessable(str(exc)) from exc


@router.get("/api/v1/packages/{name}/summary", tags=["dashboard"])
def package_summary(
    request: Request,
    name: str,
    first: str | None = Query(None, alias="from", description="first day, YYYY-MM-DD (default: 29 days before `to`)"),
    last: str | None = Query(None, alias="to", description="last day, YYYY-MM-DD (default: today, UTC)"),
    version: str | None = Query(None, description="only this version of the package"),
) -> dict[str, Any]:
    """The summary of a package you own: totals, per-day series and per-category counts."""
    from plausipy.server._auth import user_for_token
    from plausipy.server._summary import build_summary

    storage = request.app.state.storage
    user = user_for_token(storage, _bearer_token(request))
    if user is None:
        raise Unauthorized("send an owner API token as `Authorization: Bearer <token>`")
    package = _owned_package(storage, name, int(user["id"]))
    query = _summary_query(package, first, last, version)
    return {"package": package.name, **build_summary(storage, query)}


@router.get("/packages/{name}/dashboard", include_in_schema=False)
def package_dashboard(
    request: Request,
    name: str,
    first: str | None = Query(None, alias="from"),
    last: str | None = Query(None, alias="to"),
    version: str | None = Query(None),
) -> Response:
    """The dashboard page of a package the logged-in user owns."""
    from plausipy.server._auth import require_user
    from plausipy.server._summary import build_summary

    user = require_user(request)
    storage = request.app.state.storage
    package = _owned_package(storage, name, int(user["id"]))
    problem = None
    try:
        query = _summary_query(package, first, last, version)
    except Unprocessable as exc:
        # A mistyped filter shows the default view with the reason, not an error page.
        problem = exc.message
        query = _summary_query(package, None, None, None)
    summary = {"package": package.name, **build_summary(storage, query)}
    return _render(request, user, package, summary, problem)


def _render(
    request: Request, user: dict[str, Any], package: OwnedPackage, summary: dict[str, Any], problem: str | None
) -> Response:
    from plausipy.server._app import templates
    from plausipy.server._auth import csrf_token

    context = {
        "request": request,
        "user": user,
        "csrf_token": csrf_token(request),
        "package": package,
        "summary": summary,
        "problem": problem,
        "page_title": f"{package.name} · dashboard",
    }
    return templates.TemplateResponse(request, "dashboard.html", context)
