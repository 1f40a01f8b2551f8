"""What the watcher costs every import: ~300 standard-library modules in a fresh child.

The same venv (plausipy installed, a key-declaring library present but never
imported, so the watcher stays at sys.meta_path[0] for the whole run) with the
hook on vs ``PLAUSIPY_DISABLE=1``. The bare start of each mode is subtracted, so
the ratio is about the imports alone. Target: ≤ 2 % slower.

    .venv/bin/python bench/bench_imports.py --rounds 30 --python 3.12
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as harness  # noqa: E402

TARGET_PERCENT = 2.0

# Side effects (a browser, a window, a printout), Windows/macOS-only, or deprecated with noise.
SKIPPED = {
    "antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "ensurepip", "venv",
    "lib2to3", "msilib", "msvcrt", "winreg", "winsound", "nt", "nturl2path", "_winapi", "_msi",
    "_overlapped", "_scproxy", "_osx_support", "_aix_support", "_bootsubprocess", "ntpath",
    "pydoc_data", "__phello__", "_pydecimal", "_pyio", "xxsubtype", "xxlimited", "xxlimited_35",
    "_testcapi", "_testinternalcapi", "_testbuffer", "_testimportmultiple", "_testmultiphase",
    "_xxtestfuzz", "_ctypes_test", "_testclinic", "_testsinglephase", "_xxsubinterpreters",
    "_xxinterpchannels", "_xxinterpqueues", "_curses_panel", "curses", "_curses", "readline",
    "_tkinter", "dbm", "_dbm", "_gdbm", "crypt", "_crypt", "spwd", "nis", "ossaudiodev",
    "_wmi", "_android_support", "_apple_support", "_ios_support", "site", "sitecustomize",
    "usercustomize", "__main__", "pty", "tty",
}

# Runs in a child: which candidates import cleanly here, in a stable order.
_PROBE = r"""
import importlib, json, sys, warnings
warnings.simplefilter("ignore")
skipped = set(json.loads(sys.argv[1]))
ok = []
for name in sorted(sys.stdlib_module_names):
    if name in skipped or name.startswith(("_test", "_xx", "__")):
        continue
    try:
        importlib.import_module(name)
    except BaseException:
        continue
    ok.append(name)
print(json.dumps(ok))
"""


def importable_modules(python: str, env: dict[str, str], cwd: Path) -> list[str]:
    """The standard-library modules the benchmark imports (public, harmless, present here)."""
    result = subprocess.run([python, "-c", _PROBE, json.dumps(sorted(SKIPPED))], env=env, cwd=cwd,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(workspace: harness.Workspace, pythons: dict[str, str], rounds: int) -> list[str]:
    """Measure each interpreter; print the table; return the summary lines."""
    rows, summary = [], []
    for minor, python in pythons.items():
        venv = workspace.layouts(python).installed
        harness.compile_plausipy(venv)
        home = workspace.home(f"imports-{minor}")
        on = workspace.env(home, PYTHONWARNINGS="ignore")
        off = workspace.env(home, PYTHONWARNINGS="ignore", PLAUSIPY_DISABLE="1")
        modules = importable_modules(venv.python, off, workspace.cwd)
        program = workspace.root / f"import_stdlib_{minor}.py"
        program.write_text("".join(f"import {name}\n" for name in modules))
        imports = [venv.python, str(program)]
        bare = [venv.python, "-c", "pass"]
        cases = {
            "imports, watcher": lambda: harness.child_cpu_ms(imports, on, workspace.cwd),
            "imports, disabled": lambda: harness.child_cpu_ms(imports, off, workspace.cwd),
            "bare, watcher": lambda: harness.child_cpu_ms(bare, on, workspace.cwd),
            "bare, disabled": lambda: harness.child_cpu_ms(bare, off, workspace.cwd),
        }
        harness.rotated_runs(cases, 2)  # warm the page cache and the key index cache
        samples = harness.rotated_runs(cases, rounds)
        watched = [a - b for a, b in zip(samples["imports, watcher"], samples["bare, watcher"])]
        disabled = [a - b for a, b in zip(samples["imports, disabled"], samples["bare, disabled"])]
        on_ms, off_ms = harness.median(watched), harness.median(disabled)
        percent = (on_ms / off_ms - 1.0) * 100.0
        rows.append([minor, str(len(modules)), f"{off_ms:.1f}", f"{on_ms:.1f}", f"{on_ms - off_ms:+.2f}",
                     f"{percent:+.2f} %"])
        summary.append(f"imports {minor}: {len(modules)} modules {percent:+.2f} % "
                       f"{harness.verdict(percent, TARGET_PERCENT, '%')}")
    return harness.print_report(
        f"imports: stdlib modules in a fresh child, CPU ms minus a bare start, median of {rounds} rotated rounds",
        ["python", "modules", "disabled", "watcher", "added ms", "slower"],
        rows,
        summary,
    )


def main(argv: list[str] | None = None) -> None:
    options = harness.bench_parser(__doc__, default_rounds=20).parse_args(argv)
    pythons = harness.find_interpreters(options.python or ["3.12"])
    with harness.Workspace() as workspace:
        run(workspace, pythons, options.rounds)


if __name__ == "__main__":
    main()
