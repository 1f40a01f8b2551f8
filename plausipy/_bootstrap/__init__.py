"""The start-up hook: what ``plausipy.pth`` (and ``plausipy.start``) run in every process.

Budget: a fraction of a millisecond (DESIGN.md §3), with or without ``.pyc``
files. So this module is small, imports nothing that ``site`` has not
imported already (``sys``, ``os``) beyond the built-in ``marshal``, ``time``
and ``atexit``, reads one small cached file and installs one meta-path
watcher. It does without ``from __future__ import annotations`` (a module
load of its own at every start), so its annotations are quoted. Everything
that runs later lives in :mod:`plausipy._host`::

    start()                      kill switches ─► load the cached key index ─► install_watcher()
    find_spec(name)              this module is the watcher on sys.meta_path: one dict
                                 lookup; a tracked name ─► _host.seen()
    _at_exit()                   _host.at_exit(): reconcile ─► report, if anything registered

Nothing here raises into the host: failures are noted for ``plausipy status``.
"""

import atexit
import marshal
import os
import sys
import time

__all__ = ["cache_dir", "disabled_reason", "index", "index_cache_file", "install_exit_hook", "start"]

#: Bumped whenever the layout of the cached index changes.
INDEX_FORMAT = 2
_FALSE_WORDS = ("", "0", "false", "no", "off")

_started = False
_exit_hook_installed = False
#: Interpreter start, as near as the hook can see it.
started_at = time.time()
#: Why the hook stepped aside, if it did (shown by ``plausipy status``/``doctor``).
disabled_reason: "str | None" = None
#: Import name -> (distribution, version, key, scope, endpoint or None).
index: "dict[str, tuple[str, str, str, str, str | None]]" = {}
#: Import names the watcher still waits for (a copy of ``index``, emptied as they are seen).
tracked: "dict[str, tuple[str, str, str, str, str | None]]" = {}
#: This module while it sits on ``sys.meta_path`` as the watcher, else None.
watcher: "object | None" = None


def env_flag(name: str) -> bool:
    """True when the variable is set to anything but empty, 0, false, no or off."""
    return os.environ.get(name, "").strip().lower() not in _FALSE_WORDS


def user_switch() -> "str | None":
    """Which of the user's kill switches (DO_NOT_TRACK, PLAUSIPY_DISABLE) is on, if any."""
    for name in ("DO_NOT_TRACK", "PLAUSIPY_DISABLE"):
        if env_flag(name):
            return f"{name} is set"
    return None


def kill_switch() -> "str | None":
    """The reason plausipy must do nothing in this process, or None (DESIGN.md §7)."""
    reason = user_switch()
    if reason:
        return reason
    environ = os.environ
    if environ.get("PLAUSIPY_PARENT") or environ.get("PLAUSIPY_SENDER"):
        # A child of an instrumented process (or our own sender) neither reports nor asks.
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
        try:
            from plausipy._host import remember_problem

            remember_problem("start-up hook", exc)
        except BaseException:
            pass


# -- where the index cache lives (plausipy._paths builds on these) ---------------------------


def user_home() -> str:
    """The user's home directory, or a per-user temp dir when there is none."""
    home = os.path.expanduser("~")
    if home == "~" or not home:
        import tempfile

        home = os.path.join(tempfile.gettempdir(), f"plausipy-{os.getuid() if hasattr(os, 'getuid') else 'user'}")
    return home


def state_override(sub: str) -> "str | None":
    """``$PLAUSIPY_HOME/<sub>`` when ``PLAUSIPY_HOME`` is set."""
    root = os.environ.get("PLAUSIPY_HOME")
    return os.path.join(os.path.abspath(root), sub) if root else None


def cache_dir() -> str:
    """The key index cache: ``~/.cache/plausipy`` on Linux (as platformdirs says)."""
    override = state_override("cache")
    if override:
        return override
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA") or os.path.join(user_home(), "AppData", "Local")
        return os.path.join(local, "plausipy", "plausipy", "Cache")
    if sys.platform == "darwin":
        return os.path.join(user_home(), "Library", "Caches", "plausipy")
    return os.path.join(os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(user_home(), ".cache"), "plausipy")


def index_cache_file() -> str:
    """The key index of this environment: ``~/.cache/plausipy/index-<python>-<hash>.marshal``."""
    # One cache file per environment, named by a hash of sys.prefix: its bytes read as one
    # integer modulo a Mersenne prime, a single C-level operation (no hashlib, no Python loop).
    digest = int.from_bytes(sys.prefix.encode("utf-8", "surrogateescape"), "little") % 0x1FFFFFFFFFFFFFFF
    return os.path.join(cache_dir(), f"index-{sys.version_info[0]}{sys.version_info[1]}-{digest:016x}.marshal")


# -- the key index -------------------------------------------------------------------------


def _fingerprint() -> "tuple[tuple[str, int], ...]":
    # Installing or removing a distribution changes its directory's mtime.
    stamps = []
    for entry in sys.path:
        try:
            stamps.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            stamps.append((entry, -1))
    return tuple(stamps)


def read_cache_file(path: str) -> bytes:
    """The bytes of a small cache file, read without the io objects ``open()`` builds."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        chunks = [os.read(descriptor, 65536)]
        while len(chunks[-1]) == 65536:
            chunks.append(os.read(descriptor, 65536))
    finally:
        os.close(descriptor)
    return b"".join(chunks)


def load_index() -> "dict[str, tuple[str, str, str, str, str | None]]":
    """The index for the current ``sys.path``: from the cache, else rebuilt once and cached."""
    path = index_cache_file()
    fingerprint = _fingerprint()
    try:
        cached = marshal.loads(read_cache_file(path))
        if cached[0] == INDEX_FORMAT and cached[1] == fingerprint:
            return cached[2]
    except Exception:
        pass  # missing, stale or corrupt: rebuild below
    from plausipy._bootstrap._index import build_index, write_index

    built = build_index(sys.path)
    write_index(path, (INDEX_FORMAT, fingerprint, built))
    return built


# -- the watcher ---------------------------------------------------------------------------


# A module is a finder too: this one's find_spec() makes it the watcher, which
# costs no class to build at every start (a class is about 0.16 M instructions).


def find_spec(fullname: str, path: object = None, target: object = None) -> None:
    """The watcher at ``sys.meta_path[0]``: sees every import, finds nothing."""
    if fullname in tracked:
        from plausipy._host import seen

        seen(fullname)
    return None


def invalidate_caches() -> None:
    """Nothing cached here for ``importlib.invalidate_caches()`` to clear."""
    return None


def install_watcher() -> None:
    """Put this module first on ``sys.meta_path``, watching for the names of the index."""
    global watcher
    if watcher is None:
        tracked.update(index)
        watcher = sys.modules[__name__]
        sys.meta_path.insert(0, watcher)
        install_exit_hook()


def install_exit_hook() -> None:
    """Register the one exit hook (cheap: the work loads only if there is any)."""
    global _exit_hook_installed
    if not _exit_hook_installed:
        _exit_hook_installed = True
        atexit.register(_at_exit)


def _at_exit() -> None:
    try:
        # Most processes never import a tracked package: they leave without loading anything.
        current = watcher
        host = sys.modules.get("plausipy._host")
        if not (host is not None and host.marked) and (
            current is None or not any(name in sys.modules for name in tracked)
        ):
            return
        from plausipy._host import at_exit

        at_exit()
    except BaseException:  # not even KeyboardInterrupt escapes into the host's exit
        pass
