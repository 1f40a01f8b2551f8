"""The identity secret behind every pseudonymous ID (DESIGN.md §4, §6).

32 random bytes in the data dir (``~/.local/share/plausipy/secret``), created
on first use with mode 0600. ``uid`` values are HMACs of it, so replacing it
(:func:`reset_secret`, ``plausipy policy reset-id``) makes every later ID
unlinkable to the earlier ones.

Many processes may need the secret at the same moment, so creation is
atomic: the bytes are written to a private temporary file and hard-linked to
the final name, which fails if another process got there first; the loser
then reads the winner's secret. Nobody ever sees a half-written file.

>>> secret = load_or_create_secret()  # doctest: +SKIP
>>> len(secret)
32
"""

from __future__ import annotations

import os

from plausipy import _paths

__all__ = ["SECRET_LENGTH", "load_or_create_secret", "reset_secret"]

SECRET_LENGTH = 32


def load_or_create_secret() -> bytes:
    """The 32-byte secret, created atomically (mode 0600) if there is none yet.

    A file of the wrong length is replaced: a secret nobody can read is no
    secret, and the IDs it produced cannot be linked anyway.
    """
    path = _paths.secret_file()
    existing = _read_secret(path)
    if existing is not None:
        return existing
    if os.path.exists(path):
        # Present but damaged: replace it, then trust whatever is on disk, so
        # racing processes converge on one secret.
        _write_secret(path, os.urandom(SECRET_LENGTH), replace=True)
    else:
        _write_secret(path, os.urandom(SECRET_LENGTH), replace=False)
    secret = _read_secret(path)
    if secret is None:
        raise OSError(f"cannot read back the plausipy secret at {path}")
    return secret


def reset_secret() -> bytes:
    """Replace the secret with fresh random bytes and return them.

    Later ``uid`` values cannot be linked to earlier ones.
    """
    path = _paths.secret_file()
    secret = os.urandom(SECRET_LENGTH)
    _write_secret(path, secret, replace=True)
    return secret


def _read_secret(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            data = handle.read(SECRET_LENGTH + 1)
    except FileNotFoundError:
        return None
    return data if len(data) == SECRET_LENGTH else None


def _write_secret(path: str, secret: bytes, *, replace: bool) -> None:
    """Write ``secret`` to a private temporary file, then publish it at ``path``.

    With ``replace=False`` an existing file wins (first writer wins); with
    ``replace=True`` the new secret replaces whatever is there.
    """
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    temporary = os.path.join(directory, f".secret-{os.getpid()}-{os.urandom(4).hex()}.tmp")
    # O_EXCL + 0600 at creation: the bytes are never readable by others, not even briefly.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secret)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            _publish_unless_present(temporary, path)
    finally:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass


def _publish_unless_present(temporary: str, path: str) -> None:
    try:
        # A hard link is atomic and refuses to overwrite: exactly one process wins.
        os.link(temporary, path)
    except FileExistsError:
        pass
    except (AttributeError, NotImplementedError, PermissionError):
        # File systems without hard links (some Windows and network mounts).
        if not os.path.exists(path):
            os.replace(temporary, path)
