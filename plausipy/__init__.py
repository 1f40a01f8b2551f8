"""plausipy: privacy-first usage analytics for Python packages and applications.

The front door. Importing it costs nothing: every name below is loaded on
first use (PEP 562). The start-up hook is a package of its own,
``_plausipy_hook``, so a start does not import this one at all.

>>> import plausipy
>>> plausipy.app(key="sayrrCCNbXY70ci6xHn8qlYwKyAUawgp", name="acme")  # doctest: +SKIP
"""

# Cheap to import: no `from __future__ import annotations` and no importlib
# (each a module load of its own), and the public functions come from
# plausipy._api on first use.
__version__ = "0.7.0"

__all__ = ["__version__", "app", "consent", "disable", "lib", "track"]


def __getattr__(name: str) -> object:
    if name not in __all__:
        raise AttributeError(f"module 'plausipy' has no attribute {name!r}")
    from plausipy import _api

    value = getattr(_api, name)
    globals()[name] = value
    return value


def __dir__() -> "list[str]":
    return sorted(set(globals()) | set(__all__))
