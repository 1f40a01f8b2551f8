"""The start-up hook in a fresh venv with the wheel installed: kill switches, imports,
idempotence, the .pth guard, uninstall, and the start-up module budget."""

from __future__ import annotations

import subprocess

import pytest

from support import INTERPRETERS, KEYS, interpreter_id

HEAVY_MODULES = {
    "json", "re", "threading", "tomllib", "subprocess", "sqlite3", "requests", "psutil", "blessed",
    "click", "importlib.metadata", "hashlib", "typing", "dataclasses", "inspect", "platformdirs",
    "plausipy._host", "plausipy._policy",
}  # fmt: skip

#: The watcher is the start-up module itself, first on sys.meta_path.
WATCHER = "_plausipy_hook"


def _probe(venv, home, **env):
    # json is imported by the probe itself, after start-up: compare with a -c pass listing instead.
    code = (
        "import sys\n"
        "mods = sorted(sys.modules)\n"
        "finders = [getattr(f, '__name__', type(f).__name__) for f in sys.meta_path]\n"
        "import json\n"
        "print(json.dumps({'modules': mods, 'meta_path': finders}))\n"
    )
    result = venv.run(["-c", code], home, **env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    import json

    return json.loads(result.stdout)


@pytest.mark.parametrize("python", INTERPRETERS, ids=interpreter_id)
def test_startup_installs_one_watcher_and_imports_nothing_heavy(venv_factory, home, python):
    venv = venv_factory(python)
    first = _probe(venv, home)  # builds the index cache
    second = _probe(venv, home)  # reads it
    for state in (first, second):
        assert state["meta_path"][0] == WATCHER
        assert state["meta_path"].count(WATCHER) == 1
        assert "_plausipy_hook" in state["modules"]
        assert not HEAVY_MODULES & set(state["modules"]), HEAVY_MODULES & set(state["modules"])
    # The index is read from the cache the second time: the builder is not imported.
    assert "_plausipy_hook._index" in first["modules"]
    assert "_plausipy_hook._index" not in second["modules"]


def test_the_programs_own_exit_hooks_run_first_with_a_module_of_its_own(venv, home):
    # The hook registers its exit hook at start without importing atexit; the
    # program's `import atexit` still gets a regular module, and its hooks run
    # before plausipy's, which leaves sys.meta_path last of all.
    code = (
        "import atexit, sys\n"
        "bootstrap = sys.modules['_plausipy_hook']\n"
        "atexit.register(lambda: print('mine', atexit.__spec__.name, bootstrap.watching, WATCHER in sys.meta_path))\n"
        "WATCHER = bootstrap\n"
    )
    result = venv.run(["-c", code], home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["mine", "atexit", "True", "True"]
    assert result.stderr == ""


@pytest.mark.parametrize("switch", [{"DO_NOT_TRACK": "1"}, {"DO_NOT_TRACK": "true"}, {"PLAUSIPY_DISABLE": "1"}, {"PLAUSIPY_PARENT": "123"}])
def test_kill_switches_install_no_watcher(venv, home, switch):
    state = _probe(venv, home, **switch)
    assert WATCHER not in state["meta_path"]


@pytest.mark.parametrize("value", ["", "0", "false"])
def test_do_not_track_off_values_keep_the_hook(venv, home, value):
    state = _probe(venv, home, DO_NOT_TRACK=value)
    assert state["meta_path"][0] == WATCHER


def test_watcher_removes_itself_once_everything_tracked_was_seen(venv, home):
    code = (
        "import sys, acmelib, betalib, gammalib\n"
        "print([getattr(f, '__name__', type(f).__name__) for f in sys.meta_path])\n"
    )
    result = venv.run(["-c", code], home)
    assert result.returncode == 0, result.stderr
    assert WATCHER not in result.stdout


def test_index_finds_every_key_declaring_distribution(venv, home):
    code = "import _plausipy_hook as b; print(sorted((k, v[0], v[2], v[3]) for k, v in b.index.items()))"
    result = venv.run(["-c", code], home)
    assert result.returncode == 0, result.stderr
    for name, key in KEYS.items():
        assert f"'{name}', '{name}', '{key}'" in result.stdout
    assert "quietlib" not in result.stdout


def test_index_cache_is_rebuilt_after_an_install_and_survives_corruption(venv, home, tmp_path):
    code = "import _plausipy_hook as b; print(sorted(b.index))"
    assert "acmelib" in venv.run(["-c", code], home).stdout
    cache_files = list((home / "state" / "cache").glob("index-*.marshal"))
    assert len(cache_files) == 1
    cache_files[0].write_bytes(b"\x00garbage")
    result = venv.run(["-c", code], home)
    assert result.returncode == 0 and result.stderr == ""
    assert "acmelib" in result.stdout


def test_pth_runs_twice_but_hook_is_idempotent(venv, home):
    code = (
        "import _plausipy_hook as b, sys\n"
        "b.start(); b.start()\n"
        "print(sum(f is b for f in sys.meta_path))\n"
    )
    result = venv.run(["-c", code], home)
    assert result.stdout.strip() == "1"


def test_hook_files_are_installed_at_site_packages_root(venv):
    assert (venv.site_packages / "plausipy.pth").is_file()
    assert (venv.site_packages / "plausipy.start").read_text().strip().endswith("_plausipy_hook:start")
    record = next(venv.site_packages.glob("plausipy-*.dist-info")) / "RECORD"
    lines = record.read_text().splitlines()
    assert any(line.startswith("plausipy.pth,") for line in lines)
    assert any(line.startswith("plausipy.start,") for line in lines)


def test_a_wheel_built_from_the_sdist_has_the_hook(tmp_path):
    # Both packages and both hook files survive the trip through the sdist.
    import sys
    import tarfile
    import zipfile
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    build = "import sys; from hatchling.build import build_sdist; print(build_sdist(sys.argv[1]))"
    name = subprocess.run([sys.executable, "-c", build, str(tmp_path)], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip().splitlines()[-1]
    with tarfile.open(tmp_path / name) as sdist:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        sdist.extractall(tmp_path / "unpacked", **safe)
    (source,) = (tmp_path / "unpacked").iterdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
                    str(source)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("plausipy-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for wanted in ("plausipy.pth", "plausipy.start", "plausipy/__init__.py", "_plausipy_hook/__init__.py",
                   "_plausipy_hook/_without_pyc.py", "_plausipy_hook/_cache_start.py", "_plausipy_hook/_index.py"):
        assert wanted in names, wanted


def test_leftover_pth_without_the_package_prints_nothing(tmp_path, venv, home):
    # A broken uninstall: the .pth stays, the package is gone.
    from support import pth_only_venv

    broken = pth_only_venv(venv, tmp_path / "broken-venv")
    result = subprocess.run([broken.python, "-c", "print('ok')"], capture_output=True, text=True)
    assert result.stdout == "ok\n"
    assert result.stderr == ""


def test_a_corrupt_pyc_of_the_hook_prints_nothing(tmp_path, venv, home):
    # A .pyc whose header is right and whose code is not: importlib raises
    # ValueError from marshal, inside the .pth line's guard.
    import shutil

    from support import pth_only_venv

    broken = pth_only_venv(venv, tmp_path / "corrupt-venv")
    shutil.copytree(venv.site_packages / "_plausipy_hook", broken.site_packages / "_plausipy_hook")
    [compiled] = (broken.site_packages / "_plausipy_hook" / "__pycache__").glob("__init__.*.pyc")
    data = compiled.read_bytes()
    compiled.write_bytes(data[:16] + b"\xff" * (len(data) - 16))
    result = subprocess.run([broken.python, "-c", "print('ok')"],
                            env=venv.env(home), capture_output=True, text=True)
    assert (result.stdout, result.stderr) == ("ok\n", "")


def test_uninstall_removes_the_hook(tmp_path, wheel, fake_wheels, home):
    from support import make_venv

    import sys

    scratch = make_venv(tmp_path / "scratch", sys.executable, wheel, [])
    assert (scratch.site_packages / "plausipy.pth").exists()
    subprocess.run([scratch.python, "-m", "pip", "uninstall", "-y", "-q", "plausipy"], check=True)
    assert not (scratch.site_packages / "plausipy.pth").exists()
    assert not (scratch.site_packages / "plausipy.start").exists()
    result = scratch.run(["-c", "print('ok')"], home)
    assert (result.stdout, result.stderr) == ("ok\n", "")


def test_import_plausipy_is_free(venv, home):
    code = "import sys; before = set(sys.modules); import plausipy; print(sorted(set(sys.modules) - before))"
    result = venv.run(["-c", code], home, PLAUSIPY_DISABLE="1")
    assert result.stdout.strip() == "['plausipy']"  # the hook is a package of its own
    result = venv.run(["-S", "-c", "import sys; sys.path.append(%r); import plausipy; print(sorted(m for m in sys.modules if m.startswith(('click','requests','psutil','blessed','sqlite3','json'))))" % str(venv.site_packages)], home)
    assert result.stdout.strip() == "[]", result.stderr
