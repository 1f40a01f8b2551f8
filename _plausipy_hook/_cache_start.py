# The first start where _plausipy_hook has no __pycache__ (and every
# start after the cache went stale): run by _without_pyc.py, which has just
# failed to load the cached code. Compiles the bootstrap and STAGE_ONE, starts
# through STAGE_ONE, and caches both for the next start.
#
# The cache file holds (STAGE_ONE's code, (stamp, the bootstrap's code)).
# STAGE_ONE checks the stamp (interpreter magic, optimization level, mtime and
# size of this file and of the bootstrap's source) and loads the bootstrap as
# the import system would. This file runs with ``__name__ == "plausipy.pth"``,
# ``sitedir`` and ``path`` (the cache file, or None) given; its names can be
# imported for tests.

import marshal
import os
import sys

NAME = "_plausipy_hook"

# Module-level code, run with ``sitedir`` and ``cached`` in its globals; it
# leaves the stamp it found in ``stamp`` (a first start has none to check).
STAGE_ONE = """
import os, sys
here = os.path.join(sitedir, "_plausipy_hook")
external = sys.modules["_frozen_importlib_external"]
stamp = [external.MAGIC_NUMBER, sys.flags.optimize, here]
for name in ("__init__.py", "_cache_start.py"):
    status = os.stat(os.path.join(here, name))
    stamp += [status.st_mtime_ns, status.st_size]
if cached[0] is not None and cached[0] != stamp:
    raise ImportError("the cached start-up code is stale")
spec = external.spec_from_file_location(
    "_plausipy_hook", os.path.join(here, "__init__.py"), submodule_search_locations=[here])
module = sys.modules["_frozen_importlib"].module_from_spec(spec)
sys.modules["_plausipy_hook"] = module
try:
    exec(cached[1], module.__dict__)
except BaseException:
    del sys.modules["_plausipy_hook"]
    raise
module.start()
"""


def start(sitedir: str, path: "str | None") -> None:
    # Compile the bootstrap and STAGE_ONE, start through STAGE_ONE, and cache
    # both at ``path``, unless a kill switch is on: then no file of ours appears.
    if NAME in sys.modules:
        return
    here = os.path.join(sitedir, "_plausipy_hook")
    source = os.path.join(here, "__init__.py")
    with open(source, "rb") as handle:
        code = compile(handle.read(), source, "exec", dont_inherit=True)
    stage_one = compile(STAGE_ONE, os.path.join(here, "_cache_start.py"), "exec", dont_inherit=True)
    scope = {"sitedir": sitedir, "cached": (None, code)}  # None: no stamp to check
    exec(stage_one, scope)
    if path and os.path.isabs(path) and sys.modules[NAME].disabled_reason is None:
        from _plausipy_hook._index import write_cache_file

        write_cache_file(path, marshal.dumps((stage_one, (scope["stamp"], code))))


if __name__ == "plausipy.pth":
    try:
        start(sitedir, path)  # type: ignore[name-defined]  # noqa: F821
    except Exception:
        pass
    if NAME not in sys.modules:  # the last resort: the plain import
        __import__(NAME).start()
