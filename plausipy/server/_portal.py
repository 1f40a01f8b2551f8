"""The portal: sign-up, log-in, packages (create, rotate, settings, delete) and owner tokens.

Server-rendered pages with a CSRF token in every form. The package
operations are plain functions, shared with the admin CLI::

    package = create_package(storage, "acme-lib", owner_id=1)
    package["key"]   # 'sayrrCCNbXY70ci6xHn8qlYwKyAUawgp'
"""

from __future__ import annotations

import re
import secrets
import string
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Form, Request
from starlette.responses import RedirectResponse, Response

from plausipy.server._auth import (
    check_csrf,
    create_api_token,
    create_session,
    create_user,
    current_user,
    end_session,
    ensure_csrf_cookie,
    list_api_tokens,
    require_user,
    revoke_api_token,
    verify_login,
)
from plausipy.server._errors import Conflict, Forbidden, NotFound, Unprocessable

if TYPE_CHECKING:
    from plausipy.server._storage import Storage

__all__ = [
    "create_package",
    "delete_package",
    "new_package_key",
    "owned_package",
    "rotate_key",
    "router",
    "update_package_settings",
]

router = APIRouter(include_in_schema=False)

_KEY_FIRST = string.ascii_letters
_KEY_REST = string.ascii_letters + string.digits
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,98}[A-Za-z0-9])?$")


# --- package operations -------------------------------------------------------------------


def new_package_key() -> str:
    """32 characters of ``[A-Za-z0-9]`` starting with a letter (an entry-point-safe name)."""
    return secrets.choice(_KEY_FIRST) + "".join(secrets.choice(_KEY_REST) for _ in range(31))


def _canonical_name(name: str) -> str:
    from plausipy.server._ingest import canonical_package_name

    name = name.strip()
    if not _NAME.match(name):
        raise Unprocessable("name: use a Python distribution name (letters, digits, '.', '_', '-')")
    return canonical_package_name(name)


def create_package(storage: Storage, name: str, owner_id: int) -> dict[str, Any]:
    """Register ``name`` (PEP 503-normalised) for ``owner_id`` with a fresh key."""
    from plausipy.server._storage import utc_now_text

    canonical = _canonical_name(name)
    key = new_package_key()
    with storage.transaction() as tx:
        if tx.execute("SELECT 1 FROM packages WHERE name = ?", (canonical,)).fetchone():
            raise Conflict(f"the package {canonical!r} is already registered")
        tx.execute(
            "INSERT INTO packages (name, key, owner_id, created_at) VALUES (?, ?, ?, ?)",
            (canonical, key, owner_id, utc_now_text()),
        )
    return {"name": canonical, "key": key}


def owned_package(storage: Storage, name: str, user_id: int) -> dict[str, Any]:
    """The package ``name`` if ``user_id`` owns it; 404 otherwise (even if it exists)."""
    rows = storage.read(
        "SELECT id, name, key, k_threshold, retention_days, created_at FROM packages WHERE name = ? AND owner_id = ?",
        (name, user_id),
    )
    if not rows:
        raise NotFound(f"you have no package called {name!r}")
    package_id, package_name, key, k_threshold, retention_days, created_at = rows[0]
    return {
        "id": int(package_id),
        "name": package_name,
        "key": key,
        "k_threshold": int(k_threshold),
        "retention_days": int(retention_days),
        "created_at": str(created_at)[:10],
    }


def rotate_key(storage: Storage, package_id: int) -> str:
    """Give the package a new key; the old one stops working (other workers: within seconds)."""
    key = new_package_key()
    with storage.transaction() as tx:
        tx.execute("UPDATE packages SET key = ? WHERE id = ?", (key, package_id))
    return key


def update_package_settings(storage: Storage, package_id: int, k_threshold: int, retention_days: int) -> None:
    """Change the small-group threshold (2–1000) and the raw-record retention (1–3650 days)."""
    if not 2 <= k_threshold <= 1000:
        raise Unprocessable("k_threshold: between 2 and 1000")
    if not 1 <= retention_days <= 3650:
        raise Unprocessable("retention_days: between 1 and 3650")
    with storage.transaction() as tx:
        tx.execute(
            "UPDATE packages SET k_threshold = ?, retention_days = ? WHERE id = ?", (k_threshold, retention_days, package_id)
        )


def _rollup_tables() -> list[str]:
    try:
        from plausipy.server._rollups import ROLLUP_DDL
    except ImportError:
        return []
    tables = []
    for statement in ROLLUP_DDL.get("sqlite", []):
        match = re.match(r"\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", statement, re.IGNORECASE)
        if match and "package_id" in statement:
            tables.append(match.group(1))
    return tables


def delete_package(storage: Storage, package_id: int) -> None:
    """Delete the package, its raw records, its dirty days and its rollups, in one transaction."""
    with storage.transaction() as tx:
        for table in ["records", "dirty_days", *_rollup_tables()]:
            tx.execute(f"DELETE FROM {table} WHERE package_id = ?", (package_id,))  # noqa: S608 - names from our DDL
        tx.execute("DELETE FROM packages WHERE id = ?", (package_id,))


def _list_packages(storage: Storage, user_id: int) -> list[dict[str, Any]]:
    rows = storage.read("SELECT name, created_at FROM packages WHERE owner_id = ? ORDER BY name", (user_id,))
    return [{"name": name, "created_at": str(created_at)[:10]} for name, created_at in rows]


# --- pages --------------------------------------------------------------------------------


def _storage(request: Request) -> Storage:
    return request.app.state.storage  # type: ignore[no-any-return]


def _page(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    from plausipy.server._app import templates

    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    return ensure_csrf_cookie(request, response)


def _redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _safe_next(path: str | None) -> str:
    # Only local paths: an open redirect after log-in would help phishing.
    if path and path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return "/packages"


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


@router.get("/")
def home(request: Request) -> Response:
    return _redirect("/packages" if current_user(request) else "/login")


@router.get("/signup")
def signup_form(request: Request) -> Response:
    if not request.app.state.settings.allow_signup:
        raise Forbidden("sign-up is closed on this collector; ask its operator for an account")
    return _page(request, "signup.html")


@router.post("/signup")
def signup(
    request: Request, email: str = Form(""), password: str = Form(""), csrf_token: str = Form("")
) -> Response:
    check_csrf(request, csrf_token)
    if not request.app.state.settings.allow_signup:
        raise Forbidden("sign-up is closed on this collector; ask its operator for an account")
    try:
        user = create_user(_storage(request), email, password)
    except (Unprocessable, Conflict) as error:
        return _page(request, "signup.html", status_code=error.status, error=error.message, email=email)
    response = _redirect("/packages")
    create_session(_storage(request), user["id"], response, secure=_secure(request))
    return response


@router.get("/login")
def login_form(request: Request, next: str = "/packages") -> Response:  # noqa: A002 - the query parameter's name
    return _page(request, "login.html", next=_safe_next(next))


@router.post("/login")
def login(
    request: Request,
    email: str = Form(""),
    password: str = Form(""),
    csrf_token: str = Form(""),
    next: str = Form("/packages"),  # noqa: A002
) -> Response:
    check_csrf(request, csrf_token)
    # Password guessing costs a token from the same per-address bucket as ingest.
    request.app.state.address_limiter.check(request.client.host if request.client else "unknown", "address")
    user = verify_login(_storage(request), email, password)
    if user is None:
        return _page(request, "login.html", status_code=401, error="Wrong e-mail or password.", email=email, next=_safe_next(next))
    response = _redirect(_safe_next(next))
    create_session(_storage(request), user["id"], response, secure=_secure(request))
    return response


@router.post("/logout")
def logout(request: Request, csrf_token: str = Form("")) -> Response:
    check_csrf(request, csrf_token)
    response = _redirect("/login")
    end_session(_storage(request), request, response)
    return response


@router.get("/packages")
def packages(request: Request, user: dict[str, Any] = Depends(require_user)) -> Response:
    return _page(request, "packages.html", packages=_list_packages(_storage(request), user["id"]))


@router.post("/packages")
def new_package(
    request: Request, name: str = Form(""), csrf_token: str = Form(""), user: dict[str, Any] = Depends(require_user)
) -> Response:
    check_csrf(request, csrf_token)
    try:
        package = create_package(_storage(request), name, user["id"])
    except (Unprocessable, Conflict) as error:
        return _page(
            request, "packages.html", status_code=error.status, error=error.message, name=name,
            packages=_list_packages(_storage(request), user["id"]),
        )  # fmt: skip
    return _redirect(f"/packages/{package['name']}?created=1")


@router.get("/packages/{name}")
def package_settings(request: Request, name: str, user: dict[str, Any] = Depends(require_user)) -> Response:
    package = owned_package(_storage(request), name, user["id"])
    collector_url = str(request.base_url).rstrip("/")
    return _page(
        request, "package.html", package=package, collector_url=collector_url,
        created=request.query_params.get("created") == "1", rotated=request.query_params.get("rotated") == "1",
    )  # fmt: skip


@router.post("/packages/{name}/rotate")
def rotate(request: Request, name: str, csrf_token: str = Form(""), user: dict[str, Any] = Depends(require_user)) -> Response:
    check_csrf(request, csrf_token)
    package = owned_package(_storage(request), name, user["id"])
    rotate_key(_storage(request), package["id"])
    request.app.state.key_cache.forget(package["key"])
    return _redirect(f"/packages/{package['name']}?rotated=1")


@router.post("/packages/{name}/settings")
def change_settings(
    request: Request,
    name: str,
    k_threshold: int = Form(5),
    retention_days: int = Form(395),
    csrf_token: str = Form(""),
    user: dict[str, Any] = Depends(require_user),
) -> Response:
    check_csrf(request, csrf_token)
    package = owned_package(_storage(request), name, user["id"])
    update_package_settings(_storage(request), package["id"], k_threshold, retention_days)
    return _redirect(f"/packages/{package['name']}")


@router.post("/packages/{name}/delete")
def remove_package(
    request: Request,
    name: str,
    confirm: str = Form(""),
    csrf_token: str = Form(""),
    user: dict[str, Any] = Depends(require_user),
) -> Response:
    check_csrf(request, csrf_token)
    package = owned_package(_storage(request), name, user["id"])
    if confirm.strip() != package["name"]:
        raise Unprocessable("confirm: type the package name to delete it and all its data")
    delete_package(_storage(request), package["id"])
    request.app.state.key_cache.forget(package["key"])
    return _redirect("/packages")


@router.get("/tokens")
def tokens(request: Request, user: dict[str, Any] = Depends(require_user)) -> Response:
    return _page(request, "tokens.html", tokens=list_api_tokens(_storage(request), user["id"]))


@router.post("/tokens")
def new_token(
    request: Request, label: str = Form("token"), csrf_token: str = Form(""), user: dict[str, Any] = Depends(require_user)
) -> Response:
    check_csrf(request, csrf_token)
    token = create_api_token(_storage(request), user["id"], label)
    return _page(request, "tokens.html", new_token=token, tokens=list_api_tokens(_storage(request), user["id"]))


@router.post("/tokens/{token_id}/revoke")
def revoke_token(
    request: Request, token_id: str, csrf_token: str = Form(""), user: dict[str, Any] = Depends(require_user)
) -> Response:
    check_csrf(request, csrf_token)
    if not revoke_api_token(_storage(request), user["id"], token_id):
        raise NotFound("no such token")
    return _redirect("/tokens")
