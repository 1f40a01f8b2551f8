"""Write hooks/plausipy.pth, the line ``site`` runs in every process (DESIGN.md §3).

A .pth line must be one statement starting with ``import``, so the readable
code below goes into it as a string for ``exec``. ``site`` compiles the whole
line at every start, so it holds only the path taken where plausipy's .pyc
files exist (pip compiles them at install): import the bootstrap, inside a
guard that keeps a broken install from printing "Error processing line" at
every start. ``sitedir`` is the directory site.addpackage() is reading.

Where _plausipy_hook has no __pycache__, the line execs
_plausipy_hook/_without_pyc.py instead (the nested string is compiled
only then); that file explains why. Where plausipy is not in ``sitedir`` at
all (an editable install puts a path there instead), the plain import.

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

BODY = f"""\
try:
 os.stat(sitedir + '/_plausipy_hook/__pycache__')
 __import__('_plausipy_hook').start()
except Exception:
 exec({WITHOUT_PYC!r})"""


def line() -> str:
    return f"import sys, os; '_plausipy_hook' in sys.modules or exec({BODY!r})\n"


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
