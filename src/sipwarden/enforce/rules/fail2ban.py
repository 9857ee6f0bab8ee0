"""fail2ban filters and jails (``sipwarden rules fail2ban``): bans from the PBX's own logs.

fail2ban watches a log, counts failures per address and bans an address
that fails too often. :func:`render_fail2ban` returns the files to drop into
fail2ban's configuration directory (``/etc/fail2ban`` on Debian), by their
relative names:

* ``filter.d/sipwarden-asterisk.conf``: Asterisk's messages log, chan_sip
  and chan_pjsip (failed registrations and authentications, unknown
  endpoints, ACL refusals, calls to extensions that do not exist);
* ``filter.d/sipwarden-asterisk-security.conf``: Asterisk's security event
  log (res_security_log);
* ``filter.d/sipwarden-freeswitch.conf``: FreeSWITCH's log (mod_sofia);
* ``filter.d/sipwarden.conf``: sipwarden's own JSON lines (``monitor --json``),
  which carry bans already decided;
* ``jail.d/sipwarden.conf``: one jail per log, all disabled until chosen,
  with the ports, thresholds, ban durations and allowlist of the configuration;
* ``fail2ban.d/sipwarden.conf``: how long fail2ban's database remembers bans,
  which is how far back its escalation can look.

The filters are fixed text shipped in ``sipwarden/data`` (each explains in its
header how it keeps an attacker from getting another address banned); the
jails are made from the configuration, so they say the same as sipwarden's
own policy:

* ports: ``sip.ports`` over UDP and TCP (or every port, ``all_ports``);
* thresholds: ``detect.cracking.failures_threshold`` failures within
  ``failures_window`` seconds, as sipwarden's own cracking detector;
* durations: ``bans.durations`` with fail2ban's ``bantime.increment``, a
  repeat offender's ban growing as sipwarden's does; a ban line of sipwarden
  whose source may be spoofed gets ``bans.unproven_duration``, never escalated;
* never banned: ``bans.allowlist`` (``ignoreip``), and the host itself;
* action: nftables (``nftables-multiport``, or ``nftables-allports``), dropping.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Final

from sipwarden.config import Config
from sipwarden.detection_config import ban_settings, detection_settings

from .common import host_policy

__all__ = [
    "ASTERISK_LOGS",
    "ASTERISK_SECURITY_LOGS",
    "DEFAULT_JSON_LOG",
    "FILTERS",
    "FREESWITCH_LOGS",
    "JAIL_NAMES",
    "render_fail2ban",
]

FILTERS: Final[tuple[str, ...]] = (
    "sipwarden-asterisk",
    "sipwarden-asterisk-security",
    "sipwarden-freeswitch",
    "sipwarden",
)
"""The filters shipped, each ``sipwarden/data/fail2ban-NAME.conf``, installed as
``filter.d/NAME.conf``."""

# Where the packages log by default. Asterisk's sample logger.conf names its files
# "messages.log" and "security.log" since Asterisk 16, Debian's and older ones
# "messages" and "security"; fail2ban only notes a path that does not exist.
ASTERISK_LOGS: Final = ("/var/log/asterisk/messages", "/var/log/asterisk/messages.log")
ASTERISK_SECURITY_LOGS: Final = ("/var/log/asterisk/security", "/var/log/asterisk/security.log")
FREESWITCH_LOGS: Final = ("/var/log/freeswitch/freeswitch.log",)
DEFAULT_JSON_LOG: Final = "/var/log/sipwarden/events.jsonl"
"""Where ``sipwarden monitor --json >> FILE`` is expected to append (as its help shows)."""

JAIL_NAMES: Final[tuple[str, ...]] = (
    "sipwarden-asterisk",
    "sipwarden-asterisk-security",
    "sipwarden-freeswitch",
    "sipwarden",
    "sipwarden-unproven",
)
"""The jails of ``jail.d/sipwarden.conf``, in the file's order."""

JSON_FINDTIME: Final = 600
"""Seconds within which a sipwarden ban line must be read to count. A line older than
that at start-up, or from a capture replayed days later, is history, not an attack."""

LOCALHOST: Final = ("127.0.0.1/8", "::1")


@dataclass(frozen=True, slots=True, kw_only=True)
class _Jail:
    """One jail: what it reads, and when and for how long it bans."""

    name: str
    about: str
    filter_name: str
    logpaths: tuple[str, ...]
    maxretry: int
    findtime: int
    durations: tuple[int, ...]  # the first ban, then each repeat's (escalation)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Common:
    """What every jail shares: the action and who is never banned."""

    ports: tuple[int, ...]
    all_ports: bool
    ignoreip: tuple[str, ...]


def render_fail2ban(
    config: Config,
    *,
    json_log: str = DEFAULT_JSON_LOG,
    all_ports: bool = False,
    enable: Collection[str] = (),
) -> dict[str, str]:
    """The fail2ban files for ``config``, by path relative to fail2ban's configuration
    directory (``filter.d/...``, ``jail.d/...``, ``fail2ban.d/...``).

    ``json_log`` is the file sipwarden's JSON lines are appended to; ``all_ports``
    bans an address on every port instead of the SIP ports; ``enable`` names the jails
    (of :data:`JAIL_NAMES`) to switch on, the others are written disabled.
    """
    unknown = sorted(set(enable) - set(JAIL_NAMES))
    if unknown:
        raise ValueError(f"unknown jail {unknown[0]!r}; known: {', '.join(JAIL_NAMES)}")
    files = {f"filter.d/{name}.conf": _filter_text(name) for name in FILTERS}
    files["jail.d/sipwarden.conf"] = _render_jails(
        _jails(config, json_log), _common(config, all_ports=all_ports), frozenset(enable)
    )
    files["fail2ban.d/sipwarden.conf"] = _render_database(config)
    return files


def _filter_text(name: str) -> str:
    # Imported here, not at module level: importlib.resources pulls in tempfile
    # and friends, which only this command needs.
    from importlib.resources import files  # noqa: PLC0415

    return files("sipwarden").joinpath("data", f"fail2ban-{name}.conf").read_text(encoding="utf-8")


def _jails(config: Config, json_log: str) -> tuple[_Jail, ...]:
    bans = ban_settings(config.bans)
    cracking = detection_settings(config.detect).cracking
    durations = tuple(_seconds(duration) for duration in bans.durations)

    def pbx(name: str, about: str, logpaths: tuple[str, ...]) -> _Jail:
        # The PBX logs one line per failed attempt, as sipwarden's cracking detector
        # counts them: the same threshold, within the same window.
        return _Jail(
            name=name,
            about=about,
            filter_name=name,
            logpaths=logpaths,
            maxretry=cracking.failures_threshold,
            findtime=_seconds(cracking.failures_window),
            durations=durations,
        )

    def own(name: str, about: str, *, returnable: bool, durations: tuple[int, ...]) -> _Jail:
        # A ban line is sipwarden's decision already: the first one bans.
        return _Jail(
            name=name,
            about=about,
            filter_name=f"sipwarden[returnable={'true' if returnable else 'false'}]",
            logpaths=(json_log,),
            maxretry=1,
            findtime=JSON_FINDTIME,
            durations=durations,
        )

    return (
        pbx(
            "sipwarden-asterisk",
            "Asterisk, chan_sip and chan_pjsip: failures in the messages log.",
            ASTERISK_LOGS,
        ),
        pbx(
            "sipwarden-asterisk-security",
            "Asterisk's security event log (logger.conf: security => security). Enable\n"
            "this one or sipwarden-asterisk, not both: each failure is in both logs.",
            ASTERISK_SECURITY_LOGS,
        ),
        pbx(
            "sipwarden-freeswitch",
            "FreeSWITCH (mod_sofia, with log-auth-failures on each profile).\n"
            "filter = sipwarden-freeswitch[mode=aggressive] also counts every digest\n"
            "challenge: it catches scanners that never answer one, and busy NATs too.",
            FREESWITCH_LOGS,
        ),
        own(
            "sipwarden",
            "sipwarden's own bans (`sipwarden monitor --json >> FILE`) of sources that\n"
            "proved they receive our replies: one line is a ban, escalated on repeats.\n"
            "filter = sipwarden[returnable=true, mode=events] also bans on high and\n"
            "critical events, skipping sipwarden's ban policy (allowlist aside).",
            returnable=True,
            durations=durations,
        ),
        own(
            "sipwarden-unproven",
            "sipwarden's bans of sources that may be spoofed (plain UDP, no answered\n"
            "challenge): short and never escalated, so that nobody can get a victim's\n"
            "address locked out by forging it.",
            returnable=False,
            durations=(_seconds(bans.unproven_duration),),
        ),
    )


def _common(config: Config, *, all_ports: bool) -> _Common:
    policy = host_policy(config)
    return _Common(
        ports=policy.sip_ports,
        all_ports=all_ports,
        ignoreip=(*LOCALHOST, *policy.allowlist4, *policy.allowlist6),
    )


def _seconds(value: float) -> int:
    """Whole seconds, at least one: fail2ban's times are integers here."""
    return max(1, math.ceil(value))


_HEADER: Final = """\
# fail2ban jails for SIP, made by `sipwarden rules fail2ban` from sipwarden's
# configuration. Review, then install beside the filters:
#   filter.d/sipwarden*.conf  -> /etc/fail2ban/filter.d/
#   jail.d/sipwarden.conf     -> /etc/fail2ban/jail.d/
#   fail2ban.d/sipwarden.conf -> /etc/fail2ban/fail2ban.d/
# set "enabled = true" on the jails of your PBX (or override them in a .local file),
# check with `fail2ban-client -t`, and load with `fail2ban-client reload`.
#
# Bans go into nftables (fail2ban's own table, f2b-table) and drop the source's
# packets. A PBX log cannot tell a spoofed UDP source from a real one: keep your
# trunks and remote offices in sipwarden's bans.allowlist (ignoreip below), and
# prefer TCP/TLS for phones outside your network.
"""


def _render_jails(jails: Iterable[_Jail], common: _Common, enable: frozenset[str]) -> str:
    blocks = [_HEADER.rstrip("\n")]
    blocks.extend(_render_jail(jail, common, enabled=jail.name in enable) for jail in jails)
    return "\n\n".join(blocks) + "\n"


def _render_jail(jail: _Jail, common: _Common, *, enabled: bool) -> str:
    lines = [f"# {line}".rstrip() for line in jail.about.splitlines()]
    lines += [
        f"[{jail.name}]",
        f"enabled = {'true' if enabled else 'false'}",
        f"filter = {jail.filter_name}",
        *_multiline("logpath", jail.logpaths),
        # The jails read files; a distribution's default of the systemd journal does not apply.
        "backend = auto",
        # Only addresses are ever captured (<ADDR>), never names to resolve.
        "usedns = no",
        *_action(common),
        f"ignoreip = {' '.join(common.ignoreip)}",
        f"maxretry = {jail.maxretry}",
        f"findtime = {jail.findtime}",
        *_bantime(jail.durations),
    ]
    return "\n".join(lines)


def _multiline(key: str, values: Iterable[str]) -> list[str]:
    """``key = first`` and the others indented beneath, as fail2ban takes lists."""
    first, *rest = values
    indent = " " * (len(key) + 3)
    return [f"{key} = {first}", *(indent + value for value in rest)]


def _action(common: _Common) -> list[str]:
    lines = [
        f"port = {','.join(str(port) for port in common.ports)}",
        # One nftables action covers both: it adds one rule per protocol listed.
        "protocol = tcp,udp",
        "banaction = nftables-multiport",
        "banaction_allports = nftables-allports",
    ]
    # Dropped rather than rejected: no answer for a scanner, and no ICMP errors sent to
    # an address that may have been forged.
    if common.all_ports:
        lines.append('action = %(banaction_allports)s[protocol="%(protocol)s", blocktype=drop]')
    else:
        lines.append(
            'action = %(banaction)s[port="%(port)s", protocol="%(protocol)s", blocktype=drop]'
        )
    return lines


def _bantime(durations: tuple[int, ...]) -> list[str]:
    """The first ban's duration, and fail2ban's escalation for the repeats.

    fail2ban multiplies ``bantime`` by ``bantime.multipliers[n]`` for an address
    banned ``n`` times before (the last multiplier holds for every later ban), with
    its database as memory. When a duration is not a multiple of the first, a
    formula indexes the durations directly instead.
    """
    first = durations[0]
    lines = [f"bantime = {first}"]
    if len(durations) == 1:
        return [*lines, "bantime.increment = false"]
    lines.append("bantime.increment = true")
    if all(duration % first == 0 for duration in durations):
        multipliers = " ".join(str(duration // first) for duration in durations)
        lines.append(f"bantime.multipliers = {multipliers}")
    else:
        table = ", ".join(str(duration) for duration in durations)
        lines.append(f"bantime.formula = ({table})[min(ban.Count, {len(durations) - 1})]")
    return lines


def _render_database(config: Config) -> str:
    # Escalation can only see the bans still in fail2ban's database, which forgets them
    # after dbpurgeage (a day by default). Keep them as long as sipwarden remembers
    # offences, and never less than that default, which other jails may count on.
    memory = max(_seconds(ban_settings(config.bans).offence_memory), 86_400)
    return (
        "# fail2ban server settings for the sipwarden jails, made by\n"
        "# `sipwarden rules fail2ban`: install as /etc/fail2ban/fail2ban.d/sipwarden.conf.\n"
        "#\n"
        "# How long fail2ban's database keeps past bans (seconds): a repeat offender's\n"
        "# ban escalates only while its earlier bans are remembered, and sipwarden\n"
        "# remembers offences for bans.offence_memory.\n"
        "\n"
        "[Definition]\n"
        f"dbpurgeage = {memory}\n"
    )
