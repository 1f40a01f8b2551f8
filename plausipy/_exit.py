"""What happens at exit when something registered (DESIGN.md §1).

policy ─► (dialog, if it may ask) ─► one raw record per allowed package ─►
one spool file ─► one detached sender, unless one runs already. The host
never waits for the network, and the bootstrap's exit trampoline catches
everything, so nothing here can change the program's exit.
"""

import sys

from plausipy import _bootstrap, _registry

TYPE_CHECKING = False
if TYPE_CHECKING:
    from plausipy._policy import Policy

__all__ = ["build_records", "run_exit_hook"]


def build_records(exit_code: "int | None", policy: "Policy | None" = None) -> "list[dict[str, object]]":
    """The raw records this process reports, as ``policy`` (default: the one on disk) says."""
    from plausipy._policy import load_policy
    from plausipy._record import DEFAULT_ENDPOINT, build_raw_record

    policy = policy or load_policy()
    categories = policy.shared_categories()
    records = []
    for registration in _registry.registrations():
        decision = policy.decide(registration.package, registration.scope)
        if decision.action != "allow" or decision.scope is None:
            if _bootstrap.env_flag("PLAUSIPY_DEBUG"):
                sys.stderr.write(f"plausipy: not reporting {registration.package}: {decision.action} ({decision.reason})\n")
            continue
        records.append(
            build_raw_record(
                package=registration.package,
                version=registration.version,
                role=registration.role,
                key=registration.key,
                endpoint=registration.endpoint or DEFAULT_ENDPOINT,
                scope=decision.scope,
                categories=categories,
                started=registration.started,
                exit_code=exit_code,
                props=registration.props if "properties" in categories else {},
            )
        )
    return records


def run_exit_hook() -> None:
    """Report this process's run, if anything registered and the policy allows it."""
    if not _registry.is_active():
        return
    registrations = _registry.registrations()
    if not registrations:
        return
    from plausipy import _exitcode

    exit_code = _exitcode.exit_code()
    from plausipy._policy import load_policy

    policy = load_policy()
    if any(policy.decide(r.package, r.scope).action == "ask" for r in registrations):
        # Only an undecided package can bring up the dialog; it may change the policy.
        from plausipy import _consent

        _consent.resolve(registrations, at_exit=True, exit_code=exit_code)
        policy = load_policy()
    records = build_records(exit_code, policy)
    if not records:
        return
    if _bootstrap.env_flag("PLAUSIPY_DEBUG"):
        _show_records(records)
    from plausipy import _spawn, _spool

    _spool.write_spool(records)
    _spawn.spawn_sender_unless_running()


def _show_records(records: "list[dict[str, object]]") -> None:
    # Debug only: json and hashlib are fine here, the user asked to see everything.
    import json

    from plausipy._record import finalize_record

    for raw in records:
        try:
            from plausipy._identity import load_or_create_secret

            wire = finalize_record(raw, load_or_create_secret())
        except Exception as exc:  # show the raw facts rather than nothing
            wire = {"raw": {k: v for k, v in raw.items() if k != "key"}, "error": str(exc)}
        sys.stderr.write(f"plausipy: queued for {raw['endpoint']}:\n{json.dumps(wire, indent=2, default=str)}\n")
