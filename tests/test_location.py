"""Location from the local time zone: real ``TZ`` values in real subprocesses, real symlinks
under a temporary root, and the shipped tables checked against each other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from plausipy import _location
from plausipy._data.m49 import M49_REGION_BY_COUNTRY, M49_REGIONS
from plausipy._location import known_timezone_name, local_timezone_name, location_from_timezone

SYSTEM_ZONEINFO = Path("/usr/share/zoneinfo")
SHIPPED_ZONE_TAB = Path(_location._ZONE_TAB)

#: The M49 sub-regions, with Latin America and the Caribbean split into its intermediate regions.
EXPECTED_REGIONS = {
    "Northern Africa", "Sub-Saharan Africa", "Caribbean", "Central America", "South America",
    "Northern America", "Central Asia", "Eastern Asia", "South-eastern Asia", "Southern Asia",
    "Western Asia", "Eastern Europe", "Northern Europe", "Southern Europe", "Western Europe",
    "Australia and New Zealand", "Melanesia", "Micronesia", "Polynesia",
}  # fmt: skip

# What a child process reports: its local zone name and the location derived from it.
_CHILD = """
import json, sys
from plausipy._location import local_timezone_name, location_from_timezone
root = sys.argv[1] if len(sys.argv) > 1 else "/"
name = local_timezone_name(root=root)
print(json.dumps([name, *location_from_timezone(name)]))
"""


def run_child(tz: str | None, *args: str) -> list[str | None]:
    """Run a real interpreter with ``TZ`` set (or removed) and return what it reports."""
    env = dict(os.environ, PLAUSIPY_DISABLE="1")
    env.pop("TZ", None)
    if tz is not None:
        env["TZ"] = tz
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    return json.loads(completed.stdout)


def shipped_zone_rows() -> list[tuple[str, str]]:
    """(country, zone) for every data row of the shipped zone.tab."""
    rows = []
    for line in SHIPPED_ZONE_TAB.read_text(encoding="ascii").splitlines():
        if line and not line.startswith("#"):
            country, _coordinates, zone = line.split("\t")[:3]
            rows.append((country, zone))
    return rows


# ---------------------------------------------------------------- TZ in a real process


@pytest.mark.parametrize(
    ("tz", "expected"),
    [
        ("Europe/Berlin", ["Europe/Berlin", "DE", "Western Europe"]),
        (":America/Sao_Paulo", ["America/Sao_Paulo", "BR", "South America"]),
        ("/usr/share/zoneinfo/Asia/Tokyo", ["Asia/Tokyo", "JP", "Eastern Asia"]),
        (":/usr/share/zoneinfo/posix/Africa/Lagos", ["Africa/Lagos", "NG", "Sub-Saharan Africa"]),
        ("US/Eastern", ["America/New_York", "US", "Northern America"]),
        ("Asia/Calcutta", ["Asia/Kolkata", "IN", "Southern Asia"]),
        ("Europe/Kiev", ["Europe/Kyiv", "UA", "Eastern Europe"]),
        ("America/Puerto_Rico", ["America/Puerto_Rico", "PR", "Caribbean"]),
        ("America/Mexico_City", ["America/Mexico_City", "MX", "Central America"]),
        ("Antarctica/Troll", ["Antarctica/Troll", "AQ", None]),
        ("UTC", ["UTC", None, None]),
        ("Etc/UTC", ["UTC", None, None]),
        ("UTC0", ["UTC", None, None]),
        ("<+00>0", ["UTC", None, None]),
        ("", ["UTC", None, None]),
        ("CET", ["CET", None, None]),
        ("Etc/GMT-3", ["Etc/GMT-3", None, None]),
        ("CET-1CEST,M3.5.0,M10.5.0/3", [None, None, None]),
        ("EST5EDT,M3.2.0,M11.1.0", [None, None, None]),
        ("Mars/Olympus_Mons", [None, None, None]),
        ("/home/someone/my-zone", [None, None, None]),
        ("../../../etc/passwd", [None, None, None]),
    ],
)
def test_tz_variable_in_a_real_process(tz: str, expected: list[str | None]) -> None:
    assert run_child(tz) == expected


def test_tz_pointing_at_etc_localtime_means_the_system_zone(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "localtime").symlink_to("/usr/share/zoneinfo/Europe/Paris")
    tz = f":{tmp_path}/etc/localtime"
    assert run_child(tz, str(tmp_path)) == ["Europe/Paris", "FR", "Western Europe"]


def test_no_tz_reads_the_fake_roots_localtime(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "localtime").symlink_to("/usr/share/zoneinfo/Australia/Sydney")
    assert run_child(None, str(tmp_path)) == ["Australia/Sydney", "AU", "Australia and New Zealand"]


def test_location_never_touches_the_network() -> None:
    code = """
import socket, sys
def refuse(*args, **kwargs):
    raise SystemExit("plausipy._location opened a socket")
socket.socket = socket.create_connection = socket.getaddrinfo = refuse
before = set(sys.modules)
from plausipy._location import local_timezone_name, location_from_timezone
name = local_timezone_name()
print(location_from_timezone("Europe/Berlin"), location_from_timezone(name))
print(sorted(set(sys.modules) - before))
"""
    env = dict(os.environ, PLAUSIPY_DISABLE="1", TZ="Europe/Berlin")
    completed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    location_line, modules_line = completed.stdout.splitlines()
    assert location_line == "('DE', 'Western Europe') ('DE', 'Western Europe')"
    # Importing and using it pulls in plausipy's own modules only (and the __future__
    # import they start with): no socket, no zoneinfo, no re.
    assert set(eval(modules_line)) <= {"__future__", "plausipy", "plausipy._location", "plausipy._data", "plausipy._data.m49"}


# ---------------------------------------------------------------- /etc/localtime and /etc/timezone


def make_root(tmp_path: Path, *, localtime_target: str | None = None, timezone_file: str | None = None) -> Path:
    """A fake file-system root with an ``etc/`` holding what the test asks for."""
    (tmp_path / "etc").mkdir(exist_ok=True)
    if localtime_target is not None:
        (tmp_path / "etc" / "localtime").symlink_to(localtime_target)
    if timezone_file is not None:
        (tmp_path / "etc" / "timezone").write_text(timezone_file, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/usr/share/zoneinfo/Europe/Paris", "Europe/Paris"),
        ("../usr/share/zoneinfo/Asia/Kolkata", "Asia/Kolkata"),
        ("/usr/share/zoneinfo/posix/America/Chicago", "America/Chicago"),
        ("/usr/share/zoneinfo/right/Europe/Oslo", "Europe/Oslo"),
        ("/var/db/timezone/zoneinfo/America/Los_Angeles", "America/Los_Angeles"),  # macOS
        ("/etc/zoneinfo/Europe/Kiev", "Europe/Kyiv"),  # NixOS, with an old name
        ("/usr/share/zoneinfo/Etc/UTC", "UTC"),
    ],
)
def test_localtime_symlink(tmp_path: Path, target: str, expected: str) -> None:
    root = make_root(tmp_path, localtime_target=target)
    assert local_timezone_name(root=str(root), environ={}) == expected


def test_localtime_through_a_chain_of_links(tmp_path: Path) -> None:
    (tmp_path / "alternatives").mkdir()
    (tmp_path / "alternatives" / "localtime").symlink_to("/usr/share/zoneinfo/Europe/Madrid")
    root = make_root(tmp_path, localtime_target=str(tmp_path / "alternatives" / "localtime"))
    assert local_timezone_name(root=str(root), environ={}) == "Europe/Madrid"


def test_etc_timezone_when_localtime_is_a_copy(tmp_path: Path) -> None:
    root = make_root(tmp_path, timezone_file="Europe/Madrid\n")
    (root / "etc" / "localtime").write_bytes(b"TZif2 a copy, not a link")
    assert local_timezone_name(root=str(root), environ={}) == "Europe/Madrid"


def test_etc_timezone_when_localtime_points_nowhere_known(tmp_path: Path) -> None:
    root = make_root(tmp_path, localtime_target="/opt/custom/zone", timezone_file="Asia/Seoul\n")
    assert local_timezone_name(root=str(root), environ={}) == "Asia/Seoul"


def test_tz_wins_over_the_system(tmp_path: Path) -> None:
    root = make_root(tmp_path, localtime_target="/usr/share/zoneinfo/Europe/Paris", timezone_file="Europe/Paris\n")
    assert local_timezone_name(root=str(root), environ={"TZ": "Asia/Tokyo"}) == "Asia/Tokyo"


@pytest.mark.parametrize(
    "timezone_file", ["", "\n", "not a zone\n", "Europe/Paris/../../x", "\x00\x01\x02", "é" * 10_000, "Mars/Base"]
)
def test_garbage_in_etc_timezone_gives_none(tmp_path: Path, timezone_file: str) -> None:
    root = make_root(tmp_path, timezone_file=timezone_file)
    assert local_timezone_name(root=str(root), environ={}) is None


def test_unreadable_or_missing_files_give_none(tmp_path: Path) -> None:
    assert local_timezone_name(root=str(tmp_path / "does-not-exist"), environ={}) is None
    root = make_root(tmp_path)
    (root / "etc" / "timezone").mkdir()  # a directory where a file should be
    (root / "etc" / "localtime").symlink_to(root / "etc" / "localtime")  # a loop
    assert local_timezone_name(root=str(root), environ={}) is None
    a_file = tmp_path / "a-file"
    a_file.write_text("x", encoding="utf-8")
    assert local_timezone_name(root=str(a_file), environ={}) is None


@pytest.mark.parametrize(
    "tz", ["\x00", "Europe/\x00Paris", ":" * 5, "/" * 300, "<+03", "<>", "A" * 100_000, "\udcff", "../etc/passwd"]
)
def test_odd_tz_values_never_raise(tz: str, tmp_path: Path) -> None:
    assert local_timezone_name(root=str(tmp_path), environ={"TZ": tz}) in (None, "UTC")


# ---------------------------------------------------------------- the shipped tables


def test_shipped_zone_tab_keeps_its_header() -> None:
    text = SHIPPED_ZONE_TAB.read_text(encoding="ascii")
    assert text.startswith("# tzdb timezone descriptions")
    assert "public domain" in "".join(text.splitlines(keepends=True)[:10])


def test_every_zone_tab_country_has_an_m49_region() -> None:
    countries = {country for country, _zone in shipped_zone_rows()}
    assert len(countries) > 240
    assert countries - set(M49_REGION_BY_COUNTRY) == set()
    without_region = {country for country in countries if M49_REGION_BY_COUNTRY[country] is None}
    assert without_region == {"AQ"}


def test_region_names_are_the_m49_names() -> None:
    assert M49_REGIONS == EXPECTED_REGIONS
    assert all(len(code) == 2 and code.isupper() for code in M49_REGION_BY_COUNTRY)


@pytest.mark.parametrize(
    ("country", "region"),
    [
        ("DE", "Western Europe"), ("US", "Northern America"), ("BR", "South America"),
        ("GB", "Northern Europe"), ("IT", "Southern Europe"), ("PL", "Eastern Europe"),
        ("EG", "Northern Africa"), ("KE", "Sub-Saharan Africa"), ("JM", "Caribbean"),
        ("GT", "Central America"), ("KZ", "Central Asia"), ("CN", "Eastern Asia"),
        ("VN", "South-eastern Asia"), ("IR", "Southern Asia"), ("TR", "Western Asia"),
        ("NZ", "Australia and New Zealand"), ("PG", "Melanesia"), ("GU", "Micronesia"),
        ("WS", "Polynesia"), ("GL", "Northern America"), ("FK", "South America"),
    ],
)  # fmt: skip
def test_known_countries(country: str, region: str) -> None:
    assert M49_REGION_BY_COUNTRY[country] == region


def test_every_shipped_zone_gives_its_country_and_region() -> None:
    for country, zone in shipped_zone_rows():
        assert location_from_timezone(zone) == (country, M49_REGION_BY_COUNTRY[country]), zone
        assert known_timezone_name(zone) == zone


def test_old_names_point_at_shipped_zones() -> None:
    zones = {zone for _country, zone in shipped_zone_rows()}
    assert {"US/Eastern", "Asia/Calcutta", "Europe/Kiev"} <= set(_location._OLD_NAMES)
    for old, current in _location._OLD_NAMES.items():
        assert current in zones, old
        assert old not in zones, old
        assert location_from_timezone(old) == location_from_timezone(current)


@pytest.mark.skipif(not (SYSTEM_ZONEINFO / "zone.tab").exists(), reason="no system tzdata")
def test_old_names_keep_the_same_clock_as_tzdb() -> None:
    """An old name and its mapped zone show the same UTC offset since 1970 (zone.tab's sense of a zone)."""
    from datetime import datetime, timedelta, timezone
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    instants = [datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(days=days) for days in range(0, 24_000, 15)]
    compared = 0
    for old, current in _location._OLD_NAMES.items():
        try:
            old_zone, current_zone = ZoneInfo(old), ZoneInfo(current)
        except ZoneInfoNotFoundError:
            continue
        differing = [t for t in instants if t.astimezone(old_zone).utcoffset() != t.astimezone(current_zone).utcoffset()]
        assert not differing, (old, current, differing[:1])
        compared += 1
    assert compared > len(_location._OLD_NAMES) // 2


@pytest.mark.parametrize(
    "name", [None, 42, 3.5, b"Europe/Berlin", ["Europe/Berlin"], "", "Etc/UTC", "UTC", "Factory", "Mars/Base",
             "\x00", "#country-", "europe/berlin", "Europe/Berlin ", "A" * 100_000]
)  # fmt: skip
def test_unknown_inputs_give_no_location_and_never_raise(name: object) -> None:
    assert location_from_timezone(name) == (None, None)


def test_an_unreadable_zone_tab_loses_location_not_the_program(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_location, "_ZONE_TAB", str(tmp_path / "missing.tab"))
    monkeypatch.setattr(_location, "_country_by_zone", None)
    assert location_from_timezone("Europe/Berlin") == (None, None)
    assert known_timezone_name("Europe/Berlin") is None
    assert known_timezone_name("Etc/UTC") == "UTC"
