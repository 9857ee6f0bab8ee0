"""Tests of the ``sipwarden`` command: help, exit codes and messages."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from sipwarden import __version__
from sipwarden.cli import _Group, _State, cli
from sipwarden.config import Config, render_example_config
from sipwarden.errors import StoreError

BAD_CONFIG = "[sip]\nprots = [5060]\n[parser]\nmax_message_size = 10\n"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Run in an empty directory (the repository root holds an example sipwarden.toml)
    # and undo any logging set-up a command did.
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="sipwarden")


def assert_clean_failure(result: Result, *fragments: str) -> None:
    """Exit 2, the message on stderr, no traceback, nothing on stdout."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    for fragment in fragments:
        assert fragment in result.stderr


# ---------------------------------------------------------------- help and version


def test_help_lists_every_command() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in ("gateway", "monitor", "bans", "audit", "rules", "version", "config"):
        assert f"\n  {command} " in result.stdout
    for option in ("--config PATH", "--log-format [text|json]", "--log-level", "--version"):
        assert option in result.stdout


@pytest.mark.parametrize(
    "command",
    [
        ["gateway"],
        ["monitor"],
        ["bans"],
        ["bans", "list"],
        ["bans", "show"],
        ["bans", "ban"],
        ["bans", "unban"],
        ["audit"],
        ["rules"],
        ["rules", "nftables"],
        ["rules", "iptables"],
        ["rules", "fail2ban"],
        ["rules", "edge"],
        ["version"],
        ["config"],
        ["config", "example"],
        ["config", "check"],
    ],
    ids=" ".join,
)
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    assert f"Usage: sipwarden {' '.join(command)}" in result.stdout
    body = result.stdout.split("Options:")[0].split("\n", 1)[1]
    assert re.search(r"\n {4,}sipwarden \w", body), "an indented example command"
    assert run(*command, "-h").stdout == result.stdout


def test_help_works_next_to_a_broken_config(tmp_path: Path) -> None:
    (tmp_path / "sipwarden.toml").write_text(BAD_CONFIG)
    assert run("monitor", "--help").exit_code == 0
    assert run("config", "example").exit_code == 0


def test_version_option() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout == f"sipwarden {__version__}\n"


def test_version_command() -> None:
    result = run("version")
    assert result.exit_code == 0
    first, second = result.stdout.splitlines()
    assert first == f"sipwarden {__version__}"
    assert second.startswith(f"Python {sys.version_info.major}.{sys.version_info.minor}.")


def test_unknown_command_is_a_usage_error() -> None:
    result = run("firewall")
    assert result.exit_code == 2
    assert "No such command 'firewall'" in result.stderr


# ---------------------------------------------------------------- gateway, monitor


def test_gateway_without_upstreams_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "sipwarden.toml").write_text("[gateway]\nupstreams = []\n")
    result = run("gateway")
    assert_clean_failure(result, "gateway.upstreams")


def test_monitor_without_a_source_is_a_usage_error() -> None:
    result = run("monitor")
    assert_clean_failure(result, "nothing to analyse", "--pcap")


def test_monitor_on_a_missing_interface_names_it() -> None:
    result = run("monitor", "--interface", "nosuchif0", "--duration", "1")
    assert_clean_failure(result, "nosuchif0")


def test_monitor_hep_address_must_be_addr_port() -> None:
    result = run("monitor", "--hep", "0.0.0.0", "--duration", "1")
    assert_clean_failure(result, "--hep", "ADDR:PORT")


def test_monitor_interface_and_hep_are_one_live_source_at_a_time() -> None:
    result = run("monitor", "--interface", "lo", "--hep", "127.0.0.1:9060")
    assert_clean_failure(result, "cannot be combined")


def test_monitor_missing_capture_file() -> None:
    result = run("monitor", "--pcap", "missing.pcap")
    assert result.exit_code == 2
    assert "missing.pcap" in result.stderr
    assert "does not exist" in result.stderr


# ---------------------------------------------------------------- audit, rules


@pytest.mark.parametrize(("group", "planned"), [("audit", "passwords")])
def test_planned_groups(group: str, planned: str) -> None:
    help_text = run(group, "--help").stdout
    assert "(not available yet)" in help_text
    assert f"\n    {planned} " in help_text

    bare = run(group)
    assert bare.exit_code == 2

    unknown = run(group, "no-such-check")
    assert unknown.exit_code == 2
    assert "No such command 'no-such-check'" in unknown.stderr

    not_yet = run(group, planned)
    assert not_yet.exit_code == 2
    assert f"sipwarden {group} {planned}" in not_yet.stderr
    assert "planned but not available yet" in not_yet.stderr


# ---------------------------------------------------------------- config


def test_config_example_prints_the_rendered_example() -> None:
    result = run("config", "example")
    assert result.exit_code == 0
    assert result.stdout == render_example_config()


def test_config_check_ok(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text('[log]\nformat = "json"\n')
    result = run("config", "check", "site.toml")
    assert result.exit_code == 0
    assert result.stdout == "OK: site.toml\n"


def test_config_check_uses_the_file_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "sipwarden.toml").write_text(render_example_config())
    result = run("config", "check")
    assert result.exit_code == 0
    assert result.stdout == "OK: sipwarden.toml\n"


def test_config_check_without_any_file() -> None:
    result = run("config", "check")
    assert result.exit_code == 0
    assert result.stdout.startswith("OK: no sipwarden.toml")
    assert "built-in defaults" in result.stdout


def test_config_check_reports_every_problem(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(BAD_CONFIG)
    result = run("config", "check", "bad.toml")
    assert_clean_failure(
        result,
        "sipwarden: configuration error: bad.toml: 2 problems:",
        "sip.prots: unknown key 'prots'",
        "parser.max_message_size: expected an integer from 1024 to 1048576; found 10",
    )


def test_config_check_uses_the_global_config_option(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[sip]\nports = [0]\n")
    result = run("--config", "bad.toml", "config", "check")
    assert_clean_failure(result, "bad.toml: sip.ports[0]: expected an integer from 1 to 65535")


def test_config_check_missing_file() -> None:
    result = run("config", "check", "nope.toml")
    assert_clean_failure(result, "nope.toml: configuration file not found")


def test_config_check_bad_toml(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[log]\nlevel = debug\n")
    result = run("config", "check", "bad.toml")
    assert_clean_failure(result, "bad.toml: not valid TOML at line 2, column 9")


# ---------------------------------------------------------------- global options, errors


def test_log_options_override_the_file(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text(
        '[log]\nlevel = "error"\nformat = "text"\n[sip]\nports = [5070]\n'
    )
    config = _State(config_path="site.toml", log_format="json", log_level="debug").config()
    assert config.log.level == "debug"
    assert config.log.format == "json"
    assert config.sip.ports == (5070,)
    assert logging.getLogger().level == logging.DEBUG


def test_without_overrides_the_file_decides(tmp_path: Path) -> None:
    (tmp_path / "sipwarden.toml").write_text('[log]\nlevel = "warning"\n')
    config = _State(config_path=None, log_format=None, log_level=None).config()
    assert config.log.level == "warning"
    assert config == Config.model_validate({"log": {"level": "warning"}})


def test_log_level_option_is_case_insensitive_and_checked() -> None:
    assert run("--log-level", "DEBUG", "version").exit_code == 0
    bad = run("--log-level", "loud", "version")
    assert bad.exit_code == 2
    assert "Invalid value for '--log-level'" in bad.stderr


def test_any_sipwarden_error_is_a_message_and_exit_2() -> None:
    @click.group(cls=_Group)
    def root() -> None:
        """A root group like sipwarden's."""

    @root.command()
    def store() -> None:
        raise StoreError("database is locked")

    result = CliRunner().invoke(root, ["store"])
    assert result.exit_code == 2
    assert result.stderr == "sipwarden: error: database is locked\n"
    assert result.exception is not None
    assert isinstance(result.exception, SystemExit)


# ---------------------------------------------------------------- the installed command


def _installed_script() -> str:
    script = Path(sysconfig.get_path("scripts")) / "sipwarden"
    if not script.exists():
        pytest.fail(
            f"the sipwarden console script is not installed: run `pip install -e .` ({script})"
        )
    return str(script)


def test_console_script_runs(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(BAD_CONFIG)
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    version = subprocess.run(
        [_installed_script(), "--version"], capture_output=True, text=True, check=False, env=env
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout == f"sipwarden {__version__}\n"

    check = subprocess.run(
        [_installed_script(), "--config", "bad.toml", "config", "check"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert check.returncode == 2
    assert check.stdout == ""
    assert check.stderr.startswith("sipwarden: configuration error: bad.toml: 2 problems:")
    assert "Traceback" not in check.stderr


def test_python_dash_m_runs(tmp_path: Path) -> None:
    (tmp_path / "sipwarden.toml").write_text("[gateway]\nupstreams = []\n")
    result = subprocess.run(
        [sys.executable, "-m", "sipwarden", "gateway"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "gateway.upstreams" in result.stderr
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- rules


def test_rules_commands_print_what_the_generators_render(tmp_path: Path) -> None:
    from sipwarden.enforce.rules.edge import render_edge  # noqa: PLC0415
    from sipwarden.enforce.rules.iptables import render_iptables  # noqa: PLC0415
    from sipwarden.enforce.rules.nftables import render_nftables  # noqa: PLC0415

    config = Config()
    assert run("rules", "nftables").stdout == render_nftables(config)
    assert run("rules", "iptables", "--ipv6").stdout == render_iptables(config, ipv6=True)
    assert run("rules", "edge", "--syntax", "routeros").stdout == render_edge(
        config, syntax="routeros"
    )
    unknown = run("rules", "edge", "--syntax", "junos")
    assert unknown.exit_code == 2
    assert "junos" in unknown.stderr


def test_rules_fail2ban_writes_its_files_under_the_output_directory(tmp_path: Path) -> None:
    written = run("rules", "fail2ban", "--output", str(tmp_path / "f2b"), "--enable", "sipwarden")
    assert written.exit_code == 0, written.output
    jail = (tmp_path / "f2b" / "jail.d" / "sipwarden.conf").read_text()
    assert "[sipwarden]" in jail
    assert (tmp_path / "f2b" / "filter.d" / "sipwarden-asterisk.conf").is_file()
    printed = run("rules", "fail2ban").stdout
    assert "# ===== filter.d/sipwarden-freeswitch.conf =====" in printed
    bad = run("rules", "fail2ban", "--enable", "no-such-jail")
    assert bad.exit_code == 2
    assert "no-such-jail" in bad.stderr
