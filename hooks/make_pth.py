"""Write hooks/plausipy.pth, the line ``site`` runs in every process (DESIGN.md §3).

A .pth line must be one statement starting with ``import``. ``site``
compiles it at every start (twice in a venv, for the same directory),
and compiling costs thousands of instructions a token, so the line itself
only picks which of two strings to exec: a second compile, whatever the
string holds, costs about 0.2 M instructions, and the strings are compiled
only when they run. ``sitedir`` is the directory site.addpackage() is
reading; the sys.modules test stops the second pass.

- Where _plausipy_hook/__pycache__ exists (pip compiles at install):
  WITH_PYC, the import inside ``try``. Without that guard a corrupt .pyc
  would print "Error processing line" in every Python process of the
  environment.
- Where it does not: WITHOUT_PYC, which execs _plausipy_hook/_without_pyc.py
  (that file explains why), and where plausipy is not in ``sitedir`` at all
  (an editable install puts a path there instead, or an uninstall left the
  .pth behind), the plain import, guarded the same way.

Measured with callgrind on 3.10, 3.12 and 3.13 against the line before (a
``try`` in a string that held the other string): +0.00 to +0.03 M
instructions with .pyc files, 0.15 to 0.19 M fewer without.

    python hooks/make_pth.py          # rewrite hooks/plausipy.pth
    python hooks/make_pth.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

WITH_PYC = """\
try:
 __import__('_plausipy_hook').start()
except Exception:
 pass"""

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
    return (f"import os, sys; '_plausipy_hook' in sys.modules or exec({WITH_PYC!r}"
            f" if os.path.isdir(sitedir + '/_plausipy_hook/__pycache__') else {WITHOUT_PYC!r})\n")


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
