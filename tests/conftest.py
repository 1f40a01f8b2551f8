"""Shared fixtures: the wheel built once, fresh venvs per interpreter, fake key-declaring
libraries, a recording collector on 127.0.0.1, and isolation of os.environ/sys.path/sys.meta_path.

The hook is tested as users get it: the wheel is installed into a fresh virtual
environment, and programs run in real subprocesses of that environment. The
helpers behind these fixtures are in support.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from collector import RecordingCollector  # noqa: E402
from support import KEYS, REPO, SCOPES, Venv, make_venv, stop_senders_under, write_fake_library  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_interpreter_state():
    """Tests may change the environment or import machinery; put it back."""
    environ, path, meta_path = dict(os.environ), list(sys.path), list(sys.meta_path)
    yield
    os.environ.clear()
    os.environ.update(environ)
    sys.path[:] = path
    sys.meta_path[:] = meta_path


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


@pytest.fixture(scope="session")
def fake_wheels(session_dir: Path, collector) -> list[Path]:
    """Wheels of acmelib/betalib/gammalib (declaring keys, collector as their Plausipy URL) and quietlib (no key)."""
    sources = session_dir / "fake-src"
    out = session_dir / "fake-wheels"
    for name, key in KEYS.items():
        write_fake_library(sources, name, key, SCOPES[name], collector.url)
    write_fake_library(sources, "quietlib", None, None, None)
    for source in sorted(sources.iterdir()):
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
            check=True,
        )
    return sorted(out.glob("*.whl"))


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
def home(tmp_path: Path):
    """A test's own user home and PLAUSIPY_HOME; senders it started do not outlive the test."""
    (tmp_path / "user").mkdir()
    yield tmp_path
    stop_senders_under(tmp_path)