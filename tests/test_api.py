"""The front door: what `import plausipy` offers, and that it costs nothing."""

from __future__ import annotations

import inspect
import subprocess
import sys

import plausipy


def test_all_names_resolve_and_nothing_else_is_public():
    assert sorted(plausipy.__all__) == ["__version__", "app", "consent", "disable", "lib", "track"]
    for name in plausipy.__all__:
        assert getattr(plausipy, name) is not None
    # Subpackages (plausipy.server) appear once something imported them; they are not names of the API.
    public = {name for name in dir(plausipy) if not name.startswith("_") and not inspect.ismodule(getattr(plausipy, name))}
    assert public <= set(plausipy.__all__)


def test_options_are_keyword_only():
    for function in (plausipy.app, plausipy.lib):
        parameters = list(inspect.signature(function).parameters.values())
        assert parameters[0].name == "key" and parameters[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters[1:])


def test_unknown_attribute_is_an_attribute_error():
    try:
        plausipy.nothing_here  # noqa: B018
    except AttributeError as exc:
        assert "nothing_here" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_import_plausipy_loads_nothing_heavy():
    code = (
        "import sys; before = set(sys.modules); import plausipy; "
        "print(sorted(set(sys.modules) - before))"
    )
    result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(__import__('pathlib').Path(plausipy.__file__).parent.parent)})
    loaded = eval(result.stdout)
    assert set(loaded) <= {"plausipy"}, loaded


def test_py_typed_is_shipped():
    from pathlib import Path

    assert (Path(plausipy.__file__).parent / "py.typed").exists()
