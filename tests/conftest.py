"""Shared fixtures: the wheel built once, fresh venvs per interpreter, fake key-declaring
libraries, a recording collector on 127.0.0.1, and isolation of os.environ/sys.path/sys.meta_path.

The hook is tested as users get it: the wheel is installed into a fresh virtual
environment, and programs run in real subprocesses of that environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from collector import RecordingCollector  # noqa: E402

#: Keys of the fake libraries (32 chars, a letter first).
KEYS = {
    "acmelib": "Acme0000000000000000000000000001",
    "betalib": "Beta0000000000000000000000000002",
    "gammalib": "Gamma000000000000000000000000003",
}
SCOPES = {"acmelib": "package", "betalib": "user", "gammalib": "anonymous"}


@pytest.fixture(autouse=True)
def _restore_interpreter_state():
    """Tests may change the environment or import machinery; put it back."""
    environ, path, meta_path = dict(os.environ), list(sys.path), list(sys.meta_path)
    yield
    os.environ.clear()
    os.environ.update(environ)
    sys.path[:] = path
    sys.meta_path[:] = meta_path


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


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("session")


@pytest.fixture(scope="session")
def wheel(session_dir: Path) -> Path:
    """plausipy's wheel, built once per test session from this checkout."""
    out = session_dir / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True,
    )
    (found,) = out.glob("plausipy-*.whl")
    return found


@pytest.fixture(scope="session")
def collector():
    """A recording collector on 127.0.0.1 for the whole session (reset per test by `fresh_collector`)."""
    server = RecordingCollector()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fresh_collector(collector):
    collector.reset()
    collector.mode = "accept"
    return collector


def _write_fake_library(root: Path, name: str, key: str | None, scope: str | None, endpoint: str | None) -> Path:
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


@pytest.fixture(scope="session")
def fake_wheels(session_dir: Path, collector) -> list[Path]:
    """Wheels of acmelib/betalib/gammalib (declaring keys, collector as their Plausipy URL) and quietlib (no key)."""
    sources = session_dir / "fake-src"
    out = session_dir / "fake-wheels"
    for name, key in KEYS.items():
        _write_fake_library(sources, name, key, SCOPES[name], collector.url)
    _write_fake_library(sources, "quietlib", None, None, None)
    for source in sorted(sources.iterdir()):
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
            check=True,
        )
    return sorted(out.glob("*.whl"))


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


@pytest.fixture(scope="session")
def venv_factory(session_dir: Path, wheel: Path, fake_wheels: list[Path]):
    """``venv_factory(python) -> Venv``, one per interpreter per session."""
    cache: dict[str, Venv] = {}

    def factory(python: str = sys.executable) -> Venv:
        if python not in cache:
            cache[python] = make_venv(session_dir / f"venv-{len(cache)}", python, wheel, fake_wheels)
        return cache[python]

    return factory


@pytest.fixture(scope="session")
def venv(venv_factory) -> Venv:
    """The venv of the interpreter running the tests."""
    return venv_factory(sys.executable)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "user").mkdir()
    return tmp_path


def wait_for(predicate, timeout: float = 45.0, interval: float = 0.1):
    """Poll until ``predicate()`` is truthy (the detached sender works in its own time)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def ledger_rows(venv: Venv, home: Path) -> list[dict]:
    """Every record of the ledger, through the CLI's JSON."""
    result = venv.plausipy(["data", "list", "--json"], home)
    return json.loads(result.stdout)


def write_program(home: Path, name: str, source: str) -> str:
    path = home / name
    path.write_text(textwrap.dedent(source))
    return str(path)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
