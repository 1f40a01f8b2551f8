"""``plausipy demo`` in a real subprocess: a collector, real client runs, records that arrive."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")


def demo_environment(tmp_path: Path) -> dict[str, str]:
    """The caller's own plausipy state lives in ``own-home``: the demo must never touch it."""
    environment = {**os.environ, "PLAUSIPY_HOME": str(tmp_path / "own-home"), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    return environment


def run_demo(arguments: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plausipy", "demo", *arguments],
        env=environment, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def test_the_demo_delivers_every_run_including_a_failing_one(tmp_path: Path) -> None:
    environment = demo_environment(tmp_path)
    state = tmp_path / "state"

    finished = run_demo(["--no-serve", "--runs", "8", "--directory", str(state)], environment)

    assert finished.returncode == 0, finished.stdout + finished.stderr
    output = finished.stdout
    port = re.search(r"collector\s+http://127\.0\.0\.1:(\d+)", output)
    assert port, output
    assert f"http://127.0.0.1:{port.group(1)}/packages/demo-app/dashboard" in output
    assert re.search(r"login\s+demo@example\.org\s+password: \S{8,}", output)
    assert "arrived     8 records of demo-app, 8 of demo-lib" in output
    with sqlite3.connect(state / "collector.sqlite3") as database:
        rows = database.execute(
            "SELECT packages.name, records.exit_code, records.scope, records.timezone FROM records"
            " JOIN packages ON packages.id = records.package_id"
        ).fetchall()
        distinct_people = database.execute(
            "SELECT COUNT(DISTINCT uid_hash) FROM records JOIN packages ON packages.id = records.package_id"
            " WHERE packages.name = 'demo-app'"
        ).fetchone()[0]
    assert sorted(name for name, *_ in rows) == ["demo-app"] * 8 + ["demo-lib"] * 8
    assert [exit_code for name, exit_code, *_ in rows if name == "demo-app"].count(1) == 1
    assert {scope for _, _, scope, _ in rows} == {"package"}
    assert "Asia/Tokyo" in {zone for *_, zone in rows}
    assert distinct_people == 7, "each simulated user has a home (and an ID) of their own"
    # Any Python start may cache the key index; the caller's policy and data stay untouched.
    own_home = tmp_path / "own-home"
    assert not (own_home / "config").exists() and not (own_home / "data").exists(), list(own_home.rglob("*"))


def test_the_demo_cleans_up_its_temporary_directory(tmp_path: Path) -> None:
    environment = demo_environment(tmp_path)

    finished = run_demo(["--no-serve", "--runs", "2"], environment)

    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "arrived     2 records of demo-app" in finished.stdout
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        finished = run_demo(["--no-serve", "--port", str(port)], demo_environment(tmp_path))

    assert finished.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in finished.stderr
    assert "Traceback" not in finished.stderr


def test_the_demo_serves_its_dashboard_until_interrupted(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "plausipy", "demo", "--runs", "3"],
        env=demo_environment(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines = []
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Serving until Ctrl-C"):
                break
        output = "".join(lines)
        dashboard = re.search(r"dashboard\s+(http://\S+/packages/demo-app/dashboard)", output)
        assert dashboard, output
        password = re.search(r"password: (\S+)", output).group(1)  # type: ignore[union-attr]
        base_url = dashboard.group(1).split("/packages/")[0]

        with httpx.Client(base_url=base_url, timeout=30) as client:
            form = client.get("/login")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
            login = client.post("/login", data={"email": "demo@example.org", "password": password, "csrf_token": csrf})
            assert login.status_code == 303
            page = client.get("/packages/demo-app/dashboard")
            assert page.status_code == 200
            assert '"runs": 3' in page.text or '"runs": null' in page.text

        process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process.returncode == 0, process.stderr.read() if process.stderr else ""
        assert "Traceback" not in (process.stderr.read() if process.stderr else "")
        assert list((tmp_path / "tmp").iterdir()) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
