"""Run every client benchmark in one workspace and print their verdicts together.

Default (about 10 minutes on 2 busy cores): start-up on 3.10, 3.12 and 3.13;
imports, exit and memory on 3.12; exceptions (CPU time, then instructions
under callgrind) on 3.12, 3.13 and 3.10. ``--quick``
divides the rounds by four; ``--python`` narrows the interpreters.

    .venv/bin/python bench/run_all.py
    .venv/bin/python bench/run_all.py --quick --python 3.12
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as harness  # noqa: E402
import bench_exceptions  # noqa: E402
import bench_exit  # noqa: E402
import bench_imports  # noqa: E402
import bench_memory  # noqa: E402
import bench_startup  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the rounds")
    parser.add_argument("--python", action="append", help="minor version, e.g. 3.12 (repeatable)")
    options = parser.parse_args(argv)
    scale = 4 if options.quick else 1

    def rounds(default: int) -> int:
        return max(3, default // scale)

    startup_pythons = harness.find_interpreters(options.python or harness.DEFAULT_MINORS)
    main_python = harness.find_interpreters(options.python or ["3.12"])
    main_python = dict(list(main_python.items())[:1])
    exception_pythons = harness.find_interpreters(options.python or ["3.12", "3.13", "3.10"])
    print(f"plausipy client benchmarks, {datetime.date.today()}, {platform.machine()}, "
          f"{platform.processor() or 'cpu ?'}, interpreters {', '.join(startup_pythons)}")
    began = time.monotonic()
    summary: list[str] = []
    with harness.Workspace() as workspace:
        summary += bench_startup.run(workspace, startup_pythons, rounds(150))
        summary += bench_imports.run(workspace, main_python, rounds(16))
        summary += bench_exit.run(workspace, main_python, rounds(30))
        summary += bench_exceptions.run(workspace, exception_pythons, rounds(11))
        summary += bench_exceptions.instructions(workspace, exception_pythons)
        summary += bench_memory.run(workspace, main_python, rounds(8))
    print(f"\nall verdicts ({time.monotonic() - began:.0f} s):")
    for line in summary:
        print("  " + line)


if __name__ == "__main__":
    main()
