"""The start-up hook: what ``plausipy.pth`` (and ``plausipy.start``) run in every process.

Budget: a fraction of a millisecond (DESIGN.md §3). So this module imports
nothing that ``site`` has not imported already (``sys``, ``os``) plus the
built-in ``marshal``, ``time`` and ``atexit``; it reads one small cached file
and installs one meta-path watcher. Everything else waits until a tracked
package is imported, and the heavy part waits until exit.

    start()                      kill switches ─► load the cached key index ─► install_watcher()
    _Watcher.find_spec(name)     one dict lookup; a tracked name ─► plausipy._registry
    _at_exit()                   reconcile with sys.modules ─► plausipy._exit.run_exit_hook()

Nothing here raises into the host: failures are written to the problems file
for ``plausipy status`` and the hook steps aside.
"""

from __future__ import annotations

import atexit
import marshal
import os
import sys
import time

__all__ = ["disabled_reason", "index", "install_exit_hook", "start"]

#: Bumped whenever the layout of the cached index changes.
INDEX_FORMAT = 2

_started = False
_exit_hook_installed = False
#: Interpreter start, as near as the hook can see it.
started_at = time.time()
#: Why the hook stepped aside, if it did (shown by ``plausipy status``/``doctor``).
disabled_reason: str | None = None
#: Import name -> (distribution, version, key, scope, endpoint or None).
index: dict[str, tuple[str, str, str, str, str | None]] = {}
_watcher: _Watcher | None = None

_FALSE_WORDS = ("", "0", "false", "no", "off")


def kill_switch() -> str | None:
    """The reason plausipy must do nothing in this process, or None (DESIGN.md §7)."""
    environ = os.environ
    for name in ("DO_NOT_TRACK", "PLAUSIPY_DISABLE"):
        if environ.get(name, "").strip().lower() not in _FALSE_WORDS:
            return f"{name} is set"
    if environ.get("PLAUSIPY_PARENT") or environ.get("PLAUSIPY_SENDER"):
        # A child of an instrumented process (or our own sender) neither reports nor asks.
        return "started by a process that plausipy already watches"
    return None


def kill_switch_for_registration() -> str | None:
    """Like :func:`kill_switch`, but a process's own marker does not count against it."""
    environ = os.environ
    for name in ("DO_NOT_TRACK", "PLAUSIPY_DISABLE"):
        if environ.get(name, "").strip().lower() not in _FALSE_WORDS:
            return f"{name} is set"
    if environ.get("PLAUSIPY_SENDER"):
        return "this is plausipy's sender"
    parent = environ.get("PLAUSIPY_PARENT")
    if parent and parent != str(os.getpid()):
        return "started by a process that plausipy already watches"
    return None


def start() -> None:
    """Run the hook once; ``.pth`` files run twice in a venv before 3.14, so this is idempotent."""
    global _started, disabled_reason
    if _started:
        return
    _started = True
    try:
        disabled_reason = kill_switch()
        if disabled_reason is None:
            index.update(load_index())
            if index:
                install_watcher()
    except Exception as exc:  # never into the host
        remember_problem("start-up hook", exc)


# -- the key index -------------------------------------------------------------------------


def _fingerprint() -> tuple[tuple[str, int], ...]:
    # Installing or removing a distribution changes its directory's mtime.
    stamps = []
    for entry in sys.path:
        try:
            stamps.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            stamps.append((entry, -1))
    return tuple(stamps)


def load_index() -> dict[str, tuple[str, str, str, str, str | None]]:
    """The index for the current ``sys.path``: from the cache, else rebuilt once and cached."""
    from plausipy import _paths

    path = _paths.index_cache_file()
    fingerprint = _fingerprint()
    try:
        with open(path, "rb") as handle:
            cached = marshal.loads(handle.read())
        if cached[0] == INDEX_FORMAT and cached[1] == fingerprint:
            return cached[2]
    except Exception:
        pass  # missing, stale or corrupt: rebuild below
    from plausipy._bootstrap._index import build_index, write_index

    built = build_index(sys.path)
    write_index(path, (INDEX_FORMAT, fingerprint, built))
    return built


# -- the watcher ---------------------------------------------------------------------------


class _Watcher:
    """Sits at ``sys.meta_path[0]``, sees every import, finds nothing."""

    __slots__ = ("tracked",)

    def __init__(self, tracked: dict[str, tuple[str, str, str, str, str | None]]) -> None:
        self.tracked = tracked

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname in self.tracked:
            seen(fullname)
        return None

    def invalidate_caches(self) -> None:
        return None


def install_watcher() -> None:
    """Put one watcher first on ``sys.meta_path`` for the names of the index."""
    global _watcher
    if _watcher is None:
        _watcher = _Watcher(dict(index))
        sys.meta_path.insert(0, _watcher)
        install_exit_hook()


def remove_watcher() -> None:
    """Take the watcher off ``sys.meta_path`` (all seen, or plausipy disabled)."""
    global _watcher
    watcher, _watcher = _watcher, None
    if watcher is not None:
        try:
            sys.meta_path.remove(watcher)
        except ValueError:
            pass


def seen(name: str) -> None:
    """A tracked top-level name is being imported (or was): register its distribution."""
    watcher = _watcher
    entry = watcher.tracked.pop(name, None) if watcher is not None else index.get(name)
    if watcher is not None and not watcher.tracked:
        remove_watcher()
    if entry is None:
        return
    try:
        from plausipy import _registry

        _registry.register_from_index(name, entry)
    except Exception as exc:
        remember_problem(f"registering {name}", exc)


def reconcile() -> None:
    """Register tracked packages imported behind the watcher's back (another finder first)."""
    watcher = _watcher
    if watcher is None:
        return
    for name in [name for name in watcher.tracked if name in sys.modules]:
        seen(name)


# -- exit ----------------------------------------------------------------------------------


def install_exit_hook() -> None:
    """Register the one exit hook (cheap: the heavy module loads only if it has work)."""
    global _exit_hook_installed
    if not _exit_hook_installed:
        _exit_hook_installed = True
        atexit.register(_at_exit)


def _at_exit() -> None:
    try:
        reconcile()
        if "plausipy._registry" not in sys.modules:
            return  # nothing was ever registered: no work, no imports
        from plausipy import _exit

        _exit.run_exit_hook()
    except BaseException as exc:  # not even KeyboardInterrupt escapes into the host's exit
        remember_problem("exit hook", exc)


def remember_problem(where: str, exc: BaseException) -> None:
    """Note why plausipy stepped aside, for ``plausipy status``; never raises."""
    try:
        if os.environ.get("PLAUSIPY_DEBUG", "").strip().lower() not in _FALSE_WORDS:
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
