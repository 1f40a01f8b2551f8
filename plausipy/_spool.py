"""The spool: records written by exiting processes, waiting for the sender.

One file per exiting process, ``<ns>-<pid>-<random>.rec`` in the spool dir,
holding ``marshal.dumps({"v": 1, "records": [raw, …]})`` (raw records as
built by :func:`plausipy._record.build_raw_record`). It is written to a
``.tmp`` name and renamed, so the sender never sees half a file; marshal
keeps json out of the host. A file the sender cannot read is moved to
``spool/corrupt/`` rather than deleted or retried forever.
"""

import marshal
import os
import time

from plausipy import _paths

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at exit; annotations are strings anyway
    from collections.abc import Iterator

__all__ = ["SPOOL_SUFFIX", "read_spool", "spool_files", "write_spool"]

SPOOL_SUFFIX = ".rec"
_FORMAT = 1


def write_spool(records: "list[dict[str, object]]", directory: "str | None" = None) -> str:
    """Write ``records`` atomically to a new spool file and return its path."""
    directory = directory or _paths.spool_dir()
    os.makedirs(directory, exist_ok=True)
    name = f"{time.time_ns()}-{os.getpid()}-{os.urandom(4).hex()}"
    temporary = os.path.join(directory, name + ".tmp")
    final = os.path.join(directory, name + SPOOL_SUFFIX)
    payload = marshal.dumps({"v": _FORMAT, "records": records})
    # No fsync: the rename makes the file appear whole or not at all, which is what
    # the sender needs; an fsync would cost the exiting program milliseconds.
    with open(temporary, "wb") as handle:
        handle.write(payload)
    os.replace(temporary, final)
    return final


def spool_files(directory: "str | None" = None) -> "list[str]":
    """Complete spool files, oldest first."""
    directory = directory or _paths.spool_dir()
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return [os.path.join(directory, name) for name in sorted(names) if name.endswith(SPOOL_SUFFIX)]


def read_spool(path: str) -> "list[dict[str, object]]":
    """The raw records of one spool file; raises ValueError if it is not one."""
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        content = marshal.loads(data)
    except (EOFError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a spool file ({exc})") from exc
    if not isinstance(content, dict) or content.get("v") != _FORMAT or not isinstance(content.get("records"), list):
        raise ValueError(f"{path}: not a spool file of format {_FORMAT}")
    return [record for record in content["records"] if isinstance(record, dict)]


def iter_spool(directory: "str | None" = None) -> "Iterator[tuple[str, list[dict[str, object]] | None]]":
    """Each spool file with its records, or None for a file that cannot be read."""
    for path in spool_files(directory):
        try:
            yield path, read_spool(path)
        except (OSError, ValueError):
            yield path, None


def quarantine(path: str) -> None:
    """Move an unreadable spool file aside, where ``plausipy status`` can count it."""
    corrupt = os.path.join(os.path.dirname(path), "corrupt")
    os.makedirs(corrupt, exist_ok=True)
    os.replace(path, os.path.join(corrupt, os.path.basename(path)))
