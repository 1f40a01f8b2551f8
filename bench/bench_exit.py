"""What exit costs the host: an app importing a tracked library, policy allow, a collector that never answers.

The library's Plausipy URL is a socket that listens and never accepts, the
slowest collector there is. Wall time of the whole process, policy allow vs
``PLAUSIPY_DISABLE=1``, in two situations:

    no sender running     every run writes its spool file and spawns a sender
                          (the senders are killed, by pid, between rounds)
    a sender is running   the lock is held, so the run only writes its spool file

Target: ≤ 5 ms added (median).

    .venv/bin/python bench/bench_exit.py --rounds 30 --python 3.12
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as harness  # noqa: E402

TARGET_MS = 5.0
APP = "import benchlib\n"


def run(workspace: harness.Workspace, pythons: dict[str, str], rounds: int) -> list[str]:
    """Measure each interpreter; print the table; return the summary lines."""
    rows, summary = [], []
    for minor, python in pythons.items():
        venv, home = workspace.allowing(python, f"exit-{minor}")
        program = workspace.cwd / "exit_app.py"
        program.write_text(APP)
        argv = [venv.python, str(program)]
        allowed, disabled = workspace.env(home), workspace.env(home, PLAUSIPY_DISABLE="1")

        cpu: dict[str, list[float]] = {}

        def timed(name: str, env: dict[str, str], kill_first: bool = False) -> float:
            if kill_first:
                harness.kill_senders(home)
            wall, used = harness.child_wall_and_cpu_ms(argv, env, workspace.cwd)
            cpu.setdefault(name, []).append(used)
            return wall

        cases = {
            "allow, no sender running": lambda: timed("allow, no sender running", allowed, kill_first=True),
            "disabled": lambda: timed("disabled", disabled),
        }
        harness.rotated_runs(cases, 3)
        _check_spool_written(home)
        cpu.clear()
        fresh = harness.rotated_runs(cases, rounds)
        harness.kill_senders(home)
        # Now leave one sender hanging on the blackhole, holding the lock.
        harness.child_wall_ms(argv, allowed, workspace.cwd)
        fresh_cpu = dict(cpu)
        cpu.clear()
        busy = harness.rotated_runs(
            {"allow, sender running": lambda: timed("allow, sender running", allowed), "disabled": cases["disabled"]},
            rounds,
        )
        busy_cpu = dict(cpu)
        harness.kill_senders(home)
        for label, samples, used, name in (("no sender running", fresh, fresh_cpu, "allow, no sender running"),
                                           ("sender running", busy, busy_cpu, "allow, sender running")):
            off, on = harness.median(samples["disabled"]), harness.median(samples[name])
            added = harness.paired_median_difference(samples[name], samples["disabled"])
            added_cpu = harness.paired_median_difference(used[name], used["disabled"])
            rows.append([minor, label, f"{off:.1f}", f"{on:.1f}", f"{added:+.2f}", f"{on / off:.3f}",
                         f"{harness.median(used['disabled']):.1f}", f"{harness.median(used[name]):.1f}",
                         f"{added_cpu:+.2f}"])
            summary.append(f"exit {minor} ({label}): {added:+.2f} ms {harness.verdict(added, TARGET_MS, 'ms')}")
    return harness.print_report(
        f"exit: app importing a tracked library, collector never answers, host wall and CPU ms, median of {rounds} rotated rounds",
        ["python", "situation", "wall disabled", "wall allow", "wall added", "ratio", "cpu disabled", "cpu allow",
         "cpu added"],
        rows,
        summary,
    )


def _check_spool_written(home: Path) -> None:
    # Measuring a hook that reported nothing would flatter us.
    spooled = list((home / "state").rglob("*"))
    if not any("spool" in str(path) for path in spooled):
        raise SystemExit(f"no spool file under {home}: the exit hook did not report")


def main(argv: list[str] | None = None) -> None:
    options = harness.bench_parser(__doc__, default_rounds=30).parse_args(argv)
    pythons = harness.find_interpreters(options.python or ["3.12"])
    with harness.Workspace() as workspace:
        run(workspace, pythons, options.rounds)


if __name__ == "__main__":
    main()
