"""The process's exit code, seen without installing any signal handler.

By the time ``atexit`` callbacks run, Python has already turned the way out
of ``__main__`` into an exit status and forgotten it. So we watch the ways
out, without costing the program anything while it runs:

* An uncaught exception: Python stores it in ``sys.last_value`` (and
  ``sys.last_exc`` on 3.12+) before it prints the traceback, so ``atexit``
  still finds it; KeyboardInterrupt is 130, anything else 1. No
  ``sys.excepthook`` is replaced.
* ``sys.exit(n)``, anywhere: ``sys.exit`` is wrapped to note ``n``.
* Python ≥ 3.12: ``sys.monitoring`` *local* events on the ``__main__``
  module's code object alone. ``PY_RETURN`` says the module ran to its end
  (exit 0, whatever was caught on the way); ``CALL`` sees module-level
  ``raise SystemExit(main())``, ``exit(n)`` and ``quit()``. Every other
  call site answers ``DISABLE`` the first time it runs and is never
  instrumented again, so the program's hot loops and its exceptions run at
  full speed. (A global ``PY_UNWIND`` callback, the only way to see every
  unwind, costs 11–17 % on an exception-heavy loop even when it is a C
  function: bench/bench_exceptions.py.)

What cannot be seen:

* 3.12+: a ``raise SystemExit(n)`` written by hand inside a function, which
  ends the module without an exit call plausipy saw: the exit code is sent
  as ``null`` (unknown), never guessed.
* 3.10–3.11 (no ``sys.monitoring``): a hand-written ``raise SystemExit(n)``
  anywhere is reported as 0, and a ``sys.exit(n)`` that the program caught
  before ending normally is reported as ``n``.
* Everywhere: ``os._exit`` and death by a signal skip ``atexit``, so such
  runs are not reported at all.
"""

import sys

__all__ = ["exit_code", "exit_code_of", "install"]

_TOOL_NAME = "plausipy"
_installed = False
_main_code: object = None
#: Whether local events watch the ``__main__`` module (3.12+, main code found, a tool id free).
_watching_main = False
_main_returned = False
#: The latest exit status asked for (``sys.exit``, or a module-level exit call), if any.
_exit_called = False
_exit_status: object = None
#: ``sys.last_value`` when plausipy registered: an older one is not this run's ending.
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


def install() -> None:
    """Start watching for the way out of ``__main__`` (once per process)."""
    global _installed, _main_code, _watching_main, _last_value_before
    if _installed:
        return
    _installed = True
    _last_value_before = getattr(sys, "last_value", None)
    _wrap_sys_exit()
    if sys.version_info >= (3, 12):
        _main_code = _find_main_code()
        if _main_code is not None:
            _watching_main = _watch_main_module(_main_code)


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
