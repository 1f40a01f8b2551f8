"""``plausipy server …``: run the collector and administer it from a shell.

::

    plausipy server run --database postgresql://collector@db/plausipy --workers 4
    plausipy server create-package acme-lib --owner ada@example.org --json
    echo 's3cret-pass' | plausipy server set-password ada@example.org
    plausipy server migrate
    plausipy server purge

``PLAUSIPY_DATABASE_URL`` stands in for ``--database`` on every command; the
default is a SQLite file in the user data dir.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from plausipy.server._app import Settings
    from plausipy.server._storage import Storage

__all__ = ["NODELAY_HTTP", "serve", "server"]

#: uvicorn's ``http=`` for the collector (see :func:`_nodelay_protocol`).
NODELAY_HTTP = "plausipy.server._cli:NoDelayH11Protocol"


def __getattr__(name: str) -> Any:
    if name == "NoDelayH11Protocol":
        return _nodelay_protocol()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _nodelay_protocol() -> type:
    """uvicorn's h11 protocol with TCP_NODELAY on every connection.

    With ``--workers`` uvicorn hands each worker a socket rebuilt from a file
    descriptor, whose ``proto`` is 0, so asyncio skips TCP_NODELAY; the
    response then waits on Nagle's algorithm for the client's delayed ACK:
    about 40 ms per request on a keep-alive connection (measured by
    bench/bench_ingest.py: 47 against 2,108 requests/s on one connection).
    """
    import socket

    from uvicorn.protocols.http.h11_impl import H11Protocol

    class NoDelayH11Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            connection = transport.get_extra_info("socket")
            if connection is not None and connection.family in (socket.AF_INET, socket.AF_INET6):
                try:
                    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    pass  # not a TCP socket after all: nothing to tune
            super().connection_made(transport)

    globals()["NoDelayH11Protocol"] = NoDelayH11Protocol
    return NoDelayH11Protocol

_database_option = click.option(
    "--database",
    "database_url",
    envvar="PLAUSIPY_DATABASE_URL",
    metavar="URL",
    default=None,
    help="sqlite:///path or postgresql://… (env PLAUSIPY_DATABASE_URL; default: SQLite in the user data dir).",
)


@contextmanager
def _opened(database_url: str | None) -> Iterator[Storage]:
    """Open and migrate the database; collector errors become one line and exit status 1."""
    from plausipy.server._errors import CollectorError
    from plausipy.server._schema import migrate
    from plausipy.server._storage import open_storage

    try:
        storage = open_storage(database_url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--database") from None
    try:
        migrate(storage)
        yield storage
    except CollectorError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        storage.close()


def serve(
    database_url: str | None,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    *,
    settings: Settings | None = None,
) -> None:
    """Run the collector in this process until interrupted (several workers: forked by uvicorn)."""
    import uvicorn

    from plausipy.server._app import create_app
    from plausipy.server._storage import default_database_url

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # No access log: it would write every client's address (DESIGN.md §5).
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "access_log": False,
        "proxy_headers": True,
        "server_header": False,
        "log_level": "info",
        "http": NODELAY_HTTP,
    }
    if workers <= 1:
        uvicorn.run(create_app(database_url, settings=settings), **options)
        return
    # Workers are separate processes: each builds the app from the environment.
    os.environ["PLAUSIPY_DATABASE_URL"] = database_url or default_database_url()
    with _opened(os.environ["PLAUSIPY_DATABASE_URL"]):
        pass  # migrate once here, not racing in every worker
    uvicorn.run("plausipy.server._app:create_app_from_environment", factory=True, workers=workers, **options)


@click.group()
def server() -> None:
    """Run and administer a plausipy collector."""


@server.command()
@_database_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
def run(database_url: str | None, host: str, port: int, workers: int) -> None:
    """Serve ingest, deletion, the portal and the dashboards."""
    from plausipy.server._errors import CollectorError

    try:
        serve(database_url, host, port, workers)
    except CollectorError as exc:
        raise click.ClickException(exc.message) from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--database") from None


@server.command("create-package")
@_database_option
@click.argument("name")
@click.option("--owner", "owner_email", required=True, metavar="EMAIL", help="Owner account (created if needed).")
@click.option("--json", "as_json", is_flag=True, help="Print {package, key, owner_token} as JSON.")
def create_package_command(database_url: str | None, name: str, owner_email: str, as_json: bool) -> None:
    """Register NAME with a new key and print the key and an owner API token."""
    from plausipy.server._auth import create_api_token, get_or_create_user
    from plausipy.server._portal import create_package

    with _opened(database_url) as storage:
        owner = get_or_create_user(storage, owner_email)
        package = create_package(storage, name, owner["id"])
        token = create_api_token(storage, owner["id"], f"created with {package['name']}")
    if as_json:
        click.echo(json.dumps({"package": package["name"], "key": package["key"], "owner_token": token}))
        return
    click.echo(f"package      {package['name']}")
    click.echo(f"key          {package['key']}")
    click.echo(f"owner token  {token}   (shown once)")
    click.echo("\nAdd to pyproject.toml:\n\n[project.entry-points.plausipy]\n" f'key = "{package["key"]}"')


def _read_password(prompt: Callable[[], str]) -> str:
    if sys.stdin.isatty():
        return prompt()
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


@server.command("set-password")
@_database_option
@click.argument("email")
def set_password_command(database_url: str | None, email: str) -> None:
    """Set the password of EMAIL (read from stdin when it is not a terminal); creates the account if needed."""
    from plausipy.server._auth import get_or_create_user, set_password

    password = _read_password(lambda: click.prompt("New password", hide_input=True, confirmation_prompt=True))
    with _opened(database_url) as storage:
        user = get_or_create_user(storage, email)
        set_password(storage, user["email"], password)
    click.echo(f"password set for {user['email']}")


@server.command()
@_database_option
def migrate(database_url: str | None) -> None:
    """Create or upgrade the collector's tables (the server also does this at start)."""
    from plausipy.server._schema import current_version

    with _opened(database_url) as storage:
        version = current_version(storage)
    click.echo(f"schema version {version}")


@server.command()
@_database_option
def purge(database_url: str | None) -> None:
    """Delete raw records older than each package's retention, now."""
    from plausipy.server._retention import purge_expired

    with _opened(database_url) as storage:
        purged = purge_expired(storage)
    total = sum(purged.values())
    click.echo(f"deleted {total} expired record(s)" + "".join(f"\n  {name}: {count}" for name, count in purged.items()))
