"""``sipwarden bans``: list, show, ban and unban through the command, with the store only.

The kernel backends are exercised through the same commands in test_nftables.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sipwarden.cli import cli
from sipwarden.enforce.admin import parse_duration
from sipwarden.engine.contract import EventKind, Evidence, SecurityEvent, Severity
from sipwarden.store.sqlite import SqliteStore


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "sipwarden.toml"
    path.write_text(
        f'[store]\npath = "{tmp_path / "store.sqlite3"}"\n[bans]\nallowlist = ["192.0.2.0/24"]\n'
    )
    return path


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args], prog_name="sipwarden")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("10m", 600), ("1h", 3600), ("2d", 172800), ("1W", 604800)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "5x", "-1h", "1h30m", "11000d"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|at most"):
        parse_duration(text)


def test_ban_list_show_and_unban(config: Path, tmp_path: Path) -> None:
    made = run(config, "bans", "ban", "203.0.113.7", "--duration", "1h", "--reason", "fraud")
    assert made.exit_code == 0, made.output
    assert "banned: 203.0.113.7" in made.stdout
    assert run(config, "bans", "ban", "2001:DB8:1:2::9/64").exit_code == 0

    listed = run(config, "bans", "list", "--json")
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["source"] for r in records] == ["203.0.113.7", "2001:db8:1:2::/64"]  # soonest first
    assert records[0]["reason"] == "fraud"
    assert "2 bans in force" in run(config, "bans", "list").stderr

    with SqliteStore(tmp_path / "store.sqlite3") as store:
        store.add_events(
            [
                SecurityEvent(
                    time=1.0,
                    kind=EventKind.CRACKING,
                    severity=Severity.HIGH,
                    source="203.0.113.7",
                    rule="cracking.failures_per_source",
                    summary="31 failed authentications",
                    account="100",
                    evidence=Evidence(counts={"failures": 31}),
                )
            ]
        )
    shown = run(config, "bans", "show", "203.0.113.7").stdout
    assert shown.startswith("banned: 203.0.113.7")
    assert "manual: fraud" in shown
    assert "cracking.failures_per_source account 100: 31 failed authentications" in shown

    lifted = run(config, "bans", "unban", "203.0.113.7")
    assert lifted.exit_code == 0
    assert "lifted the ban on 203.0.113.7" in lifted.stdout
    again = run(config, "bans", "unban", "203.0.113.7")
    assert again.exit_code == 1
    assert "203.0.113.7 is not banned" in run(config, "bans", "show", "203.0.113.7").stdout
    history = run(config, "bans", "list", "--all").stdout
    assert "203.0.113.7" in history
    assert "(lifted)" in history


def test_an_allowlisted_source_cannot_be_banned(config: Path) -> None:
    refused = run(config, "bans", "ban", "192.0.2.10")
    assert refused.exit_code == 2
    assert "192.0.2.10 is in bans.allowlist and is never banned" in refused.stderr


def test_bad_arguments_are_usage_errors(config: Path) -> None:
    bad_source = run(config, "bans", "ban", "pbx.example.com")
    assert bad_source.exit_code == 2
    assert "is not an IP address or network" in bad_source.stderr
    bad_duration = run(config, "bans", "ban", "203.0.113.7", "--duration", "soon")
    assert bad_duration.exit_code == 2
    assert "--duration" in bad_duration.stderr


def test_without_a_store_the_commands_say_which_key_to_set(tmp_path: Path) -> None:
    config = tmp_path / "none.toml"
    config.write_text('[store]\npath = ""\n')
    result = run(config, "bans", "list")
    assert result.exit_code == 2
    assert "store.path" in result.stderr
