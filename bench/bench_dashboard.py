"""Dashboard benchmark: the summary of a package with 1,000,000 records over 90 days.

Seeds a SQLite collector database directly (one bulk transaction, not HTTP),
builds the daily rollups once (what the first dashboard view after a quiet
period pays), then starts ``plausipy server run`` on it and times, over
loopback, the summary API and the dashboard page beside the empty health
handler. Target: median summary ≤ 300 ms. Run::

    .venv/bin/python bench/bench_dashboard.py            # 1,000,000 records
    .venv/bin/python bench/bench_dashboard.py --records 100000 --repeat 9
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DAYS = 90
PEOPLE = 25_000
VERSIONS = ["1.0.0", "1.1.0", "1.2.0", "1.2.1", "1.3.0", "2.0.0", "2.0.1", "2.1.0", "2.2.0", "2.3.0", "3.0.0b1", "3.0.0"]
PYTHONS = ["3.9.18", "3.10.13", "3.11.7", "3.12.4", "3.13.0"]
PLATFORMS = [("linux", "x86_64"), ("linux", "aarch64"), ("darwin", "arm64"), ("darwin", "x86_64"), ("windows", "AMD64")]
PLACES = [
    ("US", "Northern America", "America/New_York"), ("US", "Northern America", "America/Los_Angeles"),
    ("DE", "Western Europe", "Europe/Berlin"), ("FR", "Western Europe", "Europe/Paris"),
    ("GB", "Northern Europe", "Europe/London"), ("IN", "Southern Asia", "Asia/Kolkata"),
    ("JP", "Eastern Asia", "Asia/Tokyo"), ("BR", "South America", "America/Sao_Paulo"),
    ("AU", "Australia and New Zealand", "Australia/Sydney"), ("NG", "Western Africa", "Africa/Lagos"),
    ("CN", "Eastern Asia", "Asia/Shanghai"), ("CA", "Northern America", "America/Toronto"),
    ("IS", "Northern Europe", "Atlantic/Reykjavik"), (None, None, None),
]  # fmt: skip
COMMANDS = ["build", "test", "serve", "lint", "deploy", "init"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_people(rng: random.Random) -> list[tuple[str, str, str, str, str, tuple[str | None, ...]]]:
    people = []
    for number in range(PEOPLE):
        scope = rng.choices(["package", "user", "anonymous"], weights=[80, 15, 5])[0]
        uid_hash = hashlib.sha256(f"person-{number}".encode()).hexdigest()
        python = rng.choices(PYTHONS, weights=[5, 15, 30, 35, 15])[0]
        os_name, arch = rng.choices(PLATFORMS, weights=[50, 8, 20, 5, 17])[0]
        place = PLACES[min(int(rng.expovariate(0.35)), len(PLACES) - 1)]
        people.append((scope, uid_hash, python, os_name, arch, place))
    return people


def seed(database: Path, records: int, seed_value: int) -> tuple[str, int]:
    """Create the schema, an owner, a package and ``records`` records; return (owner token, package id)."""
    from plausipy.server._auth import create_api_token, get_or_create_user
    from plausipy.server._portal import create_package
    from plausipy.server._schema import migrate
    from plausipy.server._storage import open_storage

    storage = open_storage(f"sqlite:///{database}")
    migrate(storage)
    owner = get_or_create_user(storage, "bench@example.org")
    create_package(storage, "bench-lib", owner["id"])
    token = create_api_token(storage, owner["id"], "bench")
    package_id = int(storage.read("SELECT id FROM packages WHERE name = 'bench-lib'")[0][0])
    storage.close()

    rng = random.Random(seed_value)
    people = make_people(rng)
    today = dt.datetime.now(dt.timezone.utc).date()
    first_day = today - dt.timedelta(days=DAYS - 1)
    connection = sqlite3.connect(database)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = OFF")
    connection.execute("PRAGMA cache_size = -262144")  # 256 MiB: the bulk load stays in memory
    # Secondary indexes are built once after the load (a sort), not row by row.
    indexes = connection.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'records' AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        connection.execute(f"DROP INDEX {name}")
    rows = (
        _record_row(rng, people, package_id, first_day + dt.timedelta(days=number * DAYS // records), number)
        for number in range(records)
    )
    with connection:
        connection.executemany(
            "INSERT INTO records (package_id, run_id, uid_hash, scope, version, role, hour, day, duration_ms,"
            " peak_rss_kib, exit_code, os, arch, python, implementation, country, region, timezone, props,"
            " received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        connection.executemany(
            "INSERT OR IGNORE INTO dirty_days (package_id, day) VALUES (?, ?)",
            [(package_id, (first_day + dt.timedelta(days=n)).isoformat()) for n in range(DAYS)],
        )
    for _, sql in indexes:
        connection.execute(sql)
    connection.close()
    return token, package_id


def _record_row(rng: random.Random, people: list, package_id: int, day: dt.date, number: int) -> tuple:  # type: ignore[type-arg]
    scope, uid_hash, python, os_name, arch, (country, region, timezone) = people[int(rng.paretovariate(1.2)) % PEOPLE]
    if scope == "anonymous":
        uid_hash = f"{rng.getrandbits(128):032x}"
    hour = f"{day.isoformat()}T{rng.randrange(24):02d}:00:00Z"
    version = VERSIONS[min(int(rng.expovariate(0.3)), len(VERSIONS) - 1)]
    props = json.dumps({"command": rng.choice(COMMANDS), "files": rng.randrange(50)}) if rng.random() < 0.7 else None
    return (
        # Ascending run_ids (uuid-shaped) append to the primary key instead of splitting pages.
        package_id, f"{number:08x}-0000-4000-8000-000000000000", uid_hash, scope, version, "lib", hour, day.isoformat(),
        int(rng.lognormvariate(5.5, 1.0)), int(rng.lognormvariate(10.3, 0.4)),
        1 if rng.random() < 0.04 else 0, os_name, arch, python, "cpython", country, region, timezone,
        props, hour,
    )  # fmt: skip


def build_rollups(database: Path, package_id: int) -> float:
    from plausipy.server._rollups import refresh_dirty_days
    from plausipy.server._storage import open_storage

    storage = open_storage(f"sqlite:///{database}")
    started = time.perf_counter()
    refresh_dirty_days(storage, package_id)
    elapsed = time.perf_counter() - started
    storage.close()
    return elapsed


def in_process_summary_ms(database: Path, package_id: int, repeat: int) -> list[float]:
    from plausipy.server._storage import open_storage
    from plausipy.server._summary import build_summary, query_from_parameters

    storage = open_storage(f"sqlite:///{database}")
    query = query_from_parameters(package_id=package_id, k=5, first=None, last=None, version=None)
    query = type(query)(package_id=package_id, k=5, first_day=query.last_day - dt.timedelta(days=DAYS - 1),
                        last_day=query.last_day)
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        build_summary(storage, query)
        timings.append((time.perf_counter() - started) * 1000)
    storage.close()
    return timings


def http_timings(base_url: str, path: str, repeat: int, client: object) -> list[float]:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(base_url + path)  # type: ignore[attr-defined]
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text[:300]
    return timings


def fresh_day_timings(
    base_url: str, path: str, repeat: int, client: object, database: Path, package_id: int, today: dt.date
) -> list[float]:
    """The summary right after ingest touched today: that day is rolled up again first."""
    timings: list[float] = []
    for attempt in range(repeat + 1):
        with sqlite3.connect(database) as connection:
            connection.execute("INSERT OR IGNORE INTO dirty_days (package_id, day) VALUES (?, ?)", (package_id, today.isoformat()))
            if attempt == 0:  # as if today's last roll-up were long ago: the first request pays for it
                connection.execute("UPDATE rollup_refreshes SET refreshed_at = 0 WHERE package_id = ?", (package_id,))
        timings += http_timings(base_url, path, 1, client)
    return timings


def log_in(client: object, base_url: str, database: Path) -> None:
    from plausipy.server._auth import set_password
    from plausipy.server._storage import open_storage

    storage = open_storage(f"sqlite:///{database}")
    set_password(storage, "bench@example.org", "bench-password")
    storage.close()
    form = client.get(base_url + "/login")  # type: ignore[attr-defined]
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    response = client.post(base_url + "/login", data={"email": "bench@example.org", "password": "bench-password", "csrf_token": csrf})  # type: ignore[attr-defined]
    assert response.status_code == 303


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--seed", type=int, default=7)
    options = parser.parse_args()

    import httpx

    with tempfile.TemporaryDirectory(prefix="plausipy-bench-dashboard-") as directory:
        database = Path(directory) / "collector.sqlite3"
        started = time.perf_counter()
        token, package_id = seed(database, options.records, options.seed)
        seed_seconds = time.perf_counter() - started
        rollup_seconds = build_rollups(database, package_id)
        cells = sqlite3.connect(database).execute("SELECT COUNT(*) FROM rollup_cells").fetchone()[0]
        in_process = in_process_summary_ms(database, package_id, options.repeat)

        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        environment = {**os.environ, "PLAUSIPY_HOME": str(Path(directory) / "home"), "PLAUSIPY_RETENTION_INTERVAL": "0"}
        server = subprocess.Popen(
            [sys.executable, "-m", "plausipy", "server", "run", "--database", f"sqlite:///{database}", "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment,
        )  # fmt: skip
        try:
            client = httpx.Client(timeout=60, headers={"Authorization": f"Bearer {token}"})
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get(base_url + "/api/v1/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start")
                time.sleep(0.1)
            today = dt.datetime.now(dt.timezone.utc).date()
            first = (today - dt.timedelta(days=DAYS - 1)).isoformat()
            summary_path = f"/api/v1/packages/bench-lib/summary?from={first}&to={today.isoformat()}"
            health = http_timings(base_url, "/api/v1/health", options.repeat, client)
            summary = http_timings(base_url, summary_path, options.repeat, client)
            filtered = http_timings(base_url, summary_path + "&version=2.0.0", options.repeat, client)
            fresh = fresh_day_timings(base_url, summary_path, max(3, options.repeat // 3), client, database, package_id, today)
            log_in(client, base_url, database)
            page = http_timings(base_url, f"/packages/bench-lib/dashboard?from={first}&to={today.isoformat()}", options.repeat, client)
            client.close()
        finally:
            server.terminate()
            server.wait(timeout=30)

    baseline = statistics.median(health)
    print(f"records: {options.records:,} over {DAYS} days, {PEOPLE:,} people; rollup cells: {cells:,}")
    print(f"seeding (bulk insert):        {seed_seconds:8.1f} s")
    print(f"rollups of {DAYS} dirty days:     {rollup_seconds:8.1f} s  (once, at the first view after ingest)")
    print(f"{'median of ' + str(options.repeat):<30}{'ms':>9}  {'× health':>9}")
    # "after ingest": today was marked dirty before each request. The first request rolls its
    # ~records/90 raw rows up again; a busy day is then rolled up at most once a minute.
    for label, timings in (
        ("health (empty handler), HTTP", health),
        ("summary, in process", in_process),
        ("summary API, HTTP", summary),
        ("summary API + version, HTTP", filtered),
        ("after ingest: first, HTTP", fresh[:1]),
        ("after ingest: next, HTTP", fresh[1:]),
        ("dashboard page, HTTP", page),
    ):
        median = statistics.median(timings)
        print(f"{label:<30}{median:9.1f}  {median / baseline:9.1f}")
    verdict = "meets" if statistics.median(summary) <= 300 else "MISSES"
    print(f"target: median summary ≤ 300 ms over {DAYS} days: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
