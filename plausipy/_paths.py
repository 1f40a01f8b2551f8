"""Where plausipy keeps its local state (DESIGN.md §6).

Start-up reads the cache dir, so this module imports nothing but ``os`` and
``sys`` and mirrors what :mod:`platformdirs` answers for the app name
``plausipy`` (a test checks that the two agree). ``PLAUSIPY_HOME`` puts
everything under one directory, which is what the tests and the demo use.
"""

from __future__ import annotations

import os
import sys

__all__ = [
    "cache_dir",
    "config_dir",
    "data_dir",
    "index_cache_file",
    "ledger_file",
    "policy_file",
    "problems_file",
    "secret_file",
    "sender_lock_file",
    "spool_dir",
]

APP = "plausipy"


def _home() -> str:
    home = os.path.expanduser("~")
    if home == "~" or not home:
        # No HOME and no passwd entry: a temp dir beats raising at exit.
        import tempfile

        home = os.path.join(tempfile.gettempdir(), f"{APP}-{os.getuid() if hasattr(os, 'getuid') else 'user'}")
    return home


def _override(sub: str) -> str | None:
    root = os.environ.get("PLAUSIPY_HOME")
    return os.path.join(os.path.abspath(root), sub) if root else None


def _windows_local_appdata() -> str:
    return os.environ.get("LOCALAPPDATA") or os.path.join(_home(), "AppData", "Local")


def config_dir() -> str:
    """Policy lives here: ``~/.config/plausipy`` on Linux."""
    override = _override("config")
    if override:
        return override
    if sys.platform == "win32":
        return os.path.join(_windows_local_appdata(), APP, APP)
    if sys.platform == "darwin":
        return os.path.join(_home(), "Library", "Application Support", APP)
    return os.path.join(os.environ.get("XDG_CONFIG_HOME", "").strip() or os.path.join(_home(), ".config"), APP)


def data_dir() -> str:
    """Secret, spool and ledger: ``~/.local/share/plausipy`` on Linux."""
    override = _override("data")
    if override:
        return override
    if sys.platform == "win32":
        return os.path.join(_windows_local_appdata(), APP, APP)
    if sys.platform == "darwin":
        return os.path.join(_home(), "Library", "Application Support", APP)
    return os.path.join(os.environ.get("XDG_DATA_HOME", "").strip() or os.path.join(_home(), ".local", "share"), APP)


def cache_dir() -> str:
    """The key index cache: ``~/.cache/plausipy`` on Linux."""
    override = _override("cache")
    if override:
        return override
    if sys.platform == "win32":
        return os.path.join(_windows_local_appdata(), APP, APP, "Cache")
    if sys.platform == "darwin":
        return os.path.join(_home(), "Library", "Caches", APP)
    return os.path.join(os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(_home(), ".cache"), APP)


def policy_file() -> str:
    """The user's choices, human-readable: ``~/.config/plausipy/policy.toml``."""
    return os.path.join(config_dir(), "policy.toml")


def secret_file() -> str:
    """32 random bytes behind every pseudonymous ID: ``~/.local/share/plausipy/secret``."""
    return os.path.join(data_dir(), "secret")


def spool_dir() -> str:
    """Records written at exit, waiting for the sender: ``~/.local/share/plausipy/spool``."""
    return os.path.join(data_dir(), "spool")


def ledger_file() -> str:
    """Every record built and what became of it: ``~/.local/share/plausipy/ledger.sqlite3``."""
    return os.path.join(data_dir(), "ledger.sqlite3")


def sender_lock_file() -> str:
    """Held by the one running sender: ``~/.local/share/plausipy/sender.lock``."""
    return os.path.join(data_dir(), "sender.lock")


def problems_file() -> str:
    """Why plausipy stepped aside, for ``plausipy status``: ``~/.local/share/plausipy/problems.log``."""
    return os.path.join(data_dir(), "problems.log")


def index_cache_file() -> str:
    """The key index of this environment: ``~/.cache/plausipy/index-<hash>.marshal``."""
    # FNV-1a of sys.prefix: one cache file per environment, no hashlib at start-up.
    digest = 0xCBF29CE484222325
    for char in sys.prefix:
        digest = ((digest ^ ord(char)) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return os.path.join(cache_dir(), f"index-{sys.version_info[0]}{sys.version_info[1]}-{digest:016x}.marshal")
