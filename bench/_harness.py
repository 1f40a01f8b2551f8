"""Shared machinery of the client benchmarks: wheels, venvs, layouts, child timing, tables.

Everything is built in a temporary directory, never inside the repository:

    Workspace()                   one temp dir, the plausipy wheel built once, a "blackhole"
                                  collector (a socket that listens and never answers), and a
                                  fake library (``benchlib``) declaring a key, whose Plausipy
                                  URL is the blackhole
    workspace.layouts(python)     four venvs of one interpreter, identical but for:
                                    installed  plausipy + benchlib, hook files in place
                                    bare       the same, hook files moved out of site-packages
                                    empty      hook files in place, but plausipy/__init__.py is
                                               empty, _plausipy_hook/__init__.py has ``def start(): pass``
                                               and its _without_pyc.py is empty
                                    floor      the empty layout, but plausipy.pth is the line
                                               ``import _plausipy_hook`` and that package's
                                               __init__.py is empty: the least a hook started
                                               by a .pth file can cost
    workspace.allowing(python, n) the installed layout compiled, and a home whose policy allows
    child_cpu_ms(argv, env)       CPU time (user + system) of one child, from ``os.wait4``
    child_instructions(argv, env) instructions the child executed, counted by callgrind
    rotated_runs(cases, rounds)   every case once per round, the order rotated each round,
                                  so drift of the machine spreads evenly over the cases
    bench_parser(doc, rounds)     the ``--rounds`` and ``--python`` options every benchmark takes
    print_report(title, …)        the table, then the summary lines beneath it

Separate venvs stand in for "the same venv with files moved": moving files inside
site-packages would change its mtime, and the key index cache (DESIGN.md §3)
would be rebuilt on the next start, which is not what a start costs.

>>> with Workspace() as workspace:  # doctest: +SKIP
...     layouts = workspace.layouts("python3.12")
...     child_cpu_ms([layouts.installed.python, "-c", "pass"], workspace.env())
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = [
    "BENCH_KEY",
    "Layouts",
    "Venv",
    "Workspace",
    "bench_parser",
    "child_cpu_ms",
    "child_instructions",
    "child_wall_and_cpu_ms",
    "child_wall_ms",
    "compile_plausipy",
    "find_interpreters",
    "kill_senders",
    "median",
    "paired_median_difference",
    "paired_median_ratio",
    "print_report",
    "print_table",
    "remove_plausipy_pyc",
    "rotated_runs",
    "verdict",
]

REPO = Path(__file__).resolve().parent.parent
BENCH_KEY = "Bench000000000000000000000000001"
BENCH_LIBRARY = "benchlib"
DEFAULT_MINORS = ("3.10", "3.12", "3.13")


# -- interpreters --------------------------------------------------------------------------


def find_interpreters(minors: Iterable[str] = DEFAULT_MINORS) -> dict[str, str]:
    """``{"3.12": "/root/.pyenv/versions/3.12.1/bin/python3", …}`` for the wanted minors found."""
    wanted = list(minors)
    found: dict[str, str] = {}
    for root in _pyenv_version_dirs():
        minor = ".".join(root.name.split(".")[:2])
        python = root / "bin" / "python3"
        if minor in wanted and minor not in found and python.exists():
            found[minor] = str(python)
    for minor in wanted:
        if minor not in found and shutil.which(f"python{minor}"):
            found[minor] = str(shutil.which(f"python{minor}"))
    return {minor: found[minor] for minor in wanted if minor in found}


def _pyenv_version_dirs() -> list[Path]:
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        root = os.path.expanduser("~/.pyenv")
    versions = Path(root) / "versions"
    return sorted(versions.iterdir()) if versions.is_dir() else []


# -- the workspace -------------------------------------------------------------------------


class Venv:
    """One virtual environment: its python and its site-packages."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.python = str(root / "bin" / "python")
        purelib = subprocess.run(
            [self.python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        self.site_packages = Path(purelib)


class Layouts:
    """The four venvs of one interpreter (see the module docstring)."""

    def __init__(self, installed: Venv, bare: Venv, empty: Venv, floor: Venv) -> None:
        self.installed, self.bare, self.empty, self.floor = installed, bare, empty, floor

    def all(self) -> dict[str, Venv]:
        return {"installed": self.installed, "bare": self.bare, "empty": self.empty, "floor": self.floor}


class Workspace:
    """A temp dir with the wheels, a blackhole collector and venvs built on demand (a context manager)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="plausipy-bench-"))
        # A cwd that never changes: sys.path[0] is "" for ``-c``, and its mtime is part of
        # the index cache key.
        self.cwd = self.root / "cwd"
        self.cwd.mkdir()
        self.blackhole = _open_blackhole()
        self.blackhole_url = "http://127.0.0.1:%d" % self.blackhole.getsockname()[1]
        self._wheels: list[Path] | None = None
        self._layouts: dict[str, Layouts] = {}

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill the senders our runs left, close the blackhole, delete the temp dir."""
        kill_senders(self.root)
        self.blackhole.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def home(self, name: str) -> Path:
        """A fresh PLAUSIPY_HOME (and HOME) under the workspace."""
        path = self.root / "homes" / name
        (path / "user").mkdir(parents=True, exist_ok=True)
        return path

    def env(self, home: Path | None = None, **extra: str) -> dict[str, str]:
        """A small, clean child environment: no CI, no kill switch, no .pyc writing."""
        home = home or self.home("default")
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home / "user"),
            "PLAUSIPY_HOME": str(home / "state"),
            "LANG": "C.UTF-8",
            "TZ": "Europe/Berlin",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        env.update(extra)
        return env

    def wheels(self) -> list[Path]:
        """plausipy's wheel (built once from this checkout) and benchlib's."""
        if self._wheels is None:
            out = self.root / "wheels"
            source = _write_bench_library(self.root / "src", self.blackhole_url)
            for project in (REPO, source):
                subprocess.run(
                    [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                     "-w", str(out), str(project)],
                    check=True,
                )
            self._wheels = sorted(out.glob("*.whl"))
            # pip wheel leaves build/ behind in a hatchling checkout only when asked; be sure.
            shutil.rmtree(REPO / "build", ignore_errors=True)
        return self._wheels

    def layouts(self, python: str) -> Layouts:
        """The installed / bare / empty / floor venvs of ``python``, built once."""
        if python not in self._layouts:
            tag = "venv-%d" % len(self._layouts)
            installed = self._make_venv(self.root / tag / "installed", python)
            bare = self._make_venv(self.root / tag / "bare", python)
            _move_hook_files_away(bare, self.root / tag / "moved-away")
            empty = self._make_venv(self.root / tag / "empty", python)
            _empty_the_modules(empty)
            floor = self._make_venv(self.root / tag / "floor", python)
            _empty_the_modules(floor)
            _reduce_to_the_floor(floor)
            self._layouts[python] = Layouts(installed, bare, empty, floor)
        return self._layouts[python]

    def _make_venv(self, root: Path, python: str) -> Venv:
        subprocess.run([python, "-m", "venv", "--without-pip", str(root)], check=True)
        # The runtime dependencies are not needed by anything the host does here.
        subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(root / "bin" / "python"), "install", "-q",
             "--no-deps", *map(str, self.wheels())],
            check=True,
        )
        return Venv(root)

    def allowing(self, python: str, name: str) -> tuple[Venv, Path]:
        """The installed layout of ``python`` with its .pyc files, and a home named ``name`` whose policy allows."""
        venv = self.layouts(python).installed
        compile_plausipy(venv)
        home = self.home(name)
        self.allow_policy(home)
        return venv, home

    def allow_policy(self, home: Path) -> None:
        """``python -m plausipy policy allow`` with state under ``home``."""
        env = dict(os.environ, PLAUSIPY_HOME=str(home / "state"), HOME=str(home / "user"))
        subprocess.run([sys.executable, "-m", "plausipy", "policy", "allow"], env=env, check=True,
                       stdout=subprocess.DEVNULL)


def _open_blackhole() -> socket.socket:
    # Listens, so connect() succeeds (the kernel completes the handshake), and never
    # accepts nor answers: the slowest collector there is.
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    return server


def _write_bench_library(root: Path, endpoint: str) -> Path:
    source = root / BENCH_LIBRARY
    (source / BENCH_LIBRARY).mkdir(parents=True, exist_ok=True)
    (source / BENCH_LIBRARY / "__init__.py").write_text('"""A library that declares a plausipy key."""\n')
    (source / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"

        [project]
        name = "{BENCH_LIBRARY}"
        version = "1.0.0"

        [project.entry-points.plausipy]
        key = "{BENCH_KEY}"

        [project.urls]
        Plausipy = "{endpoint}"
        """))
    return source


def _move_hook_files_away(venv: Venv, stash: Path) -> None:
    stash.mkdir(parents=True, exist_ok=True)
    for name in ("plausipy.pth", "plausipy.start"):
        if (venv.site_packages / name).exists():
            shutil.move(str(venv.site_packages / name), str(stash / name))


PACKAGES = ("plausipy", "_plausipy_hook")


def _empty_the_modules(venv: Venv) -> None:
    for name in PACKAGES:
        shutil.rmtree(venv.site_packages / name)
        (venv.site_packages / name).mkdir()
    (venv.site_packages / "plausipy" / "__init__.py").write_text("")
    hook = venv.site_packages / "_plausipy_hook"
    (hook / "__init__.py").write_text("def start():\n    pass\n")
    (hook / "_without_pyc.py").write_text("")  # what the .pth execs without .pyc files


def _reduce_to_the_floor(venv: Venv) -> None:
    # A .pth line that imports a package whose module is empty: no guard, no choice
    # between .pyc and source, no work. Below this no hook started by a .pth file goes.
    (venv.site_packages / "plausipy.pth").write_text("import _plausipy_hook\n")
    (venv.site_packages / "_plausipy_hook" / "__init__.py").write_text("")


def compile_plausipy(venv: Venv) -> None:
    """Write the .pyc files of plausipy in ``venv`` (the environment forbids writing them on import)."""
    subprocess.run([venv.python, "-m", "compileall", "-q", *(str(venv.site_packages / name) for name in PACKAGES)],
                   check=True, stdout=subprocess.DEVNULL)


def remove_plausipy_pyc(venv: Venv) -> None:
    """Delete every __pycache__ of plausipy in ``venv``."""
    for name in PACKAGES:
        for cache in (venv.site_packages / name).rglob("__pycache__"):
            shutil.rmtree(cache, ignore_errors=True)


# -- children ------------------------------------------------------------------------------

_QUIET = [
    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
    (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
]


def _spawn_and_reap(argv: list[str], env: dict[str, str], cwd: Path | None) -> tuple[int, object]:
    # posix_spawn has no cwd argument before 3.13's file action; chdir around it (we are single-threaded).
    previous = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        pid = os.posix_spawn(argv[0], argv, env, file_actions=_QUIET)
    finally:
        os.chdir(previous)
    _, status, usage = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{argv} exited with {code}")
    return code, usage


def child_cpu_ms(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> float:
    """CPU time (user + system, ms) the child spent, from ``os.wait4``'s rusage."""
    _, usage = _spawn_and_reap(argv, env, cwd)
    return (usage.ru_utime + usage.ru_stime) * 1000.0  # type: ignore[attr-defined]


def child_instructions(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> int:
    """Instructions the child executed, counted by callgrind (``shutil.which("valgrind")`` first).

    Unlike CPU time on a shared machine, the count repeats run after run
    (give the child ``PYTHONHASHSEED=0``: seeded hashing).
    """
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "callgrind.out"
        result = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
                                env=env, cwd=cwd, capture_output=True, text=True, check=True)
    collected = [line for line in result.stderr.splitlines() if "Collected :" in line]
    return int(collected[-1].split(":")[-1].strip())


def child_wall_ms(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> float:
    """Wall time (ms) from spawning the child to reaping it."""
    started = time.perf_counter()
    _spawn_and_reap(argv, env, cwd)
    return (time.perf_counter() - started) * 1000.0


def child_wall_and_cpu_ms(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one child, in ms."""
    started = time.perf_counter()
    _, usage = _spawn_and_reap(argv, env, cwd)
    wall = (time.perf_counter() - started) * 1000.0
    return wall, (usage.ru_utime + usage.ru_stime) * 1000.0  # type: ignore[attr-defined]


def child_peak_rss_kib(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> int:
    """Peak RSS of the child (KiB, ``ru_maxrss`` on Linux)."""
    # Caution: Linux keeps the high-water mark across exec, so a child smaller than this
    # process reports our RSS.
    _, usage = _spawn_and_reap(argv, env, cwd)
    return int(usage.ru_maxrss)  # type: ignore[attr-defined]


def kill_senders(state_root: Path) -> int:
    """Kill, by pid, every plausipy sender whose PLAUSIPY_HOME is under ``state_root``; how many."""
    killed = 0
    marker = f"PLAUSIPY_HOME={state_root}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if b"plausipy._sender" not in handle.read():
                    continue
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if not any(item.startswith(marker) for item in handle.read().split(b"\0")):
                    continue
            os.kill(int(entry), 9)
            killed += 1
        except (OSError, ValueError):
            continue  # gone already, or not ours to read
    return killed


# -- runs and figures ----------------------------------------------------------------------


def rotated_runs(cases: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each case once per round, rotating the order every round; samples per case."""
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_number in range(rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(cases[name]())
    return samples


def median(values: list[float]) -> float:
    return statistics.median(values)


def paired_median_difference(first: list[float], second: list[float]) -> float:
    """Median of per-round differences (first - second): steadier than a difference of medians."""
    return statistics.median(a - b for a, b in zip(first, second))


def paired_median_ratio(first: list[float], second: list[float]) -> float:
    """Median of per-round ratios (first / second): one slow round moves both of its runs."""
    return statistics.median(a / b for a, b in zip(first, second))


def verdict(value: float, target: float, unit: str) -> str:
    """``"ok (≤ 0.3 ms)"`` or ``"MISSED (target ≤ 0.3 ms)"``."""
    if value <= target:
        return f"ok (target ≤ {target:g} {unit})"
    return f"MISSED (target ≤ {target:g} {unit})"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A plain aligned table under a title."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("  " + "  ".join(str(cell).ljust(width) for cell, width in zip(header, widths)))
    print("  " + "  ".join("-" * width for width in widths))
    for row in rows:
        print("  " + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
    sys.stdout.flush()


def print_report(title: str, header: list[str], rows: list[list[str]], summary: list[str]) -> list[str]:
    """The table, then each summary line indented beneath it; returns ``summary`` (run_all collects it)."""
    print_table(title, header, rows)
    for line in summary:
        print("  " + line)
    return summary


def bench_parser(doc: str, default_rounds: int) -> argparse.ArgumentParser:
    """A parser described by the first line of ``doc``, with ``--rounds N`` and ``--python 3.12`` (repeatable).

    >>> bench_parser("What exit costs.", 30).parse_args(["--python", "3.10"]).rounds
    30
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=default_rounds, help=f"rotated rounds (default {default_rounds})")
    parser.add_argument("--python", action="append", help="minor version, e.g. 3.12 (repeatable)")
    return parser


def interpreter_version(python: str) -> str:
    """``"3.12.1"`` for an interpreter path."""
    return subprocess.run([python, "-c", "import platform; print(platform.python_version())"],
                          capture_output=True, text=True, check=True).stdout.strip()
