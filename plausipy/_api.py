"""The public API: ``plausipy.app``, ``lib``, ``consent``, ``track``, ``disable``.

A wrong key, scope or property raises :class:`ValueError` at the call, where
the author sees it. Anything else that goes wrong inside plausipy is noted
for ``plausipy status`` and never reaches the program.
"""

from __future__ import annotations

import sys

import _plausipy_hook as _bootstrap
from plausipy._record import check_key, check_props, check_scope

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["app", "consent", "disable", "lib", "track"]


def app(
    key: str,
    *,
    name: str | None = None,
    version: str | None = None,
    scope: str = "package",
    endpoint: str | None = None,
    delay_consent: bool = False,
) -> None:
    """Report this application's runs.

    >>> plausipy.app(key="sayrrCCNbXY70ci6xHn8qlYwKyAUawgp", name="acme-cli")  # doctest: +SKIP

    The consent dialog appears here (on a terminal, when the user has not
    decided yet) unless ``delay_consent=True``; then call :func:`consent`
    when the program is ready to ask, or it is asked at exit.
    """
    _register(key, name=name, version=version, scope=scope, endpoint=endpoint, role="app", depth=2)
    if not delay_consent:
        consent()


def lib(
    key: str,
    *,
    name: str | None = None,
    version: str | None = None,
    scope: str = "package",
    endpoint: str | None = None,
) -> None:
    """Report the runs of processes that use this library (for libraries without the entry point)."""
    _register(key, name=name, version=version, scope=scope, endpoint=endpoint, role="lib", depth=2)


def consent() -> None:
    """Ask now, once, about everything registered and undecided (if a terminal allows it)."""
    try:
        from plausipy import _host

        _host.reconcile()
        if not _host.marked:
            return
        from plausipy import _consent

        _consent.resolve(_host.registrations(), at_exit=False)
    except Exception as exc:
        _remember_problem("consent()", exc)


def track(**props: object) -> None:
    """Add custom properties to the calling package's record of this run.

    >>> plausipy.track(command="build", workers=4)  # doctest: +SKIP
    """
    checked = check_props(props)
    host = _registered_host()
    if host is None:
        return  # nothing registered (or plausipy disabled): nothing to annotate
    caller = sys._getframe(1).f_globals.get("__name__", "__main__")
    registration = host.find_for_module(caller)
    if registration is None:
        return
    merged = {**registration.props, **checked}
    registration.props = check_props(merged)


def disable() -> None:
    """Collect nothing in this process from now on (nothing is asked or sent)."""
    from plausipy import _host

    _host.disable()
    _bootstrap.disabled_reason = "plausipy.disable() was called"
    _bootstrap.index.clear()


def _remember_problem(where: str, exc: BaseException) -> None:
    from plausipy._host import remember_problem

    remember_problem(where, exc)


def _registered_host() -> ModuleType | None:
    # The host module once something registered; None keeps a process that registered nothing from loading it.
    host = sys.modules.get("plausipy._host")
    return host if host is not None and host.marked else None


def _caller_import_name(depth: int) -> str | None:
    module_name = sys._getframe(depth + 1).f_globals.get("__name__") or "__main__"
    if module_name == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module_name = getattr(spec, "name", None) or ""  # `python -m acme` runs acme.__main__
    top = module_name.partition(".")[0]
    return top or None


def _register(
    key: str,
    *,
    name: str | None,
    version: str | None,
    scope: str,
    endpoint: str | None,
    role: str,
    depth: int,
) -> None:
    check_key(key)
    check_scope(scope)
    if endpoint is not None and not (isinstance(endpoint, str) and endpoint.startswith(("http://", "https://"))):
        raise ValueError(f"plausipy endpoint must be an http(s) URL, got {endpoint!r}")
    if name is not None and (not isinstance(name, str) or not name.strip() or "/" in name or "\\" in name):
        raise ValueError(f"plausipy name must be a distribution name, not {name!r}")
    if disabled():
        return
    import_name = _caller_import_name(depth)
    if name is None or version is None:
        from _plausipy_hook._index import find_distribution

        found = find_distribution(import_name, sys.path, name=name)
        if found is None and name is None:
            raise ValueError(
                "plausipy could not tell which distribution is calling "
                f"(module {import_name or '__main__'!r} belongs to none); pass name=… explicitly"
            )
        if name is None:
            name = found[0]  # type: ignore[index]
        if version is None:
            version = found[1] if found else "0"
    try:
        from plausipy import _host

        _host.register(
            package=name,
            version=version,
            role=role,
            key=key,
            scope=scope,
            endpoint=endpoint.rstrip("/") if endpoint else None,
            import_name=import_name,
        )
    except Exception as exc:
        _remember_problem(f"plausipy.{role}()", exc)


def disabled() -> bool:
    """True when a kill switch or :func:`disable` turned plausipy off in this process."""
    from plausipy import _host

    return _host.kill_switch_for_registration() is not None or not _host.is_active()
