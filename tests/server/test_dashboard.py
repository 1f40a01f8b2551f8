"""The summary API and the dashboard page over real HTTP, fed through the real ingest API."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

PASSWORD = "correct horse battery"


def hour_days_ago(days: int) -> str:
    moment = datetime.now(timezone.utc) - timedelta(days=days)
    return moment.strftime("%Y-%m-%dT%H:00:00Z")


def day_of(hour: str) -> str:
    return hour[:10]


def person(number: int) -> str:
    """A stable pseudonymous ID (32 hex characters) for the n-th person."""
    return f"{number:032x}"


def ingest(base_url: str, key: str, records: list[dict[str, Any]]) -> None:
    for start in range(0, len(records), 100):
        response = httpx.post(
            base_url + "/api/v1/records",
            json={"records": records[start : start + 100]},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert response.status_code == 202, response.text


def summary(base_url: str, package: dict[str, str], **params: str) -> httpx.Response:
    return httpx.get(
        f"{base_url}/api/v1/packages/{package['name']}/summary",
        params=params,
        headers={"Authorization": f"Bearer {package['owner_token']}"},
        timeout=30,
    )


def logged_in_client(base_url: str, database_url: str, email: str) -> httpx.Client:
    from plausipy.server._auth import set_password
    from plausipy.server._storage import open_storage

    storage = open_storage(database_url)
    try:
        assert set_password(storage, email, PASSWORD)
    finally:
        storage.close()
    client = httpx.Client(base_url=base_url, timeout=30)
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token, form.text
    response = client.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": token.group(1)})
    assert response.status_code == 303, response.text
    return client


@pytest.fixture
def seeded(
    server_factory: Any, sqlite_url: str, package_factory: Callable[..., dict[str, str]], record_factory: Callable[..., dict[str, Any]]
) -> dict[str, Any]:
    """A server with one package: 6 people on linux/1.0, 2 on darwin/2.0 (one failing), over 3 days."""
    base_url = server_factory(sqlite_url)
    package = package_factory(sqlite_url, "acme-lib")
    records = []
    for days_ago in (1, 2, 3):
        hour = hour_days_ago(days_ago)
        records += [record_factory(uid=person(n), hour=hour, version="1.0", os="linux") for n in range(6)]
        records += [
            record_factory(uid=person(100 + n), hour=hour, version="2.0", os="darwin", arch="arm64", exit_code=n)
            for n in range(2)
        ]
    ingest(base_url, package["key"], records)
    return {"url": base_url, "db": sqlite_url, "package": package, "first": day_of(hour_days_ago(3))}


def test_the_summary_counts_what_was_ingested_and_hides_small_groups(seeded: dict[str, Any]) -> None:
    response = summary(seeded["url"], seeded["package"], **{"from": seeded["first"]})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["package"] == "acme-lib"
    assert body["runs"] == 24
    assert body["distinct_ids"] == 8
    assert body["failure_rate"] == round(3 / 24, 4)
    assert {"value": "1.0", "runs": 18} in [{k: v for k, v in e.items() if k in ("value", "runs")} for e in body["by_version"]]
    assert {"value": "2.0", "runs": None, "suppressed": True}.items() <= next(
        e for e in body["by_version"] if e["value"] == "2.0"
    ).items()
    assert body["by_os"] == [{"value": "linux", "runs": 18}, {"value": "darwin", "runs": None, "suppressed": True}]
    assert body["by_python"] == [{"value": "3.12", "runs": 24}]
    assert body["by_country"] == [{"value": "DE", "runs": 24}]
    assert [day["runs"] for day in body["by_day"][:3]] == [8, 8, 8]
    assert body["properties"]["command"] == [{"value": "build", "runs": 24}]


def test_new_records_appear_in_the_next_summary(seeded: dict[str, Any], record_factory: Callable[..., dict[str, Any]]) -> None:
    before = summary(seeded["url"], seeded["package"], **{"from": seeded["first"]}).json()["runs"]
    ingest(seeded["url"], seeded["package"]["key"], [record_factory(uid=person(n)) for n in range(5)])

    after = summary(seeded["url"], seeded["package"], **{"from": seeded["first"]}).json()["runs"]

    assert after == before + 5


def test_a_deletion_is_reflected_in_the_summary(seeded: dict[str, Any]) -> None:
    response = httpx.post(
        seeded["url"] + "/api/v1/deletions",
        json={"run_ids": [], "uids": [person(0)]},
        headers={"Authorization": f"Bearer {seeded['package']['key']}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text

    body = summary(seeded["url"], seeded["package"], **{"from": seeded["first"]}).json()

    assert body["runs"] == 21


def test_the_version_filter(seeded: dict[str, Any]) -> None:
    body = summary(seeded["url"], seeded["package"], **{"from": seeded["first"], "version": "1.0"}).json()

    assert body["runs"] == 18 and body["failure_rate"] == 0.0
    assert body["by_os"] == [{"value": "linux", "runs": 18}]
    assert body["versions"] == ["2.0", "1.0"]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"from": "2026-02-30"}, "`from` must be a date"),
        ({"to": "tomorrow"}, "`to` must be a date"),
        ({"from": "2026-03-02", "to": "2026-03-01"}, "is after"),
    ],
)
def test_bad_dates_are_a_422_with_a_message(seeded: dict[str, Any], params: dict[str, str], fragment: str) -> None:
    response = summary(seeded["url"], seeded["package"], **params)

    assert response.status_code == 422
    assert fragment in response.json()["error"]


def test_the_summary_needs_the_owners_token(seeded: dict[str, Any], package_factory: Callable[..., dict[str, str]]) -> None:
    url = f"{seeded['url']}/api/v1/packages/acme-lib/summary"
    other = package_factory(seeded["db"], "other-lib", owner_email="someone@example.org")

    assert httpx.get(url, timeout=30).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer pps_nonsense"}, timeout=30).status_code == 401
    # A package key is not an owner token.
    assert httpx.get(url, headers={"Authorization": f"Bearer {seeded['package']['key']}"}, timeout=30).status_code == 401
    not_theirs = httpx.get(url, headers={"Authorization": f"Bearer {other['owner_token']}"}, timeout=30)
    assert not_theirs.status_code == 404
    assert "error" in not_theirs.json()
    assert summary(seeded["url"], {"name": "no-such-lib", "owner_token": seeded["package"]["owner_token"]}).status_code == 404


def test_the_dashboard_page_needs_a_login(seeded: dict[str, Any]) -> None:
    response = httpx.get(f"{seeded['url']}/packages/acme-lib/dashboard", timeout=30)

    assert response.status_code == 303
    assert response.headers["location"].startswith("/login")


def test_the_dashboard_page_carries_the_summary_and_the_charts(seeded: dict[str, Any]) -> None:
    client = logged_in_client(seeded["url"], seeded["db"], seeded["package"]["owner_email"])

    response = client.get("/packages/acme-lib/dashboard", params={"from": seeded["first"]})

    assert response.status_code == 200, response.text
    page = response.text
    embedded = re.search(r'<script id="summary-data" type="application/json">(.*?)</script>', page, re.S)
    assert embedded
    data = json.loads(embedded.group(1))
    assert data["runs"] == 24 and data["from"] == seeded["first"]
    for chart in ("chart-runs", "chart-ids", "chart-versions", 'data-list="by_country"', 'data-list="by_timezone"'):
        assert chart in page
    assert '<script src="/static/dashboard.js"' in page
    assert client.get("/static/dashboard.js").status_code == 200
    assert client.get("/static/dashboard.css").status_code == 200


def test_a_mistyped_filter_shows_the_default_view_with_the_reason(seeded: dict[str, Any]) -> None:
    client = logged_in_client(seeded["url"], seeded["db"], seeded["package"]["owner_email"])

    response = client.get("/packages/acme-lib/dashboard", params={"from": "last tuesday"})

    assert response.status_code == 200
    assert "`from` must be a date" in response.text


def test_another_owners_dashboard_is_not_found(seeded: dict[str, Any], package_factory: Callable[..., dict[str, str]]) -> None:
    other = package_factory(seeded["db"], "other-lib", owner_email="someone@example.org")
    client = logged_in_client(seeded["url"], seeded["db"], other["owner_email"])

    assert client.get("/packages/acme-lib/dashboard").status_code == 404
    assert client.get("/packages/other-lib/dashboard").status_code == 200


def test_summary_data_cannot_break_out_of_the_page(
    server_factory: Any, sqlite_url: str, package_factory: Callable[..., dict[str, str]], record_factory: Callable[..., dict[str, Any]]
) -> None:
    base_url = server_factory(sqlite_url)
    package = package_factory(sqlite_url, "acme-lib")
    hostile = "</script><script>alert(1)</script>"
    ingest(base_url, package["key"], [record_factory(uid=person(n), props={"command": hostile}) for n in range(5)])
    client = logged_in_client(base_url, sqlite_url, package["owner_email"])

    page = client.get("/packages/acme-lib/dashboard").text

    assert hostile not in page
    embedded = re.search(r'<script id="summary-data" type="application/json">(.*?)</script>', page, re.S)
    assert embedded and json.loads(embedded.group(1))["properties"]["command"][0]["value"] == hostile


@pytest.mark.postgres
def test_the_summary_on_postgresql(
    server_factory: Any, postgres_url: str, package_factory: Callable[..., dict[str, str]], record_factory: Callable[..., dict[str, Any]]
) -> None:
    base_url = server_factory(postgres_url)
    package = package_factory(postgres_url, "acme-lib")
    hour = hour_days_ago(1)
    ingest(base_url, package["key"], [record_factory(uid=person(n), hour=hour, exit_code=n % 2) for n in range(6)])

    body = summary(base_url, package, **{"from": day_of(hour)}).json()

    assert body["runs"] == 6 and body["distinct_ids"] == 6 and body["failure_rate"] == 0.5
    assert body["by_day"][0] == {"day": day_of(hour), "runs": 6, "ids": {"user": 0, "package": 6}}
    # PostgreSQL text cannot hold NUL: such input is a 4xx, never a 500.
    headers = {"Authorization": f"Bearer {package['owner_token']}"}
    assert httpx.get(f"{base_url}/api/v1/packages/acme%00lib/summary", headers=headers, timeout=30).status_code == 404
    assert summary(base_url, package, version="1\x00").status_code == 422
