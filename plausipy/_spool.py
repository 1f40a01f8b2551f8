"""The spool: records written by exiting processes, waiting for the sender.

One file per exiting process, ``<ns>-<pid>-<random>.rec`` in the spool dir,
holding ``marshal.dumps({"v": 1, "records": [raw, …]})`` (raw records as
built by :func:`plausipy._host.build_raw_record`). The host writes it to a
``.tmp`` name and renames it, so the sender never sees half a file; marshal
keeps json out of the host. A file the sender cannot read is moved to
``spool/corrupt/`` rather than deleted or retried forever.
"""

import marshal
import os

from plausipy import _paths
from plausipy._host import SPOOL_FORMAT as _FORMAT
from plausipy._host import SPOOL_SUFFIX, write_spool

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at exit; annotations are strings anyway
    from collections.abc import Iterator

__all__ = ["SPOOL_SUFFIX", "read_spool", "spool_files", "write_spool"]


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
