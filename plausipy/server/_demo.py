"""``plausipy demo``: the whole journey on this machine, in a temporary directory.

1. start a collector on a fresh SQLite file (a free port of 127.0.0.1);
2. register two demo packages, ``demo-app`` and ``demo-lib``, for a demo owner
   whose password is printed;
3. run a small demo app (which imports a small demo library) several times
   with :data:`sys.executable`, one run failing, as a handful of simulated
   users — each with an isolated ``PLAUSIPY_HOME`` whose policy is "allow"
   (the user's own policy is never read or changed) and its own time zone;
4. ``plausipy flush`` each of those homes, so the records arrive now;
5. print the dashboard URL and the login, and serve until Ctrl-C.

Nothing is installed anywhere: the demo app and library are two source files
in the temporary directory, and they name the collector themselves
(``endpoint=``), so records go to the local collector only::

    $ plausipy demo
    $ plausipy demo --no-serve --runs 8 --directory ./demo-state
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click

__all__ = ["DEMO_EMAIL", "SimulatedUser", "demo"]

DEMO_EMAIL = "demo@example.org"
DEMO_APP = "demo-app"
DEMO_LIB = "demo-lib"
#: Variables that would stop or redirect the demo's own runs (the demo app reports to the local collector only).
_CLEARED_VARIABLES = ("DO_NOT_TRACK", "PLAUSIPY_DISABLE", "PLAUSIPY_PARENT", "PLAUSIPY_SENDER", "PLAUSIPY_ENDPOINT")
_SUBPROCESS_TIMEOUT = 120


@dataclass(frozen=True)
class SimulatedUser:
    """One person of the demo: an isolated PLAUSIPY_HOME, a time zone and the app version they run."""

    number: int
    timezone: str
    app_version: str


#: Seven people: five on 1.1.0 (shown), two on 1.0.0 (fewer than k = 5: shown as "< 5").
PEOPLE = (
    SimulatedUser(0, "Europe/Berlin", "1.1.0"),
    SimulatedUser(1, "Europe/Paris", "1.1.0"),
    SimulatedUser(2, "Europe/Berlin", "1.1.0"),
    SimulatedUser(3, "Europe/Amsterdam", "1.1.0"),
    SimulatedUser(4, "Europe/Berlin", "1.1.0"),
    SimulatedUser(5, "America/New_York", "1.0.0"),
    SimulatedUser(6, "Asia/Tokyo", "1.0.0"),
)

_LIBRARY_SOURCE = '''\
"""demo-lib: a tiny library that reports its use (written by `plausipy demo`)."""
import time

import plausipy

plausipy.lib(key={key!r}, name="demo-lib", version="0.4.2", endpoint={endpoint!r})


def crunch(size):
    """Some work worth timing."""
    total = 0
    for number in range(size):
        total += number * number
    time.sleep(0.01 * (size % 7))
    return total
'''

_APP_SOURCE = '''\
"""demo-app: a tiny command-line app that reports its runs (written by `plausipy demo`)."""
import sys

import plausipy

plausipy.app(key={key!r}, name="demo-app", version=sys.argv[1], endpoint={endpoint!r})

import demo_lib  # noqa: E402

command = sys.argv[2]
plausipy.track(command=command, size=int(sys.argv[3]))
print("demo-app", sys.argv[1], command, demo_lib.crunch(int(sys.argv[3])))
if command == "deploy":
    raise RuntimeError("the demo's deliberate failure: deploy target unreachable")
'''

_COMMANDS = ("build", "test", "build", "serve", "build", "test")


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class DemoCollector:
    """The collector the demo started, and what it registered."""

    base_url: str
    database: Path
    password: str
    keys: dict[str, str]
    owner_token: str


def prepare_database(database: Path) -> tuple[str, dict[str, str], str]:
    """Create the schema, the demo owner and both packages; return (password, keys, owner token)."""
    from plausipy.server._auth import create_api_token, create_user
    from plausipy.server._portal import create_package
    from plausipy.server._schema import migrate
    from plausipy.server._storage import open_storage

    storage = open_storage(f"sqlite:///{database}")
    try:
        migrate(storage)
        password = secrets.token_urlsafe(9)
        owner = create_user(storage, DEMO_EMAIL, password)
        keys = {name: create_package(storage, name, owner["id"])["key"] for name in (DEMO_APP, DEMO_LIB)}
        token = create_api_token(storage, owner["id"], "plausipy demo")
    finally:
        storage.close()
    return password, keys, token


@contextmanager
def serving(database: Path, host: str, port: int) -> Iterator[str]:
    """Run the collector in a thread of this process; stop it on leaving."""
    import uvicorn

    from plausipy.server._app import create_app

    app = create_app(f"sqlite:///{database}")
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="plausipy-demo-collector", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise click.ClickException(f"the collector could not start on {host}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def write_demo_sources(directory: Path, keys: dict[str, str], endpoint: str) -> Path:
    """Write demo_app.py and demo_lib.py; return the app's path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "demo_lib.py").write_text(_LIBRARY_SOURCE.format(key=keys[DEMO_LIB], endpoint=endpoint))
    app = directory / "demo_app.py"
    app.write_text(_APP_SOURCE.format(key=keys[DEMO_APP], endpoint=endpoint))
    return app


def _environment(home: Path, timezone: str) -> dict[str, str]:
    environment = {name: value for name, value in os.environ.items() if name not in _CLEARED_VARIABLES}
    environment.update({"PLAUSIPY_HOME": str(home), "TZ": timezone, "PYTHONDONTWRITEBYTECODE": "1"})
    return environment


def _plausipy(arguments: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plausipy", *arguments],
        env=environment, capture_output=True, text=True, timeout=_SUBPROCESS_TIMEOUT, check=False,
    )  # fmt: skip


@dataclass
class PersonOutcome:
    """What happened for one simulated user."""

    runs: int
    failures: int
    problems: list[str]


def run_person(person: SimulatedUser, runs: list[tuple[str, int]], app: Path, root: Path) -> PersonOutcome:
    """Grant consent in the person's own home, run the app, then deliver in the foreground."""
    home = root / f"user-{person.number}"
    environment = _environment(home, person.timezone)
    problems: list[str] = []
    granted = _plausipy(["policy", "allow"], environment)
    if granted.returncode != 0:
        problems.append(f"policy allow: {granted.stderr.strip() or granted.stdout.strip()}")
    failures = 0
    for command, size in runs:
        finished = subprocess.run(
            [sys.executable, str(app), person.app_version, command, str(size)],
            cwd=app.parent, env=environment, capture_output=True, text=True, timeout=_SUBPROCESS_TIMEOUT, check=False,
        )  # fmt: skip
        failures += finished.returncode != 0
    flushed = _plausipy(["flush", "--timeout", "30"], environment)
    if flushed.returncode != 0:
        problems.append(f"flush: {(flushed.stdout + flushed.stderr).strip()}")
    return PersonOutcome(runs=len(runs), failures=failures, problems=problems)


def plan_runs(total: int) -> dict[int, list[tuple[str, int]]]:
    """Spread ``total`` runs over :data:`PEOPLE`; the last run is the failing ``deploy``.

    >>> plan = plan_runs(8)
    >>> sum(len(runs) for runs in plan.values()), plan[0][-1][0]
    (8, 'deploy')
    """
    plan: dict[int, list[tuple[str, int]]] = {person.number: [] for person in PEOPLE}
    for index in range(total):
        person = PEOPLE[index % len(PEOPLE)]
        command = "deploy" if index == total - 1 else _COMMANDS[index % len(_COMMANDS)]
        plan[person.number].append((command, 1000 * (index % 9 + 1)))
    return plan


def stored_runs(database: Path) -> dict[str, int]:
    """Records that arrived, per package."""
    from plausipy.server._storage import open_storage

    storage = open_storage(f"sqlite:///{database}")
    try:
        rows = storage.read(
            "SELECT packages.name, COUNT(records.run_id) FROM packages"
            " LEFT JOIN records ON records.package_id = packages.id GROUP BY packages.name"
        )
    finally:
        storage.close()
    return {str(name): int(count) for name, count in rows}


@click.command()
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Port of the collector (default: a free one).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--runs", type=click.IntRange(1, 500), default=14, show_default=True, help="How many times to run the demo app.")
@click.option("--no-serve", "no_serve", is_flag=True, help="Exit once the records have arrived (for scripts and tests).")
@click.option("--directory", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the demo's database and homes here (default: a temporary directory, removed at the end).")  # fmt: skip
def demo(port: int, host: str, runs: int, no_serve: bool, directory: Path | None) -> None:
    """Run the end-to-end demo on a local collector, then show its dashboard.

    Starts a collector on a fresh SQLite file, runs a small demo app (with a
    demo library) several times as a few simulated users who consented in
    isolated homes, delivers their records and serves the dashboard until
    Ctrl-C. Your own plausipy policy and data are never touched.
    """
    keep = directory is not None
    root = Path(directory).resolve() if directory is not None else Path(tempfile.mkdtemp(prefix="plausipy-demo-"))
    try:
        _run_demo(root, host=host, port=port, runs=runs, serve=not no_serve)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _run_demo(root: Path, *, host: str, port: int, runs: int, serve: bool) -> None:
    root.mkdir(parents=True, exist_ok=True)
    database = root / "collector.sqlite3"
    if database.exists():
        raise click.ClickException(f"{database} already exists: give --directory an empty directory")
    if port and not _port_is_free(host, port):
        raise click.ClickException(f"port {port} on {host} is in use; pick another with --port, or leave it out")
    port = port or _free_port(host)
    password, keys, token = prepare_database(database)
    if os.environ.get("DO_NOT_TRACK") or os.environ.get("PLAUSIPY_DISABLE"):
        click.echo("note: DO_NOT_TRACK / PLAUSIPY_DISABLE is set; the demo app's records still go to this local "
                   "collector only, never elsewhere.")  # fmt: skip
    with serving(database, host, port) as base_url:
        click.echo(f"collector   {base_url}  (SQLite {database})")
        app = write_demo_sources(root / "demo", keys, base_url)
        click.echo(f"running     {DEMO_APP} {runs} times as {len(PEOPLE)} simulated users (one run fails on purpose) …")
        outcomes = _run_everyone(plan_runs(runs), app, root)
        _report(database, base_url, password, token, outcomes)
        if not serve:
            return
        click.echo("Serving until Ctrl-C.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            click.echo("\nstopped.")


def _run_everyone(plan: dict[int, list[tuple[str, int]]], app: Path, root: Path) -> list[PersonOutcome]:
    people = [person for person in PEOPLE if plan[person.number]]
    # Simulated users are independent processes: run a few side by side.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1, len(people))) as pool:
        return list(pool.map(lambda person: run_person(person, plan[person.number], app, root), people))


def _report(database: Path, base_url: str, password: str, token: str, outcomes: list[PersonOutcome]) -> None:
    arrived = stored_runs(database)
    failures = sum(outcome.failures for outcome in outcomes)
    click.echo(f"ran         {sum(outcome.runs for outcome in outcomes)} runs, {failures} failing")
    click.echo(f"arrived     {arrived.get(DEMO_APP, 0)} records of {DEMO_APP}, {arrived.get(DEMO_LIB, 0)} of {DEMO_LIB}")
    for outcome in outcomes:
        for problem in outcome.problems:
            click.echo(f"warning     {problem}", err=True)
    click.echo("")
    click.echo(f"dashboard   {base_url}/packages/{DEMO_APP}/dashboard")
    click.echo(f"            {base_url}/packages/{DEMO_LIB}/dashboard")
    click.echo(f"login       {DEMO_EMAIL}  password: {password}")
    click.echo(f"JSON        curl -H 'Authorization: Bearer {token}' {base_url}/api/v1/packages/{DEMO_APP}/summary")
