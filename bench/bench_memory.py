"""Memory plausipy adds: RSS of an app that imported a tracked library, with vs without plausipy.

Three venv states of one interpreter: ``installed`` with policy allow (the exit
hook builds a record, writes the spool file and spawns a sender), the same with
``PLAUSIPY_DISABLE=1``, and ``bare`` (hook files moved away: no plausipy at
all). Two figures per run, read from /proc/self/status as the app's last
statement: VmRSS and VmHWM (the peak so far). The exit hook runs after that
statement; its own memory is not in these figures (``ru_maxrss`` of a child
spawned by a bigger parent reports the parent's high-water mark on Linux, so
it cannot be used). Target: ≤ 1 MiB added.

    .venv/bin/python bench/bench_memory.py --rounds 10 --python 3.12
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as harness  # noqa: E402

TARGET_KIB = 1024
APP = """\
import benchlib

with open("/proc/self/status") as status:
    fields = dict(line.split(":", 1) for line in status)
print(fields["VmRSS"].split()[0], fields["VmHWM"].split()[0])
"""


def _rss_kib(python: str, program: Path, env: dict[str, str], cwd: Path) -> tuple[int, int]:
    result = subprocess.run([python, str(program)], env=env, cwd=cwd, capture_output=True, text=True, check=True)
    rss, peak = result.stdout.split()
    return int(rss), int(peak)


def run(workspace: harness.Workspace, pythons: dict[str, str], rounds: int) -> list[str]:
    """Measure each interpreter; print the table; return the summary lines."""
    rows, summary = [], []
    for minor, python in pythons.items():
        layouts = workspace.layouts(python)
        harness.compile_plausipy(layouts.installed)
        home = workspace.home(f"memory-{minor}")
        workspace.allow_policy(home)
        program = workspace.cwd / "memory_app.py"
        program.write_text(APP)
        states = {
            "allow": (layouts.installed, workspace.env(home)),
            "disabled": (layouts.installed, workspace.env(home, PLAUSIPY_DISABLE="1")),
            "no plausipy": (layouts.bare, workspace.env(home)),
        }
        rss: dict[str, list[int]] = {name: [] for name in states}
        peak: dict[str, list[int]] = {name: [] for name in states}

        def case(name: str) -> float:
            venv, env = states[name]
            harness.kill_senders(home)
            at_end, highest = _rss_kib(venv.python, program, env, workspace.cwd)
            rss[name].append(at_end)
            peak[name].append(highest)
            return float(at_end)

        harness.rotated_runs({name: (lambda name=name: case(name)) for name in states}, rounds)
        harness.kill_senders(home)
        base_rss, base_peak = harness.median(rss["no plausipy"]), harness.median(peak["no plausipy"])
        for name in states:
            added_rss = harness.median(rss[name]) - base_rss
            added_peak = harness.median(peak[name]) - base_peak
            rows.append([minor, name, f"{harness.median(rss[name]):.0f}", f"{added_rss:+.0f}",
                         f"{harness.median(peak[name]):.0f}", f"{added_peak:+.0f}"])
        added = harness.median(rss["allow"]) - base_rss
        added_peak = harness.median(peak["allow"]) - base_peak
        summary.append(f"memory {minor}: VmRSS at the end {added:+.0f} KiB {harness.verdict(added, TARGET_KIB, 'KiB')}; "
                       f"VmHWM {added_peak:+.0f} KiB {harness.verdict(added_peak, TARGET_KIB, 'KiB')}")
    return harness.print_report(
        f"memory: app importing a tracked library, KiB, median of {rounds} rotated rounds",
        ["python", "state", "VmRSS at end", "added", "VmHWM at end", "added"],
        rows,
        summary,
    )


def main(argv: list[str] | None = None) -> None:
    options = harness.bench_parser(__doc__, default_rounds=10).parse_args(argv)
    pythons = harness.find_interpreters(options.python or ["3.12"])
    with harness.Workspace() as workspace:
        run(workspace, pythons, options.rounds)


if __name__ == "__main__":
    main()
