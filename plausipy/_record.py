"""The record: what one process reports about one package (DESIGN.md §4).

Two steps, split so the host never imports json, hashlib or sqlite:

1. At exit the host builds a *raw record* with :func:`build_raw_record`: plain
   facts (str, int, float, bool, None, dict, list) that :mod:`marshal` can
   spool. It carries the delivery metadata (``key``, ``endpoint``,
   ``created``) and the shared ``categories`` beside the facts.
2. The detached sender turns it into the *wire record* with
   :func:`finalize_record`: the ``uid`` (an HMAC of the local secret, or the
   run's random value for anonymous scope), country and region from the time
   zone, and every field of a category the user turned off set to ``None``.

Raw record keys: ``run_id key endpoint created package version role scope
anonymous_uid hour duration_ms peak_rss_kib exit_code os arch python
implementation timezone props categories``.
"""

import os
import sys
import time

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
#: Where records go when a package declares no collector of its own.
DEFAULT_ENDPOINT = "https://collector.plausipy.org"
#: Widest first: "user" links all packages, "anonymous" links nothing.
SCOPES = ("user", "package", "anonymous")
#: What the user can turn off, and the wire fields each one covers.
CATEGORIES = {
    "runtime": ("duration_ms", "peak_rss_kib", "exit_code"),
    "system": ("os", "arch", "python", "implementation"),
    "location": ("country", "region", "timezone"),
    "properties": ("props",),
}
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


def check_scope(scope: object) -> str:
    """Return ``scope`` if it is one of ``user``, ``package``, ``anonymous``, else raise ValueError."""
    if scope not in SCOPES:
        raise ValueError(f"plausipy scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    return scope  # type: ignore[return-value]


def narrower_scope(requested: str, granted: str) -> str:
    """The more private of two scopes: ``narrower_scope("user", "package") == "package"``."""
    return SCOPES[max(SCOPES.index(requested), SCOPES.index(granted))]


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


def new_run_id() -> str:
    """A random UUID4 string, without importing :mod:`uuid` in the host."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def hour_of(timestamp: float) -> str:
    """ISO 8601 UTC truncated to the hour: ``hour_of(0) == "1970-01-01T00:00:00Z"``."""
    t = time.gmtime(timestamp)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:00:00Z"


_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64", "arm64": "arm64", "i686": "x86", "i386": "x86"}


def system_facts() -> "dict[str, str]":
    """OS, architecture, Python version and implementation, and nothing more."""
    if sys.platform.startswith("linux"):
        os_name = "linux"
    elif sys.platform == "darwin":
        os_name = "darwin"
    elif sys.platform in ("win32", "cygwin"):
        os_name = "windows"
    else:
        os_name = sys.platform.rstrip("0123456789")
    try:
        machine = os.uname().machine.lower()
    except AttributeError:  # Windows
        machine = os.environ.get("PROCESSOR_ARCHITECTURE", "unknown").lower()
    version = sys.version_info
    return {
        "os": os_name,
        "arch": _ARCH_ALIASES.get(machine, machine),
        "python": f"{version[0]}.{version[1]}.{version[2]}",
        "implementation": sys.implementation.name,
    }


def peak_rss_kib() -> "int | None":
    """Peak resident memory of this process in KiB (``/proc``, ``resource``, psutil on Windows)."""
    try:
        # Linux: one small read instead of loading the `resource` extension at exit.
        with open("/proc/self/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:
        try:
            import psutil

            info = psutil.Process().memory_info()
            return int(getattr(info, "peak_wset", info.rss)) // 1024
        except Exception:
            return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024 if sys.platform == "darwin" else peak)  # macOS counts bytes


def build_raw_record(
    *,
    package: str,
    version: str,
    role: str,
    key: str,
    endpoint: str,
    scope: str,
    categories: "tuple[str, ...]",
    started: float,
    exit_code: "int | None",
    props: "dict[str, object]",
) -> "dict[str, object]":
    """Everything the host knows about one package's run, ready for the spool."""
    now = time.time()
    raw: "dict[str, object]" = {
        "run_id": new_run_id(),
        "key": key,
        "endpoint": endpoint,
        "created": now,
        "package": package,
        "version": version,
        "role": role,
        "scope": scope,
        "anonymous_uid": os.urandom(16).hex() if scope == "anonymous" else None,
        "hour": hour_of(started),
        "duration_ms": max(0, int((now - started) * 1000)),
        "peak_rss_kib": peak_rss_kib(),
        "exit_code": exit_code,
        # The time zone is looked up by the sender (same machine, same TZ): checking
        # the name against zone.tab costs about 1 ms that the host should not pay.
        "timezone": None,
        "props": dict(props),
        "categories": tuple(categories),
    }
    raw.update(system_facts())
    return raw


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
