"""``plausipy doctor``: check that the hook works here, and say plainly what is wrong.

Each check is a small function returning a :class:`Check` (``ok``, ``warn``
or ``broken``), so the text report and ``--json`` show the same facts.
The exit status is 1 when any check is broken, else 0; a kill switch the
user set on purpose is a warning, not breakage.

>>> plausipy doctor --json  # doctest: +SKIP
{"ok": true, "checks": [{"name": "hook", "status": "ok", ...}, ...]}
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

import click

from plausipy import _paths
from plausipy._cli._common import echo_json, style

__all__ = ["Check", "doctor", "run_checks"]

STATUSES = ("ok", "warn", "broken")
#: Runs of `python -c pass` with and without plausipy (alternated) for the overhead figure.
DEFAULT_OVERHEAD_RUNS = 7


@dataclass
class Check:
    """One finding: a name, ``ok``/``warn``/``broken``, one line for people, details for scripts."""

    name: str
    status: str
    summary: str
    details: dict[str, object] = field(default_factory=dict)


# -- the hook ---------------------------------------------------------------------------------


def site_directories() -> list[str]:
    """Where ``site`` looks for ``.pth`` files in this interpreter."""
    import site

    directories = list(getattr(site, "getsitepackages", lambda: [])())
    if site.ENABLE_USER_SITE:
        directories.append(site.getusersitepackages())
    return [directory for directory in dict.fromkeys(directories) if os.path.isdir(directory)]


def is_hidden(path: str) -> bool:
    """True for a file that Python 3.13+ skips as a ``.pth``: a dot name or the hidden flag."""
    if os.path.basename(path).startswith("."):
        return True
    try:
        info = os.stat(path)
    except OSError:
        return False
    flags = getattr(info, "st_flags", 0) & getattr(stat, "UF_HIDDEN", 0)
    attributes = getattr(info, "st_file_attributes", 0) & getattr(stat, "FILE_ATTRIBUTE_HIDDEN", 0)
    return bool(flags or attributes)


def find_pth_files() -> list[str]:
    """Every ``plausipy.pth`` in this interpreter's site directories."""
    return [
        os.path.join(directory, "plausipy.pth")
        for directory in site_directories()
        if os.path.exists(os.path.join(directory, "plausipy.pth"))
    ]


def check_hook() -> Check:
    """Did the start-up hook run in this interpreter, and if not, why not."""
    pth_files = find_pth_files()
    details: dict[str, object] = {"pth_files": pth_files, "site_directories": site_directories()}
    if sys.flags.no_site:
        return Check("hook", "broken", "python runs with -S: site-packages hooks never run", details)
    if not pth_files:
        return Check("hook", "broken", "plausipy.pth is not in any site-packages directory of this interpreter "
                     "(reinstall plausipy)", details)  # fmt: skip
    hidden = [path for path in pth_files if is_hidden(path)]
    if hidden:
        return Check("hook", "broken", f"{hidden[0]} is a hidden file, which Python skips", details)
    bootstrap = sys.modules.get("_plausipy_hook")
    if bootstrap is None or not getattr(bootstrap, "_started", False):
        return Check("hook", "broken", "plausipy.pth is present but its line did not run (see python -X importtime)",
                     details)  # fmt: skip
    details["start_up"] = start_up_code(bootstrap)
    reason = kill_switch_reason(bootstrap)
    if reason:
        details["kill_switch"] = reason
        return Check("hook", "warn", f"the hook ran and stepped aside: {reason}", details)
    return Check("hook", "ok", f"active in {sys.executable}; {details['start_up']}", details)


def start_up_code(bootstrap: object) -> str:
    """Where each start gets the hook's code: .pyc files, plausipy's start cache, or compiling."""
    here = os.path.dirname(getattr(bootstrap, "__file__", None) or "")
    if os.path.isdir(os.path.join(here, "__pycache__")):
        return "start-up code from .pyc files"
    # The start cache is named like the key index (_plausipy_hook/_without_pyc.py).
    index = bootstrap.index_cache_file()  # type: ignore[attr-defined]
    cached = os.path.join(os.path.dirname(index), "start-" + os.path.basename(index)[len("index-"):])
    if os.path.exists(cached):
        return f"no .pyc files: start-up code from {cached}"
    return "no .pyc files: start-up code compiled at each start (the cache is written at the next)"


def kill_switch_reason(bootstrap: object) -> str | None:
    """Why plausipy does nothing in this process, if it does nothing (DESIGN.md §7)."""
    # What the hook decided at start, else what it would decide now (the same function).
    return getattr(bootstrap, "disabled_reason", None) or bootstrap.kill_switch()  # type: ignore[attr-defined]


# -- the index and the state -------------------------------------------------------------------


def check_index() -> Check:
    """Which installed distributions declare a key, and where their records go."""
    from _plausipy_hook import _index
    from plausipy._record import DEFAULT_ENDPOINT

    override = os.environ.get("PLAUSIPY_ENDPOINT")
    distributions: dict[str, dict[str, object]] = {}
    for import_name, (name, version, _key, scope, endpoint) in sorted(_index.build_index(sys.path).items()):
        entry = distributions.setdefault(
            name,
            {"distribution": name, "version": version, "scope": scope, "import_names": [],
             "endpoint": override or endpoint or DEFAULT_ENDPOINT},
        )  # fmt: skip
        entry["import_names"].append(import_name)  # type: ignore[union-attr]
    found = list(distributions.values())
    summary = f"{len(found)} installed distribution(s) declare a key" if found else "no installed distribution declares a key"
    return Check("index", "ok", summary, {"distributions": found, "endpoint_override": override})


def check_state() -> Check:
    """Where the state lives, and whether the policy and the ledger can be read."""
    from plausipy._policy import load_policy

    details: dict[str, object] = {
        "config": _paths.config_dir(),
        "data": _paths.data_dir(),
        "cache": _paths.cache_dir(),
        "policy_file": _paths.policy_file(),
        "ledger_file": _paths.ledger_file(),
    }
    policy = load_policy()
    details["consent"] = policy.consent
    if policy.problem:
        return Check("state", "broken", policy.problem, details)
    for directory in (_paths.config_dir(), _paths.data_dir()):
        if os.path.exists(directory) and not os.access(directory, os.W_OK):
            return Check("state", "broken", f"{directory} is not writable", details)
    return Check("state", "ok", f"policy {details['policy_file']} (consent {policy.consent}), data {details['data']}",
                 details)  # fmt: skip


def check_queue() -> Check:
    """The queue, and the last delivery errors of each collector."""
    from plausipy import _spool

    details: dict[str, object] = {"spooled_files": len(_spool.spool_files(_paths.spool_dir()))}
    if not os.path.exists(_paths.ledger_file()):
        return Check("queue", "ok", f"no ledger yet; {details['spooled_files']} spool file(s) waiting", details)
    try:
        from plausipy._ledger import Ledger

        with Ledger.open() as ledger:
            counts = ledger.counts()
            errors = [
                {"endpoint": state.endpoint, "failures": state.failures, "error": state.last_error,
                 "at": state.last_error_at, "next_attempt": state.next_attempt}
                for state in ledger.last_errors()
            ]  # fmt: skip
    except Exception as exc:
        return Check("queue", "broken", f"the ledger cannot be read: {exc}", details)
    details.update({"records": counts, "delivery_errors": errors})
    summary = f"{counts.get('queued', 0)} queued, {counts.get('sent', 0)} sent"
    if errors:
        last = errors[0]
        return Check("queue", "warn", f"{summary}; {last['endpoint']} failing: {last['error']}", details)
    return Check("queue", "ok", summary, details)


# -- the start-up cost, measured now -----------------------------------------------------------


def _time_one_start(environment: dict[str, str]) -> float:
    """CPU time of one ``python -c pass`` in ms (wall time where ``os.wait4`` is missing)."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", "pass"], env=environment,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    if hasattr(os, "wait4"):
        # CPU time, not wall time: other work on the machine barely moves it.
        _pid, _status, usage = os.wait4(child.pid, 0)
        child.returncode = 0  # reaped here; keep Popen from waiting again
        return (usage.ru_utime + usage.ru_stime) * 1000
    child.wait()
    return (time.perf_counter() - started) * 1000


def measure_overhead(runs: int) -> dict[str, float]:
    """Median CPU time of ``python -c pass`` with and without plausipy, in ms (runs alternate)."""
    import statistics

    with_hook = {key: value for key, value in os.environ.items() if key not in ("PLAUSIPY_DISABLE", "PLAUSIPY_PARENT")}
    without_hook = {**with_hook, "PLAUSIPY_DISABLE": "1"}
    _time_one_start(with_hook)  # warm the index cache and the OS file cache first
    enabled, disabled = [], []
    for _ in range(runs):
        enabled.append(_time_one_start(with_hook))
        disabled.append(_time_one_start(without_hook))
    enabled_ms, disabled_ms = statistics.median(enabled), statistics.median(disabled)
    return {"runs": runs, "with_plausipy_ms": round(enabled_ms, 2), "disabled_ms": round(disabled_ms, 2),
            "overhead_ms": round(enabled_ms - disabled_ms, 2)}  # fmt: skip


def check_overhead(runs: int) -> Check:
    """The start-up overhead measured right now (noisy on a busy machine: a hint, not a verdict)."""
    figures = measure_overhead(runs)
    return Check("overhead", "ok",
                 f"{figures['overhead_ms']:+.2f} ms per start (median of {runs}: {figures['with_plausipy_ms']:.1f} ms "
                 f"vs {figures['disabled_ms']:.1f} ms with PLAUSIPY_DISABLE=1)", figures)  # fmt: skip


# -- the command ---------------------------------------------------------------------------------


def run_checks(*, overhead_runs: int = DEFAULT_OVERHEAD_RUNS) -> list[Check]:
    """Every check, in the order they are shown; a check that crashes is reported as broken."""
    checks = []
    steps = [check_hook, check_index, check_state, check_queue]
    if overhead_runs > 0:
        steps.append(lambda: check_overhead(overhead_runs))
    for step in steps:
        try:
            checks.append(step())
        except Exception as exc:
            name = getattr(step, "__name__", "overhead").replace("check_", "")
            checks.append(Check(name, "broken", f"the check itself failed: {type(exc).__name__}: {exc}"))
    return checks


_MARKS = {"ok": ("ok", "green"), "warn": ("!!", "yellow"), "broken": ("XX", "red")}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--runs", default=DEFAULT_OVERHEAD_RUNS, show_default=True, type=click.IntRange(0, 100),
              help="Starts of `python -c pass` timed each way for the overhead (0 skips it).")  # fmt: skip
def doctor(as_json: bool, runs: int) -> None:
    """Check that the hook works in this interpreter and say what is wrong.

    Exits with status 1 when something is broken.
    """
    checks = run_checks(overhead_runs=runs)
    broken = any(check.status == "broken" for check in checks)
    if as_json:
        echo_json({"ok": not broken, "python": sys.executable, "checks": [asdict(check) for check in checks]})
    else:
        for check in checks:
            mark, color = _MARKS[check.status]
            click.echo(f"[{style(mark, fg=color)}] {check.name:<9}{check.summary}")
            for line in _detail_lines(check):
                click.echo(f"     {line}")
    if broken:
        raise SystemExit(1)


def _detail_lines(check: Check) -> list[str]:
    if check.name == "index":
        return [
            f"{entry['distribution']} {entry['version']} ({entry['scope']} scope) -> {entry['endpoint']}"
            for entry in check.details.get("distributions", [])  # type: ignore[union-attr]
        ]
    if check.name == "queue":
        return [
            f"{error['endpoint']}: {error['error']} ({error['failures']} failure(s) in a row)"
            for error in check.details.get("delivery_errors", [])  # type: ignore[union-attr]
        ]
    return []
