# Run by plausipy.pth (exec'd, not imported) where _plausipy_hook has no
# __pycache__: pip --no-compile, images stripped of .pyc files,
# PYTHONDONTWRITEBYTECODE with a read-only site-packages.
#
# Importing the bootstrap from source would call compile(), and the first
# compile() of a process builds the ast module's ~120 classes (3 ms on 3.12)
# before compiling the bootstrap (2.5 ms). exec() of this file's bytes builds
# none, and it compiles in a fraction of that: it reads the bootstrap's code
# from plausipy's cache dir (_plausipy_hook.cache_dir(), held together
# by a test) and execs it, if this user wrote the file. Otherwise
# _cache_start.py compiles, starts and caches it. It runs at every such
# start, so it stays small (comments cost nothing). ``sitedir`` is given.
import os
import sys

p = None
try:
    e = os.environ._data  # POSIX: the bytes dict behind os.environ
    h = e.get(b"PLAUSIPY_HOME")
    p = (
        os.path.abspath(os.fsdecode(h)) + "/cache" if h
        else os.fsdecode(e[b"HOME"]) + "/Library/Caches/plausipy" if sys.platform == "darwin"
        else os.fsdecode(e.get(b"XDG_CACHE_HOME", b"").strip() or e[b"HOME"] + b"/.cache") + "/plausipy"
    ) + "/start-%d%d-%016x.marshal" % (
        *sys.version_info[:2], int.from_bytes(sys.prefix.encode("utf-8", "surrogateescape"), "little") % 0x1FFFFFFFFFFFFFFF)
    f = os.open(p, os.O_RDONLY)
    d = os.read(f, 1 << 20) if os.fstat(f).st_uid == os.getuid() else b""  # b"": not this user's
    os.close(f)  # before anything here can raise
    c = __import__("marshal").loads(d)
    exec(c[0], {"sitedir": sitedir, "cached": c[1]})  # noqa: F821
except Exception:
    exec("""
with open(sitedir + "/_plausipy_hook/_cache_start.py", "rb") as f:
    exec(f.read(), {"__name__": "plausipy.pth", "sitedir": sitedir, "path": p})
""")
