"""Who reports in this process: the packages registered by the watcher or the API.

Imported the first time something registers, and not before, so a process
that imports no tracked package never loads it. Importing it marks the
process as instrumented: children it starts inherit ``PLAUSIPY_PARENT`` and
neither report nor ask (DESIGN.md §1), and ``os.fork`` children forget what
the parent registered (their parent reports the run, not them).
"""

import os
import sys
import time

from plausipy import _bootstrap

__all__ = ["Registration", "disable", "find_for_module", "register", "register_from_index", "registrations"]


class Registration:
    """One package that asked to report in this process."""

    __slots__ = ("endpoint", "import_name", "key", "package", "props", "role", "scope", "started", "version")

    def __init__(
        self,
        *,
        package: str,
        version: str,
        role: str,
        key: str,
        scope: str,
        endpoint: "str | None",
        import_name: "str | None",
        started: float,
    ) -> None:
        self.package, self.version, self.role = package, version, role
        self.key, self.scope, self.endpoint = key, scope, endpoint
        self.import_name, self.started = import_name, started
        self.props: "dict[str, object]" = {}

    def __repr__(self) -> str:
        return f"Registration({self.package!r} {self.version!r}, role={self.role!r}, scope={self.scope!r})"


_registrations: "dict[str, Registration]" = {}
_disabled = False
_forked_child = False


def _mark_process() -> None:
    # Children started from here on inherit the marker (the bootstrap reads it).
    os.environ.setdefault("PLAUSIPY_PARENT", str(os.getpid()))
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_forget_in_fork_child)
    from plausipy import _exitcode

    _exitcode.install()
    _bootstrap.install_exit_hook()


def _forget_in_fork_child() -> None:
    global _forked_child
    _forked_child = True
    _registrations.clear()


def register(
    *,
    package: str,
    version: str,
    role: str,
    key: str,
    scope: str,
    endpoint: "str | None" = None,
    import_name: "str | None" = None,
) -> "Registration | None":
    """Register ``package``; the first registration of a name wins. None when disabled."""
    if _disabled or _forked_child or _bootstrap.kill_switch_for_registration():
        return None
    from plausipy._policy import normalize_name

    name = normalize_name(package)
    existing = _registrations.get(name)
    if existing is not None:
        if role == "app" and existing.role != "app":
            existing.role = "app"  # plausipy.app() for a package the watcher saw as a library
        return existing
    registration = Registration(
        package=package,
        version=version,
        role=role,
        key=key,
        scope=scope,
        endpoint=endpoint,
        import_name=import_name,
        started=_bootstrap.started_at if _bootstrap.started_at else time.time(),
    )
    _registrations[name] = registration
    _debug(f"registered {registration}")
    return registration


def register_from_index(import_name: str, entry: "tuple") -> "Registration | None":
    """Register a distribution found by the watcher (an index entry, see ``_bootstrap``)."""
    distribution, version, key, scope, endpoint = entry
    return register(
        package=distribution,
        version=version,
        role="lib",
        key=key,
        scope=scope,
        endpoint=endpoint,
        import_name=import_name,
    )


def registrations() -> "list[Registration]":
    """Everything registered in this process, apps first."""
    return sorted(_registrations.values(), key=lambda registration: registration.role != "app")


def find_for_module(module_name: str) -> "Registration | None":
    """The registration a module belongs to: by import name, else the app for ``__main__``."""
    top = module_name.partition(".")[0]
    for registration in _registrations.values():
        if registration.import_name == top:
            return registration
    from plausipy._policy import normalize_name

    for registration in _registrations.values():
        if normalize_name(registration.package) == normalize_name(top):
            return registration
    if top == "__main__":
        apps = [registration for registration in _registrations.values() if registration.role == "app"]
        return apps[0] if apps else None
    return None


def disable() -> None:
    """Forget every registration and collect nothing more in this process."""
    global _disabled
    _disabled = True
    _registrations.clear()
    _bootstrap.remove_watcher()


def is_active() -> bool:
    """True when this process may still report."""
    return not (_disabled or _forked_child)


def _debug(message: str) -> None:
    if _bootstrap.env_flag("PLAUSIPY_DEBUG"):
        sys.stderr.write(f"plausipy: {message}\n")


_mark_process()
