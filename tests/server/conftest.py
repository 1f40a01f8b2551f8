"""Fixtures for the collector: real servers in subprocesses, on a real SQLite file
or a real PostgreSQL started from its binaries.

- ``sqlite_url`` – a fresh SQLite file URL in the test's temp dir.
- ``server_factory(database_url, **env) -> base_url`` – ``plausipy server run``
  in a subprocess on a free port of 127.0.0.1, stopped after the test;
  ``server_factory.log(base_url)`` is everything it wrote.
- ``sqlite_server`` – a server on ``sqlite_url``.
- ``shared_sqlite_server`` – one server per test module: ``{"url", "db", "factory"}``.
- ``postgres_url`` – a fresh database on a PostgreSQL cluster started once
  per session (``@pytest.mark.postgres`` tests; skipped only without binaries).
- ``private_postgres`` – a cluster of the test's own (for restart tests).
- ``package_factory(database_url, name)`` – a registered package:
  ``{"name", "key", "owner_token", "owner_email"}``.
- ``record_factory(**fields)`` – a valid wire record (DESIGN.md §4) for this hour.
- ``rows(database_url, sql, params)`` – a query on the collector's database.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

PG_BIN = Path(os.environ.get("PLAUSIPY_PG_BIN", "/usr/lib/postgresql/15/bin"))
STARTUP_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = STARTUP_TIMEOUT, interval: float = 0.1) -> Any:
    """Poll until ``predicate()`` is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {predicate}")
        time.sleep(interval)


# --- servers ------------------------------------------------------------------------------


class ServerFactory:
    """Starts ``plausipy server run`` subprocesses and stops them all at teardown."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._servers: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def __call__(self, database_url: str, *, workers: int = 1, **env: str) -> str:
        import httpx

        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        log_path = self.directory / f"server-{port}.log"
        environment = {**os.environ, "PLAUSIPY_HOME": str(self.directory / "home"), **env}
        environment.pop("PLAUSIPY_DATABASE_URL", None)
        command = [sys.executable, "-m", "plausipy", "server", "run", "--database", database_url, "--port", str(port)]
        if workers > 1:
            command += ["--workers", str(workers)]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
        self._servers[base_url] = (process, log_path)

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the server exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                return httpx.get(base_url + "/api/v1/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready)
        return base_url

    def log(self, base_url: str) -> str:
        """Everything the server at ``base_url`` wrote to stdout and stderr so far."""
        return self._servers[base_url][1].read_text(errors="replace")

    def stop(self, base_url: str) -> None:
        process, _ = self._servers[base_url]
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop_all(self) -> None:
        for base_url in list(self._servers):
            self.stop(base_url)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    factory = ServerFactory(tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def shared_sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One server per test module on its own SQLite file, with rate limits out of the way.

    Tests sharing it register their own package (``package_factory``) so
    their rows stay apart. Yields ``{"url", "db", "factory"}``.
    """
    directory = tmp_path_factory.mktemp("shared-server")
    factory = ServerFactory(directory)
    database_url = f"sqlite:///{directory / 'collector.sqlite3'}"
    url = factory(database_url, PLAUSIPY_RATE_PER_ADDRESS="100000", PLAUSIPY_BURST_PER_ADDRESS="100000")
    yield {"url": url, "db": database_url, "factory": factory}
    factory.stop_all()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'collector.sqlite3'}"


@pytest.fixture
def sqlite_server(server_factory: ServerFactory, sqlite_url: str) -> str:
    return server_factory(sqlite_url)


# --- PostgreSQL ---------------------------------------------------------------------------


def _as_postgres_user(command: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


class PostgresCluster:
    """A throw-away PostgreSQL cluster in a temp dir, listening on 127.0.0.1:port."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            pytest.skip(f"PostgreSQL binaries not found in {PG_BIN}")
        self.root = Path(tempfile.mkdtemp(prefix="plausipy-pg-"))
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        subprocess.run(
            _as_postgres_user([str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]),
            check=True,
            capture_output=True,
        )

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresCluster:
        import psycopg

        self.process = subprocess.Popen(
            _as_postgres_user([
                str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.root),
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off",
                "-c", "max_connections=200",
            ]),
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "postgres.log", "ab"),  # noqa: SIM115 - the child owns it
        )  # fmt: skip

        def accepting() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError((self.root / "postgres.log").read_text())
            try:
                psycopg.connect(self.admin_url, connect_timeout=2).close()
            except psycopg.OperationalError:
                return False
            return True

        wait_until(accepting)
        return self

    def stop(self) -> None:
        """Fast shutdown (open sessions are cut, as in a restart); runuser does not forward signals."""
        if self.process is not None and self.process.poll() is None:
            subprocess.run(
                _as_postgres_user([str(PG_BIN / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w"]),
                capture_output=True,
                timeout=60,
            )
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def create_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    yield cluster
    cluster.destroy()


@pytest.fixture
def private_postgres() -> Iterator[PostgresCluster]:
    """A cluster of the test's own, free to stop and restart."""
    cluster = PostgresCluster().start()
    yield cluster
    cluster.destroy()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A fresh, empty database on the session's PostgreSQL."""
    return postgres_cluster.create_database()


# --- data ---------------------------------------------------------------------------------


def current_hour() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:00:00Z")


def make_record(**fields: Any) -> dict[str, Any]:
    """A valid wire record for the package ``acme-lib`` that started this hour."""
    record: dict[str, Any] = {
        "v": 1, "run_id": str(uuid.uuid4()), "scope": "package", "uid": uuid.uuid4().hex,
        "package": "acme-lib", "version": "1.2.0", "role": "lib", "hour": current_hour(),
        "duration_ms": 120, "peak_rss_kib": 30_000, "exit_code": 0, "os": "linux", "arch": "x86_64",
        "python": "3.12.4", "implementation": "cpython", "country": "DE", "region": "Western Europe",
        "timezone": "Europe/Berlin", "props": {"command": "build", "files": 3},
    }  # fmt: skip
    record.update(fields)
    return record


@pytest.fixture
def package_factory() -> Callable[..., dict[str, str]]:
    """Register a package straight in the database, as ``create-package`` does."""

    def create(database_url: str, name: str = "acme-lib", owner_email: str = "owner@example.org") -> dict[str, str]:
        from plausipy.server._auth import create_api_token, get_or_create_user
        from plausipy.server._portal import create_package
        from plausipy.server._schema import migrate
        from plausipy.server._storage import open_storage

        storage = open_storage(database_url)
        try:
            migrate(storage)
            owner = get_or_create_user(storage, owner_email)
            package = create_package(storage, name, owner["id"])
            token = create_api_token(storage, owner["id"], "tests")
        finally:
            storage.close()
        return {"name": package["name"], "key": package["key"], "owner_token": token, "owner_email": owner["email"]}

    return create


def read_rows(database_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one query on the collector's database, from the test process."""
    from plausipy.server._storage import open_storage

    storage = open_storage(database_url)
    try:
        return storage.read(sql, params)
    finally:
        storage.close()


@pytest.fixture
def record_factory() -> Callable[..., dict[str, Any]]:
    return make_record


@pytest.fixture
def plain_record() -> Callable[..., dict[str, Any]]:
    """The same as ``record_factory``, for modules that override that fixture."""
    return make_record


@pytest.fixture
def rows() -> Callable[..., list[tuple[Any, ...]]]:
    return read_rows
