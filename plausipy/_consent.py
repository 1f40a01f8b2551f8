"""When and whether to ask: the rules around the consent dialog (DESIGN.md §1, §7).

Only a real terminal is ever asked, never CI, never a child of an
instrumented process, never twice in one process. The dialog itself is
:mod:`plausipy._dialog`; this module decides whether it may appear and turns
its answer into policy.
"""

from __future__ import annotations

import os
import sys

__all__ = ["can_ask", "in_ci", "resolve"]

#: Environment variables that CI services set (``CI`` covers most of them).
CI_VARIABLES = (
    "CI", "CONTINUOUS_INTEGRATION", "BUILD_NUMBER", "RUN_ID", "GITHUB_ACTIONS", "GITLAB_CI",
    "TF_BUILD", "JENKINS_URL", "BUILDKITE", "CIRCLECI", "TRAVIS", "APPVEYOR", "TEAMCITY_VERSION",
    "CODEBUILD_BUILD_ID", "DRONE", "BITBUCKET_BUILD_NUMBER", "HEROKU_TEST_RUN_ID",
)  # fmt: skip

_asked_in_this_process = False


def in_ci() -> bool:
    """True when a CI service runs this process: never ask there."""
    return any(os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no") for name in CI_VARIABLES)


def _is_terminal(stream: object) -> bool:
    try:
        return bool(stream is not None and stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):
        return False


def can_ask() -> tuple[bool, str]:
    """Whether the dialog may appear now, and why not when it may not."""
    if _asked_in_this_process:
        return False, "already asked in this process"
    if in_ci():
        return False, "running under CI"
    if os.environ.get("PLAUSIPY_NO_DIALOG"):
        return False, "PLAUSIPY_NO_DIALOG is set"
    if not (_is_terminal(sys.stdin) and _is_terminal(sys.stdout)) and not _controlling_terminal_opens():
        return False, "no terminal: stdin and stdout are not one and /dev/tty does not open"
    return True, ""


def _controlling_terminal_opens() -> bool:
    # `prog < file`, `prog | less`: the person is still at the terminal, so the dialog uses /dev/tty.
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | getattr(os, "O_NOCTTY", 0)))
    except OSError:
        return False
    return True


def resolve(registrations: list, *, at_exit: bool, exit_code: int | None = None) -> None:
    """Ask about the undecided ``registrations`` if a dialog may appear; else do nothing.

    "Ask" with no terminal means: nothing is collected, nothing blocks.
    """
    global _asked_in_this_process
    from plausipy._policy import load_policy

    policy = load_policy()
    undecided = [r for r in registrations if policy.decide(r.package, r.scope).action == "ask"]
    if not undecided:
        return
    allowed, _why = can_ask()
    if not allowed:
        return
    import time

    if not policy.may_ask_now(time.time()):
        return
    try:
        from plausipy import _dialog
    except ImportError:
        return  # no dialog in this build: "ask" stays "nothing collected"
    _asked_in_this_process = True
    _dialog.ask(undecided, at_exit=at_exit, exit_code=exit_code)
