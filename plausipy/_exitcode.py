"""The process's exit code, seen without installing any signal handler.

By the time ``atexit`` callbacks run, Python has already turned the way out
of ``__main__`` into an exit status and forgotten it. So we watch the way out:

* Python ≥ 3.12: ``sys.monitoring`` reports every exception that unwinds a
  frame (``PY_UNWIND``; it can only be enabled globally). The callback does
  one identity check against the ``__main__`` module's code object, so a
  program that raises a million exceptions barely notices (bench/bench_exceptions.py).
  This sees ``raise SystemExit(main())``, ``sys.exit(n)``, uncaught
  exceptions and KeyboardInterrupt alike.
* Python 3.10–3.11: ``sys.exit`` is wrapped and ``sys.excepthook`` chained.
  What this cannot see: ``raise SystemExit(n)`` written out by hand (reported
  as 0), and uncaught exceptions when the program replaces ``sys.excepthook``
  after plausipy registered (reported as 0).

Everywhere: ``os._exit`` and death by a signal skip ``atexit``, so such runs
are not reported at all.
"""

import sys

__all__ = ["exit_code", "exit_code_of", "install"]

_TOOL_NAME = "plausipy"
_installed = False
_main_code: object = None
_last_exception: "BaseException | None" = None
_exit_status: object = None
_exit_called = False
_uncaught: "type[BaseException] | None" = None


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


def exit_code() -> int:
    """The best knowledge of this process's exit code, asked at exit."""
    if _last_exception is not None:
        return exit_code_of(_last_exception)
    if _uncaught is not None:
        return 130 if issubclass(_uncaught, KeyboardInterrupt) else 1
    if _exit_called:
        return _status_code(_exit_status)
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


def install() -> None:
    """Start watching for the way out of ``__main__`` (once per process)."""
    global _installed, _main_code
    if _installed:
        return
    _installed = True
    _main_code = _find_main_code()
    if sys.version_info >= (3, 12) and _main_code is not None and _install_monitoring():
        return
    _install_wrappers()


def _on_unwind(code: object, offset: int, exception: "BaseException") -> None:
    # Runs for every exception leaving any frame in the whole program: keep it to one check.
    if code is _main_code:
        global _last_exception
        _last_exception = exception


def _install_monitoring() -> bool:
    monitoring = sys.monitoring  # type: ignore[attr-defined]
    for tool in (4, 3, 5, 2, 1, 0):
        try:
            monitoring.use_tool_id(tool, _TOOL_NAME)
        except ValueError:
            continue  # taken by a debugger, profiler or coverage
        monitoring.register_callback(tool, monitoring.events.PY_UNWIND, _on_unwind)
        monitoring.set_events(tool, monitoring.events.PY_UNWIND)
        return True
    return False


def _install_wrappers() -> None:
    original_exit = sys.exit
    original_hook = sys.excepthook

    def exit(status: object = None) -> None:
        global _exit_called, _exit_status
        _exit_called, _exit_status = True, status
        original_exit(status)

    def excepthook(kind: "type[BaseException]", value: "BaseException", traceback: object) -> None:
        global _uncaught
        _uncaught = kind
        original_hook(kind, value, traceback)

    exit.__doc__ = original_exit.__doc__
    sys.exit = exit
    sys.excepthook = excepthook
