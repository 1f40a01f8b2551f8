"""The consent dialog: one box, drawn inline below the program's output.

    ┌ plausipy · usage statistics ──────────────────────────┐
    │ These would like to report how they are used:          │
    │   acme-cli 1.0 (app, package scope)                    │
    │   acmelib 2.1 (library, package scope)                 │
    │ ...what is sent, in plain words...                     │
    │ [y] Allow  [a] Anonymous only  [n] Deny  [l] Not now   │
    │ [d] Details                                            │
    └────────────────────────────────────────────────────────┘

:func:`ask` is the only entry point; :mod:`plausipy._consent` decides
whether it may run at all. The answer is saved in the policy
(:mod:`plausipy._policy`), the same object ``plausipy policy`` changes:

* Allow (``y``): global consent, the widest scope any listed package asked for.
* Anonymous only (``a``): global consent with the anonymous scope.
* Deny (``n``): global refusal.
* Not now (``l``, Esc, Ctrl-C, a closed terminal, 60 s idle at exit): ask
  again at most once a day.
* Details (``d``): prints, above the box, the exact record each package would send.

The terminal is the process's own (stdin and stdout) or, when those are
pipes or files, ``/dev/tty``. Keys are read here rather than with blessed's
``inkey``, because blessed reads keys only from ``sys.stdin`` and probes the
terminal with queries that a silent terminal answers after seconds; blessed
supplies the size and the styles (and honours ``NO_COLOR``). Cursor moves use
plain ECMA-48 sequences, so redrawing works with ``NO_COLOR`` too. Ctrl-C is
read as a key (``ISIG`` off), so the program's own SIGINT handling is never
touched, and the saved terminal mode is restored on every path.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence

__all__ = ["CHOICES", "EXIT_TIMEOUT_SECONDS", "ask"]

#: (answer, hotkey, label), in the order the box shows them.
CHOICES: tuple[tuple[str, str, str], ...] = (
    ("allow", "y", "Allow"),
    ("anonymous", "a", "Anonymous only"),
    ("deny", "n", "Deny"),
    ("later", "l", "Not now"),
    ("details", "d", "Details"),
)
#: The highlight starts here, so a stray Enter changes nothing.
START_CHOICE = 3
#: At exit nobody may be watching: this long without a key counts as Not now.
EXIT_TIMEOUT_SECONDS = 60.0
#: Widest box drawn, even on a wide terminal.
MAX_BOX_WIDTH = 78
#: Narrowest box drawn; a narrower terminal wraps it (still usable).
MIN_BOX_WIDTH = 30

_ESCAPE_WAIT_SECONDS = 0.05
_POLL_SECONDS = 0.25
_CSI = "\x1b["
_HIDE_CURSOR = "\x1b[?25l"
_SHOW_CURSOR = "\x1b[?25h"
_RESET_STYLE = "\x1b[0m"


# -- the terminal ----------------------------------------------------------------------------


class _Tty:
    """The terminal the dialog talks to: input fd, output fd, and the mode to restore."""

    def __init__(self, input_fd: int, output_fd: int, owned_fd: int | None) -> None:
        self.input_fd, self.output_fd, self.owned_fd = input_fd, output_fd, owned_fd
        self.saved_mode: list | None = None
        self.at_eof = False

    @classmethod
    def open(cls) -> _Tty:
        """The process's terminal when stdin and stdout are one, else ``/dev/tty``; OSError if none."""
        try:
            if sys.stdin.isatty() and sys.stdout.isatty():
                return cls(sys.stdin.fileno(), sys.stdout.fileno(), None)
        except (AttributeError, ValueError, OSError):
            pass
        descriptor = os.open("/dev/tty", os.O_RDWR | getattr(os, "O_NOCTTY", 0))
        return cls(descriptor, descriptor, descriptor)

    def enter_key_mode(self) -> None:
        """Keys one at a time, no echo, Ctrl-C and Ctrl-S as plain keys; output untouched."""
        import termios

        self.saved_mode = termios.tcgetattr(self.input_fd)
        mode = termios.tcgetattr(self.input_fd)
        mode[0] &= ~(termios.IXON | termios.ICRNL)  # iflag
        mode[3] &= ~(termios.ICANON | termios.ECHO | termios.ISIG | termios.IEXTEN)  # lflag
        mode[6][termios.VMIN] = 1
        mode[6][termios.VTIME] = 0
        termios.tcsetattr(self.input_fd, termios.TCSANOW, mode)

    def restore(self) -> None:
        """Put the terminal back exactly as it was; never raises."""
        try:
            self.write(_RESET_STYLE + _SHOW_CURSOR)
        except OSError:
            pass
        if self.saved_mode is not None:
            try:
                import termios

                termios.tcsetattr(self.input_fd, termios.TCSADRAIN, self.saved_mode)
            except (OSError, ValueError):
                pass
        if self.owned_fd is not None:
            try:
                os.close(self.owned_fd)
            except OSError:
                pass

    def write(self, text: str) -> None:
        """Write all of ``text`` (UTF-8) to the terminal."""
        data = text.encode("utf-8", "replace")
        while data:
            written = os.write(self.output_fd, data)
            data = data[written:]

    def read_bytes(self, timeout: float) -> bytes | None:
        """Bytes typed within ``timeout`` seconds, None if none, b"" when the terminal is gone."""
        import select

        try:
            ready, _, _ = select.select([self.input_fd], [], [], max(0.0, timeout))
            if not ready:
                return None
            data = os.read(self.input_fd, 64)
        except InterruptedError:
            return None
        except OSError:  # EIO: the terminal hung up
            data = b""
        if not data:
            self.at_eof = True
        return data


# -- keys ------------------------------------------------------------------------------------

_SEQUENCES = {
    "\x1b[A": "up", "\x1b[B": "down", "\x1b[C": "right", "\x1b[D": "left",
    "\x1bOA": "up", "\x1bOB": "down", "\x1bOC": "right", "\x1bOD": "left",
}  # fmt: skip
_SINGLE = {"\r": "enter", "\n": "enter", "\x03": "interrupt", "\x04": "eof", "\x1b": "escape", "\t": "right"}


def split_keys(text: str) -> tuple[list[str], str]:
    """Decode typed text into key names; return them and an unfinished escape sequence.

    >>> split_keys("y\\x1b[Cz\\x1b[")
    (['y', 'right', 'z'], '\\x1b[')
    """
    keys: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char != "\x1b":
            keys.append(_SINGLE.get(char, char.lower()))
            index += 1
            continue
        end = _escape_sequence_end(text, index)
        if end is None:
            return keys, text[index:]
        sequence = text[index:end]
        keys.append(_SEQUENCES.get(sequence, "escape" if sequence == "\x1b" else "unknown"))
        index = end
    return keys, ""


def _escape_sequence_end(text: str, start: int) -> int | None:
    """Where the escape sequence at ``start`` ends, or None if more bytes are needed."""
    if start + 1 >= len(text):
        return None
    second = text[start + 1]
    if second == "[":  # CSI: parameters and intermediates, then one final byte
        for index in range(start + 2, len(text)):
            if "\x40" <= text[index] <= "\x7e":
                return index + 1
        return None
    if second == "O":  # SS3: one more character
        return start + 3 if start + 2 < len(text) else None
    if second == "\x1b":
        return start + 1  # Esc pressed twice: the first one stands alone
    return start + 2  # Alt+key: not ours, swallowed as one unknown key


class _KeyReader:
    """Key names from the terminal: ``y``, ``left``, ``enter``, ``escape``, ``eof``, ``unknown``…"""

    def __init__(self, tty: _Tty) -> None:
        self.tty = tty
        self.pending: list[str] = []
        self.partial = ""

    def next_key(self, timeout: float) -> str | None:
        """The next key, or None when nothing was typed within ``timeout`` seconds."""
        if self.pending:
            return self.pending.pop(0)
        data = self.tty.read_bytes(timeout)
        if data is None:
            return None
        if not data:
            return "eof"
        self._feed(data.decode("utf-8", "replace"))
        while self.partial:
            # A lone Esc, or the start of a sequence split across reads: wait a moment for the rest.
            more = self.tty.read_bytes(_ESCAPE_WAIT_SECONDS)
            if not more:
                text, self.partial = self.partial, ""
                self.pending.append("escape" if text == "\x1b" else "unknown")
                break
            self._feed(more.decode("utf-8", "replace"))
        return self.pending.pop(0) if self.pending else None

    def _feed(self, text: str) -> None:
        keys, self.partial = split_keys(self.partial + text)
        self.pending.extend(keys)


# -- what the box says ----------------------------------------------------------------------

_SCOPE_WORDS = {"user": "user scope", "package": "package scope", "anonymous": "anonymous"}
_HEADING = "These would like to report how they are used:"
_WHAT_IS_SENT = (
    "Sent once per run: run time, peak memory, exit code, OS, Python version, and "
    "country/region/time zone taken from your clock, never from your IP address."
)
_NOTHING_PERSONAL = "Nothing personal: no names, paths, host names, arguments or IP addresses."
_LOOK_LATER = "See everything sent: plausipy data list"


def describe_registration(registration: object) -> str:
    """One line of the package list: ``acmelib 2.1 (library, package scope)``."""
    role = "app" if getattr(registration, "role", "lib") == "app" else "library"
    scope = _SCOPE_WORDS.get(str(getattr(registration, "scope", "package")), "package scope")
    return f"{registration.package} {registration.version} ({role}, {scope})"  # type: ignore[attr-defined]


class _Glyphs:
    def __init__(self, unicode: bool) -> None:
        if unicode:
            self.top_left, self.top_right, self.bottom_left, self.bottom_right = "┌", "┐", "└", "┘"
            self.horizontal, self.vertical, self.dot, self.arrows = "─", "│", "·", "←/→"
        else:
            self.top_left = self.top_right = self.bottom_left = self.bottom_right = "+"
            self.horizontal, self.vertical, self.dot, self.arrows = "-", "|", "-", "<-/->"


class _Styles:
    """Styles from blessed; empty strings when blessed says no styling (``NO_COLOR``, dumb terminal)."""

    def __init__(self, term: object) -> None:
        styling = bool(getattr(term, "does_styling", False))
        self.title = str(term.bold) if styling else ""  # type: ignore[attr-defined]
        self.key = str(term.cyan) if styling else ""  # type: ignore[attr-defined]
        self.chosen = str(term.reverse) if styling else ""  # type: ignore[attr-defined]
        self.normal = str(term.normal) if styling else ""  # type: ignore[attr-defined]


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    import textwrap

    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent + "  ") or [""]


def _choice_cells(highlight: int, styles: _Styles) -> list[tuple[str, str]]:
    """Each choice as (plain text, styled text); the highlighted one is bracketed ``>…<``."""
    cells = []
    for index, (_answer, key, label) in enumerate(CHOICES):
        plain_inner = f"[{key}] {label}"
        styled_inner = f"[{styles.key}{key}{styles.normal}] {label}"
        if index == highlight:
            plain = f">{plain_inner}<"
            styled = f"{styles.chosen}>[{key}] {label}<{styles.normal}"
        else:
            plain, styled = f" {plain_inner} ", f" {styled_inner} "
        cells.append((plain, styled))
    return cells


def _pack_cells(cells: list[tuple[str, str]], width: int) -> list[tuple[str, str]]:
    """Lay the choice cells out in as few lines of ``width`` as they need."""
    lines: list[tuple[str, str]] = []
    plain_line, styled_line = "", ""
    for plain, styled in cells:
        if plain_line and len(plain_line) + len(plain) > width:
            lines.append((plain_line, styled_line))
            plain_line, styled_line = "", ""
        plain_line += plain
        styled_line += styled
    if plain_line:
        lines.append((plain_line, styled_line))
    return lines


def render_box(
    registrations: Sequence[object],
    *,
    highlight: int,
    columns: int,
    rows: int,
    styles: _Styles,
    glyphs: _Glyphs,
    at_exit: bool,
) -> list[str]:
    """The box as terminal lines, each at most ``columns - 1`` cells wide and at most ``rows - 1`` lines."""
    box_width = max(MIN_BOX_WIDTH, min(MAX_BOX_WIDTH, columns - 1))
    inner = box_width - 4
    hint = f"{glyphs.arrows} move {glyphs.dot} Enter chooses {glyphs.dot} Esc: Not now"
    if at_exit:
        hint += f" {glyphs.dot} Not now in {int(EXIT_TIMEOUT_SECONDS)} s"
    body: list[tuple[str, str]] = []
    text = [*_wrap(_WHAT_IS_SENT, inner), *_wrap(_NOTHING_PERSONAL, inner), *_wrap(_LOOK_LATER, inner)]
    choices = _pack_cells(_choice_cells(highlight, styles), inner)
    hints = _wrap(hint, inner)
    fixed = 2 + len(_wrap(_HEADING, inner)) + len(text) + len(choices) + len(hints)  # borders, heading, the rest
    package_lines = _package_lines(registrations, inner, room=max(1, rows - 1 - fixed))
    body += [(line, "") for line in _wrap(_HEADING, inner)]
    body += [(line, "") for line in package_lines]
    body += [(line, "") for line in text]
    body += choices
    body += [(line, "") for line in hints]
    title = " plausipy: usage statistics "
    top = (
        glyphs.top_left + glyphs.horizontal + styles.title + title + styles.normal
        + glyphs.horizontal * max(0, box_width - 3 - len(title)) + glyphs.top_right
    )  # fmt: skip
    lines = [top]
    for plain, styled in body:
        plain = plain[:inner]  # wrapping already fits; this only guards odd input
        shown = styled or plain
        lines.append(f"{glyphs.vertical} {shown}{' ' * (inner - len(plain))} {glyphs.vertical}")
    lines.append(glyphs.bottom_left + glyphs.horizontal * (box_width - 2) + glyphs.bottom_right)
    return lines


def _package_lines(registrations: Sequence[object], width: int, *, room: int) -> list[str]:
    lines: list[str] = []
    for shown, registration in enumerate(registrations):
        wrapped = _wrap(describe_registration(registration), width, indent="  ")
        left = len(registrations) - shown
        if len(lines) + len(wrapped) > room - (1 if left > 1 else 0):
            lines.append(f"  … and {left} more")
            break
        lines += wrapped
    return lines


# -- the exact records (Details) -------------------------------------------------------------


def preview_records(registrations: Sequence[object], *, exit_code: int | None) -> list[dict[str, object]]:
    """The wire records (DESIGN.md §4) each registration would send if the user allowed now."""
    from plausipy._record import DEFAULT_ENDPOINT
    from plausipy._policy import load_policy
    from plausipy._record import build_raw_record, finalize_record

    policy = load_policy()
    preview = _policy_after("allow", policy, registrations)
    categories = preview.shared_categories()
    secret = _secret()
    records = []
    for registration in registrations:
        decision = preview.decide(registration.package, registration.scope)  # type: ignore[attr-defined]
        raw = build_raw_record(
            package=registration.package,  # type: ignore[attr-defined]
            version=registration.version,  # type: ignore[attr-defined]
            role=registration.role,  # type: ignore[attr-defined]
            key=registration.key,  # type: ignore[attr-defined]
            endpoint=registration.endpoint or DEFAULT_ENDPOINT,  # type: ignore[attr-defined]
            scope=decision.scope or "anonymous",
            categories=categories,
            started=registration.started,  # type: ignore[attr-defined]
            exit_code=0 if exit_code is None else exit_code,
            props=dict(registration.props) if "properties" in categories else {},  # type: ignore[attr-defined]
        )
        record = finalize_record(raw, secret)
        record["_endpoint"] = raw["endpoint"]
        records.append(record)
    return records


def _secret() -> bytes:
    # The uid shown must be the one that would be sent, so the secret is made now if needed;
    # it stays on this machine either way.
    try:
        from plausipy._identity import load_or_create_secret

        return load_or_create_secret()
    except Exception:
        return os.urandom(32)


def _details_text(registrations: Sequence[object], *, at_exit: bool, exit_code: int | None) -> str:
    import json

    lines = []
    for record in preview_records(registrations, exit_code=exit_code):
        endpoint = record.pop("_endpoint")
        lines.append(f"plausipy: if you allow, {record['package']} sends exactly this to {endpoint}:")
        lines += json.dumps(record, indent=2).splitlines()
    if not at_exit:
        lines.append("(run time, peak memory and exit code are measured when the program ends)")
    lines.append("With Anonymous only, scope is 'anonymous' and uid is new every run.")
    return "\r\n".join(lines) + "\r\n"


# -- answers into policy ---------------------------------------------------------------------


def _policy_after(answer: str, policy: object, registrations: Sequence[object]) -> object:
    """``policy`` changed as ``answer`` says (the object is changed in place and returned)."""
    from plausipy._record import SCOPES

    if answer == "allow":
        # The box listed the scope each package asked for; Allow grants what was shown.
        asked = [str(getattr(r, "scope", "package")) for r in registrations]
        widest = min([SCOPES.index(policy.scope), *(SCOPES.index(s) for s in asked if s in SCOPES)])  # type: ignore[attr-defined]
        policy.allow(scope=SCOPES[widest])  # type: ignore[attr-defined]
    elif answer == "anonymous":
        policy.allow(scope="anonymous")  # type: ignore[attr-defined]
    elif answer == "deny":
        policy.deny()  # type: ignore[attr-defined]
    else:
        policy.asked_at = time.time()  # type: ignore[attr-defined]
    return policy


def save_answer(answer: str, registrations: Sequence[object]) -> None:
    """Store ``answer`` in the policy file (re-read first: another process may have changed it)."""
    from plausipy._policy import load_policy, save_policy

    save_policy(_policy_after(answer, load_policy(), registrations))  # type: ignore[arg-type]


_SUMMARIES = {
    "allow": "usage statistics allowed",
    "anonymous": "usage statistics allowed, anonymously",
    "deny": "usage statistics denied",
    "later": "not now; you will be asked again another day",
}


# -- the loop ------------------------------------------------------------------------------


class _Dialog:
    """One showing of the box: state, drawing and key handling."""

    def __init__(self, tty: _Tty, registrations: Sequence[object], *, at_exit: bool, exit_code: int | None) -> None:
        import blessed

        self.tty = tty
        self.registrations = registrations
        self.at_exit, self.exit_code = at_exit, exit_code
        stream = open(tty.output_fd, "w", closefd=False)  # noqa: SIM115 - closed in finish()
        self.stream = stream
        self.term = blessed.Terminal(stream=stream, force_styling=True)
        self.styles = _Styles(self.term)
        self.glyphs = _Glyphs(_terminal_speaks_utf8())
        self.highlight = START_CHOICE
        self.drawn = 0
        self.size = (0, 0)

    def run(self) -> str:
        """Show the box until an answer; return it."""
        keys = _KeyReader(self.tty)
        timeout = EXIT_TIMEOUT_SECONDS if self.at_exit else None
        last_key = time.monotonic()
        self.tty.write("\r\n" + _HIDE_CURSOR)
        self.draw()
        while True:
            wait = _POLL_SECONDS
            if timeout is not None:
                left = timeout - (time.monotonic() - last_key)
                if left <= 0:
                    return "later"
                wait = min(wait, left)
            key = keys.next_key(wait)
            if key is None:
                if self._current_size() != self.size:
                    self.draw()  # resized: lay the box out again
                continue
            last_key = time.monotonic()
            answer = self.handle(key)
            if answer is not None:
                return answer

    def handle(self, key: str) -> str | None:
        """React to one key; return an answer when the dialog is over."""
        if key in ("escape", "interrupt", "eof"):
            return "later"
        if key in ("left", "up"):
            self.highlight = (self.highlight - 1) % len(CHOICES)
        elif key in ("right", "down"):
            self.highlight = (self.highlight + 1) % len(CHOICES)
        elif key == "enter":
            return self.choose(CHOICES[self.highlight][0])
        else:
            for index, (answer, hotkey, _label) in enumerate(CHOICES):
                if key == hotkey:
                    self.highlight = index
                    return self.choose(answer)
            return None  # unknown keys and sequences are ignored
        self.draw()
        return None

    def choose(self, answer: str) -> str | None:
        if answer != "details":
            return answer
        self.erase()
        try:
            self.tty.write(_details_text(self.registrations, at_exit=self.at_exit, exit_code=self.exit_code))
        except Exception as exc:  # the box must go on even if the preview cannot be built
            self.tty.write(f"plausipy: cannot build the record preview ({type(exc).__name__}: {exc})\r\n")
        self.tty.write("\r\n")
        self.draw()
        return None

    def _current_size(self) -> tuple[int, int]:
        return (self.term.width or 80, self.term.height or 24)

    def erase(self) -> None:
        """Remove the box: back to its first line, clear to the end of the screen (never above)."""
        if self.drawn:
            up = f"{_CSI}{self.drawn - 1}A" if self.drawn > 1 else ""
            self.tty.write("\r" + up + f"{_CSI}J")
            self.drawn = 0

    def draw(self) -> None:
        self.size = self._current_size()
        columns, rows = self.size
        lines = render_box(
            self.registrations,
            highlight=self.highlight,
            columns=columns,
            rows=rows,
            styles=self.styles,
            glyphs=self.glyphs,
            at_exit=self.at_exit,
        )
        self.erase()
        self.tty.write("\r\n".join(lines))
        self.drawn = len(lines)

    def finish(self, answer: str) -> None:
        """Replace the box with one line saying what was chosen and how to change it."""
        try:
            if not self.tty.at_eof:
                self.erase()
                summary = f"plausipy: {_SUMMARIES.get(answer, answer)}. Change it any time: plausipy policy"
                self.tty.write("\r\n".join(_wrap(summary, max(20, self._current_size()[0] - 1))) + "\r\n")
        finally:
            self.stream.close()


def _terminal_speaks_utf8() -> bool:
    import locale

    encoding = (locale.getpreferredencoding(False) or "").lower().replace("-", "")
    return encoding == "utf8"


def _flush_program_output() -> None:
    # The box goes below what the program printed, so its buffered output goes out first.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def ask(registrations: Sequence[object], *, at_exit: bool, exit_code: int | None = None) -> str:
    """Ask about ``registrations`` in the terminal, save the answer, and return it.

    >>> ask(registrations(), at_exit=False)  # doctest: +SKIP
    'allow'

    Returns ``"allow"``, ``"anonymous"``, ``"deny"`` or ``"later"``. Without a
    terminal, or if anything goes wrong, it returns ``"later"`` having drawn
    nothing (or having restored the terminal), and never raises.
    """
    if not registrations:
        return "later"
    _flush_program_output()
    try:
        tty = _Tty.open()
    except OSError:
        return "later"
    answer = "later"
    dialog: _Dialog | None = None
    try:
        tty.enter_key_mode()
        dialog = _Dialog(tty, registrations, at_exit=at_exit, exit_code=exit_code)
        answer = dialog.run()
    except BaseException as exc:  # KeyboardInterrupt from a signal sent by `kill` included
        _remember("consent dialog", exc)
        answer = "later"
    finally:
        try:
            if dialog is not None:
                dialog.finish(answer)
        except BaseException:
            pass
        tty.restore()
    _save_quietly(answer, registrations)
    return answer


def _save_quietly(answer: str, registrations: Sequence[object], save: Callable[..., None] = save_answer) -> None:
    try:
        save(answer, registrations)
    except Exception as exc:  # a read-only config dir: noted for `plausipy status`, nothing collected
        _remember("saving the consent answer", exc)


def _remember(where: str, exc: BaseException) -> None:
    try:
        from plausipy import _host

        _host.remember_problem(where, exc)
    except Exception:
        pass
