"""Where a machine is, to the country, from its local time zone alone (DESIGN.md §4).

plausipy never asks the network where a user is. The local time zone already
says it: ``TZ`` or ``/etc/localtime`` names an IANA zone, the IANA
``zone.tab`` maps the zone to its country, and a small shipped table maps the
country to its UN M49 region. Both tables ship with plausipy
(``plausipy/_data/``), so the answer does not depend on the machine's tzdata.

Two functions, neither of which ever raises:

>>> local_timezone_name()  # doctest: +SKIP
'Europe/Berlin'
>>> location_from_timezone("Europe/Berlin")
('DE', 'Western Europe')

Only names plausipy knows leave the machine: a zone of ``zone.tab``, an old
name it links to (returned under its current name, ``Europe/Kiev`` →
``Europe/Kyiv``), ``UTC`` for every spelling of universal time, and tzdb's few
names that belong to no country (``CET``, ``EST5EDT``, ``Etc/GMT-3``). Anything
else in ``TZ`` is a value of the user's environment, so it gives None rather
than being sent.

On Windows there is no IANA name to read (the registry speaks Windows zone
names), so the answer is None unless ``TZ`` holds an IANA name.
"""

from __future__ import annotations

import os
import sys

__all__ = ["local_timezone_name", "location_from_timezone"]

_ZONE_TAB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_data", "zone.tab")
_ZONEINFO_MARKER = "zoneinfo/"
# Variants of the zoneinfo tree whose zone names are the same as the plain one.
_ZONEINFO_VARIANTS = ("posix/", "right/")

#: Every spelling of universal time, all reported as "UTC".
_UTC_NAMES = frozenset(
    {
        "UTC", "UCT", "Universal", "Zulu", "GMT", "GMT0", "GMT+0", "GMT-0", "Greenwich",
        "Etc/UTC", "Etc/UCT", "Etc/Universal", "Etc/Zulu", "Etc/GMT", "Etc/GMT0",
        "Etc/GMT+0", "Etc/GMT-0", "Etc/Greenwich",
    }
)  # fmt: skip

#: tzdb zones that stand for an offset, not a place: real names, but no country.
_PLACELESS_NAMES = frozenset(
    {"CET", "EET", "MET", "WET", "EST", "MST", "HST", "EST5EDT", "CST6CDT", "MST7MDT", "PST8PDT"}
    | {f"Etc/GMT{sign}{hours}" for sign in "+-" for hours in range(1, 15) if not (sign == "+" and hours > 12)}
)

#: Old names from tzdb's ``backward`` file → the zone of the same country in ``zone.tab``.
#: Only links that stay inside one country are listed: tzdb also links, say,
#: ``Iceland`` to ``Africa/Abidjan`` because their clocks agree, which would put
#: Reykjavik in Côte d'Ivoire.
_OLD_NAMES = {
    "US/Alaska": "America/Anchorage",
    "US/Aleutian": "America/Adak",
    "US/Arizona": "America/Phoenix",
    "US/Central": "America/Chicago",
    "US/East-Indiana": "America/Indiana/Indianapolis",
    "US/Eastern": "America/New_York",
    "US/Hawaii": "Pacific/Honolulu",
    "US/Indiana-Starke": "America/Indiana/Knox",
    "US/Michigan": "America/Detroit",
    "US/Mountain": "America/Denver",
    "US/Pacific": "America/Los_Angeles",
    "US/Samoa": "Pacific/Pago_Pago",
    "Navajo": "America/Denver",
    "America/Atka": "America/Adak",
    "America/Fort_Wayne": "America/Indiana/Indianapolis",
    "America/Indianapolis": "America/Indiana/Indianapolis",
    "America/Knox_IN": "America/Indiana/Knox",
    "America/Louisville": "America/Kentucky/Louisville",
    "America/Shiprock": "America/Denver",
    "Canada/Atlantic": "America/Halifax",
    "Canada/Central": "America/Winnipeg",
    "Canada/Eastern": "America/Toronto",
    "Canada/Mountain": "America/Edmonton",
    "Canada/Newfoundland": "America/St_Johns",
    "Canada/Pacific": "America/Vancouver",
    "Canada/Saskatchewan": "America/Regina",
    "Canada/Yukon": "America/Whitehorse",
    "America/Coral_Harbour": "America/Atikokan",
    "America/Montreal": "America/Toronto",
    "America/Nipigon": "America/Toronto",
    "America/Pangnirtung": "America/Iqaluit",
    "America/Rainy_River": "America/Winnipeg",
    "America/Thunder_Bay": "America/Toronto",
    "America/Yellowknife": "America/Edmonton",
    "Mexico/BajaNorte": "America/Tijuana",
    "Mexico/BajaSur": "America/Mazatlan",
    "Mexico/General": "America/Mexico_City",
    "America/Ensenada": "America/Tijuana",
    "America/Santa_Isabel": "America/Tijuana",
    "Cuba": "America/Havana",
    "Jamaica": "America/Jamaica",
    "America/Virgin": "America/St_Thomas",
    "Brazil/Acre": "America/Rio_Branco",
    "Brazil/DeNoronha": "America/Noronha",
    "Brazil/East": "America/Sao_Paulo",
    "Brazil/West": "America/Manaus",
    "America/Porto_Acre": "America/Rio_Branco",
    "Chile/Continental": "America/Santiago",
    "Chile/EasterIsland": "Pacific/Easter",
    "America/Buenos_Aires": "America/Argentina/Buenos_Aires",
    "America/Catamarca": "America/Argentina/Catamarca",
    "America/Argentina/ComodRivadavia": "America/Argentina/Catamarca",
    "America/Cordoba": "America/Argentina/Cordoba",
    "America/Rosario": "America/Argentina/Cordoba",
    "America/Jujuy": "America/Argentina/Jujuy",
    "America/Mendoza": "America/Argentina/Mendoza",
    "America/Godthab": "America/Nuuk",
    "GB": "Europe/London",
    "GB-Eire": "Europe/London",
    "Europe/Belfast": "Europe/London",
    "Eire": "Europe/Dublin",
    "Iceland": "Atlantic/Reykjavik",
    "Atlantic/Faeroe": "Atlantic/Faroe",
    "Atlantic/Jan_Mayen": "Arctic/Longyearbyen",
    "Poland": "Europe/Warsaw",
    "Portugal": "Europe/Lisbon",
    "W-SU": "Europe/Moscow",
    "Europe/Kiev": "Europe/Kyiv",
    "Europe/Uzhgorod": "Europe/Kyiv",
    "Europe/Zaporozhye": "Europe/Kyiv",
    "Europe/Tiraspol": "Europe/Chisinau",
    "Europe/Nicosia": "Asia/Nicosia",
    "Turkey": "Europe/Istanbul",
    "Asia/Istanbul": "Europe/Istanbul",
    "Egypt": "Africa/Cairo",
    "Libya": "Africa/Tripoli",
    "Africa/Asmera": "Africa/Asmara",
    "Africa/Timbuktu": "Africa/Bamako",
    "Israel": "Asia/Jerusalem",
    "Asia/Tel_Aviv": "Asia/Jerusalem",
    "Iran": "Asia/Tehran",
    "Asia/Ashkhabad": "Asia/Ashgabat",
    "Asia/Calcutta": "Asia/Kolkata",
    "Asia/Dacca": "Asia/Dhaka",
    "Asia/Katmandu": "Asia/Kathmandu",
    "Asia/Thimbu": "Asia/Thimphu",
    "Asia/Rangoon": "Asia/Yangon",
    "Asia/Saigon": "Asia/Ho_Chi_Minh",
    "Asia/Ujung_Pandang": "Asia/Makassar",
    "Singapore": "Asia/Singapore",
    "PRC": "Asia/Shanghai",
    "Asia/Chongqing": "Asia/Shanghai",
    "Asia/Chungking": "Asia/Shanghai",
    "Asia/Harbin": "Asia/Shanghai",
    "Asia/Kashgar": "Asia/Urumqi",
    "Hongkong": "Asia/Hong_Kong",
    "Asia/Macao": "Asia/Macau",
    "ROC": "Asia/Taipei",
    "ROK": "Asia/Seoul",
    "Japan": "Asia/Tokyo",
    "Asia/Ulan_Bator": "Asia/Ulaanbaatar",
    "Asia/Choibalsan": "Asia/Ulaanbaatar",
    "Australia/ACT": "Australia/Sydney",
    "Australia/Canberra": "Australia/Sydney",
    "Australia/NSW": "Australia/Sydney",
    "Australia/LHI": "Australia/Lord_Howe",
    "Australia/North": "Australia/Darwin",
    "Australia/Queensland": "Australia/Brisbane",
    "Australia/South": "Australia/Adelaide",
    "Australia/Tasmania": "Australia/Hobart",
    "Australia/Currie": "Australia/Hobart",
    "Australia/Victoria": "Australia/Melbourne",
    "Australia/West": "Australia/Perth",
    "Australia/Yancowinna": "Australia/Broken_Hill",
    "NZ": "Pacific/Auckland",
    "NZ-CHAT": "Pacific/Chatham",
    "Antarctica/South_Pole": "Antarctica/McMurdo",
    "Kwajalein": "Pacific/Kwajalein",
    "Pacific/Enderbury": "Pacific/Kanton",
    "Pacific/Ponape": "Pacific/Pohnpei",
    "Pacific/Truk": "Pacific/Chuuk",
    "Pacific/Yap": "Pacific/Chuuk",
    "Pacific/Samoa": "Pacific/Pago_Pago",
}

#: zone name → ISO 3166-1 alpha-2 country, read from ``zone.tab`` on first use.
_country_by_zone: dict[str, str] | None = None


def _zone_countries() -> dict[str, str]:
    """Zone name → country code from the shipped ``zone.tab``, parsed once (``{}`` if unreadable)."""
    global _country_by_zone
    if _country_by_zone is None:
        table: dict[str, str] = {}
        try:
            with open(_ZONE_TAB, "rb") as file:
                text = file.read().decode("ascii")
        except (OSError, ValueError):
            text = ""  # A damaged install loses location, not the record.
        for line in text.splitlines():
            # Columns: country code, coordinates, zone name, optional comment.
            columns = line.split("\t", 3)
            if len(columns) >= 3 and not line.startswith("#"):
                table[columns[2]] = columns[0]
        _country_by_zone = table
    return _country_by_zone


def known_timezone_name(name: object) -> str | None:
    """The name plausipy reports for an IANA zone name, or None if it is not one it knows.

    Old names come back under their current name, universal time as "UTC".

    >>> known_timezone_name("Asia/Calcutta")
    'Asia/Kolkata'
    >>> known_timezone_name("Etc/UTC")
    'UTC'
    >>> known_timezone_name("Mars/Olympus_Mons") is None
    True
    """
    if not isinstance(name, str):
        return None
    if name in _UTC_NAMES:
        return "UTC"
    if name in _PLACELESS_NAMES:
        return name
    name = _OLD_NAMES.get(name, name)
    return name if name in _zone_countries() else None


def location_from_timezone(name: object) -> tuple[str | None, str | None]:
    """(country, UN M49 region) of an IANA zone name, or (None, None) if it has no country.

    >>> location_from_timezone("America/Sao_Paulo")
    ('BR', 'South America')
    >>> location_from_timezone("US/Eastern")
    ('US', 'Northern America')
    >>> location_from_timezone("Etc/UTC")
    (None, None)
    """
    try:
        if not isinstance(name, str):
            return None, None
        country = _zone_countries().get(_OLD_NAMES.get(name, name))
        if country is None:
            return None, None
        from plausipy._data.m49 import M49_REGION_BY_COUNTRY

        return country, M49_REGION_BY_COUNTRY.get(country)
    except Exception:  # Location is a nicety; it must never cost the record.
        return None, None


def _name_from_path(path: str) -> str | None:
    """The zone name in a zoneinfo path: ``/usr/share/zoneinfo/Europe/Paris`` → ``Europe/Paris``."""
    path = path.replace(os.sep, "/")
    marker = path.rfind(_ZONEINFO_MARKER)
    if marker < 0:
        return None
    name = path[marker + len(_ZONEINFO_MARKER) :]
    for variant in _ZONEINFO_VARIANTS:
        if name.startswith(variant):
            name = name[len(variant) :]
    return known_timezone_name(name)


def _posix_rule_name(rule: str) -> str | None:
    """``UTC`` for a POSIX ``TZ`` rule that is universal time all year (``UTC0``), else None.

    A rule such as ``CET-1CEST,M3.5.0,M10.5.0/3`` names an offset, not a place,
    so it says nothing about the country.
    """
    if "," in rule:
        return None
    if rule.startswith("<"):
        closing = rule.find(">")
        abbreviation_end = closing + 1 if closing > 0 else len(rule)
    else:
        abbreviation_end = 0
        while abbreviation_end < len(rule) and rule[abbreviation_end].isalpha():
            abbreviation_end += 1
    if abbreviation_end < 3:
        return None
    offset = rule[abbreviation_end:].lstrip("+-")
    # "UTC0", "GMT+0", "<+00>0", "XYZ0:00": no offset and no daylight-saving part.
    if offset and set(offset) <= set("0:"):
        return "UTC"
    return None


def _name_from_tz_variable(value: str) -> str | None:
    """The zone a ``TZ`` value names, or None; ``""`` is UTC, as in the C library."""
    value = value.strip()
    if value.startswith(":"):
        value = value[1:]
    if not value:
        return "UTC"
    if os.path.isabs(value):
        return _name_from_path(value) or _name_from_path(os.path.realpath(value))
    known = known_timezone_name(value)
    if known is not None:
        return known
    return _posix_rule_name(value)


def _name_from_localtime(root: str) -> str | None:
    """The zone ``/etc/localtime`` links to (macOS and most Linux), or None."""
    localtime = os.path.join(root, "etc", "localtime")
    try:
        target = os.readlink(localtime)
    except (OSError, ValueError, NotImplementedError):
        return None
    name = _name_from_path(target)
    if name is None:
        # A chain of links, e.g. through /etc/alternatives: follow it to the end.
        name = _name_from_path(os.path.realpath(localtime))
    return name


def _name_from_etc_timezone(root: str) -> str | None:
    """The zone named in ``/etc/timezone`` (Debian and Ubuntu), or None."""
    try:
        with open(os.path.join(root, "etc", "timezone"), encoding="utf-8") as file:
            first_line = file.readline(256).strip()
    except (OSError, ValueError):
        return None
    return known_timezone_name(first_line)


def _uses_system_zone(tz_value: str, root: str) -> bool:
    """True for ``TZ=:/etc/localtime``, set by some to spare the C library a stat call."""
    path = tz_value.strip().lstrip(":")
    if not os.path.isabs(path):
        return False
    try:
        return os.path.realpath(path) == os.path.realpath(os.path.join(root, "etc", "localtime"))
    except (OSError, ValueError):
        return False


def local_timezone_name(*, root: str = "/", environ: dict[str, str] | None = None) -> str | None:
    """The IANA name of the local time zone, or None if it cannot be told.

    ``TZ`` first, then the target of ``/etc/localtime``, then
    ``/etc/timezone``. ``root`` and ``environ`` stand in for ``/`` and
    ``os.environ`` (for tests).

    >>> local_timezone_name(environ={"TZ": ":Europe/Paris"})
    'Europe/Paris'
    >>> local_timezone_name(environ={"TZ": "CET-1CEST,M3.5.0,M10.5.0/3"}) is None
    True
    """
    try:
        environment = os.environ if environ is None else environ
        tz_value = environment.get("TZ")
        if tz_value is not None and not _uses_system_zone(tz_value, root):
            return _name_from_tz_variable(tz_value)
        if sys.platform == "win32" and root == "/":
            return None
        return _name_from_localtime(root) or _name_from_etc_timezone(root)
    except Exception:  # Never let the time zone cost the host program anything.
        return None
