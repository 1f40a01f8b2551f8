"""``plausipy status``: is plausipy active here, what does it hold, what went wrong."""

from __future__ import annotations

import os
import sys
import time

import click

from plausipy import _paths
from plausipy._cli._common import echo_json, style

__all__ = ["collect_status", "status"]


def _hook_state() -> dict[str, object]:
    bootstrap = sys.modules.get("_plausipy_hook")
    if bootstrap is None:
        if sys.flags.no_site:
            return {"active": False, "reason": "python runs with -S: site-packages hooks do not run"}
        return {"active": False, "reason": "plausipy.pth did not run in this interpreter (missing, or a hidden file)"}
    if bootstrap.disabled_reason:
        return {"active": False, "reason": bootstrap.disabled_reason}
    return {"active": True, "reason": None}


def _problems(limit: int = 5) -> list[str]:
    try:
        with open(_paths.problems_file(), encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    problems = []
    for line in lines[-limit:]:
        stamp, _, rest = line.partition("\t")
        _pid, _, rest = rest.partition("\t")
        try:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(stamp)))
        except ValueError:
            when = "?"
        problems.append(f"{when}  {rest.replace(chr(9), ': ', 1)}")
    return problems


def _queue() -> dict[str, object]:
    from plausipy import _spool

    spool_dir = _paths.spool_dir()
    corrupt_dir = os.path.join(spool_dir, "corrupt")
    queue: dict[str, object] = {
        "spooled_files": len(_spool.spool_files(spool_dir)),
        "corrupt_spool_files": len(os.listdir(corrupt_dir)) if os.path.isdir(corrupt_dir) else 0,
    }
    try:
        from plausipy._ledger import Ledger

        ledger = Ledger()
        try:
            queue["records"] = ledger.counts()
            queue["problems"] = list(getattr(ledger, "problems", []) or [])
        finally:
            close = getattr(ledger, "close", None)
            if close:
                close()
    except Exception as exc:  # the ledger is optional for status: say what is wrong
        queue["records"] = {}
        queue["problems"] = [f"ledger unreadable: {exc}"]
    return queue


def collect_status() -> dict[str, object]:
    """Everything ``plausipy status`` shows, as a dict."""
    from _plausipy_hook import index as hook_index
    from plausipy._policy import load_policy

    policy = load_policy()
    return {
        "version": __import__("plausipy").__version__,
        "python": sys.executable,
        "hook": _hook_state(),
        "tracked_here": sorted({entry[0] for entry in hook_index.values()}),
        "policy": policy.to_dict(),
        "state": {
            "config": _paths.config_dir(),
            "data": _paths.data_dir(),
            "cache": _paths.cache_dir(),
        },
        "queue": _queue(),
        "problems": _problems(),
        "environment": {
            name: os.environ[name]
            for name in ("DO_NOT_TRACK", "PLAUSIPY_DISABLE", "PLAUSIPY_HOME", "PLAUSIPY_ENDPOINT", "PLAUSIPY_DEBUG")
            if name in os.environ
        },
    }


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def status(as_json: bool) -> None:
    """Show whether plausipy is active here, your policy, the queue and recent problems."""
    info = collect_status()
    if as_json:
        echo_json(info)
        return
    hook = info["hook"]
    if hook["active"]:  # type: ignore[index]
        click.echo(f"hook:     {style('active', fg='green')} in {info['python']}")
    else:
        click.echo(f"hook:     {style('inactive', fg='yellow')} ({hook['reason']})")  # type: ignore[index]
    tracked = info["tracked_here"]
    click.echo(f"tracked:  {', '.join(tracked) if tracked else 'no installed package declares a key'}")  # type: ignore[arg-type]
    policy = info["policy"]
    click.echo(f"policy:   consent {policy['consent']}, scope {policy['scope']}, "  # type: ignore[index]
               f"{len(policy['packages'])} package rule(s)  (plausipy policy show)")  # type: ignore[index]
    if policy["problem"]:  # type: ignore[index]
        click.echo(style(f"          ! {policy['problem']}", fg="yellow"))  # type: ignore[index]
    queue = info["queue"]
    counts = queue.get("records") or {}  # type: ignore[union-attr]
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()) if isinstance(n, int)) or "no records yet"  # type: ignore[union-attr]
    click.echo(f"records:  {summary}; {queue['spooled_files']} spool file(s) waiting for the sender")  # type: ignore[index]
    if queue["corrupt_spool_files"]:  # type: ignore[index]
        click.echo(style(f"          ! {queue['corrupt_spool_files']} unreadable spool file(s) set aside", fg="yellow"))  # type: ignore[index]
    for problem in queue.get("problems") or []:  # type: ignore[union-attr]
        click.echo(style(f"          ! {problem}", fg="yellow"))
    state = info["state"]
    click.echo(f"state:    {state['config']}  {state['data']}")  # type: ignore[index]
    if info["problems"]:
        click.echo("recent problems (plausipy stepped aside):")
        for line in info["problems"]:  # type: ignore[union-attr]
            click.echo(f"  {line}")
    click.echo("details:  plausipy data list   ·   plausipy doctor")
