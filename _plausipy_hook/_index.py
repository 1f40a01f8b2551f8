"""Build the key index by reading ``*.dist-info`` directories directly.

Runs only when the cache is stale (after an install or uninstall), so it may
cost a few milliseconds, but never the tens of milliseconds (growing with
every installed distribution) of ``importlib.metadata.entry_points()``.

A distribution opts in with (DESIGN.md §2)::

    [project.entry-points.plausipy]
    key = "sayrrCCNbXY70ci6xHn8qlYwKyAUawgp"
    scope = "package"

    [project.urls]
    Plausipy = "https://collector.example.org"
"""

from __future__ import annotations

import marshal
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["build_index", "read_declaration", "rebuild_index", "write_index"]

_SCOPES = ("user", "package", "anonymous")
_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")

Entry = tuple  # (distribution, version, key, scope, endpoint or None)


def build_index(paths: list[str]) -> dict[str, Entry]:
    """Import name -> entry for every distribution on ``paths`` that declares a key.

    The first distribution on ``sys.path`` wins, as it does for imports.
    """
    index: dict[str, Entry] = {}
    for dist_info in dist_info_dirs(paths):
        declared = read_declaration(dist_info)
        if declared is None:
            continue
        entry, import_names = declared
        for import_name in import_names:
            index.setdefault(import_name, entry)
    return index


def dist_info_dirs(paths: list[str]) -> Iterator[str]:
    """Every ``*.dist-info`` directory on ``paths``, in ``sys.path`` order."""
    for directory in paths:
        try:
            names = sorted(os.listdir(directory or "."))
        except OSError:
            continue
        for name in names:
            if name.endswith(".dist-info"):
                yield os.path.join(directory or ".", name)


def read_declaration(dist_info: str) -> tuple[Entry, list[str]] | None:
    """The entry and import names of one ``.dist-info`` dir, or None if it declares no key."""
    try:
        with open(os.path.join(dist_info, "entry_points.txt"), encoding="utf-8") as handle:
            section = _ini_section(handle.read(), "plausipy")
    except (OSError, UnicodeDecodeError):
        return None
    key = section.get("key", "")
    if len(key) != 32 or not key[0].isalpha() or not set(key) <= _ALNUM:
        return None
    scope = section.get("scope", "package")
    if scope not in _SCOPES:
        scope = "package"
    name, version, endpoint = _metadata(dist_info)
    import_names = _import_names(dist_info)
    if not name or not import_names:
        return None
    return (name, version, key, scope, endpoint), import_names


def _ini_section(text: str, wanted: str) -> dict[str, str]:
    values: dict[str, str] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
        elif current == wanted and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def _metadata(dist_info: str) -> tuple[str, str, str | None]:
    name = version = ""
    endpoint = None
    try:
        with open(os.path.join(dist_info, "METADATA"), encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    break  # the body (long description) starts here
                field, _, value = line.partition(":")
                value = value.strip()
                if field == "Name":
                    name = value
                elif field == "Version":
                    version = value
                elif field == "Project-URL":
                    label, _, url = value.partition(",")
                    if label.strip().lower() == "plausipy" and url.strip().startswith(("http://", "https://")):
                        endpoint = url.strip().rstrip("/")
    except (OSError, UnicodeDecodeError):
        pass
    if not name:
        # "acme_lib-1.2.dist-info": the directory name still tells name and version.
        stem = os.path.basename(dist_info)[: -len(".dist-info")]
        name, _, version = stem.partition("-")
    return name, version, endpoint


def _import_names(dist_info: str) -> list[str]:
    try:
        with open(os.path.join(dist_info, "top_level.txt"), encoding="utf-8") as handle:
            names = [line.strip() for line in handle if line.strip()]
        if names:
            return names
    except (OSError, UnicodeDecodeError):
        pass
    names: list[str] = []
    try:
        with open(os.path.join(dist_info, "RECORD"), encoding="utf-8") as handle:
            for line in handle:
                path = line.split(",", 1)[0].replace("\\", "/")
                first, slash, _ = path.partition("/")
                if first.startswith(".") or first.endswith((".dist-info", ".data")) or first == "__pycache__":
                    continue
                if slash and first.isidentifier():
                    candidate = first  # a package directory
                elif not slash and first.endswith(".py"):
                    candidate = first[:-3]  # a single-module distribution
                elif not slash and ("." in first) and first.split(".", 1)[0].isidentifier() and first.endswith((".so", ".pyd")):
                    candidate = first.split(".", 1)[0]
                else:
                    continue
                if candidate.isidentifier() and candidate not in names:
                    names.append(candidate)
    except (OSError, UnicodeDecodeError):
        pass
    return names


def rebuild_index(path: str, fingerprint: tuple) -> dict[str, Entry]:
    """Build the index of ``sys.path`` and cache it at ``path`` under ``fingerprint``.

    The start-up hook calls this when the cache is missing, corrupt or stale.
    """
    import sys

    from _plausipy_hook import INDEX_FORMAT

    built = build_index(sys.path)
    write_index(path, (INDEX_FORMAT, fingerprint, built))
    return built


def write_index(path: str, content: tuple) -> None:
    """Write the cache atomically; a read-only cache dir just means rebuilding next time."""
    write_cache_file(path, marshal.dumps(content))


def write_cache_file(path: str, payload: bytes) -> None:
    """Write a cache file atomically; failing to write it costs the next run a rebuild, nothing more."""
    temporary = f"{path}.{os.getpid()}-{os.urandom(4).hex()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(temporary, "wb") as handle:
            handle.write(payload)
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass


def find_distribution(import_name: str | None, paths: list[str], *, name: str | None = None) -> tuple[str, str] | None:
    """(distribution, version) providing ``import_name`` (or called ``name``), or None.

    Tries the cheap guess first (a dist-info named like the module), then
    reads the import names of each distribution.
    """
    wanted = _normalize(name or import_name or "")
    dist_infos = []
    for full in dist_info_dirs(paths):
        if _normalize(os.path.basename(full)[: -len(".dist-info")].partition("-")[0]) == wanted:
            dist_name, version, _ = _metadata(full)
            return dist_name, version
        dist_infos.append(full)
    if name is not None or not import_name:
        return None
    for full in dist_infos:
        if import_name in _import_names(full):
            dist_name, version, _ = _metadata(full)
            return dist_name, version
    return None


def _normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")
