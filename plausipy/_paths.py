"""Where plausipy keeps its local state (DESIGN.md §6).

It mirrors what :mod:`platformdirs` answers for the app name
``plausipy`` (a test checks that the two agree). ``PLAUSIPY_HOME`` puts
everything under one directory, which is what the tests and the demo use.
"""

import os

# The start-up hook must find its cache without importing this module, so the
# state directories are worked out there (_plausipy_hook.state_dir); the
# files the exiting program writes to are named in the host module.
from _plausipy_hook import cache_dir, index_cache_file
from plausipy._host import config_dir, data_dir, policy_file, problems_file, sender_lock_file, spool_dir

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


def secret_file() -> str:
    """32 random bytes behind every pseudonymous ID: ``~/.local/share/plausipy/secret``."""
    return os.path.join(data_dir(), "secret")


def ledger_file() -> str:
    """Every record built and what became of it: ``~/.local/share/plausipy/ledger.sqlite3``."""
    return os.path.join(data_dir(), "ledger.sqlite3")
