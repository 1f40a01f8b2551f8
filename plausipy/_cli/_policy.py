"""``plausipy policy``: what may be collected, globally and per package."""

from __future__ import annotations

import click

from plausipy._cli._common import echo_json, echo_table, style
from plausipy._policy import Policy, PolicyError, load_policy, save_policy
from plausipy._record import CATEGORIES, SCOPES

__all__ = ["policy"]

_CATEGORY_HELP = {
    "runtime": "duration, peak memory, exit code",
    "system": "OS, architecture, Python version and implementation",
    "location": "country, region and time zone, from the clock (never the IP)",
    "properties": "custom properties a package sets",
}


@click.group()
def policy() -> None:
    """Show or change what may be collected on this machine.

    Per-package rules win over the global choice. Scopes, widest first:
    user (one ID for all packages), package (one ID per package),
    anonymous (a new random ID every run).
    """


def _load_for_change() -> Policy:
    current = load_policy()
    if current.problem:
        click.echo(style(f"warning: {current.problem}; it will be replaced", fg="yellow"), err=True)
    return current


def _save(current: Policy, message: str) -> None:
    try:
        path = save_policy(current)
    except OSError as exc:
        raise click.ClickException(f"could not write the policy: {exc}") from exc
    click.echo(f"{message} (saved to {path})")


@policy.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def show(as_json: bool) -> None:
    """Show the global choice, the granted scope, shared categories and package rules."""
    current = load_policy()
    if as_json:
        echo_json(current.to_dict())
        return
    if current.problem:
        click.echo(style(f"warning: {current.problem}", fg="yellow"))
    consent_colour = {"allow": "green", "deny": "red", "ask": "yellow"}[current.consent]
    click.echo(f"consent: {style(current.consent, fg=consent_colour, bold=True)}")
    click.echo(f"scope:   {current.scope}")
    click.echo("shared:")
    for name in CATEGORIES:
        state = "on " if current.share.get(name, True) else "off"
        click.echo(f"  {name:<11} {state}  {_CATEGORY_HELP[name]}")
    if current.packages:
        click.echo("package rules:")
        echo_table(
            ["package", "rule", "scope"],
            [[name, action, scope or ("-" if action == "deny" else f"(global: {current.scope})")] for name, (action, scope) in sorted(current.packages.items())],
        )
    else:
        click.echo("package rules: none")


@policy.command("allow")
@click.argument("packages", nargs=-1)
@click.option("--scope", type=click.Choice(SCOPES), help="Widest ID scope to grant (default: keep the current one).")
def allow(packages: tuple[str, ...], scope: str | None) -> None:
    """Allow collection, globally or for the PACKAGES named."""
    current = _load_for_change()
    current.allow(packages, scope)
    _save(current, f"allowed {', '.join(packages) if packages else 'globally'}" + (f" with scope {scope}" if scope else ""))


@policy.command("deny")
@click.argument("packages", nargs=-1)
def deny(packages: tuple[str, ...]) -> None:
    """Deny collection, globally or for the PACKAGES named."""
    current = _load_for_change()
    current.deny(packages)
    _save(current, f"denied {', '.join(packages) if packages else 'globally'}")


@policy.command("ask")
@click.argument("packages", nargs=-1)
def ask(packages: tuple[str, ...]) -> None:
    """Go back to asking (globally), or drop the rules of the PACKAGES named."""
    current = _load_for_change()
    current.ask(packages)
    _save(current, f"dropped the rules of {', '.join(packages)}" if packages else "back to asking")


@policy.command("share")
@click.argument("category", type=click.Choice(list(CATEGORIES)))
@click.argument("state", type=click.Choice(["on", "off"]))
def share(category: str, state: str) -> None:
    """Share a CATEGORY of fields (on) or send it as null (off).

    \b
    runtime     duration, peak memory, exit code
    system      OS, architecture, Python version
    location    country, region, time zone (from the clock)
    properties  custom properties
    """
    current = _load_for_change()
    try:
        current.set_share(category, state == "on")
    except PolicyError as exc:
        raise click.BadParameter(str(exc)) from exc
    _save(current, f"{category}: {state}")


# `policy reset-id` offers deletion first, so it lives beside `data delete` (plausipy._cli._delete).
from plausipy._cli._delete import reset_id as _reset_id  # noqa: E402

policy.add_command(_reset_id)
