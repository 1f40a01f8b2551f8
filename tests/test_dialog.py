"""The consent dialog in a real pseudo-terminal (the standard ``pty`` module).

A real program in the test venv calls ``plausipy.app(...)`` with its state in
``tmp_path``; the test plays the person at the keyboard through the pty's
master side, then reads the policy file and the records that reach the
recording collector.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from support import wait_for, write_program

APP_KEY = "Dialog00000000000000000000000001"
BOX_TOP = "plausipy: usage statistics"
LEFT, RIGHT, UP, DOWN, ENTER, ESC, CTRL_C = "\x1b[D", "\x1b[C", "\x1b[A", "\x1b[B", "\r", "\x1b", "\x03"
CONTROL_SEQUENCE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
COLOR_SEQUENCE = re.compile(rb"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|4[0-9]|9[0-7]|10[0-7]|38;|48;)[0-9;]*m")

PROGRAM = """\
import sys, termios
import plausipy
print("program output first", flush=True)
plausipy.app(key={key!r}, name="acme-cli", version="1.0", endpoint={endpoint!r}, delay_consent={delay})
mode = termios.tcgetattr(sys.stdin.fileno()) if sys.stdin.isatty() else None
if mode is not None:
    print("AFTER echo=%d icanon=%d" % (bool(mode[3] & termios.ECHO), bool(mode[3] & termios.ICANON)), flush=True)
else:
    print("AFTER no-terminal", flush=True)
sys.exit({exit_code})
"""


class Session:
    """A program running on the slave side of a pty; the test holds the master."""

    def __init__(self, args: list[str], env: dict[str, str], *, cwd: Path, columns: int = 80, rows: int = 24,
                 stdin_is_terminal: bool = True) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        slave_name = os.ttyname(slave)

        def become_terminal_owner() -> None:
            # A new session, with the pty as its controlling terminal (what /dev/tty opens).
            os.close(os.open(slave_name, os.O_RDWR))

        stdio = slave if stdin_is_terminal else subprocess.PIPE
        self.process = subprocess.Popen(
            args, stdin=stdio, stdout=stdio, stderr=stdio, env=env, cwd=str(cwd),
            start_new_session=True, preexec_fn=become_terminal_owner,
        )  # fmt: skip
        os.close(slave)
        self.output = b""

    def read_available(self, wait: float) -> None:
        ready, _, _ = select.select([self.master], [], [], wait)
        if ready:
            try:
                self.output += os.read(self.master, 65536)
            except OSError:  # EIO: every slave descriptor is closed
                pass

    def expect(self, text: str, timeout: float = 60.0, *, start: int = 0) -> int:
        """Wait until ``text`` appears in the plain text (after ``start``); return where it ends."""
        deadline = time.monotonic() + timeout
        while text not in self.plain()[start:]:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared; output so far:\n{self.text()}")
            if self.process.poll() is not None:
                self.read_available(0.2)
                if text not in self.plain()[start:]:
                    raise AssertionError(f"exited before {text!r}; output:\n{self.text()}")
                break
            self.read_available(0.1)
        return self.plain().index(text, start) + len(text)

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def finish(self, timeout: float = 60.0) -> int:
        """Read until the program exits; its exit status."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                self.process.kill()
                raise AssertionError(f"the program did not finish; output:\n{self.text()}")
            self.read_available(0.1)
        for _ in range(5):
            self.read_available(0.05)
        os.close(self.master)
        return self.process.returncode

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def plain(self) -> str:
        """What a person reads: the output without control sequences."""
        return CONTROL_SEQUENCE.sub("", self.text())


def terminal_env(venv, home: Path, **extra: str) -> dict[str, str]:
    env = venv.env(home, TERM="xterm-256color")
    env.update(extra)
    return env


def start_program(venv, home: Path, collector, *, delay: bool = False, exit_code: int = 0, columns: int = 80,
                  stdin_is_terminal: bool = True, **env: str) -> Session:
    source = PROGRAM.format(key=APP_KEY, endpoint=collector.url, delay=delay, exit_code=exit_code)
    program = write_program(home, "acme_cli.py", source)
    return Session([venv.python, program], terminal_env(venv, home, **env), cwd=home, columns=columns,
                   stdin_is_terminal=stdin_is_terminal)


def policy_text(home: Path) -> str:
    path = home / "state" / "config" / "policy.toml"
    return path.read_text() if path.exists() else ""


def global_setting(home: Path, name: str) -> str | None:
    match = re.search(rf'^{name} = "?([^"\s]+)"?', policy_text(home), re.MULTILINE)
    return match.group(1) if match else None


def app_records(collector) -> list[dict]:
    return [record for record in collector.records if record.get("package") == "acme-cli"]


def flush(venv, home: Path) -> None:
    venv.run(["-m", "plausipy", "flush", "--timeout", "20"], home)


def delivered(venv, home: Path, collector) -> list[dict]:
    """The app's records at the collector once the sender (or a flush) delivered them."""
    found = wait_for(lambda: app_records(collector), timeout=20)
    if not found:
        flush(venv, home)
        found = app_records(collector)
    return found


def nothing_delivered(venv, home: Path, collector) -> bool:
    flush(venv, home)
    return app_records(collector) == []


# -- the box ---------------------------------------------------------------------------------


def test_box_appears_inline_below_the_output_with_every_choice_and_key(venv, home, fresh_collector):
    session = start_program(venv, home, fresh_collector)
    session.expect("[d] Details")
    shown = session.plain()
    assert shown.index("program output first") < shown.index(BOX_TOP)
    for needle in ("acme-cli 1.0 (app, package scope)", "run time", "peak memory", "exit code", "Python version",
                   "never from your IP", "Nothing personal", "plausipy data list",
                   "[y] Allow", "[a] Anonymous only", "[n] Deny", "[l] Not now", "Esc"):
        assert needle in shown, needle
    order = [shown.index(label) for label in ("Allow", "Anonymous only", "Deny", "Not now", "Details")]
    assert order == sorted(order)
    assert ">[l] Not now<" in shown  # the highlight starts on Not now
    # Inline: never the alternate screen, never a full clear.
    assert b"\x1b[?1049h" not in session.output and b"\x1b[2J" not in session.output
    session.send("l")
    assert session.finish() == 0


@pytest.mark.parametrize(
    ("keys", "consent", "scope", "collected"),
    [
        ("y", "allow", "package", "package"),
        ("a", "allow", "anonymous", "anonymous"),
        ("n", "deny", "package", None),
        ("l", "ask", "package", None),
        (ESC, "ask", "package", None),
        (LEFT + LEFT + LEFT + ENTER, "allow", "package", "package"),  # Not now → Deny → Anonymous → Allow
        (LEFT + LEFT + ENTER, "allow", "anonymous", "anonymous"),
        (UP + ENTER, "deny", "package", None),
        (RIGHT + LEFT + ENTER, "ask", "package", None),
        (DOWN + DOWN + ENTER, "allow", "package", "package"),  # wraps: Details → Allow
    ],
    ids=["y", "a", "n", "l", "esc", "left-x3-enter", "left-x2-enter", "up-enter", "right-left-enter", "wrap"],
)
def test_each_key_path_sets_the_policy_and_decides_what_is_sent(venv, home, fresh_collector, keys, consent, scope,
                                                                collected):
    session = start_program(venv, home, fresh_collector)
    session.expect("[d] Details")
    session.send(keys)
    session.expect("AFTER echo=1 icanon=1")
    assert session.finish() == 0
    assert (global_setting(home, "consent"), global_setting(home, "scope")) == (consent, scope)
    if consent == "ask":
        assert int(global_setting(home, "asked_at") or 0) > 0  # Not now: asked again at most once a day
    if collected is None:
        assert nothing_delivered(venv, home, fresh_collector)
    else:
        (record,) = delivered(venv, home, fresh_collector)
        assert record["scope"] == collected and record["exit_code"] == 0


def test_bare_enter_changes_nothing(venv, home, fresh_collector):
    session = start_program(venv, home, fresh_collector)
    session.expect("[d] Details")
    session.send(ENTER)
    session.expect("AFTER echo=1")
    assert session.finish() == 0
    assert global_setting(home, "consent") == "ask"
    assert nothing_delivered(venv, home, fresh_collector)


def test_details_shows_the_exact_record_then_a_choice_still_works(venv, home, fresh_collector):
    session = start_program(venv, home, fresh_collector)
    session.expect("[d] Details")
    session.send("d")
    after_details = session.expect('"props"')
    session.expect("[d] Details", start=after_details)  # the box is drawn again below the record
    shown = session.plain()
    for field in ("v", "run_id", "scope", "uid", "package", "version", "role", "hour", "duration_ms",
                  "peak_rss_kib", "exit_code", "os", "arch", "python", "implementation", "country", "region",
                  "timezone", "props"):
        assert f'"{field}":' in shown, field
    uid = re.search(r'"uid": "([0-9a-f]{32})"', shown).group(1)
    session.send("y")
    session.expect("AFTER echo=1")
    assert session.finish() == 0
    (record,) = delivered(venv, home, fresh_collector)
    assert record["uid"] == uid  # the preview's ID is the one that was sent


def test_unknown_escape_sequences_are_ignored(venv, home, fresh_collector):
    session = start_program(venv, home, fresh_collector)
    session.expect("[d] Details")
    session.send("\x1b[15~" + "\x1b[1;5P" + "\x1bOH" + "q")  # F5, Ctrl+F1, Home, an unknown letter
    session.send("n")
    session.expect("AFTER echo=1")
    assert session.finish() == 0
    assert global_setting(home, "consent") == "deny"


def test_ctrl_c_restores_the_terminal_and_the_program_goes_on(venv, home, fresh_collector):
    session = start_program(venv, home, fresh_collector)
    session.expect("[d] Details")
    session.send(CTRL_C)
    session.expect("AFTER echo=1 icanon=1")
    assert session.finish() == 0
    tail = session.output
    assert tail.rindex(b"\x1b[?25h") > tail.rindex(b"\x1b[?25l")  # cursor visible again
    assert tail.rindex(b"\x1b[0m") > tail.rindex(BOX_TOP.encode())  # normal mode
    assert global_setting(home, "consent") == "ask"


def test_the_programs_own_sigint_handler_is_untouched(venv, home, fresh_collector):
    source = (
        "import signal, sys, os, plausipy\n"
        "signal.signal(signal.SIGINT, lambda *a: print('OWN HANDLER', flush=True))\n"
        f"plausipy.app(key={APP_KEY!r}, name='acme-cli', version='1.0', endpoint={fresh_collector.url!r})\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "print('AFTER', flush=True)\n"
    )
    program = write_program(home, "own_handler.py", source)
    session = Session([venv.python, program], terminal_env(venv, home), cwd=home)
    session.expect("[d] Details")
    session.send("n")
    session.expect("AFTER")
    assert "OWN HANDLER" in session.plain()
    assert session.finish() == 0


def test_a_40_column_terminal_still_works(venv, home, fresh_collector):
    session = start_program(venv, home, fresh_collector, columns=40)
    session.expect("Details")
    box = session.plain()[session.plain().index(BOX_TOP) - 3:]
    for line in box.splitlines():
        if line.startswith(("┌", "│", "└")):
            assert len(line.rstrip("\r")) <= 39, line
    session.send("y")
    session.expect("AFTER echo=1")
    assert session.finish() == 0
    assert global_setting(home, "consent") == "allow"


def test_no_color_means_no_color_sequences(venv, home, fresh_collector):
    with_color = start_program(venv, home, fresh_collector)
    with_color.expect("[d] Details")
    with_color.send("l")
    with_color.finish()
    assert COLOR_SEQUENCE.search(with_color.output)  # the test can fail: colors are there by default

    (home / "state").rename(home / "first-state")
    session = start_program(venv, home, fresh_collector, NO_COLOR="1")
    session.expect("Details")
    session.send(RIGHT)  # the highlight still shows, without color
    session.expect(">[d] Details<")
    session.send("n")
    session.expect("AFTER echo=1")
    assert session.finish() == 0
    assert not COLOR_SEQUENCE.search(session.output)


def test_at_exit_the_dialog_reports_the_real_exit_code(venv, home, fresh_collector):
    session = start_program(venv, home, fresh_collector, delay=True, exit_code=3)
    session.expect("AFTER echo=1")  # delay_consent: nothing asked at app()
    assert BOX_TOP not in session.plain()
    session.expect("[d] Details")
    assert "Not now in 60 s" in session.plain()
    session.send("y")
    assert session.finish() == 3
    (record,) = delivered(venv, home, fresh_collector)
    assert record["exit_code"] == 3


def test_dev_tty_is_used_when_stdin_and_stdout_are_pipes(venv, home, fresh_collector):
    session = start_program(venv, home, fresh_collector, stdin_is_terminal=False)
    session.expect("[d] Details")  # drawn on the controlling terminal
    session.send("y")
    session.process.stdin.close()
    assert session.process.wait(60) == 0
    assert b"AFTER no-terminal" in session.process.stdout.read()
    session.finish()
    assert global_setting(home, "consent") == "allow"


def test_asked_once_per_process_and_not_again_the_same_day(venv, home, fresh_collector):
    session = start_program(venv, home, fresh_collector, delay=True)
    session.expect("[d] Details")  # at exit
    session.send("l")
    assert session.finish() == 0
    assert session.plain().count(BOX_TOP) == 1
    again = start_program(venv, home, fresh_collector)
    again.expect("AFTER echo=1")
    assert again.finish() == 0
    assert BOX_TOP not in again.plain()


# -- no terminal: nothing drawn, nothing blocks ------------------------------------------------


@pytest.mark.parametrize("stdin", ["empty-pipe", "eof", "ci"])
def test_without_a_terminal_nothing_is_drawn_and_nothing_blocks(venv, home, fresh_collector, stdin):
    source = PROGRAM.format(key=APP_KEY, endpoint=fresh_collector.url, delay=False, exit_code=0)
    program = write_program(home, "acme_cli.py", source)
    env = venv.env(home, TERM="xterm-256color", **({"CI": "1"} if stdin == "ci" else {}))
    if stdin == "empty-pipe":
        # An open pipe nobody writes to: reading it would block forever.
        read_end, write_end = os.pipe()
        result = subprocess.run([venv.python, program], stdin=read_end, capture_output=True, env=env, timeout=60,
                                start_new_session=True)
        os.close(read_end)
        os.close(write_end)
    else:
        result = subprocess.run([venv.python, program], stdin=subprocess.DEVNULL, capture_output=True, env=env,
                                timeout=60, start_new_session=True)
    assert result.returncode == 0
    assert result.stdout == b"program output first\nAFTER no-terminal\n"
    assert result.stderr == b""
    assert policy_text(home) == ""  # nothing answered, nothing saved


def test_ci_with_a_terminal_is_never_asked(venv, home, fresh_collector):
    session = start_program(venv, home, fresh_collector, CI="true")
    session.expect("AFTER echo=1")
    assert session.finish() == 0
    assert BOX_TOP not in session.plain()


def test_at_exit_sixty_seconds_without_an_answer_is_not_now(venv, home, fresh_collector):
    session = start_program(venv, home, fresh_collector, delay=True, exit_code=5)
    session.expect("[d] Details")
    assert session.finish(timeout=120) == 5
    assert global_setting(home, "consent") == "ask"
    assert int(global_setting(home, "asked_at") or 0) > 0
    assert nothing_delivered(venv, home, fresh_collector)


def test_terminal_closed_under_the_dialog(venv, home, fresh_collector):
    session = start_program(venv, home, fresh_collector, delay=True, exit_code=4)
    session.expect("[d] Details")
    os.close(session.master)  # the terminal window is closed: hang-up
    assert session.process.wait(60) in (4, -signal.SIGHUP)
    assert global_setting(home, "consent") in (None, "ask")


def test_a_resized_terminal_gets_the_box_laid_out_again(venv, home, fresh_collector):
    session = start_program(venv, home, fresh_collector, columns=100)
    drawn_wide = session.expect("Details")
    fcntl.ioctl(session.master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 40, 0, 0))
    session.expect("Details", start=drawn_wide)  # redrawn for the new size
    narrow = session.plain()[drawn_wide:]
    assert any(line.startswith("└") and len(line.rstrip("\r")) == 39 for line in narrow.splitlines())
    session.send("n")
    session.expect("AFTER echo=1")
    assert session.finish() == 0


def test_blessed_is_imported_only_when_the_dialog_shows(venv, home, fresh_collector):
    source = (
        "import sys, plausipy\n"
        f"plausipy.app(key={APP_KEY!r}, name='acme-cli', version='1.0', endpoint={fresh_collector.url!r})\n"
        "print('blessed loaded:', 'blessed' in sys.modules, flush=True)\n"
    )
    program = write_program(home, "which_modules.py", source)
    quiet = subprocess.run([venv.python, program], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           env=venv.env(home), timeout=60, start_new_session=True)
    assert quiet.stdout == "blessed loaded: False\n"
    session = Session([venv.python, program], terminal_env(venv, home), cwd=home)
    session.expect("Details")
    session.send("l")
    session.expect("blessed loaded: True")
    assert session.finish() == 0
