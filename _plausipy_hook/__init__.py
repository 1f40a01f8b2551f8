"""The start-up hook that ``plausipy.pth`` (and ``plausipy.start``) run in every process."""

# Budget: a fraction of a millisecond (DESIGN.md §3), paid by every Python
# process of the environment, so this module is built for that:
#
# - Imports: nothing that ``site`` has not loaded already (``sys``, ``os``,
#   ``marshal``, ``time``, ``_imp``); the ``atexit`` module is made directly
#   (below). No ``from __future__ import annotations`` (a module load of its
#   own), so annotations are quoted.
# - Size: its bytecode is unmarshalled at every start, and that costs about
#   26 instructions a byte (0.23 M for 8.5 KiB) plus a few thousand a
#   function. So it holds only what a start runs, in as few functions as
#   sharing allows, and explains itself in comments, which cost nothing,
#   rather than docstrings, which are read at every start. Everything that
#   runs later lives in plausipy._host, the index rebuild in _index.
# - Work: kill switches, one small cache file, one watcher, one exit hook::
#
#     start()         kill switches ─► the cached key index ─► this module on sys.meta_path
#     find_spec(name) the watcher: one dict lookup; a tracked name ─► _host.seen()
#     _at_exit()      _host.at_exit() (reconcile ─► report), only if anything registered
#
# Nothing here raises into the host: failures are noted for ``plausipy status``.

import marshal
import os
import sys
import time

try:
    # ``import atexit`` runs about 0.1 M instructions of importlib's Python code
    # to create a built-in module that _imp creates in 0.02 M. The module is
    # not put in sys.modules: the program's own ``import atexit`` still creates
    # its own, as it would without plausipy. Every atexit module object adds to
    # the same interpreter-wide list of exit hooks (CPython 3.10 and later).
    import _imp

    atexit = _imp.create_builtin(type(sys.implementation)(name="atexit"))
    _imp.exec_builtin(atexit)
except Exception:  # another interpreter: the import system does it
    import atexit

# Bumped whenever the layout of the cached index changes.
INDEX_FORMAT = 2
# What a flag such as DO_NOT_TRACK may be set to and still mean "off".
FALSE_WORDS = ("", "0", "false", "no", "off")

_started = False
_exit_hook_installed = False
# Interpreter start, as near as the hook can see it.
started_at = time.time()
# Why the hook stepped aside, if it did (shown by ``plausipy status`` and ``doctor``).
disabled_reason: "str | None" = None
# Import name -> (distribution, version, key, scope, endpoint or None).
index: "dict[str, tuple[str, str, str, str, str | None]]" = {}
# Import names the watcher still waits for (a copy of ``index``, emptied as they are seen).
tracked: "dict[str, tuple[str, str, str, str, str | None]]" = {}
# True while this module sits on sys.meta_path as the watcher. A module with a
# find_spec() is a finder; a class would cost about 0.16 M instructions.
watching = False

# os.environ.get() of a name that is not set costs about 9,000 instructions (a
# KeyError raised and caught in Python) and a start asks for seven names; the
# dict behind os.environ on POSIX (bytes keys and values, the one os.environ
# reads and writes) answers in a few hundred.
_POSIX = os.name == "posix"


def getenv(name: str) -> "str | None":
    # os.environ.get(name), without its price for a name that is not set. The
    # dict is looked up at each call: a program may replace os.environ.
    data = getattr(os.environ, "_data", None) if _POSIX else None
    if type(data) is not dict:
        return os.environ.get(name)
    value = data.get(name.encode())
    return None if value is None else os.fsdecode(value)


def env_flag(name: str) -> bool:
    # True when the variable is set to anything but empty, 0, false, no or off.
    return (getenv(name) or "").strip().lower() not in FALSE_WORDS


def start() -> None:
    # Run once (site runs a venv's .pth files twice, CPython issue 75723): the kill switches,
    # then the key index from its cache, rebuilt when a sys.path directory
    # changed (installing or removing a distribution changes its mtime), then,
    # if an installed distribution declares a key, the watcher and the exit hook.
    global _started, disabled_reason, watching
    if _started:
        return
    _started = True
    try:
        disabled_reason = kill_switch()
        if disabled_reason is not None:
            return
        path = index_cache_file()
        stamps = []
        for entry in sys.path:
            try:
                stamps.append((entry, os.stat(entry or ".").st_mtime_ns))
            except OSError:
                stamps.append((entry, -1))
        fingerprint = tuple(stamps)
        try:
            cached = marshal.loads(read_cache_file(path))
            found = cached[2] if cached[0] == INDEX_FORMAT and cached[1] == fingerprint else None
        except Exception:
            found = None  # missing or corrupt
        if found is None:
            from _plausipy_hook._index import rebuild_index

            found = rebuild_index(path, fingerprint)
        index.update(found)
        if index and not watching:
            tracked.update(index)
            watching = True
            sys.meta_path.insert(0, sys.modules[__name__])
            install_exit_hook()
    except Exception as exc:  # never into the host
        try:
            from plausipy._host import remember_problem

            remember_problem("start-up hook", exc)
        except BaseException:
            pass


def kill_switch(own_marker: "str | None" = None) -> "str | None":
    # Why plausipy must do nothing in this process, or None (DESIGN.md §7): the
    # user's switches, then plausipy's own markers. A child of an instrumented
    # process neither reports nor asks; ``own_marker`` is this process's pid
    # once it has marked itself (its own marker does not count).
    for name in ("DO_NOT_TRACK", "PLAUSIPY_DISABLE"):
        if env_flag(name):
            return f"{name} is set"
    if getenv("PLAUSIPY_SENDER"):
        return "this is plausipy's sender"
    parent = getenv("PLAUSIPY_PARENT")
    if parent and parent != own_marker:
        return "started by a process that plausipy already watches"
    return None


# -- where the index cache lives (plausipy._paths and _host build on these) ------------------


def user_home() -> str:
    # The user's home directory, or a per-user temp dir when there is none.
    # (On POSIX, expanduser("~") is $HOME when it is set; elsewhere it is not.)
    home = (getenv("HOME") if _POSIX else None) or os.path.expanduser("~")
    if home == "~" or not home:
        import tempfile

        home = os.path.join(tempfile.gettempdir(), f"plausipy-{os.getuid() if hasattr(os, 'getuid') else 'user'}")
    return home


def state_dir(sub: str, xdg_variable: str, xdg_default: "tuple[str, ...]", darwin_dir: str,
              windows_tail: "tuple[str, ...]" = ()) -> str:
    # platformdirs' answer for app "plausipy" (DESIGN.md §6); PLAUSIPY_HOME puts
    # everything under one root, as ``$PLAUSIPY_HOME/<sub>``.
    root = getenv("PLAUSIPY_HOME")
    if root:
        return os.path.join(os.path.abspath(root), sub)
    if sys.platform == "win32":
        local = getenv("LOCALAPPDATA") or os.path.join(user_home(), "AppData", "Local")
        return os.path.join(local, "plausipy", "plausipy", *windows_tail)
    if sys.platform == "darwin":
        return os.path.join(user_home(), "Library", darwin_dir, "plausipy")
    return os.path.join((getenv(xdg_variable) or "").strip() or os.path.join(user_home(), *xdg_default), "plausipy")


def cache_dir() -> str:
    # The key index cache: ~/.cache/plausipy on Linux.
    return state_dir("cache", "XDG_CACHE_HOME", (".cache",), "Caches", ("Cache",))


def index_cache_file() -> str:
    # One index per environment: ~/.cache/plausipy/index-<python>-<hash of sys.prefix>.marshal.
    # The hash is the prefix's bytes read as one integer modulo a Mersenne prime:
    # a single C-level operation (no hashlib, no Python loop).
    digest = int.from_bytes(sys.prefix.encode("utf-8", "surrogateescape"), "little") % 0x1FFFFFFFFFFFFFFF
    return os.path.join(cache_dir(), f"index-{sys.version_info[0]}{sys.version_info[1]}-{digest:016x}.marshal")


def read_cache_file(path: str) -> bytes:
    # The bytes of a small cache file, read without the io objects open() builds.
    descriptor = os.open(path, os.O_RDONLY)
    try:
        chunks = [os.read(descriptor, 65536)]
        while len(chunks[-1]) == 65536:
            chunks.append(os.read(descriptor, 65536))
    finally:
        os.close(descriptor)
    return b"".join(chunks)


# -- the watcher and the exit hook -----------------------------------------------------------


def find_spec(fullname: str, path: object = None, target: object = None) -> None:
    # The watcher at sys.meta_path[0]: sees every import, finds nothing.
    # (importlib.invalidate_caches() skips a finder without that method.)
    if fullname in tracked:
        from plausipy._host import seen

        seen(fullname)
    return None


def install_exit_hook() -> None:
    # Register the one exit hook (cheap: the work loads only if there is any).
    global _exit_hook_installed
    if not _exit_hook_installed:
        _exit_hook_installed = True
        atexit.register(_at_exit)


def _at_exit() -> None:
    try:
        # Most processes never import a tracked package: they leave without loading anything.
        host = sys.modules.get("plausipy._host")
        if (host is not None and host.marked) or (watching and not sys.modules.keys().isdisjoint(tracked)):
            from plausipy._host import at_exit

            at_exit()
    except BaseException:  # not even KeyboardInterrupt escapes into the host's exit
        pass
    # Registered at start, this hook runs after all others. Leaving sys.meta_path
    # now lets the interpreter simply free this module at shutdown; a module
    # still referenced there is cleared name by name (0.45 M instructions on 3.10).
    remove_watcher()


def remove_watcher() -> None:
    # Take the watcher off sys.meta_path: everything tracked was seen, plausipy
    # was disabled, or the process is ending.
    global watching
    if watching:
        watching = False
        try:
            sys.meta_path.remove(sys.modules[__name__])
        except (KeyError, ValueError):
            pass
