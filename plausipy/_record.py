"""The record: what one process reports about one package (DESIGN.md §4).

Two steps, split so the host never imports json, hashlib or sqlite:

1. At exit the host builds a *raw record* with
   :func:`plausipy._host.build_raw_record`: plain facts (str, int, float,
   bool, None, dict, list) that :mod:`marshal` can spool. It carries the
   delivery metadata (``key``, ``endpoint``, ``created``) and the shared
   ``categories`` beside the facts.
2. The detached sender turns it into the *wire record* with
   :func:`finalize_record`: the ``uid`` (an HMAC of the local secret, or the
   run's random value for anonymous scope), country and region from the time
   zone, and every field of a category the user turned off set to ``None``.
"""

import os

from plausipy._host import CATEGORIES, DEFAULT_ENDPOINT, SCOPES, build_raw_record, check_scope, narrower_scope

__all__ = [
    "CATEGORIES",
    "DEFAULT_ENDPOINT",
    "SCOPES",
    "WIRE_FIELDS",
    "build_raw_record",
    "check_key",
    "check_props",
    "check_scope",
    "finalize_record",
    "narrower_scope",
]

SCHEMA_VERSION = 1
#: Every field of a wire record, in the order of DESIGN.md §4.
WIRE_FIELDS = (
    "v", "run_id", "scope", "uid", "package", "version", "role", "hour",
    "duration_ms", "peak_rss_kib", "exit_code", "os", "arch", "python",
    "implementation", "country", "region", "timezone", "props",
)  # fmt: skip

MAX_PROPS = 20
MAX_PROP_NAME = 40
MAX_PROP_STRING = 200
_KEY_LENGTH = 32
_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_PROP_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def check_key(key: object) -> str:
    """Return ``key`` if it is a package key, else raise ValueError.

    >>> check_key("sayrrCCNbXY70ci6xHn8qlYwKyAUawgp")
    'sayrrCCNbXY70ci6xHn8qlYwKyAUawgp'
    """
    if not isinstance(key, str) or len(key) != _KEY_LENGTH or not key[0].isalpha() or not set(key) <= _ALNUM:
        raise ValueError(
            f"plausipy key must be 32 characters of A-Z, a-z, 0-9 starting with a letter, got {key!r}"
        )
    return key


def check_props(props: "dict[str, object]") -> "dict[str, object]":
    """Return a copy of custom properties if they fit §4's limits, else raise ValueError.

    >>> check_props({"command": "build", "workers": 4})
    {'command': 'build', 'workers': 4}
    """
    if len(props) > MAX_PROPS:
        raise ValueError(f"at most {MAX_PROPS} custom properties per record, got {len(props)}")
    checked: "dict[str, object]" = {}
    for name, value in props.items():
        if not (isinstance(name, str) and 1 <= len(name) <= MAX_PROP_NAME and set(name) <= _PROP_NAME_CHARS):
            raise ValueError(f"property names are 1-40 characters of a-z, 0-9 and _, got {name!r}")
        if isinstance(value, str):
            if len(value) > MAX_PROP_STRING:
                raise ValueError(f"property {name!r}: strings are at most {MAX_PROP_STRING} characters")
        elif isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(f"property {name!r}: {value!r} has no JSON form")
        elif not isinstance(value, (bool, int)):
            raise ValueError(f"property {name!r}: values are str, int, float or bool, got {type(value).__name__}")
        checked[name] = value
    return checked


def uid_for(scope: str, package: str, secret: bytes, anonymous_uid: "str | None") -> str:
    """§4's ``uid``: HMAC(secret, "user") or HMAC(secret, "package:" + name), 32 hex chars."""
    if scope == "anonymous":
        return anonymous_uid or os.urandom(16).hex()
    import hashlib
    import hmac

    message = "user" if scope == "user" else f"package:{package}"
    return hmac.new(secret, message.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def finalize_record(raw: "dict[str, object]", secret: bytes) -> "dict[str, object]":
    """The wire record (§4) for a raw record, with turned-off categories set to None."""
    from plausipy._location import local_timezone_name, location_from_timezone

    shared = set(raw.get("categories") or ())
    timezone = (raw.get("timezone") or local_timezone_name()) if "location" in shared else None
    country, region = location_from_timezone(timezone) if isinstance(timezone, str) else (None, None)
    record: "dict[str, object]" = {
        "v": SCHEMA_VERSION,
        "run_id": raw["run_id"],
        "scope": raw["scope"],
        "uid": uid_for(str(raw["scope"]), str(raw["package"]), secret, raw.get("anonymous_uid")),  # type: ignore[arg-type]
        "package": raw["package"],
        "version": raw["version"],
        "role": raw["role"],
        "hour": raw["hour"],
        "duration_ms": raw.get("duration_ms"),
        "peak_rss_kib": raw.get("peak_rss_kib"),
        "exit_code": raw.get("exit_code"),
        "os": raw.get("os"),
        "arch": raw.get("arch"),
        "python": raw.get("python"),
        "implementation": raw.get("implementation"),
        "country": country,
        "region": region,
        "timezone": timezone,
        "props": raw.get("props") or {},
    }
    for category, fields in CATEGORIES.items():
        if category not in shared:
            for field in fields:
                record[field] = None
    return record
