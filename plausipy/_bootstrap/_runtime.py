"""The watcher's work after start-up: registering what it saw, reconciling, the exit trampoline.

Loaded the first time a tracked package is imported (or at exit), so that
the start-up module stays small enough to cost nothing even without ``.pyc``.
"""

import os
import sys
import time

from plausipy import _bootstrap

__all__ = ["at_exit", "kill_switch_for_registration", "reconcile", "remember_problem", "seen"]


def seen(name: str) -> None:
    """A tracked top-level name is being imported (or was): register its distribution."""
    watcher = _bootstrap.watcher
    entry = watcher.tracked.pop(name, None) if watcher is not None else _bootstrap.index.get(name)
    if watcher is not None and not watcher.tracked:
        _bootstrap.remove_watcher()
    if entry is None:
        return
    try:
        from plausipy import _registry

        _registry.register_from_index(name, entry)
    except Exception as exc:
        remember_problem(f"registering {name}", exc)


def reconcile() -> None:
    """Register tracked packages imported behind the watcher's back (another finder first)."""
    watcher = _bootstrap.watcher
    if watcher is None:
        return
    for name in [name for name in watcher.tracked if name in sys.modules]:
        seen(name)


def at_exit() -> None:
    """The exit hook: reconcile, then report if anything registered."""
    try:
        reconcile()
        if "plausipy._registry" not in sys.modules:
            return  # nothing was ever registered: no work, no imports
        from plausipy import _exit

        _exit.run_exit_hook()
    except BaseException as exc:  # not even KeyboardInterrupt escapes into the host's exit
        remember_problem("exit hook", exc)


def kill_switch_for_registration() -> "str | None":
    """Like :func:`plausipy._bootstrap.kill_switch`, but a process's own marker does not count."""
    reason = _bootstrap.user_switch()
    if reason:
        return reason
    environ = os.environ
    if environ.get("PLAUSIPY_SENDER"):
        return "this is plausipy's sender"
    parent = environ.get("PLAUSIPY_PARENT")
    if parent and parent != str(os.getpid()):
        return "started by a process that plausipy already watches"
    return None


def remember_problem(where: str, exc: "BaseException") -> None:
    """Note why plausipy stepped aside, for ``plausipy status``; never raises."""
    try:
        if _bootstrap.env_flag("PLAUSIPY_DEBUG"):
            import traceback

            sys.stderr.write(f"plausipy: {where} failed:\n")
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        from plausipy import _paths

        path = _paths.problems_file()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # Keep the file small: it is a hint for `plausipy status`, not a log.
        if os.path.exists(path) and os.path.getsize(path) > 64 * 1024:
            os.replace(path, path + ".old")
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{time.time():.0f}\t{os.getpid()}\t{where}\t{type(exc).__name__}: {exc}\n")
    except BaseException:
        pass
