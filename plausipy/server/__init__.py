"""The plausipy collector: ingest, deletion, portal and dashboard.

Installed with ``pip install 'plausipy[server]'`` and run with
``plausipy server run``. Nothing here is imported by the client side: the
package is a separate subsystem that only shares the wire schema (DESIGN.md
§4–§5). Importing it is free; the web stack loads on first use::

    from plausipy.server import create_app
    app = create_app("sqlite:////tmp/collector.sqlite3")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plausipy.server._app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from plausipy.server._app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
