"""The start-up hook where plausipy has no .pyc files: plausipy.pth execs
_plausipy_hook/_without_pyc.py, which runs the bootstrap from code cached in
plausipy's cache dir, so that no process compiles anything (DESIGN.md §3)."""

from __future__ import annotations

import json
import marshal
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import INTERPRETERS, Venv, interpreter_id, pth_only_venv, wait_for, write_program

REPO = Path(__file__).resolve().parent.parent
MARKER = "bootstrap code from the cache"

PROBE = (
    "import sys, json\n"
    "b = sys.modules.get('_plausipy_hook')\n"
    "print(json.dumps({'watcher': getattr(sys.meta_path[0], '__name__', None),\n"
    "                  'file': getattr(b, '__file__', None), 'path': getattr(b, '__path__', None),\n"
    "                  'index': sorted(getattr(b, 'index', ())), 'package_imported': 'plausipy' in sys.modules}))\n"
)


@pytest.fixture(scope="session")
def no_pyc_venv_factory(session_dir: Path, venv_factory):
    """``factory(python) -> Venv``: a copy of that interpreter's venv without plausipy's __pycache__."""
    made: dict[str, Venv] = {}

    def factory(python: str = sys.executable) -> Venv:
        if python not in made:
            source = venv_factory(python)
            root = session_dir / f"no-pyc-{len(made)}"
            subprocess.run([python, "-m", "venv", "--without-pip", str(root)], check=True)
            copy = Venv(root)
            shutil.rmtree(copy.site_packages)
            shutil.copytree(source.site_packages, copy.site_packages, symlinks=True)
            for package in ("plausipy", "_plausipy_hook"):
                for cache in (copy.site_packages / package).rglob("__pycache__"):
                    shutil.rmtree(cache)
            made[python] = copy
        return made[python]

    return factory


def run(venv: Venv, home: Path, code: str = PROBE, **env: str) -> subprocess.CompletedProcess:
    # PYTHONDONTWRITEBYTECODE: the import system must not write the .pyc files back.
    result = venv.run(["-c", code], home, PYTHONDONTWRITEBYTECODE="1", **env)
    assert result.returncode == 0, result.stderr
    return result


def start_cache(home: Path) -> list[Path]:
    return sorted((home / "state" / "cache").glob("start-*.marshal"))


def cached_stamp(venv: Venv, cache: Path) -> list:
    # Code objects marshal differently in each Python: read them with the venv's (-S: no hook).
    code = f"import marshal, json; print(json.dumps(repr(marshal.loads(open({str(cache)!r}, 'rb').read())[1][0])))"
    result = subprocess.run([venv.python, "-S", "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


MARK = """
import marshal, sys
cache, source = sys.argv[1:3]
stage_one, (stamp, _) = marshal.loads(open(cache, "rb").read())
marked = compile(open(source).read() + "\\nimport sys\\nsys.stderr.write(%r)\\n" % sys.argv[3], source, "exec")
open(cache, "wb").write(marshal.dumps((stage_one, (stamp, marked))))
"""


def mark_cached_code(venv: Venv, cache: Path) -> None:
    # Swap the cached bootstrap for one that also writes MARKER to stderr, keeping the stamp.
    source = venv.site_packages / "_plausipy_hook" / "__init__.py"
    subprocess.run([venv.python, "-S", "-c", MARK, str(cache), str(source), MARKER], check=True)


@pytest.mark.parametrize("python", INTERPRETERS, ids=interpreter_id)
def test_the_hook_runs_from_cached_code_and_notices_when_it_is_stale(no_pyc_venv_factory, home, python):
    venv = no_pyc_venv_factory(python)
    bootstrap = venv.site_packages / "_plausipy_hook"
    first = json.loads(run(venv, home).stdout)
    assert first["watcher"] == "_plausipy_hook"
    assert first["file"] == str(bootstrap / "__init__.py") and first["path"] == [str(bootstrap)]
    assert "acmelib" in first["index"]
    assert not first["package_imported"]  # the hook never needs plausipy itself
    assert not (bootstrap / "__pycache__").exists()
    [cache] = start_cache(home)

    # Prove the next start runs the cached code: swap in code that also leaves a mark.
    stamp = cached_stamp(venv, cache)
    mark_cached_code(venv, cache)
    second = run(venv, home)
    assert second.stderr == MARKER
    assert json.loads(second.stdout) == first

    # A changed source (an upgrade, an edit) is noticed: compiled again and re-cached.
    os.utime(bootstrap / "__init__.py")
    third = run(venv, home)
    assert third.stderr == "" and json.loads(third.stdout) == first
    assert cached_stamp(venv, cache) != stamp
    fourth = run(venv, home)
    assert fourth.stderr == "" and json.loads(fourth.stdout) == first
    # An import, later, finds the module the hook loaded.
    same = "import sys; loaded = sys.modules['_plausipy_hook']; import _plausipy_hook; print(_plausipy_hook is loaded)"
    assert run(venv, home, same).stdout == "True\n"


def test_a_cache_file_of_another_user_or_corrupt_is_not_run(no_pyc_venv_factory, home):
    venv = no_pyc_venv_factory()
    run(venv, home)
    [cache] = start_cache(home)
    stamp = cached_stamp(venv, cache)
    mark_cached_code(venv, cache)
    assert run(venv, home).stderr == MARKER
    if os.getuid() == 0:
        os.chown(cache, 65534, 65534)
        result = run(venv, home)
        assert result.stderr == "" and json.loads(result.stdout)["watcher"] == "_plausipy_hook"
        assert cache.stat().st_uid == 0  # replaced by this user's own
    for garbage in (b"", b"\x00not marshal", marshal.dumps(("not", "code"))):
        cache.write_bytes(garbage)
        result = run(venv, home)
        assert result.stderr == "" and json.loads(result.stdout)["watcher"] == "_plausipy_hook"
        assert cached_stamp(venv, cache) == stamp


def test_an_unwritable_cache_dir_costs_a_compile_and_nothing_else(no_pyc_venv_factory, home):
    venv = no_pyc_venv_factory()
    (home / "state").mkdir()
    (home / "state" / "cache").write_text("a file where the cache dir should be")
    for _ in range(2):
        result = run(venv, home)
        assert result.stderr == ""
        assert json.loads(result.stdout)["watcher"] == "_plausipy_hook"
    assert (home / "state" / "cache").read_text() == "a file where the cache dir should be"


def test_a_kill_switch_writes_no_file(no_pyc_venv_factory, home):
    venv = no_pyc_venv_factory()
    for switch in ("DO_NOT_TRACK", "PLAUSIPY_DISABLE"):
        result = run(venv, home, "import sys; print(sys.meta_path[0].__name__ if hasattr(sys.meta_path[0], '__name__') else '')",
                     **{switch: "1"})
        assert result.stdout.strip() != "_plausipy_hook"
    assert not (home / "state").exists()


@pytest.mark.parametrize("variables, expected", [
    ({}, "state/cache"),
    ({"PLAUSIPY_HOME": "", "XDG_CACHE_HOME": "{home}/xdg"}, "xdg/plausipy"),
    ({"PLAUSIPY_HOME": "", "XDG_CACHE_HOME": "  "}, "user/.cache/plausipy"),
])
def test_the_code_cache_sits_beside_the_key_index(no_pyc_venv_factory, home, variables, expected):
    venv = no_pyc_venv_factory()
    env = {name: value.format(home=home) for name, value in variables.items()}
    code = "import _plausipy_hook as b; print(b.cache_dir())"
    cache_dir = Path(run(venv, home, code, **env).stdout.strip())
    assert cache_dir == home / expected
    assert [path.name.split("-")[0] for path in sorted(cache_dir.iterdir())] == ["index", "start"]


def test_a_record_is_delivered_from_a_process_without_pyc(no_pyc_venv_factory, home, fresh_collector):
    venv = no_pyc_venv_factory()
    result = venv.run(["-m", "plausipy", "policy", "allow"], home, PYTHONDONTWRITEBYTECODE="1")
    assert result.returncode == 0, result.stderr
    program = write_program(home, "app.py", "import acmelib\nprint('done')\n")
    for _ in range(2):  # the first start writes the cache, the second runs from it
        result = venv.run([program], home, PYTHONDONTWRITEBYTECODE="1")
        assert (result.returncode, result.stdout, result.stderr) == (0, "done\n", "")
    [cache] = start_cache(home)
    result = venv.run(["-m", "plausipy", "doctor", "--json", "--runs", "1"], home, PYTHONDONTWRITEBYTECODE="1")
    [hook] = [item for item in json.loads(result.stdout)["checks"] if item["name"] == "hook"]
    assert hook["details"]["start_up"] == f"no .pyc files: start-up code from {cache}"
    records = wait_for(lambda: [r for r in fresh_collector.records if r["package"] == "acmelib"][1:])
    assert records, fresh_collector.records
    assert not (venv.site_packages / "plausipy" / "__pycache__").exists()


def test_the_hook_runs_where_plausipy_is_not_beside_the_pth(tmp_path, venv, home):
    # An editable install: plausipy.pth in site-packages, the package on a path entry.
    other = pth_only_venv(venv, tmp_path / "other-venv")
    (other.site_packages / "_elsewhere.pth").write_text(f"{venv.site_packages}\n")  # read before plausipy.pth
    for extra in ({}, {"PYTHONDONTWRITEBYTECODE": "1"}):
        result = subprocess.run(
            [other.python, "-c", "import sys; print(sys.meta_path[0].__name__)"],
            env=venv.env(home, **extra), capture_output=True, text=True)
        assert (result.stdout, result.stderr) == ("_plausipy_hook\n", "")


def test_the_pth_line_is_the_one_hooks_make_pth_writes():
    result = subprocess.run([sys.executable, str(REPO / "hooks" / "make_pth.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
