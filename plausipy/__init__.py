"""plausipy: privacy-first usage analytics for Python packages and applications.

The front door. Importing it costs nothing: every name below is loaded on
first use (PEP 562), so the start-up hook can import ``plausipy._bootstrap``
without pulling in anything else.

>>> import plausipy
>>> plausipy.app(key="sayrrCCNbXY70ci6xHn8qlYwKyAUawgp", name="acme")  # doctest: +SKIP
"""

# No `from __future__ import annotations` and no importlib here: the start-up hook
# imports this module in every process, and each would be a module load of its own.
import sys as _sys

__version__ = "0.7.0"

__all__ = ["__version__", "app", "consent", "disable", "lib", "track"]

_LAZY = {name: "plausipy._api" for name in ("app", "consent", "disable", "lib", "track")}


def __getattr__(name: str) -> object:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'plausipy' has no attribute {name!r}")
    __import__(module_name)
    value = getattr(_sys.modules[module_name], name)
    globals()[name] = value
    return value


def __dir__() -> "list[str]":
    return sorted(set(globals()) | set(__all__))
