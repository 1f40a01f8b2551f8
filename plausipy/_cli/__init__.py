"""The ``plausipy`` command: a thin layer over the library (STYLE.md §10).

Each subcommand lives in its own module and is imported only when it runs,
so ``plausipy --help`` stays fast and ``plausipy server …`` without the
``server`` extra prints the install command instead of a traceback.
"""

from __future__ import annotations

import importlib

import click

__all__ = ["main"]

# command name -> (module, attribute, one-line help shown by `plausipy --help`)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "status": ("plausipy._cli._status", "status", "Show whether plausipy is active here and what it holds."),
    "policy": ("plausipy._cli._policy", "policy", "Show or change what may be collected."),
    "data": ("plausipy._cli._data", "data", "List, show, export or delete your records."),
    "flush": ("plausipy._cli._flush", "flush", "Deliver queued records now, in the foreground."),
    "doctor": ("plausipy._cli._doctor", "doctor", "Check that the hook works and say what is wrong."),
    "server": ("plausipy.server._cli", "server", "Run and administer a collector (needs plausipy[server])."),
    "demo": ("plausipy.server._demo", "demo", "Run the end-to-end demo on a local collector (needs plausipy[server])."),
}

_NEEDS_SERVER_EXTRA = {"server", "demo"}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = _COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attribute, short_help = entry
        if cmd_name in _NEEDS_SERVER_EXTRA:
            missing = _missing_server_dependency()
            if missing:
                return _missing_extra_command(cmd_name, short_help, missing)
        return getattr(importlib.import_module(module_name), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text from the table, so `plausipy --help` imports no subcommand.
        rows = [(name, _COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


#: What `pip install 'plausipy[server]'` brings that the server cannot start without.
_SERVER_MODULES = ("fastapi", "uvicorn", "jinja2", "argon2", "multipart")


def _missing_server_dependency() -> str | None:
    import importlib.util

    for name in _SERVER_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):
            return name
    return None


def _missing_extra_command(name: str, short_help: str, missing: str) -> click.Command:
    @click.command(name=name, help=short_help, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def missing(args: tuple[str, ...]) -> None:
        raise click.ClickException(
            f"`plausipy {name}` needs the collector's dependencies ({missing} is not installed).\n"
            "Install them with:  pip install 'plausipy[server]'"
        )

    return missing


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="plausipy", prog_name="plausipy")
def main() -> None:
    """Privacy-first usage analytics for Python packages.

    Everything plausipy collects on this machine is yours to see, change and
    delete: start with `plausipy status` and `plausipy data list`.
    """
