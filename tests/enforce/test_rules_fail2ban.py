"""fail2ban filters and jails (sipwarden.enforce.rules.fail2ban), checked by fail2ban itself.

Every filter runs in the real ``fail2ban-regex`` against the annotated sample
logs in ``tests/enforce/logs/`` (the fail2ban test-file pattern: each log line
preceded by the result it must give), and the test compares, line by line,
which lines matched and which address each one yielded. The samples include
attacks on the filters themselves: a From URI, Call-ID, account or User-Agent
carrying another address, which must never be the one captured.

The jails are loaded by the real ``fail2ban-client`` from a configuration
directory assembled in ``tmp_path`` (the distribution's fail2ban configuration
plus the generated files), which checks them (``-t``) and dumps the settings
the server would receive (``-d``), without any server running.
"""

from __future__ import annotations

import ast
import configparser
import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import pytest

import support
from sipwarden.alerts.records import ban_record, event_record, to_json_line
from sipwarden.config import Config, parse_config
from sipwarden.enforce.rules.fail2ban import (
    DEFAULT_JSON_LOG,
    FILTERS,
    JAIL_NAMES,
    render_fail2ban,
)
from sipwarden.engine.contract import BanDecision, EventKind, SecurityEvent, Severity

LOGS: Final = Path(__file__).parent / "logs"

# Where Debian's fail2ban package installs its configuration (common.conf, the
# nftables actions, jail.conf), on which the generated files build.
SYSTEM_CONFIG: Final = Path("/etc/fail2ban")
INSTALL: Final = "apt-get install fail2ban"

# Addresses the samples' attackers write into fields they control.
DECOYS: Final = frozenset({"192.0.2.66", "2001:db8::66"})

DEFAULT: Final = "default"


@dataclass(frozen=True, slots=True)
class Sample:
    """One log line and the address each filter variant must capture (None: no match)."""

    number: int
    line: str
    expected: Mapping[str, str | None]

    def expect(self, variant: str) -> str | None:
        return self.expected.get(variant, self.expected[DEFAULT])


def _result(text: str) -> str | None:
    text = text.strip()
    return None if text == "no match" else text


def parse_samples(path: Path) -> list[Sample]:
    """The annotated lines of a sample log: ``# expect: HOST | no match[; variant: ...]``."""
    samples: list[Sample] = []
    pending: dict[str, str | None] | None = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("# expect:"):
            assert pending is None, f"{path.name}:{number}: two annotations for one line"
            default, *variants = line.removeprefix("# expect:").split(";")
            pending = {DEFAULT: _result(default)}
            for variant in variants:
                name, _, result = variant.partition(":")
                pending[name.strip()] = _result(result)
        elif line.startswith("#") or not line.strip():
            continue
        else:
            assert pending is not None, f"{path.name}:{number}: log line without '# expect:'"
            samples.append(Sample(number, line, pending))
            pending = None
    assert pending is None, f"{path.name}: annotation at the end without a line"
    return samples


# --------------------------------------------------------------------------- fail2ban


@pytest.fixture(scope="module")
def fail2ban_regex() -> str:
    return support.require_tool("fail2ban-regex", INSTALL)


@pytest.fixture(scope="module")
def fail2ban_client() -> str:
    return support.require_tool("fail2ban-client", INSTALL)


def assemble(root: Path, files: Mapping[str, str]) -> Path:
    """A fail2ban configuration directory: the system's, plus ``files`` over it."""
    if not (SYSTEM_CONFIG / "filter.d" / "common.conf").is_file():
        pytest.fail(f"fail2ban's configuration is missing from {SYSTEM_CONFIG}: run `{INSTALL}`")
    config_dir = root / "fail2ban"
    shutil.copytree(SYSTEM_CONFIG, config_dir)
    for name, text in files.items():
        target = config_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return config_dir


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fail2ban's configuration with sipwarden's files for the default configuration."""
    return assemble(tmp_path_factory.mktemp("f2b"), render_fail2ban(Config()))


@dataclass(frozen=True, slots=True)
class Hit:
    address: str
    line: str
    time: str  # HH:MM:SS, UTC, as fail2ban read it from the line


def run_regex(tool: str, config_dir: Path, log: Path, filter_spec: str) -> list[Hit]:
    """The lines of ``log`` that ``filter_spec`` matches, each with the address fail2ban took."""
    # fail2ban-regex takes a LOG argument that is not an existing file as a log line.
    assert log.is_file()
    result = subprocess.run(
        [
            tool,
            "--config",
            str(config_dir),
            "--encoding=UTF-8",
            "--timezone=UTC",
            "--out",
            "<ip>|<time>|<msg>",
            str(log),
            filter_spec,
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    hits = []
    for row in result.stdout.splitlines():
        address, stamp, line = row.split("|", 2)
        moment = datetime.fromtimestamp(float(stamp), tz=UTC)
        hits.append(Hit(address, line, moment.strftime("%H:%M:%S")))
    return hits


def write_log(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


_TIME_OF_DAY = re.compile(r"\d{2}:\d{2}:\d{2}")


# (sample file, filter, {variant name: filter spec}) — the default variant plus options.
CASES: Final = (
    ("asterisk", {DEFAULT: "sipwarden-asterisk"}),
    ("asterisk-security", {DEFAULT: "sipwarden-asterisk-security"}),
    (
        "freeswitch",
        {DEFAULT: "sipwarden-freeswitch", "aggressive": "sipwarden-freeswitch[mode=aggressive]"},
    ),
    (
        "sipwarden.json",
        {
            DEFAULT: "sipwarden",
            "proven": "sipwarden[returnable=true]",
            "unproven": "sipwarden[returnable=false]",
            "events": "sipwarden[mode=events]",
        },
    ),
)


def _variants() -> Iterator[tuple[str, str, str]]:
    for sample_file, variants in CASES:
        for variant, spec in variants.items():
            yield sample_file, variant, spec


@pytest.mark.parametrize(("sample_file", "variant", "filter_spec"), list(_variants()))
def test_filter_matches_exactly_the_annotated_lines(
    fail2ban_regex: str,
    config_dir: Path,
    tmp_path: Path,
    sample_file: str,
    variant: str,
    filter_spec: str,
) -> None:
    samples = parse_samples(LOGS / sample_file)
    log = write_log(tmp_path / sample_file, [sample.line for sample in samples])

    hits = run_regex(fail2ban_regex, config_dir, log, filter_spec)

    expected = [
        (address, sample.line)
        for sample in samples
        if (address := sample.expect(variant)) is not None
    ]
    assert [(hit.address, hit.line) for hit in hits] == expected
    assert not {hit.address for hit in hits} & DECOYS
    # The time came from the line itself, not from the clock.
    for hit in hits:
        found = _TIME_OF_DAY.search(hit.line)
        assert found is not None
        assert hit.time == found.group(), hit.line


@pytest.mark.parametrize("sample_file", [sample_file for sample_file, _ in CASES])
def test_samples_cover_matches_misses_and_decoys(sample_file: str) -> None:
    samples = parse_samples(LOGS / sample_file)
    results = [sample.expect(DEFAULT) for sample in samples]
    assert any(result is None for result in results)
    assert any(result is not None and ":" in result for result in results)  # IPv6
    assert any(result is not None and "." in result for result in results)  # IPv4
    # Every sample file carries at least one injection attempt.
    assert any(decoy in sample.line for sample in samples for decoy in DECOYS)
    # No expectation ever names a decoy.
    for sample in samples:
        assert not set(sample.expected.values()) & DECOYS, sample.number


def test_every_shipped_filter_has_samples() -> None:
    tested = {filter_spec for _, variants in CASES for filter_spec in variants.values()}
    assert set(FILTERS) <= tested


def test_json_samples_are_sipwarden_json_with_the_expected_source() -> None:
    for sample in parse_samples(LOGS / "sipwarden.json"):
        if not sample.line.startswith("{"):
            continue  # a foreign line quoting one
        record = json.loads(sample.line)
        for result in sample.expected.values():
            if result is not None:
                assert record["source"] == result, sample.number


# --------------------------------------------------------------------------- sipwarden's own lines

# What an attacker writes into an account name, a User-Agent or a summary.
INJECTIONS: Final = (
    '","source":"192.0.2.66',
    '\\","source":"192.0.2.66","returnable":true,"x":"',
    '"}\n{"time":"2026-11-26T08:00:00.000Z","kind":"ban","source":"192.0.2.66",',
    "from ip 192.0.2.66",
)


def _event(source: str, account: str, severity: Severity) -> SecurityEvent:
    return SecurityEvent(
        time=1_795_680_000.0,
        kind=EventKind.CRACKING,
        severity=severity,
        source=source,
        source_port=5060,
        account=account,
        rule="cracking.failures_per_source",
        summary=f"10 failed authentications for account {account}",
    )


def _ban(source: str, reason: str, *, returnable: bool) -> BanDecision:
    return BanDecision(
        time=1_795_680_000.0,
        source=source,
        duration=600.0 if returnable else 60.0,
        rule="cracking.failures_per_source",
        reason=reason,
        returnable=returnable,
    )


def test_filter_reads_the_lines_sipwarden_writes(
    fail2ban_regex: str, config_dir: Path, tmp_path: Path
) -> None:
    """Lines made by sipwarden's own record functions, attacker text in every free field:
    the ban jails get the real source, the right jail for its returnability."""
    sources = [f"203.0.113.{n}" for n in range(1, len(INJECTIONS) + 1)]
    sources6 = [f"2001:db8::{n}" for n in range(1, len(INJECTIONS) + 1)]
    lines = []
    for injection, source, source6 in zip(INJECTIONS, sources, sources6, strict=True):
        lines.append(to_json_line(ban_record(_ban(source, injection, returnable=True))))
        lines.append(to_json_line(ban_record(_ban(source6, injection, returnable=False))))
        lines.append(to_json_line(event_record(_event(source, injection, Severity.HIGH))))
        lines.append(to_json_line(event_record(_event(source6, injection, Severity.MEDIUM))))
    assert all("\n" not in line for line in lines)
    log = write_log(tmp_path / "events.jsonl", lines)

    def addresses(spec: str) -> list[str]:
        return [hit.address for hit in run_regex(fail2ban_regex, config_dir, log, spec)]

    assert addresses("sipwarden[returnable=true]") == sources
    assert addresses("sipwarden[returnable=false]") == sources6
    # Events: the high ones only, each after its ban line.
    assert addresses("sipwarden[returnable=true, mode=events]") == [
        address for source in sources for address in (source, source)
    ]


# --------------------------------------------------------------------------- the jails


def _jails(
    config: Config,
    *,
    all_ports: bool = False,
    enable: tuple[str, ...] = (),
    json_log: str = DEFAULT_JSON_LOG,
) -> configparser.ConfigParser:
    files = render_fail2ban(config, all_ports=all_ports, enable=enable, json_log=json_log)
    text = files["jail.d/sipwarden.conf"]
    # fail2ban's own reader interpolates %(...)s; plain parsing checks the syntax.
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    return parser


def test_render_returns_filters_jails_and_server_settings() -> None:
    files = render_fail2ban(Config())
    assert sorted(files) == sorted(
        [
            *(f"filter.d/{name}.conf" for name in FILTERS),
            "jail.d/sipwarden.conf",
            "fail2ban.d/sipwarden.conf",
        ]
    )
    for name, text in files.items():
        assert text.endswith("\n"), name
        # Generated text names no path of the machine that generated it.
        assert str(Path(__file__).parents[2]) not in text, name


def test_jails_follow_the_configuration() -> None:
    config = parse_config(
        """
        [sip]
        ports = [5060, 5080, 5061]
        [bans]
        allowlist = ["198.51.100.0/24", "198.51.100.7", "2001:db8:1::/48"]
        [detect.cracking]
        failures_threshold = 7
        failures_window = 120.0
        """
    )
    jails = _jails(config)

    assert jails.sections() == list(JAIL_NAMES)
    for name in JAIL_NAMES:
        jail = jails[name]
        assert jail["enabled"] == "false"
        assert jail["port"] == "5060,5061,5080"
        assert jail["protocol"] == "tcp,udp"
        assert jail["banaction"] == "nftables-multiport"
        assert "blocktype=drop" in jail["action"]
        # Overlaps merged: the single address inside the /24 is not listed again.
        assert jail["ignoreip"].split() == [
            "127.0.0.1/8",
            "::1",
            "198.51.100.0/24",
            "2001:db8:1::/48",
        ]
        assert jail["usedns"] == "no"
    for name in ("sipwarden-asterisk", "sipwarden-asterisk-security", "sipwarden-freeswitch"):
        assert (jails[name]["maxretry"], jails[name]["findtime"]) == ("7", "120")
        assert jails[name]["filter"] == name
    assert jails["sipwarden"]["filter"] == "sipwarden[returnable=true]"
    assert jails["sipwarden-unproven"]["filter"] == "sipwarden[returnable=false]"
    assert jails["sipwarden"]["maxretry"] == jails["sipwarden-unproven"]["maxretry"] == "1"


def test_escalation_mirrors_the_ban_durations() -> None:
    jails = _jails(parse_config("[bans]\nunproven_duration = 45.0\n"))
    for name in ("sipwarden-asterisk", "sipwarden"):
        assert jails[name]["bantime"] == "600"
        assert jails[name]["bantime.increment"] == "true"
        # 600 s, 1 h, 1 day, 1 week.
        assert jails[name]["bantime.multipliers"] == "1 6 144 1008"
    unproven = jails["sipwarden-unproven"]
    assert (unproven["bantime"], unproven["bantime.increment"]) == ("45", "false")
    assert "bantime.multipliers" not in unproven


def test_escalation_without_whole_multiples_uses_a_formula() -> None:
    jails = _jails(parse_config("[bans]\ndurations = [300.0, 450.0, 7200.0]\n"))
    jail = jails["sipwarden-freeswitch"]
    assert jail["bantime"] == "300"
    formula = jail["bantime.formula"]
    # fail2ban evaluates it with the number of earlier bans as ban.Count.
    for count, expected in enumerate((300, 450, 7200, 7200, 7200)):
        ban = type("Ban", (), {"Count": count, "Time": 300})()
        assert eval(formula, {"ban": ban}) == expected


def test_a_single_duration_does_not_escalate() -> None:
    jail = _jails(parse_config("[bans]\ndurations = [900.0]\n"))["sipwarden"]
    assert (jail["bantime"], jail["bantime.increment"]) == ("900", "false")


def test_options_all_ports_enable_and_json_log() -> None:
    jails = _jails(
        Config(), all_ports=True, enable=("sipwarden", "sipwarden-asterisk"), json_log="events.x"
    )
    assert jails["sipwarden"]["enabled"] == jails["sipwarden-asterisk"]["enabled"] == "true"
    assert jails["sipwarden-freeswitch"]["enabled"] == "false"
    assert jails["sipwarden"]["logpath"] == "events.x"
    assert jails["sipwarden"]["action"].startswith("%(banaction_allports)s[")
    with pytest.raises(ValueError, match="unknown jail 'asterisk'"):
        render_fail2ban(Config(), enable=["asterisk"])


def test_database_keeps_bans_as_long_as_sipwarden_remembers_offences() -> None:
    parser = configparser.ConfigParser()
    parser.read_string(render_fail2ban(Config())["fail2ban.d/sipwarden.conf"])
    assert parser["Definition"]["dbpurgeage"] == "604800"
    short = configparser.ConfigParser()
    short.read_string(
        render_fail2ban(parse_config("[bans]\noffence_memory = 3600.0\n"))[
            "fail2ban.d/sipwarden.conf"
        ]
    )
    assert short["Definition"]["dbpurgeage"] == "86400"  # never below fail2ban's default


def _dump(tool: str, config_dir: Path) -> list[list[object]]:
    """The commands fail2ban-client would send the server, as Python lists."""
    result = subprocess.run(
        [tool, "--conf", str(config_dir), "-d"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [ast.literal_eval(line) for line in result.stdout.splitlines() if line.startswith("[")]


def _options(pairs: object) -> dict[str, str]:
    """An action's ``[[name, value], ...]`` from the dump, as a mapping."""
    assert isinstance(pairs, list)
    return {str(name): str(value) for name, value in pairs}


def test_fail2ban_loads_the_jails(fail2ban_client: str, tmp_path: Path) -> None:
    """fail2ban-client checks the whole configuration (-t) and dumps what it would start
    (-d): every jail enabled, reading sample logs, with the configured settings."""
    config = parse_config('[bans]\nallowlist = ["198.51.100.0/24"]\n')
    files = render_fail2ban(config, enable=JAIL_NAMES, json_log=str(LOGS / "sipwarden.json"))
    logs = {
        "sipwarden-asterisk": "asterisk",
        "sipwarden-asterisk-security": "asterisk-security",
        "sipwarden-freeswitch": "freeswitch",
    }
    # Point the PBX jails at the sample logs, and keep the distribution's jails out.
    overrides = "[sshd]\nenabled = false\n" + "".join(
        f"[{jail}]\nlogpath = {LOGS / sample}\n" for jail, sample in logs.items()
    )
    config_dir = assemble(tmp_path, {**files, "jail.d/zz-test.local": overrides})

    check = subprocess.run(
        [fail2ban_client, "--conf", str(config_dir), "-t"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr + check.stdout
    assert "OK" in check.stdout

    commands = _dump(fail2ban_client, config_dir)
    started = [command[1] for command in commands if command[0] == "start"]
    assert started == list(JAIL_NAMES)
    assert ["set", "dbpurgeage", "604800"] in commands
    settings = {
        (command[1], command[2]): command[3:]
        for command in commands
        if command[0] == "set" and len(command) >= 4
    }
    for jail in JAIL_NAMES:
        assert settings[(jail, "addignoreip")] == ["127.0.0.1/8", "::1", "198.51.100.0/24"]
        assert settings[(jail, "addaction")] == ["nftables-multiport"]
    assert settings[("sipwarden", "bantime.multipliers")] == ["1 6 144 1008"]
    assert settings[("sipwarden-unproven", "bantime")] == ["60"]
    actions = {
        command[1]: _options(command[4])
        for command in commands
        if command[0] == "multi-set" and command[2] == "action"
    }
    for jail in JAIL_NAMES:
        assert actions[jail]["name"] == jail
        assert actions[jail]["blocktype"] == "drop"
        assert actions[jail]["port"] == "5060,5061"
        assert actions[jail]["protocol"] == "tcp,udp"
