"""The policy object, its file, and `plausipy policy` through click's CliRunner."""

from __future__ import annotations

import json
import os
import sys

import platformdirs
import pytest
from click.testing import CliRunner

from plausipy import _paths
from plausipy._cli import main
from plausipy._policy import Policy, load_policy, parse_policy, render_policy, save_policy


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("PLAUSIPY_HOME", str(tmp_path / "state"))
    return tmp_path / "state"


def test_defaults_ask_and_share_everything():
    policy = Policy()
    assert policy.decide("acmelib", "user").action == "ask"
    assert policy.shared_categories() == ("runtime", "system", "location", "properties")


def test_effective_scope_is_the_narrower_of_requested_and_granted():
    policy = Policy(consent="allow", scope="package")
    assert policy.decide("a", "user").scope == "package"
    assert policy.decide("a", "anonymous").scope == "anonymous"
    policy.allow(("b",), "user")
    assert policy.decide("b", "user").scope == "user"  # the package's rule wins
    policy.allow(("c",), "anonymous")
    assert policy.decide("c", "user").scope == "anonymous"


def test_package_rules_use_normalized_names():
    policy = Policy(consent="deny")
    policy.allow(("Acme_Lib",))
    assert policy.decide("acme.lib", "package").action == "allow"
    assert policy.decide("other", "package").action == "deny"


def test_round_trip_through_the_file_and_tomllib(state):
    policy = Policy(consent="allow", scope="user")
    policy.deny(("noisy",))
    policy.allow(("acme",), "anonymous")
    policy.set_share("location", False)
    path = save_policy(policy)
    assert load_policy().to_dict() == policy.to_dict()
    if sys.version_info >= (3, 11):
        import tomllib

        with open(path, "rb") as handle:
            parsed = tomllib.load(handle)
        assert parsed["packages"] == {"acme": "allow anonymous", "noisy": "deny"}


@pytest.mark.parametrize(
    "text",
    ["\xff\xfe garbage", "[global]\nconsent = \"maybe\"\n", "[global]\nconsent = \"allow\"\n[packages]\nx = \"allow everyone\"\n", "consent = 1", "[nope]\n"],
)
def test_broken_file_gives_defaults_and_a_problem(state, text):
    path = _paths.policy_file()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as handle:
        handle.write(text)
    policy = load_policy()
    assert policy.consent == "ask"
    assert policy.problem and path in policy.problem


def test_render_is_parseable_and_commented():
    text = render_policy(Policy())
    assert text.startswith("# plausipy policy")
    assert parse_policy(text).to_dict() == Policy().to_dict()


def test_cli_changes_and_shows_the_policy(state):
    runner = CliRunner()
    assert runner.invoke(main, ["policy", "allow", "--scope", "anonymous"]).exit_code == 0
    assert runner.invoke(main, ["policy", "deny", "noisy"]).exit_code == 0
    assert runner.invoke(main, ["policy", "share", "location", "off"]).exit_code == 0
    shown = json.loads(runner.invoke(main, ["policy", "show", "--json"]).output)
    assert shown["consent"] == "allow" and shown["scope"] == "anonymous"
    assert shown["packages"] == {"noisy": {"action": "deny", "scope": None}}
    assert shown["share"]["location"] is False
    assert runner.invoke(main, ["policy", "ask", "noisy"]).exit_code == 0
    assert json.loads(runner.invoke(main, ["policy", "show", "--json"]).output)["packages"] == {}
    people = runner.invoke(main, ["policy", "show"], env={"NO_COLOR": "1"}).output
    assert "consent: allow" in people and "\x1b[" not in people


def test_cli_rejects_unknown_values(state):
    runner = CliRunner()
    result = runner.invoke(main, ["policy", "share", "hostname", "on"])
    assert result.exit_code == 2 and "hostname" in result.output
    result = runner.invoke(main, ["policy", "allow", "--scope", "everyone"])
    assert result.exit_code == 2


def test_state_paths_agree_with_platformdirs(monkeypatch):
    monkeypatch.delenv("PLAUSIPY_HOME", raising=False)
    assert _paths.config_dir() == platformdirs.user_config_dir("plausipy", appauthor=False) or sys.platform == "win32"
    assert _paths.data_dir() == platformdirs.user_data_dir("plausipy", appauthor=False) or sys.platform == "win32"
    assert _paths.cache_dir() == platformdirs.user_cache_dir("plausipy", appauthor=False) or sys.platform == "win32"


def test_plausipy_home_puts_everything_in_one_place(state):
    for directory in (_paths.config_dir(), _paths.data_dir(), _paths.cache_dir()):
        assert directory.startswith(str(state))


def test_server_commands_without_the_extra_print_the_install_command(tmp_path):
    # A fresh interpreter where the server modules cannot import.
    import subprocess

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('fastapi', 'uvicorn'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from plausipy._cli import main\n"
        "main(['server', 'run'], prog_name='plausipy')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PLAUSIPY_DISABLE": "1"})
    assert result.returncode == 1
    assert "pip install 'plausipy[server]'" in result.stderr
    assert "Traceback" not in result.stderr
