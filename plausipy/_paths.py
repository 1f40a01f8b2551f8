"""Where plausipy keeps its local state (DESIGN.md §6).

Start-up reads the cache dir, so this module imports nothing but ``os`` and
``sys`` and mirrors what :mod:`platformdirs` answers for the app name
``plausipy`` (a test checks that the two agree). ``PLAUSIPY_HOME`` puts
everything under one directory, which is what the tests and the demo use.
"""

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

# The start-up hook must find its cache without importing this module, so the
# home, the PLAUSIPY_HOME override and the cache dir are defined there.
from plausipy._bootstrap import cache_dir, index_cache_file, state_override as _override, user_home as _home  # noqa: E402


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
