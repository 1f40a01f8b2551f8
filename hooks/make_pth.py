"""Write hooks/plausipy.pth, the line ``site`` runs in every process (DESIGN.md §3).

A .pth line must be one statement starting with ``import``. ``site``
compiles it at every start (twice in a venv, where lib64 is a link to lib),
and compiling costs thousands of instructions a token, so the line holds
only the path taken where plausipy's .pyc files exist (pip compiles them at
install): a test for _plausipy_hook/__pycache__, then the import. That path
cannot raise short of a corrupt install (the bootstrap's module code only
binds names, and start() catches everything), so it needs no ``try``,
which would cost a second compile. ``sitedir`` is the directory
site.addpackage() is reading.

Everything else is in a string, compiled only when it runs, and only once
(the sys.modules test stops the second pass): where _plausipy_hook has no
__pycache__, it execs _plausipy_hook/_without_pyc.py (that file explains
why); where plausipy is not in ``sitedir`` at all (an editable install puts
a path there instead, or an uninstall left the .pth behind), the plain
import, inside a guard that keeps "Error processing line" off the program's
stderr. Against the line it replaces (a ``try`` in a string, compiled at
every start), callgrind counts 0.07 M instructions fewer on 3.12 either way.

    python hooks/make_pth.py          # rewrite hooks/plausipy.pth
    python hooks/make_pth.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

WITHOUT_PYC = """\
try:
 with open(sitedir + '/_plausipy_hook/_without_pyc.py', 'rb') as f:
  exec(f.read(), {'sitedir': sitedir})
except Exception:
 try:
  __import__('_plausipy_hook').start()
 except Exception:
  pass"""


def line() -> str:
    # start() returns None: ``not`` keeps the ``or`` branches for a missing __pycache__.
    return ("import os, sys; os.path.isdir(sitedir + '/_plausipy_hook/__pycache__')"
            " and not __import__('_plausipy_hook').start()"
            f" or '_plausipy_hook' in sys.modules or exec({WITHOUT_PYC!r})\n")


def main(argv: list[str]) -> int:
    target = Path(__file__).with_name("plausipy.pth")
    wanted = line()
    if "--check" in argv:
        if target.read_text(encoding="utf-8") != wanted:
            print(f"{target} is out of date: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    target.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
