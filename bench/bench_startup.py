"""Start-up cost of the hook: ``python -c pass`` CPU time in four layouts (DESIGN.md §3).

    installed  plausipy and a key-declaring library; the watcher goes on sys.meta_path
    bare       the same venv contents with plausipy.pth and plausipy.start moved away
    empty      the hook files in place, plausipy's modules empty (``def start(): pass``)
    floor      plausipy.pth reduced to ``import _plausipy_hook``, that module empty

Figures: the bootstrap's own work = installed − empty (target ≤ 0.3 ms), and the
whole cost over a bare start = installed − bare (target ≤ 1.2 ms), with and without
plausipy's .pyc files, per interpreter. The floor − bare column is the least any
hook started by a .pth file costs on that interpreter: what Python's site module
and one import take before a hook does anything. Also prints ``-X importtime``
lines of plausipy.

    .venv/bin/python bench/bench_startup.py --rounds 200 --python 3.10 --python 3.13
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as harness  # noqa: E402

OWN_WORK_TARGET_MS = 0.3
TOTAL_TARGET_MS = 1.2


def run(workspace: harness.Workspace, pythons: dict[str, str], rounds: int) -> list[str]:
    """Measure every interpreter in both .pyc modes; print the table; return the summary lines."""
    rows: list[list[str]] = []
    summary: list[str] = []
    for minor, python in pythons.items():
        layouts = workspace.layouts(python)
        home = workspace.home(f"startup-{minor}")
        env = workspace.env(home)
        _check_watcher_installed(layouts, env, workspace.cwd)
        for with_pyc in (True, False):
            row, lines = _measure(workspace, layouts, env, minor, with_pyc, rounds)
            rows.append(row)
            summary.extend(lines)
        if minor == next(iter(pythons)):
            harness.compile_plausipy(layouts.installed)
            _print_importtime(layouts.installed, env, workspace.cwd, minor)
    harness.print_table(
        f"start-up: `python -c pass`, child CPU time, median of {rounds} rotated rounds (ms)",
        ["python", ".pyc", "bare", "floor−bare", "empty", "installed", "layout (empty−bare)",
         "own work (inst−empty)", "total (inst−bare)", "inst/bare"],
        rows,
    )
    for line in summary:
        print("  " + line)
    return summary


def _measure(workspace: harness.Workspace, layouts: harness.Layouts, env: dict[str, str], minor: str,
             with_pyc: bool, rounds: int) -> tuple[list[str], list[str]]:
    _set_pyc(layouts, with_pyc)
    cases = {
        name: (lambda venv=venv: harness.child_cpu_ms([venv.python, "-c", "pass"], env, workspace.cwd))
        for name, venv in layouts.all().items()
    }
    harness.rotated_runs(cases, 5)  # warm the page cache and the key index cache
    samples = harness.rotated_runs(cases, rounds)
    bare, empty, installed = (harness.median(samples[name]) for name in ("bare", "empty", "installed"))
    own = harness.paired_median_difference(samples["installed"], samples["empty"])
    total = harness.paired_median_difference(samples["installed"], samples["bare"])
    layout = harness.paired_median_difference(samples["empty"], samples["bare"])
    floor = harness.paired_median_difference(samples["floor"], samples["bare"])
    pyc = "with" if with_pyc else "without"
    row = [minor, pyc, f"{bare:.2f}", f"{floor:+.2f}", f"{empty:.2f}", f"{installed:.2f}", f"{layout:+.2f}",
           f"{own:+.2f}", f"{total:+.2f}", f"{installed / bare:.3f}"]
    lines = [
        f"start-up {minor} {pyc} .pyc: own work {own:+.2f} ms {harness.verdict(own, OWN_WORK_TARGET_MS, 'ms')}; "
        f"total {total:+.2f} ms {harness.verdict(total, TOTAL_TARGET_MS, 'ms')}",
        f"  floor: a .pth line importing an empty package costs {floor:+.2f} ms; "
        + (f"{TOTAL_TARGET_MS - floor:.2f} ms of the total are left for the hook" if with_pyc else
           "from source, the import system's compile() builds the ast types first (the line execs instead)"),
    ]
    return row, lines


def _set_pyc(layouts: harness.Layouts, with_pyc: bool) -> None:
    for venv in (layouts.installed, layouts.empty, layouts.floor):
        if with_pyc:
            harness.compile_plausipy(venv)
        else:
            harness.remove_plausipy_pyc(venv)


def _check_watcher_installed(layouts: harness.Layouts, env: dict[str, str], cwd: Path) -> None:
    # A benchmark of a hook that stepped aside would flatter us: make sure it did its work.
    def ask(venv: harness.Venv, code: str) -> str:
        return subprocess.run([venv.python, "-c", code], env=env, cwd=cwd,
                              capture_output=True, text=True, check=True).stdout.strip()

    first = "sys.meta_path[0]"
    found = ask(layouts.installed, f"import sys; print(getattr({first}, '__name__', type({first}).__name__))")
    if found != "_plausipy_hook":
        raise SystemExit(f"the watcher is not at sys.meta_path[0] in the installed layout (found {found})")
    if ask(layouts.bare, "import sys; print('plausipy' in sys.modules)") != "False":
        raise SystemExit("plausipy is imported in the bare layout: the hook files were not moved away")
    if ask(layouts.floor, "import sys; print('_plausipy_hook' in sys.modules)") != "True":
        raise SystemExit("the floor layout's .pth line did not import its empty package")


def _print_importtime(venv: harness.Venv, env: dict[str, str], cwd: Path, minor: str) -> None:
    result = subprocess.run([venv.python, "-X", "importtime", "-c", "pass"], env=env, cwd=cwd,
                            capture_output=True, text=True, check=True)
    lines = result.stderr.splitlines()
    print(f"\n`python{minor} -X importtime -c pass`, plausipy's lines (with .pyc, µs):")
    print("  " + lines[0])
    for line in lines[1:]:
        if "plausipy" in line or line.rstrip().endswith(("| marshal", "| atexit")):
            print("  " + line)


def instructions(workspace: harness.Workspace, pythons: dict[str, str]) -> None:
    """Instructions executed by `python -c pass` per layout, counted by callgrind.

    CPU time on a shared machine moves by tens of percent; instruction counts
    are the same run after run, so they show what the hook itself adds. String
    hashing is seeded (``PYTHONHASHSEED=0``): with random seeds the counts of
    one layout still wander by about ±0.05 M from run to run.
    """
    import shutil

    if shutil.which("valgrind") is None:
        print("\n(valgrind not installed: no instruction counts)")
        return
    rows = []
    for minor, python in pythons.items():
        layouts = workspace.layouts(python)
        env = workspace.env(workspace.home(f"instructions-{minor}"), PYTHONHASHSEED="0")
        for with_pyc in (True, False):
            _set_pyc(layouts, with_pyc)
            counts = {}
            for name, venv in layouts.all().items():
                subprocess.run([venv.python, "-c", "pass"], env=env, cwd=workspace.cwd, check=True)  # warm the index cache
                counts[name] = harness.child_instructions([venv.python, "-c", "pass"], env, workspace.cwd)
            bare, empty, installed = counts["bare"], counts["empty"], counts["installed"]
            rows.append([minor, "with" if with_pyc else "without", f"{bare / 1e6:.2f}",
                         f"{(counts['floor'] - bare) / 1e6:+.3f}", f"{empty / 1e6:.2f}",
                         f"{installed / 1e6:.2f}", f"{(installed - empty) / 1e6:+.3f}", f"{(installed - bare) / 1e6:+.3f}",
                         f"{installed / bare:.3f}"])
    harness.print_table(
        "start-up: `python -c pass`, instructions executed (millions, callgrind; repeatable on a busy machine)",
        ["python", ".pyc", "bare", "floor−bare", "empty", "installed", "own work (inst−empty)", "total (inst−bare)",
         "inst/bare"],
        rows,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="rotated rounds per layout (default 200)")
    parser.add_argument("--python", action="append", help="minor version, e.g. 3.12 (repeatable)")
    parser.add_argument("--no-instructions", action="store_true", help="skip the callgrind instruction counts")
    options = parser.parse_args(argv)
    pythons = harness.find_interpreters(options.python or harness.DEFAULT_MINORS)
    with harness.Workspace() as workspace:
        run(workspace, pythons, options.rounds)
        if not options.no_instructions:
            instructions(workspace, pythons)


if __name__ == "__main__":
    main()
