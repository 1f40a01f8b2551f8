"""The user's choices: what may be collected, for which package, how linked (DESIGN.md §6).

The policy file is a small, human-readable TOML file that the CLI and the
dialog change and the exit hook reads::

    [global]
    consent = "ask"        # ask | allow | deny
    scope = "package"      # the widest ID scope granted: user | package | anonymous
    asked_at = 0           # when the dialog was last answered "Not now" (Unix time)

    [share]
    runtime = true         # duration, peak memory, exit code
    system = true          # OS, architecture, Python version
    location = true        # country, region, time zone (from the clock, never the IP)
    properties = true      # custom properties set by the package

    [packages]
    "acmelib" = "allow anonymous"
    "noisy-tool" = "deny"

It is read at exit in the host, where ``tomllib`` (3.11+) is not everywhere
and costs more than this file is worth, so :func:`parse_policy` reads the
subset written by :func:`render_policy`. A file that cannot be read or
parsed gives the defaults (ask, collect nothing) and a ``problem`` that
``plausipy status`` shows; it is never an error in the user's program.
"""

import os

from plausipy._host import CATEGORIES, SCOPES, Decision, PolicyRules, check_scope, normalize_name, policy_file

__all__ = ["Decision", "Policy", "PolicyError", "load_policy", "normalize_name", "save_policy"]

CONSENTS = ("ask", "allow", "deny")
NOT_NOW_INTERVAL = 24 * 3600


class PolicyError(ValueError):
    """The policy file or a requested change is not valid."""


class Policy(PolicyRules):
    """Global consent, granted scope, shared categories and per-package rules, and the means to change them."""

    def __init__(
        self,
        consent: str = "ask",
        scope: str = "package",
        *,
        share: "dict[str, bool] | None" = None,
        packages: "dict[str, tuple[str, str | None]] | None" = None,
        asked_at: float = 0.0,
        problem: "str | None" = None,
    ) -> None:
        super().__init__(consent, scope, share=share, packages=packages)
        self.asked_at = asked_at
        self.problem = problem

    def may_ask_now(self, now: float) -> bool:
        """False for a day after "Not now", so the dialog asks at most once a day."""
        return now - self.asked_at >= NOT_NOW_INTERVAL

    def allow(self, packages: "tuple[str, ...]" = (), scope: "str | None" = None) -> None:
        """Allow globally, or only for ``packages``; ``scope`` narrows the IDs."""
        if scope is not None:
            check_scope(scope)
        if packages:
            for name in packages:
                self.packages[normalize_name(name)] = ("allow", scope)
        else:
            self.consent = "allow"
            if scope is not None:
                self.scope = scope

    def deny(self, packages: "tuple[str, ...]" = ()) -> None:
        """Deny globally, or only for ``packages``."""
        if packages:
            for name in packages:
                self.packages[normalize_name(name)] = ("deny", None)
        else:
            self.consent = "deny"

    def ask(self, packages: "tuple[str, ...]" = ()) -> None:
        """Back to asking globally, or drop the rules of ``packages``."""
        if packages:
            for name in packages:
                self.packages.pop(normalize_name(name), None)
        else:
            self.consent = "ask"
            self.asked_at = 0.0

    def set_share(self, category: str, on: bool) -> None:
        """Share a category of fields, or stop sharing it."""
        if category not in CATEGORIES:
            raise PolicyError(f"unknown category {category!r}; choose from {', '.join(CATEGORIES)}")
        self.share[category] = on

    def to_dict(self) -> "dict[str, object]":
        """A JSON-ready view, for ``plausipy policy show --json``."""
        return {
            "consent": self.consent,
            "scope": self.scope,
            "share": dict(self.share),
            "packages": {
                name: {"action": action, "scope": scope} for name, (action, scope) in sorted(self.packages.items())
            },
            "asked_at": self.asked_at,
            "problem": self.problem,
        }


# -- the file --------------------------------------------------------------------------


def _parse_value(text: str, where: str) -> object:
    text = text.strip()
    if text.startswith('"'):
        end = text.find('"', 1)
        if end < 0 or text[end + 1 :].strip():
            raise PolicyError(f"{where}: unterminated or trailing text after string")
        return text[1:end]
    if text in ("true", "false"):
        return text == "true"
    try:
        return float(text) if "." in text or "e" in text else int(text)
    except ValueError:
        raise PolicyError(f"{where}: cannot read value {text!r}") from None


def _strip_comment(line: str) -> str:
    in_string = False
    for index, char in enumerate(line):
        if char == '"':
            in_string = not in_string
        elif char == "#" and not in_string:
            return line[:index]
    return line


def parse_policy(text: str) -> "Policy":
    """Read a policy file's text; raises PolicyError naming the line that is wrong."""
    sections: "dict[str, dict[str, object]]" = {"global": {}, "share": {}, "packages": {}}
    current: "dict[str, object] | None" = None
    for number, raw_line in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw_line).strip()
        if not line:
            continue
        where = f"line {number}"
        if line.startswith("["):
            name = line.strip("[]").strip()
            if name not in sections:
                raise PolicyError(f"{where}: unknown section [{name}]")
            current = sections[name]
            continue
        if current is None or "=" not in line:
            raise PolicyError(f"{where}: expected `key = value` inside a section")
        key_text, _, value_text = line.partition("=")
        key = key_text.strip().strip('"')
        if not key:
            raise PolicyError(f"{where}: empty key")
        current[key] = _parse_value(value_text, where)
    return _policy_from_sections(sections)


def _policy_from_sections(sections: "dict[str, dict[str, object]]") -> "Policy":
    policy = Policy()
    consent = sections["global"].get("consent", "ask")
    if consent not in CONSENTS:
        raise PolicyError(f"consent must be one of {', '.join(CONSENTS)}, got {consent!r}")
    scope = sections["global"].get("scope", "package")
    if scope not in SCOPES:
        raise PolicyError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    asked_at = sections["global"].get("asked_at", 0)
    if not isinstance(asked_at, (int, float)) or isinstance(asked_at, bool):
        raise PolicyError("asked_at must be a number")
    policy.consent, policy.scope, policy.asked_at = str(consent), str(scope), float(asked_at)
    for category, value in sections["share"].items():
        if category not in CATEGORIES or not isinstance(value, bool):
            raise PolicyError(f"[share] {category} must be a known category set to true or false")
        policy.share[category] = value
    for name, rule in sections["packages"].items():
        policy.packages[normalize_name(name)] = _parse_rule(name, rule)
    return policy


def _parse_rule(name: str, rule: object) -> "tuple[str, str | None]":
    words = str(rule).split() if isinstance(rule, str) else []
    if words == ["deny"]:
        return ("deny", None)
    if words[:1] == ["allow"] and len(words) <= 2 and (len(words) == 1 or words[1] in SCOPES):
        return ("allow", words[1] if len(words) == 2 else None)
    raise PolicyError(f'[packages] "{name}" must be "allow", "allow <scope>" or "deny", got {rule!r}')


def render_policy(policy: "Policy") -> str:
    """The policy as the file text that :func:`parse_policy` reads back."""
    lines = [
        "# plausipy policy: what may be collected on this machine.",
        "# Change it with `plausipy policy …` (see `plausipy policy --help`).",
        "",
        "[global]",
        f'consent = "{policy.consent}"        # ask | allow | deny',
        f'scope = "{policy.scope}"      # widest ID scope granted: user | package | anonymous',
        f"asked_at = {int(policy.asked_at)}        # last time the dialog was answered 'Not now'",
        "",
        "[share]",
    ]
    lines += [f"{name} = {'true' if policy.share.get(name, True) else 'false'}" for name in CATEGORIES]
    lines += ["", "[packages]"]
    for name, (action, scope) in sorted(policy.packages.items()):
        lines.append(f'"{name}" = "{action}{" " + scope if scope else ""}"')
    return "\n".join(lines) + "\n"


def load_policy(path: "str | None" = None) -> "Policy":
    """The policy on disk; defaults (ask) with ``problem`` set if it is missing or broken."""
    path = path or policy_file()
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return Policy()
    except (OSError, UnicodeDecodeError) as exc:
        return Policy(problem=f"policy file {path} unreadable ({exc}); using defaults (ask)")
    try:
        return parse_policy(text)
    except PolicyError as exc:
        return Policy(problem=f"policy file {path} is invalid ({exc}); using defaults (ask)")


def save_policy(policy: "Policy", path: "str | None" = None) -> str:
    """Write the policy atomically (temp file + rename) and return its path."""
    path = path or policy_file()
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".policy-{os.getpid()}-{os.urandom(4).hex()}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(render_policy(policy))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return path
