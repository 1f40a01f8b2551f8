"""Accounts, sessions, CSRF and owner API tokens for the portal and the summary API.

- Passwords: argon2id hashes (argon2-cffi defaults), re-hashed when the
  parameters move on.
- Sessions: a random token in an HttpOnly, SameSite=Lax cookie (Secure over
  HTTPS); the table holds only its sha256, so a database dump opens no session.
- CSRF: every form carries a token. Logged in, it is the session's own token;
  before log-in (sign-up, log-in forms) it is a double-submit cookie.
- Owner API tokens (``pps_…``): stored as sha256, shown once.

::

    user = current_user(request)            # {"id": 1, "email": "a@example.org"} or None
    check_csrf(request, form["csrf_token"])  # raises Forbidden when it does not match
    user_for_token(storage, "pps_…")         # the same dict, or None
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from fastapi import Request

from plausipy.server._errors import Conflict, Forbidden, LoginRequired, Unprocessable

if TYPE_CHECKING:
    from starlette.responses import Response

    from plausipy.server._storage import Storage

__all__ = [
    "SESSION_COOKIE",
    "check_csrf",
    "create_api_token",
    "create_session",
    "create_user",
    "csrf_token",
    "current_user",
    "end_session",
    "ensure_csrf_cookie",
    "hash_password",
    "require_user",
    "set_password",
    "user_for_token",
    "verify_login",
]

SESSION_COOKIE = "plausipy_session"
CSRF_COOKIE = "plausipy_csrf"
SESSION_LIFETIME = timedelta(days=14)
MIN_PASSWORD_LENGTH = 8
_API_TOKEN_PREFIX = "pps_"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()


def _text_time(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now_text() -> str:
    return _text_time(datetime.now(timezone.utc))


# --- users --------------------------------------------------------------------------------


def normalize_email(email: str) -> str:
    """``" Ada@Example.org "`` -> ``"ada@example.org"``; 422 when it is not an address."""
    cleaned = email.strip().lower()
    local, _, domain = cleaned.partition("@")
    if not local or "." not in domain or len(cleaned) > 254 or any(ch.isspace() for ch in cleaned):
        raise Unprocessable("email: not an e-mail address")
    return cleaned


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (at least 8 characters)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Unprocessable(f"password: use at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > 1024:
        raise Unprocessable("password: at most 1024 characters")
    return _hasher().hash(password)  # type: ignore[no-any-return]


def _find_user(storage: Storage, email: str) -> tuple[int, str] | None:
    rows = storage.read("SELECT id, password_hash FROM users WHERE email = ?", (email,))
    return (int(rows[0][0]), str(rows[0][1])) if rows else None


def create_user(storage: Storage, email: str, password: str | None) -> dict[str, Any]:
    """Create an account; without a password it cannot log in until one is set."""
    email = normalize_email(email)
    password_hash = hash_password(password) if password is not None else "!"
    with storage.transaction() as tx:
        if tx.execute("SELECT 1 FROM users WHERE email = ?", (email,)).fetchone():
            raise Conflict("an account with this e-mail already exists")
        tx.execute(
            "INSERT INTO users (email, password_hash, created_at) VALUES (?, ?, ?)", (email, password_hash, _now_text())
        )
        user_id = tx.execute("SELECT id FROM users WHERE email = ?", (email,)).fetchone()[0]
    return {"id": int(user_id), "email": email}


def get_or_create_user(storage: Storage, email: str) -> dict[str, Any]:
    """The account for ``email``, created without a password if needed."""
    email = normalize_email(email)
    found = _find_user(storage, email)
    if found:
        return {"id": found[0], "email": email}
    return create_user(storage, email, None)


def set_password(storage: Storage, email: str, password: str) -> bool:
    """Set a password; False when there is no such account."""
    new_hash = hash_password(password)
    with storage.transaction() as tx:
        changed = tx.execute("UPDATE users SET password_hash = ? WHERE email = ?", (new_hash, normalize_email(email))).rowcount
    return bool(changed)


def verify_login(storage: Storage, email: str, password: str) -> dict[str, Any] | None:
    """The user when ``password`` is right, else None (same cost either way)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        email = normalize_email(email)
    except Unprocessable:
        return None
    found = _find_user(storage, email)
    hasher = _hasher()
    if found is None or found[1] == "!":
        # Hash anyway, so a timing difference does not reveal which e-mails exist.
        hasher.hash(password or "x")
        return None
    try:
        hasher.verify(found[1], password)
    except (VerificationError, InvalidHashError):
        return None
    if hasher.check_needs_rehash(found[1]):
        with storage.transaction() as tx:
            tx.execute("UPDATE users SET password_hash = ? WHERE id = ?", (hasher.hash(password), found[0]))
    return {"id": found[0], "email": email}


# --- sessions -----------------------------------------------------------------------------


def create_session(storage: Storage, user_id: int, response: Response, *, secure: bool) -> None:
    """Start a session for ``user_id`` and set its cookie on ``response``."""
    token = secrets.token_urlsafe(32)
    expires = datetime.now(timezone.utc) + SESSION_LIFETIME
    with storage.transaction() as tx:
        tx.execute(
            "INSERT INTO sessions (token_hash, user_id, csrf_token, expires_at) VALUES (?, ?, ?, ?)",
            (_sha256(token), user_id, secrets.token_urlsafe(32), _text_time(expires)),
        )
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=secure,
        path="/",
    )


def end_session(storage: Storage, request: Request, response: Response) -> None:
    """Forget the session server-side and drop its cookie."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        with storage.transaction() as tx:
            tx.execute("DELETE FROM sessions WHERE token_hash = ?", (_sha256(token),))
    response.delete_cookie(SESSION_COOKIE, path="/")


def _session(request: Request) -> dict[str, Any] | None:
    if hasattr(request.state, "plausipy_session"):
        return request.state.plausipy_session  # type: ignore[no-any-return]
    session = None
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        rows = request.app.state.storage.read(
            "SELECT users.id, users.email, sessions.csrf_token FROM sessions JOIN users ON users.id = sessions.user_id"
            " WHERE sessions.token_hash = ? AND sessions.expires_at > ?",
            (_sha256(token), _now_text()),
        )
        if rows:
            session = {"id": int(rows[0][0]), "email": str(rows[0][1]), "csrf": str(rows[0][2])}
    request.state.plausipy_session = session
    return session


def current_user(request: Request) -> dict[str, Any] | None:
    """The logged-in user ``{"id", "email"}`` from the session cookie, or None."""
    session = _session(request)
    return {"id": session["id"], "email": session["email"]} if session else None


def require_user(request: Request) -> dict[str, Any]:
    """FastAPI dependency: the logged-in user, or a redirect to ``/login``."""
    user = current_user(request)
    if user is None:
        raise LoginRequired(request.url.path)
    return user


# --- CSRF ---------------------------------------------------------------------------------


def csrf_token(request: Request) -> str:
    """The token every form on this page must send back as ``csrf_token``."""
    session = _session(request)
    if session:
        return str(session["csrf"])
    token = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf_cookie", None)
    if not token:
        token = secrets.token_urlsafe(32)
        request.state.new_csrf_cookie = token
    return str(token)


def ensure_csrf_cookie(request: Request, response: Response) -> Response:
    """Set the pre-login CSRF cookie if :func:`csrf_token` just made one."""
    token = getattr(request.state, "new_csrf_cookie", None)
    if token:
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/")
    return response


def check_csrf(request: Request, token: str | None) -> None:
    """Raise :class:`Forbidden` unless ``token`` is this browser's CSRF token."""
    session = _session(request)
    expected = session["csrf"] if session else request.cookies.get(CSRF_COOKIE)
    if not token or not expected or not hmac.compare_digest(str(expected), str(token)):
        raise Forbidden("the form has expired or did not come from this site; reload the page and try again")


# --- owner API tokens ---------------------------------------------------------------------


def create_api_token(storage: Storage, user_id: int, label: str) -> str:
    """A new owner token for ``user_id``; only its hash is kept, so show it now."""
    token = _API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    with storage.transaction() as tx:
        tx.execute(
            "INSERT INTO api_tokens (token_hash, user_id, label, created_at) VALUES (?, ?, ?, ?)",
            (_sha256(token), user_id, label.strip()[:100] or "token", _now_text()),
        )
    return token


def user_for_token(storage: Storage, bearer_token: str | None) -> dict[str, Any] | None:
    """The owner ``{"id", "email"}`` an API token belongs to, or None."""
    if not bearer_token or len(bearer_token) > 200:
        return None
    rows = storage.read(
        "SELECT users.id, users.email FROM api_tokens JOIN users ON users.id = api_tokens.user_id"
        " WHERE api_tokens.token_hash = ?",
        (_sha256(bearer_token),),
    )
    return {"id": int(rows[0][0]), "email": str(rows[0][1])} if rows else None


def list_api_tokens(storage: Storage, user_id: int) -> list[dict[str, Any]]:
    """The user's tokens as ``{"id": <hash prefix>, "label", "created_at"}``, newest first."""
    rows = storage.read(
        "SELECT token_hash, label, created_at FROM api_tokens WHERE user_id = ? ORDER BY created_at DESC", (user_id,)
    )
    return [{"id": str(row[0])[:16], "label": row[1], "created_at": str(row[2])[:19]} for row in rows]


def revoke_api_token(storage: Storage, user_id: int, token_id: str) -> bool:
    """Delete the user's token whose hash starts with ``token_id`` (16 hex chars)."""
    if len(token_id) != 16 or any(ch not in "0123456789abcdef" for ch in token_id):
        return False
    with storage.transaction() as tx:
        deleted = tx.execute(
            "DELETE FROM api_tokens WHERE user_id = ? AND substr(token_hash, 1, 16) = ?", (user_id, token_id)
        ).rowcount
    return bool(deleted)
