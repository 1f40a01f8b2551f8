"""Deletion end to end: records delivered to a recording collector, then deleted through
``plausipy data delete`` — first while the collector is offline, then once it is back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collector import RecordingCollector
from support import wait_for, write_program

APP_KEY = "Delete00000000000000000000000001"


def run_app(venv, home: Path, url: str, name: str = "acme-cli") -> None:
    source = (
        "import plausipy\n"
        f"plausipy.app(key={APP_KEY!r}, name={name!r}, version='1.0', endpoint={url!r})\n"
    )
    program = write_program(home, f"{name}.py", source)
    assert venv.run([program], home).returncode == 0


def rows(venv, home: Path) -> list[dict]:
    return json.loads(venv.plausipy(["data", "list", "--json"], home).stdout)


def delete(venv, home: Path, *args: str):
    result = venv.run(["-m", "plausipy", "data", "delete", "--json", *args], home)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def delivered_runs(venv, home: Path, server: RecordingCollector, count: int) -> list[dict]:
    """Run the app ``count`` times with consent and wait until every record was delivered."""
    venv.plausipy(["policy", "allow"], home)
    for _ in range(count):
        run_app(venv, home, server.url)
    wait_for(lambda: len(server.records) >= count, timeout=30)
    if len(server.records) < count:
        venv.run(["-m", "plausipy", "flush", "--timeout", "20"], home)
    sent = [row for row in rows(venv, home) if row["status"] == "sent"]
    assert len(sent) == count
    return sent


@pytest.fixture
def server():
    collector = RecordingCollector().start()
    yield collector
    collector.stop()


def test_offline_first_then_online(venv, home, server):
    sent = delivered_runs(venv, home, server, 2)
    port = int(server.url.rsplit(":", 1)[1])
    server.stop()  # offline

    result = delete(venv, home, "--package", "acme-cli")
    assert result.returncode == 0, result.stdout + result.stderr
    (request,) = json.loads(result.stdout)["requests"]
    assert request["status"] == "queued" and "unreachable" in request["answer"]
    assert {row["status"] for row in rows(venv, home)} == {"sent"}  # not deleted until the collector says so
    assert all("deletion requested" in (row["error"] or "") for row in rows(venv, home))

    back = RecordingCollector().start(port=port)  # online again, same address
    try:
        flush = venv.run(["-m", "plausipy", "flush", "--timeout", "20"], home)
        assert flush.returncode == 0, flush.stdout + flush.stderr
        assert len(back.deletions) == 1
        (body,) = back.deletions
        assert sorted(body["run_ids"]) == sorted(row["run_id"] for row in sent)
        assert body["uids"] == sorted({row["body"]["uid"] for row in sent})
        (deletion_request,) = [r for r in back.requests if r.path == "/api/v1/deletions"]
        assert deletion_request.key == APP_KEY
        assert {row["status"] for row in rows(venv, home)} == {"deleted"}
        venv.run(["-m", "plausipy", "flush", "--timeout", "20"], home)
        assert len(back.deletions) == 1  # done once, never sent again
    finally:
        back.stop()


def test_delete_one_run_sends_its_run_id_and_no_uid(venv, home, server):
    first, second = delivered_runs(venv, home, server, 2)
    result = delete(venv, home, first["run_id"][:8])  # a unique prefix is enough
    assert result.returncode == 0, result.stdout + result.stderr
    (request,) = json.loads(result.stdout)["requests"]
    assert (request["status"], request["deleted"]) == ("done", 1)
    assert server.deletions == [{"run_ids": [first["run_id"]], "uids": []}]
    statuses = {row["run_id"]: row["status"] for row in rows(venv, home)}
    assert statuses == {first["run_id"]: "deleted", second["run_id"]: "sent"}


def test_a_run_never_sent_is_deleted_here_without_asking_anyone(venv, home, server):
    venv.plausipy(["policy", "allow"], home)
    dead = "http://127.0.0.1:9"  # nothing listens on the discard port
    run_app(venv, home, dead)
    venv.run(["-m", "plausipy", "flush", "--timeout", "5"], home)
    (row,) = rows(venv, home)
    assert row["status"] == "queued"
    result = delete(venv, home, row["run_id"])
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"deleted_locally": [row["run_id"]], "requests": []}
    assert rows(venv, home)[0]["status"] == "deleted"
    venv.run(["-m", "plausipy", "flush", "--timeout", "5"], home)
    assert rows(venv, home)[0]["status"] == "deleted"  # never sent after all


def test_a_collector_that_refuses_says_so_and_the_ledger_stays_truthful(venv, home, server):
    (sent,) = delivered_runs(venv, home, server, 1)
    server.deletion_status = 403
    result = delete(venv, home, "--all", "--yes")
    assert result.returncode == 1
    (request,) = json.loads(result.stdout)["requests"]
    assert request["status"] == "rejected" and "403" in request["answer"]
    (row,) = rows(venv, home)
    assert row["status"] == "sent" and "refused" in row["error"]
    text = venv.run(["-m", "plausipy", "data", "delete", sent["run_id"]], home)
    assert "refused" in text.stdout and "Traceback" not in text.stderr


def test_unknown_run_id_and_bad_usage_are_clear_errors(venv, home):
    unknown = venv.run(["-m", "plausipy", "data", "delete", "0000dead"], home)
    assert unknown.returncode == 1 and "no record '0000dead'" in unknown.stderr
    both = venv.run(["-m", "plausipy", "data", "delete", "--all", "--package", "x"], home)
    assert both.returncode == 2 and "exactly one" in both.stderr
    refused = venv.run(["-m", "plausipy", "data", "delete", "--all"], home, input="n\n")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr


def test_export_writes_json_lines(venv, home, server):
    sent = delivered_runs(venv, home, server, 2)
    result = venv.plausipy(["data", "export"], home)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(line["run_id"] for line in lines) == sorted(row["run_id"] for row in sent)
    assert all(line["body"]["package"] == "acme-cli" for line in lines)


def test_reset_id_can_delete_first_and_changes_the_uid(venv, home, server):
    (before,) = delivered_runs(venv, home, server, 1)
    result = venv.run(["-m", "plausipy", "policy", "reset-id", "--delete-first"], home)
    assert result.returncode == 0, result.stdout + result.stderr
    assert server.deletions and server.deletions[0]["uids"] == [before["body"]["uid"]]
    run_app(venv, home, server.url)
    wait_for(lambda: len(server.records) >= 2, timeout=30)
    venv.run(["-m", "plausipy", "flush", "--timeout", "20"], home)
    uids = {record["uid"] for record in server.records}
    assert len(uids) == 2  # package scope: same package, new secret, new ID
