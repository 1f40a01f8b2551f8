"""Generated requests against the OpenAPI schema of ingest and deletion: never a 5xx.

Schemathesis builds bodies from the Pydantic models the schema publishes,
valid ones (positive) and broken ones (negative), and they go over real HTTP
to a server on a real SQLite file. Examples are bounded so the test stays
well under a minute. (Driven through Hypothesis directly: schemathesis'
pytest plugin does not load with this pytest.)
"""

from __future__ import annotations

import uuid

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

EXAMPLES = 25
OPERATIONS = ("POST /api/v1/records", "POST /api/v1/deletions")


@pytest.fixture(scope="module")
def package_key(shared_sqlite_server) -> str:
    from plausipy.server._auth import get_or_create_user
    from plausipy.server._portal import create_package
    from plausipy.server._storage import open_storage

    storage = open_storage(shared_sqlite_server["db"])
    try:
        owner = get_or_create_user(storage, "fuzz@example.org")
        # Generated records mostly carry the shortest valid name, "0": register
        # it so some batches get past the package check into the database.
        create_package(storage, f"fuzz-{uuid.uuid4().hex[:6]}", owner["id"])
        return str(create_package(storage, "0", owner["id"])["key"])
    finally:
        storage.close()


@pytest.fixture(scope="module")
def operations(shared_sqlite_server) -> dict[str, object]:
    schema = schemathesis.openapi.from_url(shared_sqlite_server["url"] + "/api/openapi.json")
    found = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        if label in OPERATIONS:
            found[label] = operation
    assert set(found) == set(OPERATIONS), "the schema describes both bodies"
    return found


@pytest.mark.parametrize("label", OPERATIONS)
@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize("with_key", [True, False], ids=["key", "no-key"])
def test_no_server_errors(operations, package_key, shared_sqlite_server, label, mode, with_key):
    strategy = operations[label].as_strategy(generation_mode=schemathesis.GenerationMode(mode))
    headers = {"Authorization": f"Bearer {package_key}"} if with_key else {}
    statuses: set[int] = set()

    @given(case=strategy)
    @settings(max_examples=EXAMPLES if with_key else EXAMPLES // 4, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case) -> None:
        response = case.call(base_url=shared_sqlite_server["url"], headers=headers, timeout=30)
        statuses.add(response.status_code)
        assert response.status_code < 500, f"{response.status_code} {response.text[:300]}"
        if response.status_code >= 400:
            assert response.json()["error"]

    check()
    assert statuses, "requests were sent"
