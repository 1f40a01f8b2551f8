"""``plausipy server …`` with CliRunner and in real subprocesses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import httpx
from click.testing import CliRunner

from plausipy.server._cli import server


def run_cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plausipy", "server", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_create_package_prints_json_for_scripts(sqlite_url, rows):
    result = run_cli("create-package", "Acme_Lib", "--owner", "Ada@Example.org", "--json", "--database", sqlite_url)
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert set(created) == {"package", "key", "owner_token"}
    assert created["package"] == "acme-lib"
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]{31}", created["key"])
    assert rows(sqlite_url, "SELECT email FROM users") == [("ada@example.org",)]


def test_database_url_comes_from_the_environment(sqlite_url, rows):
    result = run_cli("create-package", "envlib", "--owner", "a@example.org", env={"PLAUSIPY_DATABASE_URL": sqlite_url})
    assert result.returncode == 0, result.stderr
    assert "key" in result.stdout
    assert rows(sqlite_url, "SELECT name FROM packages") == [("envlib",)]


def test_a_taken_name_is_one_clear_line(sqlite_url):
    runner = CliRunner()
    assert runner.invoke(server, ["create-package", "dup", "--owner", "a@example.org", "--database", sqlite_url]).exit_code == 0
    again = runner.invoke(server, ["create-package", "dup", "--owner", "a@example.org", "--database", sqlite_url])
    assert again.exit_code == 1
    assert "already registered" in again.output
    assert "Traceback" not in again.output


def test_a_bad_database_url_is_a_usage_error():
    result = CliRunner().invoke(server, ["migrate", "--database", "mysql://x/y"])
    assert result.exit_code == 2
    assert "unsupported database URL" in result.output


def test_set_password_from_stdin_then_log_in(server_factory, sqlite_url):
    created = run_cli("create-package", "pwlib", "--owner", "ops@example.org", "--json", "--database", sqlite_url)
    assert created.returncode == 0, created.stderr
    result = run_cli("set-password", "ops@example.org", "--database", sqlite_url, stdin="a long passphrase\n")
    assert result.returncode == 0, result.stderr
    base_url = server_factory(sqlite_url)
    with httpx.Client(base_url=base_url, timeout=30) as client:
        form = client.get("/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
        response = client.post("/login", data={"email": "ops@example.org", "password": "a long passphrase", "csrf_token": token})
        assert response.status_code == 303
        assert "pwlib" in client.get("/packages").text


def test_set_password_refuses_a_short_one(sqlite_url):
    result = CliRunner().invoke(server, ["set-password", "a@example.org", "--database", sqlite_url], input="short\n")
    assert result.exit_code == 1
    assert "at least 8" in result.output


def test_migrate_reports_the_schema_version(sqlite_url):
    result = CliRunner().invoke(server, ["migrate", "--database", sqlite_url])
    assert result.exit_code == 0, result.output
    assert "schema version 1" in result.output


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("run", "create-package", "set-password", "migrate", "purge"):
        assert command in result.stdout


def test_the_server_runs_with_two_workers(server_factory, sqlite_url, package_factory, plain_record):
    package = package_factory(sqlite_url)
    base_url = server_factory(sqlite_url, workers=2)
    responses = [
        httpx.post(base_url + "/api/v1/records", json={"records": [plain_record()]}, headers={"Authorization": f"Bearer {package['key']}"})
        for _ in range(10)
    ]
    assert {response.status_code for response in responses} == {202}
