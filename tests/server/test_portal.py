"""The portal over real HTTP: sign-up, log-in, CSRF, packages, keys, tokens."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

KEY = re.compile(r"^[A-Za-z][A-Za-z0-9]{31}$")


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "every form carries a CSRF token"
    return match.group(1)


def browser(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Accept": "text/html"}, timeout=30)


def sign_up(client: httpx.Client, email: str, password: str = "correct horse battery") -> httpx.Response:
    token = csrf_of(client.get("/signup").text)
    return client.post("/signup", data={"email": email, "password": password, "csrf_token": token})


@pytest.fixture
def portal(shared_sqlite_server):
    return shared_sqlite_server


@pytest.fixture
def email() -> str:
    return f"ada-{uuid.uuid4().hex[:8]}@example.org"


@pytest.fixture
def logged_in(portal, email):
    client = browser(portal["url"])
    response = sign_up(client, email)
    assert response.status_code == 303
    assert response.headers["location"] == "/packages"
    yield client
    client.close()


def create(client: httpx.Client, name: str) -> httpx.Response:
    token = csrf_of(client.get("/packages").text)
    return client.post("/packages", data={"name": name, "csrf_token": token})


def test_pages_need_a_session(portal):
    with browser(portal["url"]) as client:
        response = client.get("/packages")
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login")
        assert client.get("/").headers["location"] == "/login"


def test_sign_up_sets_a_secure_session_cookie(portal, email):
    with browser(portal["url"]) as client:
        response = sign_up(client, email)
        cookie = response.headers["set-cookie"]
        assert "plausipy_session=" in cookie
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie or "samesite=lax" in cookie.lower()
        page = client.get("/packages")
        assert page.status_code == 200
        assert email in page.text


def test_forms_without_the_csrf_token_are_refused(portal, email, rows):
    with browser(portal["url"]) as client:
        client.get("/signup")
        response = client.post("/signup", data={"email": email, "password": "long enough pass"})
        assert response.status_code == 403
        response = client.post("/signup", data={"email": email, "password": "long enough pass", "csrf_token": "forged"})
        assert response.status_code == 403
    assert rows(portal["db"], "SELECT 1 FROM users WHERE email = ?", (email,)) == []


def test_logged_in_forms_check_the_session_token(logged_in):
    response = logged_in.post("/packages", data={"name": "csrf-less", "csrf_token": "forged"})
    assert response.status_code == 403


def test_sign_up_errors_are_shown_not_raised(portal, email):
    with browser(portal["url"]) as client:
        assert sign_up(client, email, password="short").status_code == 422
        assert sign_up(client, "not-an-address").status_code == 422
        assert sign_up(client, email).status_code == 303
    with browser(portal["url"]) as other:
        again = sign_up(other, email)
        assert again.status_code == 409
        assert "already exists" in again.text


def test_log_out_and_log_in_again(logged_in, email):
    page = logged_in.get("/packages")
    assert logged_in.post("/logout", data={"csrf_token": csrf_of(page.text)}).status_code == 303
    assert logged_in.get("/packages").status_code == 303, "the session is gone server-side"
    form = logged_in.get("/login")
    wrong = logged_in.post("/login", data={"email": email, "password": "wrong password", "csrf_token": csrf_of(form.text)})
    assert wrong.status_code == 401
    right = logged_in.post(
        "/login",
        data={"email": email.upper(), "password": "correct horse battery", "csrf_token": csrf_of(form.text), "next": "//evil.example"},
    )
    assert right.status_code == 303
    assert right.headers["location"] == "/packages", "no open redirect"
    assert logged_in.get("/packages").status_code == 200


def test_create_a_package_shows_its_key_and_snippet(logged_in, portal, plain_record):
    name = f"Acme_Lib{uuid.uuid4().hex[:6]}"
    response = create(logged_in, name)
    assert response.status_code == 303
    canonical = name.lower().replace("_", "-")
    page = logged_in.get(response.headers["location"])
    key = re.search(r'<code id="package-key">([^<]+)</code>', page.text).group(1)
    assert KEY.match(key)
    assert f'[project.entry-points.plausipy]\nkey = "{key}"' in page.text
    assert f"/packages/{canonical}/dashboard" in page.text
    accepted = httpx.post(
        portal["url"] + "/api/v1/records",
        json={"records": [plain_record(package=name)]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert accepted.status_code == 202
    assert create(logged_in, name).status_code == 409
    assert create(logged_in, "not a name!").status_code == 422


def test_rotating_a_key_retires_the_old_one(logged_in, portal, plain_record):
    name = f"rot-{uuid.uuid4().hex[:6]}"
    page = logged_in.get(create(logged_in, name).headers["location"])
    old_key = re.search(r'id="package-key">([^<]+)<', page.text).group(1)
    record = {"records": [plain_record(package=name)]}
    assert httpx.post(portal["url"] + "/api/v1/records", json=record, headers={"Authorization": f"Bearer {old_key}"}).status_code == 202
    rotated = logged_in.post(f"/packages/{name}/rotate", data={"csrf_token": csrf_of(page.text)})
    assert rotated.status_code == 303
    new_key = re.search(r'id="package-key">([^<]+)<', logged_in.get(rotated.headers["location"]).text).group(1)
    assert new_key != old_key and KEY.match(new_key)
    record = {"records": [plain_record(package=name)]}
    assert httpx.post(portal["url"] + "/api/v1/records", json=record, headers={"Authorization": f"Bearer {old_key}"}).status_code == 401
    assert httpx.post(portal["url"] + "/api/v1/records", json=record, headers={"Authorization": f"Bearer {new_key}"}).status_code == 202


def test_deleting_a_package_deletes_its_data(logged_in, portal, plain_record, rows):
    name = f"del-{uuid.uuid4().hex[:6]}"
    page = logged_in.get(create(logged_in, name).headers["location"])
    key = re.search(r'id="package-key">([^<]+)<', page.text).group(1)
    httpx.post(portal["url"] + "/api/v1/records", json={"records": [plain_record(package=name)]}, headers={"Authorization": f"Bearer {key}"})
    package_id = rows(portal["db"], "SELECT id FROM packages WHERE name = ?", (name,))[0][0]
    token = csrf_of(page.text)
    refused = logged_in.post(f"/packages/{name}/delete", data={"csrf_token": token, "confirm": "wrong"})
    assert refused.status_code == 422
    deleted = logged_in.post(f"/packages/{name}/delete", data={"csrf_token": token, "confirm": name})
    assert deleted.status_code == 303
    assert rows(portal["db"], "SELECT COUNT(*) FROM records WHERE package_id = ?", (package_id,)) == [(0,)]
    assert rows(portal["db"], "SELECT COUNT(*) FROM dirty_days WHERE package_id = ?", (package_id,)) == [(0,)]
    assert logged_in.get(f"/packages/{name}").status_code == 404
    gone = httpx.post(portal["url"] + "/api/v1/records", json={"records": []}, headers={"Authorization": f"Bearer {key}"})
    assert gone.status_code == 401


def test_settings_change_k_and_retention(logged_in, portal, rows):
    name = f"set-{uuid.uuid4().hex[:6]}"
    page = logged_in.get(create(logged_in, name).headers["location"])
    token = csrf_of(page.text)
    response = logged_in.post(f"/packages/{name}/settings", data={"csrf_token": token, "k_threshold": "10", "retention_days": "30"})
    assert response.status_code == 303
    assert rows(portal["db"], "SELECT k_threshold, retention_days FROM packages WHERE name = ?", (name,)) == [(10, 30)]
    bad = logged_in.post(f"/packages/{name}/settings", data={"csrf_token": token, "k_threshold": "1", "retention_days": "30"})
    assert bad.status_code == 422


def test_someone_elses_package_is_not_found(logged_in, portal):
    name = f"own-{uuid.uuid4().hex[:6]}"
    create(logged_in, name)
    with browser(portal["url"]) as stranger:
        sign_up(stranger, f"eve-{uuid.uuid4().hex[:6]}@example.org")
        assert stranger.get(f"/packages/{name}").status_code == 404
        token = csrf_of(stranger.get("/packages").text)
        assert stranger.post(f"/packages/{name}/rotate", data={"csrf_token": token}).status_code == 404


def test_owner_api_tokens_are_shown_once_and_identify_the_owner(logged_in, portal, email):
    from plausipy.server._auth import user_for_token
    from plausipy.server._storage import open_storage

    page = logged_in.get("/tokens")
    created = logged_in.post("/tokens", data={"csrf_token": csrf_of(page.text), "label": "ci"})
    assert created.status_code == 200
    token = re.search(r'<pre id="new-token">([^<]+)</pre>', created.text).group(1)
    storage = open_storage(portal["db"])
    try:
        assert user_for_token(storage, token)["email"] == email
        assert user_for_token(storage, token + "x") is None
        assert storage.read("SELECT COUNT(*) FROM api_tokens WHERE token_hash = ?", (token,)) == [(0,)], "only the hash"
    finally:
        storage.close()
    assert token not in logged_in.get("/tokens").text
    token_id = re.search(r'action="/tokens/([0-9a-f]{16})/revoke"', logged_in.get("/tokens").text).group(1)
    assert logged_in.post(f"/tokens/{token_id}/revoke", data={"csrf_token": csrf_of(page.text)}).status_code == 303
    storage = open_storage(portal["db"])
    try:
        assert user_for_token(storage, token) is None
    finally:
        storage.close()


def test_passwords_are_argon2_hashes(logged_in, portal, email, rows):
    stored = rows(portal["db"], "SELECT password_hash FROM users WHERE email = ?", (email,))[0][0]
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
