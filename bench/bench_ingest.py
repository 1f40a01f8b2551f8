"""Ingest throughput: records/s with batches of 1 and 100, on SQLite and PostgreSQL,
each beside the same server stack answering an empty handler.

    python bench/bench_ingest.py [--seconds 6] [--workers 2] [--clients 3] [--rounds 5]

Every server runs as it does in production (uvicorn, ``--workers``, no
access log) in its own process on 127.0.0.1; load comes from client
processes holding keep-alive connections, each request carrying fresh
run_ids so nothing is a duplicate. The empty handler is a one-route app
that reads the body and answers the same 202: the ratio says what
validation, hashing and the database cost on top of HTTP, and the servers'
CPU milliseconds per request say it again without the load generator, which
shares the machine. Each collector row is measured right after an
empty-handler row; with ``--rounds N`` each row is N such pairs, and the
table shows the pair with the median ratio and the range of all N (the
machine's speed drifts by tens of percent over minutes). PostgreSQL is
started from its binaries in a temp dir (skipped when they are missing).
Not a test: it prints a table and asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

# At module level: FastAPI resolves the handler's (string) annotations here.
from fastapi import FastAPI, Request
from starlette.responses import JSONResponse

PG_BIN = Path(os.environ.get("PLAUSIPY_PG_BIN", "/usr/lib/postgresql/15/bin"))
HERE = Path(__file__).resolve().parent


# --- the empty handler ----------------------------------------------------------------------


def empty_app():  # type: ignore[no-untyped-def]
    """The same stack (FastAPI on uvicorn) with a route that reads the body and does nothing."""
    app = FastAPI()

    @app.post("/api/v1/records")
    async def records(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"accepted": 0, "duplicates": 0, "bytes": len(body)}, status_code=202)

    @app.get("/api/v1/health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    return app


# --- processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_health(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the server exited during start-up")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/api/v1/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not start")


def start_empty_server(workers: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "bench_ingest:empty_app", "--app-dir", str(HERE),
        # The options `plausipy server run` gives uvicorn (plausipy.server._cli.serve),
        # so the two columns differ only in the handler's body.
        "--port", str(port), "--workers", str(workers), "--no-access-log", "--log-level", "info",
        "--proxy-headers", "--no-server-header", "--http", "plausipy.server._cli:NoDelayH11Protocol",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_health(port, process)
    return process, port


def start_collector(database_url: str, workers: int) -> tuple[subprocess.Popen[bytes], int, str]:
    from plausipy.server._auth import get_or_create_user
    from plausipy.server._portal import create_package
    from plausipy.server._schema import migrate
    from plausipy.server._storage import open_storage

    storage = open_storage(database_url)
    migrate(storage)
    owner = get_or_create_user(storage, "bench@example.org")
    key = create_package(storage, f"bench-{uuid.uuid4().hex[:8]}", owner["id"])["key"]
    storage.close()
    port = free_port()
    environment = {
        **os.environ,
        # The bench is one client address hammering one key: lift the limits.
        "PLAUSIPY_RATE_PER_ADDRESS": "1e9", "PLAUSIPY_BURST_PER_ADDRESS": "1e9",
        "PLAUSIPY_RATE_PER_KEY": "1e9", "PLAUSIPY_BURST_PER_KEY": "1e9",
        "PLAUSIPY_RETENTION_INTERVAL": "0",
    }  # fmt: skip
    command = [sys.executable, "-m", "plausipy", "server", "run", "--database", database_url, "--port", str(port), "--workers", str(workers)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment)
    wait_for_health(port, process)
    return process, port, str(key)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Postgres:
    """A throw-away cluster (initdb/postgres run as the postgres user when we are root)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="plausipy-bench-pg-"))
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self.port = free_port()
        subprocess.run([*self.as_postgres, str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"], check=True, capture_output=True)
        self.process = subprocess.Popen(
            [*self.as_postgres, str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.root),
             "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import psycopg

        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def close(self) -> None:
        subprocess.run([*self.as_postgres, str(PG_BIN / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w"], capture_output=True)
        self.process.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


# --- load ---------------------------------------------------------------------------------------


def _record_template(package: str) -> tuple[str, str, str]:
    """The record's JSON cut around its run_id and uid, which every request renews."""
    hour = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:00:00Z")
    record = {
        "v": 1, "run_id": "RUNID", "scope": "package", "uid": "UID", "package": package, "version": "1.2.0",
        "role": "lib", "hour": hour, "duration_ms": 120, "peak_rss_kib": 30000, "exit_code": 0, "os": "linux",
        "arch": "x86_64", "python": "3.12.4", "implementation": "cpython", "country": "DE",
        "region": "Western Europe", "timezone": "Europe/Berlin", "props": {"command": "build", "files": 3},
    }  # fmt: skip
    before, rest = json.dumps(record).split('"RUNID"')
    middle, after = rest.split('"UID"')
    return before + '"', '"' + middle + '"', '"' + after


def _client(port: int, key: str, package: str, batch: int, seconds: float, threads: int, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    before, middle, after = _record_template(package)
    deadline_holder: list[float] = []
    counts = [0] * threads
    errors = [0] * threads
    start_barrier = threading.Barrier(threads)

    def worker(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        start_barrier.wait()
        while time.monotonic() < deadline_holder[0]:
            records = ",".join(f"{before}{uuid.uuid4()}{middle}{uuid.uuid4().hex}{after}" for _ in range(batch))
            connection.request("POST", "/api/v1/records", body='{"records":[' + records + "]}", headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status == 202:
                counts[index] += batch
            else:
                errors[index] += 1

    deadline_holder.append(time.monotonic() + seconds)
    pool = [threading.Thread(target=worker, args=(index,)) for index in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    results.put((sum(counts), sum(errors)))


def server_cpu_seconds(process: subprocess.Popen[bytes]) -> float:
    """CPU time (user + system) of a server and its worker processes so far."""
    import psutil

    root = psutil.Process(process.pid)
    total = 0.0
    for member in [root, *root.children(recursive=True)]:
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def measure_with_cpu(
    process: subprocess.Popen[bytes], port: int, key: str, package: str, batch: int, seconds: float, clients: int,
    database: subprocess.Popen[bytes] | None = None,
) -> tuple[float, int, float, float]:
    """Records per second, non-202 answers, and the CPU milliseconds per request of the server and of the database's processes."""
    before = server_cpu_seconds(process)
    database_before = server_cpu_seconds(database) if database else 0.0
    started = time.monotonic()
    rate, errors = measure(port, key, package, batch, seconds, clients)
    requests = rate * (time.monotonic() - started) / batch
    cpu_ms = (server_cpu_seconds(process) - before) * 1000 / requests if requests else float("nan")
    database_ms = float("nan")
    if database and requests:
        database_ms = (server_cpu_seconds(database) - database_before) * 1000 / requests
    return rate, errors, cpu_ms, database_ms


def measure(port: int, key: str, package: str, batch: int, seconds: float, clients: int) -> tuple[float, int]:
    """Records per second accepted, and the number of non-202 answers."""
    results: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    processes = [
        multiprocessing.Process(target=_client, args=(port, key, package, batch, seconds, 2, results)) for _ in range(clients)
    ]
    started = time.monotonic()
    for process in processes:
        process.start()
    totals = [results.get() for _ in processes]
    for process in processes:
        process.join()
    elapsed = max(seconds, time.monotonic() - started - 0.0)
    return sum(total for total, _ in totals) / elapsed, sum(errors for _, errors in totals)


def _package_of(database_url: str, key: str) -> str:
    from plausipy.server._storage import open_storage

    storage = open_storage(database_url)
    try:
        return str(storage.read("SELECT name FROM packages WHERE key = ?", (key,))[0][0])
    finally:
        storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="load time per row and server")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=3, help="client processes (2 connections each)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="empty/collector pairs per row; the table shows the pair with the median ratio, "
                             "and the range of the ratios (default 1)")
    options = parser.parse_args()

    sys.path.insert(0, str(HERE))
    # The empty server runs throughout and each collector row is measured
    # right after an empty-handler row of the same batch size: on a shared
    # machine the load drifts, and a ratio of two moments would measure that.
    Sample = tuple[float, int, float, float]  # rec/s, non-202 answers, server CPU ms/request, database CPU ms/request
    rows: list[tuple[str, int, list[tuple[Sample, Sample]]]] = []
    empty_process, empty_port = start_empty_server(options.workers)
    try:
        backends = ["sqlite"] + (["postgresql"] if (PG_BIN / "initdb").exists() else [])
        for backend in backends:
            workdir = Path(tempfile.mkdtemp(prefix="plausipy-bench-"))
            postgres = Postgres() if backend == "postgresql" else None
            database_url = postgres.url if postgres else f"sqlite:///{workdir / 'collector.sqlite3'}"
            try:
                process, port, key = start_collector(database_url, options.workers)
                try:
                    package = _package_of(database_url, key)
                    for batch in (1, 100):
                        pairs = []
                        for _ in range(max(1, options.rounds)):
                            empty = measure_with_cpu(empty_process, empty_port, "x" * 32, "acme", batch, options.seconds,
                                                     options.clients)
                            collector = measure_with_cpu(process, port, key, package, batch, options.seconds,
                                                         options.clients, postgres.process if postgres else None)
                            pairs.append((empty, collector))
                        rows.append((backend, batch, pairs))
                finally:
                    stop(process)
            finally:
                if postgres:
                    postgres.close()
                shutil.rmtree(workdir, ignore_errors=True)
    finally:
        stop(empty_process)

    print(f"\ningest, {options.workers} workers, {options.clients * 2} keep-alive connections, {options.seconds:g} s per row, "
          f"{os.cpu_count()} cores" + (f", median of {options.rounds} pairs per row" if options.rounds > 1 else ""))
    print(f"{'backend':<11} {'batch':>5} {'empty rec/s':>12} {'collector rec/s':>16} {'ratio':>6} {'ratios':>11} "
          f"{'server CPU ms/request (empty / collector)':>42} {'PostgreSQL CPU ms/request':>26} {'non-202':>8}")
    for backend, batch, pairs in rows:
        ratios = sorted((collector[0] / empty[0] if empty[0] else float("nan"), index)
                        for index, (empty, collector) in enumerate(pairs))
        ratio, middle = ratios[(len(ratios) - 1) // 2]
        (empty_rate, _, empty_cpu, _), (rate, _, cpu, database_cpu) = pairs[middle]
        errors = sum(collector[1] for _, collector in pairs)
        spread = f"{ratios[0][0]:.2f}–{ratios[-1][0]:.2f}" if len(ratios) > 1 else ""
        cpu_text = f"{empty_cpu:.2f} / {cpu:.2f}"
        database_text = "—" if database_cpu != database_cpu else f"{database_cpu:.2f}"  # NaN: SQLite, in the server
        print(f"{backend:<11} {batch:>5} {empty_rate:>12,.0f} {rate:>16,.0f} {ratio:>6.2f} {spread:>11} {cpu_text:>42} "
              f"{database_text:>26} {errors:>8}")


if __name__ == "__main__":
    main()
