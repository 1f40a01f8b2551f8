"""Start the detached sender from an exiting program, unless one is running.

This runs inside the user's program, at exit, after the spool file is
written (DESIGN.md §1), so it imports only ``os`` and ``sys`` (plus
``fcntl`` or ``msvcrt`` for the lock), never waits for the child, never
prints and never raises. On POSIX the child is started with
``os.posix_spawn`` in a new session (no ``subprocess`` import, no controlling
terminal, so Ctrl-C in the terminal never reaches it); on Windows with
``subprocess`` and flags that give it no console window.

The sender lock is the same file the sender holds while it works
(:func:`plausipy._paths.sender_lock_file`), so the test here is one
non-blocking lock attempt, released at once.

>>> spawn_sender_unless_running()  # doctest: +SKIP
True
"""

import os
import sys

from plausipy import _paths

__all__ = ["release_lock", "sender_command", "spawn_sender_unless_running", "try_lock"]

_WINDOWS = sys.platform == "win32"


def spawn_sender_unless_running() -> bool:
    """Start ``python -m plausipy._sender`` detached if no sender holds the lock; True if started."""
    try:
        lock = try_lock(_paths.sender_lock_file())
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
    """Take the exclusive lock on ``path`` without waiting; the open descriptor, or None if held elsewhere."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if _WINDOWS:
            import msvcrt

            os.lseek(descriptor, 0, os.SEEK_SET)
            msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        return None
    return descriptor


def release_lock(descriptor: int) -> None:
    """Release a lock taken with :func:`try_lock` and close its descriptor."""
    try:
        if _WINDOWS:
            import msvcrt

            os.lseek(descriptor, 0, os.SEEK_SET)
            msvcrt.locking(descriptor, msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


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
