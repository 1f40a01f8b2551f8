"""Everything plausipy does inside the user's program after start-up, in one module.

Loaded the first time a tracked package is imported (or ``plausipy.app()``
is called), never in a process that uses no tracked package. It is one
module rather than the nine it once was because each module load costs the
exiting program about 0.3 ms whatever it holds (bench/bench_exit.py); the
sections below are the parts of the path, in the order they run::

    seen(name)                    the watcher saw a tracked import ─► register()
    register()                    first time: mark the process, watch its exit code
    at_exit()                     reconcile ─► run_exit_hook(): policy ─► (dialog)
                                  ─► raw records ─► one spool file ─► one detached sender

Besides ``_bootstrap`` it imports nothing of plausipy while the policy file is
unchanged (its rules are cached), and never json, hashlib, sqlite3,
subprocess, threading or typing.
Nothing here raises into the host: failures are noted for ``plausipy status``.
Annotations are quoted rather than using ``from __future__ import annotations``
(itself a module load at exit).
"""

import marshal
import os
import sys
import time

import _plausipy_hook as _bootstrap

__all__ = [
    "CATEGORIES",
    "DEFAULT_ENDPOINT",
    "SCOPES",
    "Decision",
    "PolicyRules",
    "Registration",
    "at_exit",
    "build_raw_record",
    "build_records",
    "exit_code",
    "load_policy_rules",
    "register",
    "registrations",
    "run_exit_hook",
    "seen",
    "spawn_sender_unless_running",
    "write_spool",
]

#: Where records go when a package declares no collector of its own.
DEFAULT_ENDPOINT = "https://collector.plausipy.org"
#: Widest first: "user" links all packages, "anonymous" links nothing.
SCOPES = ("user", "package", "anonymous")
#: What the user can turn off, and the wire fields each one covers.
CATEGORIES = {
    "runtime": ("duration_ms", "peak_rss_kib", "exit_code"),
    "system": ("os", "arch", "python", "implementation"),
    "location": ("country", "region", "timezone"),
    "properties": ("props",),
}
SPOOL_SUFFIX = ".rec"
SPOOL_FORMAT = 1
_WINDOWS = sys.platform == "win32"
_TOOL_NAME = "plausipy"


def check_scope(scope: object) -> str:
    """Return ``scope`` if it is one of ``user``, ``package``, ``anonymous``, else raise ValueError."""
    if scope not in SCOPES:
        raise ValueError(f"plausipy scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    return scope  # type: ignore[return-value]


def narrower_scope(requested: str, granted: str) -> str:
    """The more private of two scopes: ``narrower_scope("user", "package") == "package"``."""
    return SCOPES[max(SCOPES.index(requested), SCOPES.index(granted))]


# -- where the state lives (DESIGN.md §6; plausipy._paths adds the rest) -----------------------


def config_dir() -> str:
    """Policy lives here: ``~/.config/plausipy`` on Linux."""
    return _bootstrap.state_dir("config", "XDG_CONFIG_HOME", (".config",), "Application Support")


def data_dir() -> str:
    """Secret, spool and ledger: ``~/.local/share/plausipy`` on Linux."""
    return _bootstrap.state_dir("data", "XDG_DATA_HOME", (".local", "share"), "Application Support")


def policy_file() -> str:
    """The user's choices, human-readable: ``~/.config/plausipy/policy.toml``."""
    return os.path.join(config_dir(), "policy.toml")


def spool_dir() -> str:
    """Records written at exit, waiting for the sender: ``~/.local/share/plausipy/spool``."""
    return os.path.join(data_dir(), "spool")


def sender_lock_file() -> str:
    """Held by the one running sender: ``~/.local/share/plausipy/sender.lock``."""
    return os.path.join(data_dir(), "sender.lock")


def problems_file() -> str:
    """Why plausipy stepped aside, for ``plausipy status``: ``~/.local/share/plausipy/problems.log``."""
    return os.path.join(data_dir(), "problems.log")


# -- problems and kill switches -----------------------------------------------------------------


def remember_problem(where: str, exc: "BaseException") -> None:
    """Note why plausipy stepped aside, for ``plausipy status``; never raises."""
    try:
        if _bootstrap.env_flag("PLAUSIPY_DEBUG"):
            import traceback

            sys.stderr.write(f"plausipy: {where} failed:\n")
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        path = problems_file()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # Keep the file small: it is a hint for `plausipy status`, not a log.
        if os.path.exists(path) and os.path.getsize(path) > 64 * 1024:
            os.replace(path, path + ".old")
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{time.time():.0f}\t{os.getpid()}\t{where}\t{type(exc).__name__}: {exc}\n")
    except BaseException:
        pass


def kill_switch_for_registration() -> "str | None":
    """:func:`_plausipy_hook.kill_switch` now, where this process's own marker does not count."""
    return _bootstrap.kill_switch(own_marker=str(os.getpid()))


def _debug(message: str) -> None:
    if _bootstrap.env_flag("PLAUSIPY_DEBUG"):
        sys.stderr.write(f"plausipy: {message}\n")


# -- who reports in this process ----------------------------------------------------------------


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
#: True once something registered: the process is instrumented (DESIGN.md §1).
marked = False
_disabled = False
_forked_child = False


def normalize_name(name: str) -> str:
    """PEP 503 name: ``normalize_name("Acme_Lib") == "acme-lib"``."""
    out = []
    previous_dash = False
    for char in name.strip().lower():
        if char in "-_.":
            if not previous_dash:
                out.append("-")
            previous_dash = True
        else:
            out.append(char)
            previous_dash = False
    return "".join(out)


def _mark_process() -> None:
    global marked
    marked = True
    # Children started from here on inherit the marker (the bootstrap reads it), and
    # os.fork children forget what the parent registered: the parent reports the run.
    os.environ.setdefault("PLAUSIPY_PARENT", str(os.getpid()))
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_forget_in_fork_child)
    install_exit_code_watch()
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
    if _disabled or _forked_child or kill_switch_for_registration():
        return None
    if not marked:
        _mark_process()
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
        package=distribution, version=version, role="lib", key=key, scope=scope, endpoint=endpoint, import_name=import_name
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


def seen(name: str) -> None:
    """A tracked top-level name is being imported (or was): register its distribution."""
    watching = _bootstrap.watching
    entry = _bootstrap.tracked.pop(name, None) if watching else _bootstrap.index.get(name)
    if watching and not _bootstrap.tracked:
        _bootstrap.remove_watcher()
    if entry is None:
        return
    try:
        register_from_index(name, entry)
    except Exception as exc:
        remember_problem(f"registering {name}", exc)


def reconcile() -> None:
    """Register tracked packages imported behind the watcher's back (another finder first)."""
    if not _bootstrap.watching:
        return
    for name in [name for name in _bootstrap.tracked if name in sys.modules]:
        seen(name)


# -- the exit code, seen without any signal handler ----------------------------------------------
#
# By the time atexit callbacks run, Python has turned the way out of __main__
# into an exit status and forgotten it. So we watch the ways out, at no cost
# to the program while it runs (docs/privacy.md says what each version sees):
#
# * an uncaught exception is still in sys.last_value at exit (1, or 130 for
#   KeyboardInterrupt); no sys.excepthook is replaced;
# * sys.exit(n), anywhere: sys.exit is wrapped to note n;
# * 3.12+: sys.monitoring *local* events on the __main__ code object alone.
#   PY_RETURN says the module ran to its end (0, whatever it caught); CALL
#   sees module-level raise SystemExit(main()), exit(n) and quit(). Every
#   other call site answers DISABLE the first time and is never instrumented
#   again. A global PY_UNWIND callback would see every unwind but costs
#   11-17 % on exception-heavy code even as a C function.
#
# Not seen: on 3.12+ a SystemExit raised by hand inside a function (sent as
# null, never guessed); on 3.10-3.11 a hand-written raise SystemExit(n)
# (reported as 0) and a caught sys.exit(n) (reported as n); os._exit and
# death by a signal skip atexit, so such runs are not reported at all.

_exit_watch_installed = False
#: Whether local events watch the __main__ module (3.12+, main code found, a tool id free).
_watching_main = False
_main_returned = False
#: The latest exit status asked for (sys.exit, or a module-level exit call), if any.
_exit_called = False
_exit_status: object = None
#: sys.last_value when plausipy registered: an older one is not this run's ending.
_last_value_before: object = None


def exit_code_of(exception: "BaseException | None") -> int:
    """The exit status Python derives from how ``__main__`` ended (DESIGN.md §4).

    >>> exit_code_of(SystemExit(3)), exit_code_of(SystemExit("x")), exit_code_of(KeyboardInterrupt())
    (3, 1, 130)
    """
    if exception is None:
        return 0
    if isinstance(exception, SystemExit):
        return _status_code(exception.code)
    if isinstance(exception, KeyboardInterrupt):
        return 130
    return 1


def _status_code(status: object) -> int:
    if status is None:
        return 0
    if isinstance(status, int):
        return int(status)
    return 1


def exit_code() -> "int | None":
    """The best knowledge of this process's exit code, asked at exit; None when unknown."""
    if _watching_main and _main_returned:
        return 0
    uncaught = getattr(sys, "last_value", None)
    if uncaught is not None and uncaught is not _last_value_before:
        return exit_code_of(uncaught)
    if _exit_called:
        return _status_code(_exit_status)
    if _watching_main:
        return None  # the module ended by a SystemExit raised where we could not look
    return 0


def _find_main_code() -> object:
    main = sys.modules.get("__main__")
    main_globals = getattr(main, "__dict__", None)
    frame = sys._getframe(1)
    found = None
    while frame is not None:
        if frame.f_globals is main_globals and frame.f_code.co_name == "<module>":
            found = frame.f_code  # keep walking: the outermost one is the module itself
        frame = frame.f_back
    return found


def install_exit_code_watch() -> None:
    """Start watching for the way out of ``__main__`` (once per process)."""
    global _exit_watch_installed, _watching_main, _last_value_before
    if _exit_watch_installed:
        return
    _exit_watch_installed = True
    _last_value_before = getattr(sys, "last_value", None)
    _wrap_sys_exit()
    if sys.version_info >= (3, 12):
        main_code = _find_main_code()
        if main_code is not None:
            _watching_main = _watch_main_module(main_code)


def _note_exit(status: object) -> None:
    global _exit_called, _exit_status
    _exit_called, _exit_status = True, status


def _wrap_sys_exit() -> None:
    original_exit = sys.exit

    def exit(status: object = None) -> None:
        _note_exit(status)
        original_exit(status)

    exit.__doc__ = original_exit.__doc__
    sys.exit = exit


def _is_exit_call(target: object) -> bool:
    if target is sys.exit:
        return True  # noted by the wrapper itself; keep the site watched all the same
    if isinstance(target, type):
        return issubclass(target, SystemExit)
    return type(target).__name__ == "Quitter"  # the exit() and quit() that site adds to builtins


def _watch_main_module(code: object) -> bool:
    monitoring = sys.monitoring  # type: ignore[attr-defined]
    events = monitoring.events
    disable = monitoring.DISABLE
    missing = monitoring.MISSING

    def on_call(code: object, offset: int, target: object, first_argument: object) -> object:
        # Runs once per call site of the module's own code: exit calls stay watched, the rest never again.
        if not _is_exit_call(target):
            return disable
        if target is not sys.exit:
            _note_exit(None if first_argument is missing else first_argument)
        return None

    def on_return(code: object, offset: int, value: object) -> object:
        global _main_returned
        _main_returned = True
        return disable

    for tool in (4, 3, 5, 2, 1, 0):
        try:
            monitoring.use_tool_id(tool, _TOOL_NAME)
        except ValueError:
            continue  # taken by a debugger, profiler or coverage
        monitoring.register_callback(tool, events.CALL, on_call)
        monitoring.register_callback(tool, events.PY_RETURN, on_return)
        monitoring.set_local_events(tool, code, events.CALL | events.PY_RETURN)
        return True
    return False


# -- raw records (the sender finishes them: plausipy._record.finalize_record) --------------------


def new_run_id() -> str:
    """A random UUID4 string, without importing :mod:`uuid` in the host."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def hour_of(timestamp: float) -> str:
    """ISO 8601 UTC truncated to the hour: ``hour_of(0) == "1970-01-01T00:00:00Z"``."""
    t = time.gmtime(timestamp)
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:00:00Z"


_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64", "arm64": "arm64", "i686": "x86", "i386": "x86"}


def system_facts() -> "dict[str, str]":
    """OS, architecture, Python version and implementation, and nothing more."""
    if sys.platform.startswith("linux"):
        os_name = "linux"
    elif sys.platform == "darwin":
        os_name = "darwin"
    elif sys.platform in ("win32", "cygwin"):
        os_name = "windows"
    else:
        os_name = sys.platform.rstrip("0123456789")
    try:
        machine = os.uname().machine.lower()
    except AttributeError:  # Windows
        machine = os.environ.get("PROCESSOR_ARCHITECTURE", "unknown").lower()
    version = sys.version_info
    return {
        "os": os_name,
        "arch": _ARCH_ALIASES.get(machine, machine),
        "python": f"{version[0]}.{version[1]}.{version[2]}",
        "implementation": sys.implementation.name,
    }


def peak_rss_kib() -> "int | None":
    """Peak resident memory of this process in KiB (``/proc``, ``resource``, psutil on Windows)."""
    try:
        # Linux: one small read instead of loading the `resource` extension at exit.
        with open("/proc/self/status", "rb") as handle:
            for line in handle:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:
        try:
            import psutil

            info = psutil.Process().memory_info()
            return int(getattr(info, "peak_wset", info.rss)) // 1024
        except Exception:
            return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024 if sys.platform == "darwin" else peak)  # macOS counts bytes


def build_raw_record(
    *,
    package: str,
    version: str,
    role: str,
    key: str,
    endpoint: str,
    scope: str,
    categories: "tuple[str, ...]",
    started: float,
    exit_code: "int | None",
    props: "dict[str, object]",
) -> "dict[str, object]":
    """Everything the host knows about one package's run, ready for the spool.

    Raw record keys: ``run_id key endpoint created package version role scope
    anonymous_uid hour duration_ms peak_rss_kib exit_code os arch python
    implementation timezone props categories``.
    """
    now = time.time()
    raw: "dict[str, object]" = {
        "run_id": new_run_id(),
        "key": key,
        "endpoint": endpoint,
        "created": now,
        "package": package,
        "version": version,
        "role": role,
        "scope": scope,
        "anonymous_uid": os.urandom(16).hex() if scope == "anonymous" else None,
        "hour": hour_of(started),
        "duration_ms": max(0, int((now - started) * 1000)),
        "peak_rss_kib": peak_rss_kib(),
        "exit_code": exit_code,
        # The time zone is looked up by the sender (same machine, same TZ): checking
        # the name against zone.tab costs about 1 ms that the host should not pay.
        "timezone": None,
        "props": dict(props),
        "categories": tuple(categories),
    }
    raw.update(system_facts())
    return raw


# -- the policy, as the exit hook reads it (plausipy._policy parses and changes it) ----------------

_POLICY_CACHE_FORMAT = 1


# Plain classes, not dataclasses: `dataclasses` drags in `inspect` and `re`.
class Decision:
    """What the policy says for one package: ``allow`` (with a scope), ``deny`` or ``ask``."""

    __slots__ = ("action", "reason", "scope")

    def __init__(self, action: str, scope: "str | None" = None, reason: str = "") -> None:
        self.action, self.scope, self.reason = action, scope, reason

    def __repr__(self) -> str:
        return f"Decision({self.action!r}, scope={self.scope!r}, reason={self.reason!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Decision) and (self.action, self.scope) == (other.action, other.scope)


class PolicyRules:
    """What the policy decides: global consent, granted scope, shared categories, per-package rules."""

    def __init__(
        self,
        consent: str = "ask",
        scope: str = "package",
        *,
        share: "dict[str, bool] | None" = None,
        packages: "dict[str, tuple[str, str | None]] | None" = None,
    ) -> None:
        self.consent = consent
        self.scope = scope
        self.share = dict.fromkeys(CATEGORIES, True) if share is None else dict(share)
        self.packages = {} if packages is None else dict(packages)

    def decide(self, package: str, requested_scope: str) -> "Decision":
        """The decision for ``package`` asking for ``requested_scope``: the package's rule first."""
        rule = self.packages.get(normalize_name(package))
        if rule is not None:
            action, scope = rule
            if action == "deny":
                return Decision("deny", reason=f"rule for {package}")
            return Decision("allow", narrower_scope(requested_scope, scope or self.scope), f"rule for {package}")
        if self.consent == "allow":
            return Decision("allow", narrower_scope(requested_scope, self.scope), "global allow")
        if self.consent == "deny":
            return Decision("deny", reason="global deny")
        return Decision("ask", reason="not answered yet")

    def shared_categories(self) -> "tuple[str, ...]":
        """The categories the user shares, in schema order."""
        return tuple(name for name in CATEGORIES if self.share.get(name, True))


def load_policy_rules() -> "PolicyRules":
    """The policy's rules, from a marshal copy while ``policy.toml`` is unchanged.

    Parsing the TOML file means loading :mod:`plausipy._policy` (about 1 M
    instructions at every exit), so its rules are cached beside the key index,
    keyed by the file's path, times, size and inode. A missing or broken file
    is never cached: it is parsed (to defaults and a ``problem``) every time.
    """
    path = policy_file()
    cache = os.path.join(_bootstrap.cache_dir(), "policy.marshal")
    try:
        found = os.stat(path)
        stamp: "tuple[int, ...] | None" = (found.st_mtime_ns, found.st_ctime_ns, found.st_size, found.st_ino)
    except OSError:
        stamp = None
    if stamp is not None:
        try:
            cached = marshal.loads(_bootstrap.read_cache_file(cache))
            if cached[:3] == (_POLICY_CACHE_FORMAT, path, stamp):
                consent, scope, share, packages = cached[3]
                return PolicyRules(consent, scope, share=share, packages=packages)
        except Exception:
            pass  # missing, stale or corrupt: parse below
    from plausipy._policy import load_policy

    policy = load_policy(path)
    if stamp is not None and policy.problem is None:
        from _plausipy_hook._index import write_cache_file

        rules = (policy.consent, policy.scope, policy.share, policy.packages)
        write_cache_file(cache, marshal.dumps((_POLICY_CACHE_FORMAT, path, stamp, rules)))
    return policy


# -- the exit hook (DESIGN.md §1) ----------------------------------------------------------------


def at_exit() -> None:
    """The exit hook: reconcile, then report if anything registered."""
    try:
        reconcile()
        if marked:
            run_exit_hook()
    except BaseException as exc:  # not even KeyboardInterrupt escapes into the host's exit
        remember_problem("exit hook", exc)


def build_records(exit_code: "int | None", policy: "PolicyRules | None" = None) -> "list[dict[str, object]]":
    """The raw records this process reports, as ``policy`` (default: the one on disk) says."""
    policy = policy or load_policy_rules()
    categories = policy.shared_categories()
    records = []
    for registration in registrations():
        decision = policy.decide(registration.package, registration.scope)
        if decision.action != "allow" or decision.scope is None:
            _debug(f"not reporting {registration.package}: {decision.action} ({decision.reason})")
            continue
        records.append(
            build_raw_record(
                package=registration.package,
                version=registration.version,
                role=registration.role,
                key=registration.key,
                endpoint=registration.endpoint or DEFAULT_ENDPOINT,
                scope=decision.scope,
                categories=categories,
                started=registration.started,
                exit_code=exit_code,
                props=registration.props if "properties" in categories else {},
            )
        )
    return records


def run_exit_hook() -> None:
    """Report this process's run, if anything registered and the policy allows it.

    policy ─► (dialog, if it may ask) ─► one raw record per allowed package ─►
    one spool file ─► one detached sender, unless one runs already. The host
    never waits for the network.
    """
    if not is_active():
        return
    current = registrations()
    if not current:
        return
    code = exit_code()
    policy = load_policy_rules()
    if any(policy.decide(r.package, r.scope).action == "ask" for r in current):
        # Only an undecided package can bring up the dialog; it may change the policy.
        from plausipy import _consent

        _consent.resolve(current, at_exit=True, exit_code=code)
        policy = load_policy_rules()
    records = build_records(code, policy)
    if not records:
        return
    if _bootstrap.env_flag("PLAUSIPY_DEBUG"):
        _show_records(records)
    write_spool(records)
    spawn_sender_unless_running()


def _show_records(records: "list[dict[str, object]]") -> None:
    # Debug only: json and hashlib are fine here, the user asked to see everything.
    import json

    from plausipy._identity import load_or_create_secret
    from plausipy._record import finalize_record

    for raw in records:
        try:
            wire = finalize_record(raw, load_or_create_secret())
        except Exception as exc:  # show the raw facts rather than nothing
            wire = {"raw": {k: v for k, v in raw.items() if k != "key"}, "error": str(exc)}
        sys.stderr.write(f"plausipy: queued for {raw['endpoint']}:\n{json.dumps(wire, indent=2, default=str)}\n")


# -- the spool: one file per exiting process (plausipy._spool reads them) --------------------------


def write_spool(records: "list[dict[str, object]]", directory: "str | None" = None) -> str:
    """Write ``records`` atomically to a new spool file and return its path.

    The file is ``<ns>-<pid>-<random>.rec`` holding ``marshal.dumps({"v": 1,
    "records": [raw, …]})``, written to a ``.tmp`` name and renamed, so the
    sender never sees half a file; marshal keeps json out of the host.
    """
    directory = directory or spool_dir()
    os.makedirs(directory, exist_ok=True)
    name = f"{time.time_ns()}-{os.getpid()}-{os.urandom(4).hex()}"
    temporary = os.path.join(directory, name + ".tmp")
    final = os.path.join(directory, name + SPOOL_SUFFIX)
    payload = marshal.dumps({"v": SPOOL_FORMAT, "records": records})
    # No fsync: the rename makes the file appear whole or not at all, which is what
    # the sender needs; an fsync would cost the exiting program milliseconds.
    with open(temporary, "wb") as handle:
        handle.write(payload)
    os.replace(temporary, final)
    return final


# -- the detached sender, started unless one runs ----------------------------------------------------
#
# On POSIX the child is started with os.posix_spawn in a new session (no
# subprocess import, no controlling terminal, so Ctrl-C in the terminal never
# reaches it); on Windows with subprocess and flags that give it no console
# window. The sender lock is the file the sender holds while it works, so the
# test here is one non-blocking lock attempt, released at once.


def spawn_sender_unless_running() -> bool:
    """Start ``python -m plausipy._sender`` detached if no sender holds the lock; True if started."""
    try:
        lock = try_lock(sender_lock_file())
        if lock is None:
            return False
        # Released before spawning: the child must be able to take it.
        release_lock(lock)
        return _spawn_detached(sender_command(), _sender_environment())
    except Exception:
        # Whatever went wrong, the records wait in the spool for the next run.
        return False


def sender_command() -> "list[str]":
    """The command line of the sender: this interpreter, ``-m plausipy._sender``."""
    return [sys.executable, "-m", "plausipy._sender"]


def try_lock(path: str) -> "int | None":
    """Take the exclusive lock on ``path`` without waiting; the open descriptor, or None if held elsewhere.

    A POSIX record lock (``os.lockf``, no ``fcntl`` extension to load at
    exit). It belongs to the process, so the holder must not open and close
    the file again while it holds it, and a second attempt from the same
    process succeeds: the lock keeps other processes out, which is its job.
    """
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _lock_file(descriptor, take=True)
    except OSError:
        os.close(descriptor)
        return None
    return descriptor


def release_lock(descriptor: int) -> None:
    """Release a lock taken with :func:`try_lock` and close its descriptor."""
    try:
        _lock_file(descriptor, take=False)
    finally:
        os.close(descriptor)


def _lock_file(descriptor: int, *, take: bool) -> None:
    # Take (without waiting; OSError if held elsewhere) or release the lock on the file.
    if _WINDOWS:
        import msvcrt

        os.lseek(descriptor, 0, os.SEEK_SET)
        msvcrt.locking(descriptor, msvcrt.LK_NBLCK if take else msvcrt.LK_UNLCK, 1)
    else:
        os.lockf(descriptor, os.F_TLOCK if take else os.F_ULOCK, 0)


def _sender_environment() -> "dict[str, str]":
    environment = dict(os.environ)
    # Tells the start-up hook of the sender (and of anything it starts) to do nothing.
    environment["PLAUSIPY_SENDER"] = "1"
    environment["PLAUSIPY_PARENT"] = str(os.getpid())
    return environment


def _spawn_detached(command: "list[str]", environment: "dict[str, str]") -> bool:
    if _WINDOWS:
        return _spawn_windows(command, environment)
    devnull = os.devnull
    os.posix_spawn(
        command[0],
        command,
        environment,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, devnull, os.O_WRONLY, 0),
        ],
        # A session of its own: no controlling terminal, no SIGINT/SIGHUP from the user's shell.
        setsid=True,
    )
    return True


def _spawn_windows(command: "list[str]", environment: "dict[str, str]") -> bool:
    import subprocess

    flags = subprocess.DETACHED_PROCESS | subprocess.CREATE_NO_WINDOW | subprocess.CREATE_NEW_PROCESS_GROUP
    executable = command[0]
    # pythonw has no console at all; prefer it when it sits beside python.exe.
    windowless = os.path.join(os.path.dirname(executable), "pythonw.exe")
    if os.path.exists(windowless):
        command = [windowless, *command[1:]]
    subprocess.Popen(
        command,
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        creationflags=flags,
    )
    return True
