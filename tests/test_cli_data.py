"""``plausipy data list/show`` and ``plausipy flush``, through CliRunner and a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from _helpers import collector_per_test  # noqa: F401 - the fixture "collector"
from collector import RecordingCollector

from plausipy import _spool
from plausipy._cli import main
from plausipy._identity import load_or_create_secret
from plausipy._ledger import Ledger
from plausipy._record import build_raw_record

KEY = "Acme0000000000000000000000000001"
OTHER_KEY = "Beta0000000000000000000000000002"


def raw_record(endpoint: str, *, package: str = "acmelib", key: str = KEY) -> dict[str, object]:
    return build_raw_record(
        package=package, version="3.1", role="lib", key=key, endpoint=endpoint, scope="package",
        categories=("runtime", "system", "location", "properties"), started=time.time(), exit_code=2, props={"cmd": "build"},
    )  # fmt: skip


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PLAUSIPY_HOME", str(tmp_path))
    monkeypatch.setenv("NO_COLOR", "1")
    for name in ("PLAUSIPY_ENDPOINT", "PLAUSIPY_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def queue_in_ledger(*raws: dict[str, object]) -> None:
    with Ledger() as ledger:
        ledger.queue_records(list(raws), load_or_create_secret())


def test_list_with_nothing_says_so(home: Path) -> None:
    result = invoke("data", "list")

    assert result.exit_code == 0 and "No records yet." in result.output


def test_list_shows_ledger_rows_and_spooled_records_as_queued(home: Path, collector: RecordingCollector) -> None:
    in_ledger = raw_record(collector.url)
    queue_in_ledger(in_ledger)
    spooled = raw_record(collector.url, package="betalib", key=OTHER_KEY)
    _spool.write_spool([spooled])

    table = invoke("data", "list")
    rows = json.loads(invoke("data", "list", "--json").output)

    assert table.exit_code == 0
    header = table.output.splitlines()[0].split()
    assert header == ["RUN_ID", "PACKAGE", "VERSION", "WHEN", "STATUS", "COLLECTOR"]
    for record in (in_ledger, spooled):
        line = next(line for line in table.output.splitlines() if str(record["run_id"]) in line)
        assert record["package"] in line and "3.1" in line and "queued" in line and collector.url in line
    assert {row["run_id"]: row["status"] for row in rows} == {in_ledger["run_id"]: "queued", spooled["run_id"]: "queued"}
    assert all(row["body"]["exit_code"] == 2 and row["body"]["props"] == {"cmd": "build"} for row in rows)
    assert _spool.spool_files(), "listing must not consume the spool"


def test_list_filters_by_package(home: Path) -> None:
    queue_in_ledger(raw_record("http://127.0.0.1:9"), raw_record("http://127.0.0.1:9", package="betalib", key=OTHER_KEY))

    rows = json.loads(invoke("data", "list", "--package", "betalib", "--json").output)

    assert [row["package"] for row in rows] == ["betalib"]


def test_show_prints_the_full_body_by_run_id_or_prefix(home: Path) -> None:
    record = raw_record("http://127.0.0.1:9")
    queue_in_ledger(record)
    run_id = str(record["run_id"])

    shown = json.loads(invoke("data", "show", run_id, "--json").output)
    human = invoke("data", "show", run_id[:8])

    assert shown["run_id"] == run_id and shown["status"] == "queued"
    assert shown["body"]["run_id"] == run_id and len(shown["body"]["uid"]) == 32
    assert human.exit_code == 0 and f"run_id:    {run_id}" in human.output and '"exit_code": 2' in human.output


def test_show_finds_a_record_still_in_the_spool(home: Path) -> None:
    record = raw_record("http://127.0.0.1:9")
    _spool.write_spool([record])

    shown = json.loads(invoke("data", "show", str(record["run_id"]), "--json").output)

    assert shown["status"] == "queued" and shown["body"]["package"] == "acmelib"


def test_show_of_an_unknown_run_is_a_clear_error(home: Path) -> None:
    result = CliRunner().invoke(main, ["data", "show", "0000dead"])

    assert result.exit_code == 1
    assert "no record with run_id '0000dead'" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_flush_sends_and_reports_per_collector_and_package(home: Path, collector: RecordingCollector) -> None:
    _spool.write_spool([raw_record(collector.url), raw_record(collector.url), raw_record(collector.url, package="betalib", key=OTHER_KEY)])

    result = invoke("flush")

    assert result.exit_code == 0, result.output
    assert f"{collector.url}  acmelib: 2 sent" in result.output
    assert f"{collector.url}  betalib: 1 sent" in result.output
    assert len(collector.records) == 3
    assert "Nothing to send" in invoke("flush").output


def test_flush_reports_a_rejection_with_the_collectors_message(home: Path, collector: RecordingCollector) -> None:
    _spool.write_spool([raw_record(collector.url)])
    collector.mode = "reject"

    result = invoke("flush")

    assert result.exit_code == 0
    assert "acmelib: 1 rejected: HTTP 422 " + collector.reject_message in result.output


def test_flush_exits_1_when_records_stay_queued(home: Path, collector: RecordingCollector) -> None:
    _spool.write_spool([raw_record(collector.url)])
    collector.mode = "error500"

    result = invoke("flush", "--json")

    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["failed"] is True
    (outcome,) = report["outcomes"]
    assert outcome["queued"] == 1 and "HTTP 500" in outcome["queued_reasons"][0]


def test_flush_timeout_bounds_a_hanging_collector(home: Path, collector: RecordingCollector) -> None:
    _spool.write_spool([raw_record(collector.url)])
    collector.mode = "hang"

    result = invoke("flush", "--timeout", "2")

    assert result.exit_code == 1 and "1 still queued: no answer within" in result.output


def test_flush_rejects_a_nonsense_timeout(home: Path) -> None:
    result = CliRunner().invoke(main, ["flush", "--timeout", "soon"])

    assert result.exit_code == 2 and "Invalid value for '--timeout'" in result.output


def test_data_and_flush_in_a_real_subprocess(home: Path, collector: RecordingCollector) -> None:
    record = raw_record(collector.url)
    _spool.write_spool([record])
    environment = {**os.environ, "PLAUSIPY_SENDER": "1"}

    def plausipy(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "plausipy", *args], env=environment, capture_output=True, text=True, timeout=90)

    before = plausipy("data", "list", "--json")
    flushed = plausipy("flush")
    after = plausipy("data", "show", str(record["run_id"]), "--json")

    assert before.returncode == 0 and json.loads(before.stdout)[0]["status"] == "queued"
    assert flushed.returncode == 0 and "acmelib: 1 sent" in flushed.stdout and flushed.stderr == ""
    shown = json.loads(after.stdout)
    assert (shown["status"], shown["collector"]) == ("sent", collector.url)
    assert collector.run_ids() == [record["run_id"]]
