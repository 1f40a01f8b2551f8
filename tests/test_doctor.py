"""``plausipy doctor`` in the test venv (the wheel installed), as a real subprocess."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from support import KEYS, write_program


def doctor(venv, home: Path, *args: str, **env: str):
    result = venv.run(["-m", "plausipy", "doctor", "--runs", "2", *args], home, **env)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def doctor_json(venv, home: Path, *args: str, **env: str) -> tuple[int, dict]:
    result = doctor(venv, home, "--json", *args, **env)
    return result.returncode, json.loads(result.stdout)


def check(report: dict, name: str) -> dict:
    (found,) = [item for item in report["checks"] if item["name"] == name]
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_healthy_install_reports_the_hook_the_index_the_state_and_the_overhead(venv, home, collector):
    status, report = doctor_json(venv, home)
    assert status == 0 and report["ok"] is True
    assert check(report, "hook")["status"] == "ok"
    assert str(venv.site_packages / "plausipy.pth") in check(report, "hook")["details"]["pth_files"]
    assert check(report, "hook")["details"]["start_up"] == "start-up code from .pyc files"
    declared = {entry["distribution"]: entry for entry in check(report, "index")["details"]["distributions"]}
    assert set(declared) == set(KEYS)  # quietlib declares no key
    assert declared["betalib"]["scope"] == "user"
    assert declared["acmelib"]["endpoint"] == collector.url
    state = check(report, "state")["details"]
    assert state["policy_file"].startswith(str(home / "state"))
    overhead = check(report, "overhead")["details"]
    assert overhead["runs"] == 2
    assert overhead["with_plausipy_ms"] > 0 and overhead["disabled_ms"] > 0


def test_text_report_names_each_declaring_distribution_and_its_endpoint(venv, home, collector):
    result = doctor(venv, home)
    assert result.returncode == 0, result.stdout
    assert f"acmelib 1.2.3 (package scope) -> {collector.url}" in result.stdout
    assert "overhead" in result.stdout and "ms per start" in result.stdout


def test_kill_switches_are_reported_but_not_broken(venv, home):
    for variable in ("DO_NOT_TRACK", "PLAUSIPY_DISABLE"):
        status, report = doctor_json(venv, home, **{variable: "1"})
        hook = check(report, "hook")
        assert (status, hook["status"]) == (0, "warn")
        assert variable in hook["summary"]
    status, report = doctor_json(venv, home, PLAUSIPY_PARENT="12345")
    assert check(report, "hook")["status"] == "warn"
    assert "watches" in check(report, "hook")["summary"]


def test_python_dash_s_is_broken(venv, home):
    result = venv.run(["-S", "-m", "plausipy", "doctor", "--runs", "0"], home, PYTHONPATH=str(venv.site_packages))
    assert result.returncode == 1
    assert "-S" in result.stdout


def test_a_missing_pth_file_is_broken_and_says_so(venv, home):
    pth = venv.site_packages / "plausipy.pth"
    moved = venv.site_packages / "plausipy.pth.moved-by-test"
    os.replace(pth, moved)
    try:
        status, report = doctor_json(venv, home, "--runs", "0")
    finally:
        os.replace(moved, pth)
    assert status == 1 and report["ok"] is False
    assert "plausipy.pth is not in any site-packages" in check(report, "hook")["summary"]


def test_a_broken_policy_file_is_broken(venv, home):
    policy = home / "state" / "config" / "policy.toml"
    policy.parent.mkdir(parents=True)
    policy.write_text("[global]\nconsent = maybe\n")
    status, report = doctor_json(venv, home, "--runs", "0")
    assert status == 1
    assert check(report, "state")["status"] == "broken"
    assert "invalid" in check(report, "state")["summary"]


def test_last_delivery_errors_are_shown(venv, home):
    venv.plausipy(["policy", "allow"], home)
    dead = f"http://127.0.0.1:{free_port()}"
    program = write_program(home, "app.py", "import acmelib\n")
    assert venv.run([program], home, PLAUSIPY_ENDPOINT=dead).returncode == 0
    venv.run(["-m", "plausipy", "flush", "--timeout", "10"], home, PLAUSIPY_ENDPOINT=dead)
    status, report = doctor_json(venv, home, "--runs", "0")
    queue = check(report, "queue")
    assert status == 0 and queue["status"] == "warn"
    assert queue["details"]["records"]["queued"] == 1
    assert [error["endpoint"] for error in queue["details"]["delivery_errors"]] == [dead]


def test_hidden_pth_files_are_recognised(tmp_path):
    from plausipy._cli._doctor import is_hidden

    (tmp_path / ".plausipy.pth").write_text("")
    (tmp_path / "plausipy.pth").write_text("")
    assert is_hidden(str(tmp_path / ".plausipy.pth"))
    assert not is_hidden(str(tmp_path / "plausipy.pth"))
