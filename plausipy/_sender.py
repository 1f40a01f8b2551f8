"""The detached sender: ``python -m plausipy._sender``.

Started by an exiting program (:mod:`plausipy._host`) with no terminal and
``PLAUSIPY_SENDER=1`` in its environment, so the start-up hook stays out of
its way. One at a time, under the sender lock, it

1. moves spool files into the ledger as ``queued`` (the wire body is computed
   here, with the local secret),
2. delivers what is due (:func:`plausipy._delivery.deliver`),
3. releases the lock and looks at the spool once more: a program that exited
   while the lock was held did not start a sender of its own, so its records
   are picked up now rather than at the next run (by this sender while time
   remains, else by a fresh one it starts).

It ends itself within 30 s whatever the network does: delivery stops
starting requests at a 25 s deadline, and on POSIX ``signal.alarm`` kills
the process at 30 s as a hard stop (a request cut short there is sent again
later; the collector counts a ``run_id`` once). It writes nothing anywhere
but the ledger, unless ``PLAUSIPY_DEBUG=1``: then one line per batch goes to
``sender.log`` in the data dir.
"""

from __future__ import annotations

import os
import sys
import time

import _plausipy_hook as _bootstrap
from plausipy import _paths, _spool
from plausipy._host import release_lock, try_lock

__all__ = ["DELIVERY_SECONDS", "LIFETIME_SECONDS", "main", "run_once"]

#: The process is killed at this age, whatever it is doing.
LIFETIME_SECONDS = 30
#: No request starts, and none waits, past this age: leaves time to record the outcome.
DELIVERY_SECONDS = 25.0


def main() -> int:
    """Run the sender; the exit status is 0 unless something unexpected happened."""
    started = time.monotonic()
    _arm_hard_stop(LIFETIME_SECONDS)
    deadline = started + DELIVERY_SECONDS
    try:
        while True:
            lock = try_lock(_paths.sender_lock_file())
            if lock is None:
                _debug("another sender holds the lock; leaving the work to it")
                return 0
            try:
                before = set(_spool.spool_files())
                run_once(deadline)
            finally:
                release_lock(lock)
            # Whoever spooled while the lock was held saw it taken and started no sender.
            # Files that were there before this round and are still there could not be
            # ingested: going round again for them would only spin.
            arrived = set(_spool.spool_files()) - before
            if not arrived:
                break
            if time.monotonic() >= deadline:
                from plausipy._host import spawn_sender_unless_running

                _debug(f"{len(arrived)} spool file(s) arrived at the deadline; handing over to a new sender")
                spawn_sender_unless_running()
                break
    except Exception as exc:
        import traceback

        from plausipy._host import remember_problem

        _debug("sender failed:\n" + traceback.format_exc())
        # The records stay in the spool or the ledger; `plausipy status` says why they wait.
        remember_problem("sender", exc)
        return 1
    return 0


def run_once(deadline: float) -> None:
    """Ingest the spool and deliver what is due, once; the caller holds the sender lock."""
    from plausipy._delivery import deliver
    from plausipy._identity import load_or_create_secret
    from plausipy._ledger import Ledger

    secret = load_or_create_secret()
    with Ledger.open() as ledger:
        added = ledger.ingest_spool(secret)
        if added:
            _debug(f"queued {added} new record(s)")
        report = deliver(
            ledger,
            deadline=deadline,
            now=time.time(),
            endpoint_override=os.environ.get("PLAUSIPY_ENDPOINT") or None,
            log=_debug,
        )
        if report.expired:
            _debug(f"expired {report.expired} record(s) older than 30 days")


def _arm_hard_stop(seconds: int) -> None:
    if sys.platform == "win32":
        import threading

        timer = threading.Timer(seconds, os._exit, args=(2,))
        timer.daemon = True
        timer.start()
        return
    import signal

    # The default action of SIGALRM ends the process even inside a blocking C call;
    # reset it and unblock it in case the program that spawned us had changed either.
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
    signal.alarm(seconds)


def _debug(message: str) -> None:
    if not _bootstrap.env_flag("PLAUSIPY_DEBUG"):
        return
    try:
        path = os.path.join(_paths.data_dir(), "sender.log")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{stamp} [{os.getpid()}] {message}\n")
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
