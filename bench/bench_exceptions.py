"""What watching the exit code costs a program: 1,000,000 exceptions raised out of a function.

The loop runs in a child whose ``__main__`` imported a tracked library (so
plausipy registered it: ``sys.exit`` wrapped and, on Python ≥ 3.12,
``sys.monitoring`` local events on the ``__main__`` code object), policy
allow, vs the same child with ``PLAUSIPY_DISABLE=1``. The child times the loop alone
(``time.process_time``), and the verdict is the median of per-round ratios.
Target: ≤ 5 % slower.

The loop's CPU time wanders by ±10 % here even between the two runs of a
round, so callgrind then counts the instructions each exception costs on both
sides, which repeat exactly (skip with ``--no-instructions``).

    .venv/bin/python bench/bench_exceptions.py --rounds 11 --python 3.12 --python 3.10
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as harness  # noqa: E402

TARGET_PERCENT = 5.0
LOOP = """\
import sys, time
import benchlib


def fail():
    raise ValueError("x")


def loop(count):
    for _ in range(count):
        try:
            fail()
        except ValueError:
            pass


started = time.process_time()
loop({count})
elapsed = time.process_time() - started
watched = "plausipy._host" in sys.modules and getattr(sys, "monitoring", None) is not None \\
    and any(sys.monitoring.get_tool(tool) == "plausipy" for tool in range(6))  # local events on __main__
print(elapsed * 1000.0, watched)
"""


def _loop_ms(python: str, program: Path, env: dict[str, str], cwd: Path) -> tuple[float, bool]:
    result = subprocess.run([python, str(program)], env=env, cwd=cwd, capture_output=True, text=True, check=True)
    elapsed, watched = result.stdout.split()
    return float(elapsed), watched == "True"


def run(workspace: harness.Workspace, pythons: dict[str, str], rounds: int, count: int = 1_000_000) -> list[str]:
    """Measure each interpreter; print the table; return the summary lines."""
    rows, summary = [], []
    for minor, python in pythons.items():
        venv, home = workspace.allowing(python, f"exceptions-{minor}")
        program = workspace.cwd / f"exceptions_{minor}.py"
        program.write_text(LOOP.format(count=count))
        allowed, disabled = workspace.env(home), workspace.env(home, PLAUSIPY_DISABLE="1")
        seen: list[bool] = []

        def watched_run() -> float:
            elapsed, monitoring = _loop_ms(venv.python, program, allowed, workspace.cwd)
            seen.append(monitoring)
            # The run's exit started a sender: stop it before the next loop is timed,
            # or its start-up competes for the two cores with the next measurement.
            harness.kill_senders(home)
            return elapsed

        cases = {"allow": watched_run, "disabled": lambda: _loop_ms(venv.python, program, disabled, workspace.cwd)[0]}
        samples = harness.rotated_runs(cases, rounds)
        harness.kill_senders(home)
        off, on = harness.median(samples["disabled"]), harness.median(samples["allow"])
        # Per round, not medians of each side: the loop's CPU time swings by
        # tens of percent from minute to minute here, and the two runs of a
        # round see the same minute.
        percent = (harness.paired_median_ratio(samples["allow"], samples["disabled"]) - 1.0) * 100.0
        how = "sys.monitoring local events" if any(seen) else "sys.exit wrapper only"
        rows.append([minor, how, f"{off:.0f}", f"{on:.0f}", f"{percent:+.2f} %"])
        summary.append(f"exceptions {minor} ({how}): {percent:+.2f} % {harness.verdict(percent, TARGET_PERCENT, '%')}")
    return harness.print_report(
        f"exceptions: {count:,} raised and caught, loop CPU ms in the child, median of {rounds} rotated rounds",
        ["python", "exit code watched by", "disabled", "allow", "slower (median per round)"],
        rows,
        summary,
    )


def instructions(workspace: harness.Workspace, pythons: dict[str, str], low: int = 20_000, high: int = 60_000) -> list[str]:
    """What each exception adds, in instructions (callgrind): exact where CPU time is not.

    Each side runs the loop twice, with ``low`` and ``high`` exceptions; the
    difference between the two runs is the loop's cost alone, without start-up,
    registration or exit, and dividing by ``high - low`` gives it per exception.
    """
    import shutil

    if shutil.which("valgrind") is None:
        print("\n(valgrind not installed: no instruction counts)")
        return []
    rows, summary = [], []
    for minor, python in pythons.items():
        venv, home = workspace.allowing(python, f"exceptions-instructions-{minor}")
        envs = {"allow": workspace.env(home, PYTHONHASHSEED="0"),
                "disabled": workspace.env(home, PLAUSIPY_DISABLE="1", PYTHONHASHSEED="0")}
        per_exception = {}
        for name, env in envs.items():
            counts = []
            for count in (low, high):
                program = workspace.cwd / f"exceptions_{minor}_{count}.py"
                program.write_text(LOOP.format(count=count))
                counts.append(harness.child_instructions([venv.python, str(program)], env, workspace.cwd))
                harness.kill_senders(home)
            per_exception[name] = (counts[1] - counts[0]) / (high - low)
        added = per_exception["allow"] - per_exception["disabled"]
        percent = added / per_exception["disabled"] * 100.0
        rows.append([minor, f"{per_exception['disabled']:,.1f}", f"{per_exception['allow']:,.1f}", f"{added:+,.1f}",
                     f"{percent:+.2f} %"])
        summary.append(f"exceptions {minor}, instructions per exception: {percent:+.2f} % "
                       f"{harness.verdict(percent, TARGET_PERCENT, '%')}")
    return harness.print_report(
        f"exceptions: instructions per exception raised and caught (callgrind, {low:,} and {high:,} per run)",
        ["python", "disabled", "allow", "added", "slower"],
        rows,
        summary,
    )


def main(argv: list[str] | None = None) -> None:
    parser = harness.bench_parser(__doc__, default_rounds=11)
    parser.add_argument("--count", type=int, default=1_000_000, help="exceptions per run (default 1,000,000)")
    parser.add_argument("--no-instructions", action="store_true", help="skip the callgrind instruction counts")
    options = parser.parse_args(argv)
    pythons = harness.find_interpreters(options.python or ["3.12", "3.13", "3.10"])
    with harness.Workspace() as workspace:
        run(workspace, pythons, options.rounds, options.count)
        if not options.no_instructions:
            instructions(workspace, pythons)


if __name__ == "__main__":
    main()
