"""Helpers shared by the tests: the interpreters to test on, fresh venvs with the wheel,
fake key-declaring libraries, polling. Fixtures that use them live in conftest.py.

A module of its own, not conftest.py: tests/server has a conftest.py too, and
`from conftest import …` would find whichever of the two was imported last.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


KEYS = {
    "acmelib": "Acme0000000000000000000000000001",
    "betalib": "Beta0000000000000000000000000002",
    "gammalib": "Gamma000000000000000000000000003",
}


SCOPES = {"acmelib": "package", "betalib": "user", "gammalib": "anonymous"}


def _pyenv_interpreters() -> list[str]:
    """CPython 3.10-3.13 from pyenv, else just this interpreter."""
    found: dict[str, str] = {}
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        root = os.path.expanduser("~/.pyenv")
    versions = Path(root) / "versions"
    if versions.is_dir():
        for entry in sorted(versions.iterdir()):
            parts = entry.name.split(".")
            if len(parts) >= 2 and parts[0] == "3" and parts[1].isdigit() and 10 <= int(parts[1]) <= 13:
                python = entry / "bin" / "python3"
                if python.exists() and parts[1] not in found:
                    found[parts[1]] = str(python)
    if not found:
        found[str(sys.version_info[1])] = sys.executable
    return [found[minor] for minor in sorted(found, key=int)]


INTERPRETERS = _pyenv_interpreters()


def interpreter_id(python: str) -> str:
    out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True)
    return "py" + out.stdout.strip()


def write_fake_library(root: Path, name: str, key: str | None, scope: str | None, endpoint: str | None) -> Path:
    source = root / name
    (source / name).mkdir(parents=True)
    (source / name / "__init__.py").write_text(f'"""A fake library for the tests."""\nNAME = {name!r}\n')
    entry_points = ""
    if key:
        entry_points = f'\n[project.entry-points.plausipy]\nkey = "{key}"\n' + (f'scope = "{scope}"\n' if scope else "")
    urls = f'\n[project.urls]\nPlausipy = "{endpoint}"\n' if endpoint else ""
    (source / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [build-system]
            requires = ["hatchling"]
            build-backend = "hatchling.build"

            [project]
            name = "{name}"
            version = "1.2.3"
            """
        )
        + entry_points
        + urls
    )
    return source


class Venv:
    """A fresh virtual environment with plausipy's wheel and the fake libraries installed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.python = str(root / "bin" / "python")
        self.site_packages = Path(
            subprocess.run([self.python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                           capture_output=True, text=True, check=True).stdout.strip()
        )
        self.version = subprocess.run([self.python, "-c", "import sys; print(sys.version_info[:2])"],
                                      capture_output=True, text=True, check=True).stdout.strip()

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        """A clean environment: no CI, no kill switch, state under ``home``."""
        env = {
            "PATH": f"{self.root / 'bin'}:/usr/bin:/bin",
            "HOME": str(home / "user"),
            "PLAUSIPY_HOME": str(home / "state"),
            "LANG": "C.UTF-8",
            "TZ": "Europe/Berlin",
        }
        env.update(extra)
        return env

    def run(self, args: list[str], home: Path, *, input: str | None = None, timeout: float = 120, **extra: str):
        return subprocess.run(
            [self.python, *args], env=self.env(home, **extra), capture_output=True, text=True,
            input=input, timeout=timeout, cwd=str(home),
            # No controlling terminal: the dialog may use /dev/tty, and a test run from a
            # terminal must not ask the developer.
            start_new_session=True,
        )

    def plausipy(self, args: list[str], home: Path, **extra: str):
        result = self.run(["-m", "plausipy", *args], home, **extra)
        assert result.returncode == 0, result.stdout + result.stderr
        return result


def make_venv(root: Path, python: str, wheel: Path, fake_wheels: list[Path]) -> Venv:
    subprocess.run([python, "-m", "venv", str(root)], check=True)
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, str(wheel), *map(str, fake_wheels)], check=True)
    return Venv(root)


def pth_only_venv(source: Venv, root: Path) -> Venv:
    """A bare venv of ``source``'s interpreter whose site-packages holds ``source``'s plausipy.pth and nothing else."""
    subprocess.run([source.python, "-m", "venv", "--without-pip", str(root)], check=True)
    bare = Venv(root)
    shutil.copy(source.site_packages / "plausipy.pth", bare.site_packages / "plausipy.pth")
    return bare


def wait_for(predicate, timeout: float = 45.0, interval: float = 0.1):
    """Poll until ``predicate()`` is truthy (the detached sender works in its own time)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def write_program(home: Path, name: str, source: str) -> str:
    path = home / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def stop_senders_under(root: Path) -> None:
    """Kill detached senders whose PLAUSIPY_HOME is under ``root`` (Linux /proc).

    A sender left behind by one test could otherwise deliver into the next
    test's collector.
    """
    import signal

    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if b"plausipy._sender" not in (entry / "cmdline").read_bytes():
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        homes = [item[len(b"PLAUSIPY_HOME="):] for item in environ if item.startswith(b"PLAUSIPY_HOME=")]
        if homes and homes[0].decode(errors="replace").startswith(str(root)):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                pass
