"""The ``sipwarden`` command.

The command line is the edge of the program: it is the only place that picks the
configuration file, applies the command line overrides and sets up logging. Every
subcommand loads the configuration only when it needs it, so ``--help`` and
``config example`` work even next to a broken ``sipwarden.toml``.

Exit codes: 0 success, 1 the command ran and found a problem (a subcommand's own
verdict), 2 the command could not run (usage error, bad configuration, a feature that
is not built yet, or any other ``SipwardenError``).
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NoReturn

import click

from sipwarden import __version__
from sipwarden.config import (
    DEFAULT_CONFIG_FILE,
    Config,
    LogConfig,
    load_config,
    render_example_config,
    resolve_config_path,
)
from sipwarden.errors import ConfigError, SipwardenError
from sipwarden.logs import LOG_FORMATS, LOG_LEVELS, configure_logging
from sipwarden.runtime import tune_garbage_collector

__all__ = ["cli", "main"]

EXIT_CANNOT_RUN: Final = 2
"""Exit code when a command cannot run: usage error, bad configuration, not built yet."""

_CONTEXT: Final[dict[str, Any]] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _CannotRun(click.ClickException):
    """A ``SipwardenError`` or an unavailable feature, shown without a traceback, exit 2."""

    exit_code = EXIT_CANNOT_RUN

    def __init__(self, message: str, *, label: str = "error") -> None:
        super().__init__(message)
        self.label = label

    def show(self, file: Any = None) -> None:  # noqa: ANN401 - click's own signature
        """Print ``sipwarden: <label>: <message>`` to stderr."""
        click.echo(f"sipwarden: {self.label}: {self.format_message()}", err=True, file=file)


class _Group(click.Group):
    """The root group: turns any ``SipwardenError`` into a clear message and exit 2."""

    def invoke(self, ctx: click.Context) -> Any:  # noqa: ANN401 - click's own signature
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise _CannotRun(str(exc), label="configuration error") from exc
        except SipwardenError as exc:
            raise _CannotRun(str(exc)) from exc


@dataclass(slots=True)
class _State:
    """What the global options chose; the configuration is loaded on first use."""

    config_path: str | None
    log_format: str | None
    log_level: str | None
    _config: Config | None = field(default=None, init=False)

    def config(self) -> Config:
        """Load the configuration, apply the command line overrides and set up logging."""
        if self._config is None:
            config = load_config(self.config_path)
            overrides = {
                key: value
                for key, value in (("level", self.log_level), ("format", self.log_format))
                if value is not None
            }
            if overrides:
                # Re-validate rather than copy, so an override is checked like the file.
                log = LogConfig.model_validate({**config.log.model_dump(), **overrides})
                config = config.model_copy(update={"log": log})
            configure_logging(level=config.log.level, fmt=config.log.format)
            self._config = config
        return self._config


@click.group(
    cls=_Group,
    context_settings=_CONTEXT,
    epilog=(
        "\b\n"
        "Start here:\n"
        "  sipwarden config example > sipwarden.toml   write the commented defaults\n"
        "  sipwarden monitor --pcap capture.pcap       find attacks in a capture\n"
        "  sipwarden COMMAND --help                    what a command does, with examples"
    ),
)
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    type=click.Path(dir_okay=True, path_type=str),
    default=None,
    help=f"TOML configuration file. [default: ./{DEFAULT_CONFIG_FILE} if present, else built-in]",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default=None,
    help="Log as human-readable text or as JSON lines (overrides log.format).",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default=None,
    help="Least severe messages to log (overrides log.level).",
)
@click.version_option(
    __version__, "-V", "--version", prog_name="sipwarden", message="%(prog)s %(version)s"
)
@click.pass_context
def cli(
    ctx: click.Context, config_path: str | None, log_format: str | None, log_level: str | None
) -> None:
    """Protect SIP PBXs from scanners, extension enumeration, password cracking, floods
    and toll fraud.

    sipwarden sits in front of a PBX (Asterisk, FreeSWITCH, FreePBX, 3CX, Kamailio or
    OpenSIPS platforms) as an in-line SIP firewall, or beside it as a passive monitor of
    captures and mirrored traffic. Both run the same detection engine, so what the
    monitor finds in a capture is what the gateway would have blocked.

    \b
    Global options go before the command:
      sipwarden --log-format json --config /etc/sipwarden.toml monitor --pcap x.pcap
    """
    ctx.obj = _State(
        config_path=config_path,
        log_format=log_format,
        log_level=log_level.lower() if log_level else None,
    )


def _state(ctx: click.Context) -> _State:
    state = ctx.find_object(_State)
    if state is None:  # pragma: no cover - every command runs under the root group
        raise RuntimeError("sipwarden command invoked outside the root group")
    return state


# --------------------------------------------------------------------------- gateway


@cli.command(short_help="In-line SIP firewall / SBC in front of the PBX.")
@click.option(
    "--json", "json_lines", is_flag=True, help="Write security events as JSON lines on stdout."
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop after this many seconds (tests, trials); default: until SIGINT/SIGTERM.",
)
@click.pass_context
def gateway(ctx: click.Context, json_lines: bool, duration: float | None) -> None:
    """In-line SIP firewall and lightweight SBC in front of the PBX.

    The gateway listens where the PBX used to listen (gateway.listen) and forwards
    what the detection engine allows to the PBX (gateway.upstreams). Banned and bogon
    sources, floods and malformed messages never reach it; answers look the same for
    known and unknown accounts; the PBX's address, product name and version never
    reach the outside: the gateway record-routes itself, rewrites Via, Contact,
    Record-Route, User-Agent/Server and the SDP origin, and restores them on the way
    back. Bans go to the kernel backends and the other nodes like the monitor's.

    \b
    Example (the PBX moved to 127.0.0.1:5080, the gateway takes 5060):
      sipwarden gateway --json >> /var/log/sipwarden/events.jsonl
    with [gateway] listen = ["udp:203.0.113.10:5060"], upstreams = ["udp:127.0.0.1:5080"]
    """
    state = _state(ctx)
    config = state.config()
    from sipwarden.gateway.command import run_gateway  # noqa: PLC0415 - keep --help light

    def reload() -> Config:
        return load_config(state.config_path)

    ctx.exit(run_gateway(config, json_lines=json_lines, duration=duration, reload=reload))


# --------------------------------------------------------------------------- monitor


@cli.command(
    short_help="Passive detection of attacks in SIP traffic (captures; live and HEP later)."
)
@click.option(
    "--pcap",
    "pcaps",
    metavar="FILE",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=str),
    help="Analyse a pcap or pcapng capture file. Repeat for several files.",
)
@click.option(
    "--interface",
    metavar="IF",
    default=None,
    help="Capture live on a network interface (a mirror port or tap; needs root or "
    "CAP_NET_RAW). The kernel filters on sip.ports.",
)
@click.option(
    "--hep",
    metavar="ADDR:PORT",
    default=None,
    help="Receive a HEP v1/v2/v3 feed (Kamailio siptrace, OpenSIPS proto_hep, Asterisk "
    "res_hep, FreeSWITCH) on UDP and TCP.",
)
@click.option(
    "--duration",
    metavar="SECONDS",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop a live source (--interface, --hep) after this many seconds; "
    "default: run until Ctrl-C.",
)
@click.option(
    "--json",
    "json_lines",
    is_flag=True,
    help="Write results as JSON lines (one object per line) instead of a readable report.",
)
@click.pass_context
def monitor(  # noqa: PLR0917 - click passes each option positionally
    ctx: click.Context,
    pcaps: tuple[str, ...],
    interface: str | None,
    hep: str | None,
    duration: float | None,
    json_lines: bool,
) -> None:
    """Passive analysis: find attacks and fraud in SIP traffic without touching it.

    The monitor reads SIP signalling from capture files, a live interface or a HEP
    feed and reports scanners, extension enumeration, password
    cracking, floods and suspicious calls. It never sends a packet, so it is safe to
    run on a copy of production traffic; run it on a sensor, not on the PBX. Use it to
    see what is hitting a PBX today, to investigate an incident from a capture, or to
    test a policy before putting the gateway in line.

    Ports listed in sip.ports are decoded as SIP; with monitor.sniff_any_port (the
    default) other UDP/TCP payloads that start like SIP are decoded too.

    \b
    Examples:
      sipwarden monitor --pcap capture.pcap
      sipwarden monitor --pcap monday.pcapng --pcap tuesday.pcapng --json > events.jsonl
      sipwarden monitor --interface eth1 --json >> /var/log/sipwarden/events.jsonl
      sipwarden monitor --hep 0.0.0.0:9060        (Kamailio: modparam("siptrace", ...))

    Events go to the store (store.path, SQLite) and, with --json, to stdout as one
    JSON object per line (fields: time, kind, severity, source, account, rule,
    summary, evidence, detail; bans as kind "ban"); without --json a report of the
    top offenders follows the analysis.

    Exit code 0 when the analysis ran, 1 when a capture was damaged (what came
    before the damage is still analysed), 2 when it could not run.
    """
    if not pcaps and interface is None and hep is None:
        raise click.UsageError(
            "nothing to analyse: give a source, e.g. --pcap capture.pcap, --interface eth1 "
            "or --hep 0.0.0.0:9060",
            ctx=ctx,
        )
    if interface is not None and hep is not None:
        raise click.UsageError("--interface and --hep cannot be combined in one run", ctx=ctx)
    config = _state(ctx).config()
    # Imported here so that `--help` and the other commands do not load the engine.
    from sipwarden.monitor.command import run_monitor  # noqa: PLC0415

    code: int = run_monitor(
        pcaps=pcaps,
        interface=interface,
        hep=hep,
        duration=duration,
        config=config,
        json_lines=json_lines,
        out=sys.stdout,
    )
    ctx.exit(code)


# --------------------------------------------------------------------------- audit, rules


_PLANNED_AUDITS: Final[dict[str, str]] = {
    "config": "hardening of Asterisk, FreeSWITCH and Kamailio configuration files",
    "pcap": "credentials, internal addresses and PBX versions leaking in captures",
    "passwords": "SIP account passwords a cracker would guess (offline dictionary)",
    "tls": "certificates, protocol versions and ciphers of the SIP-TLS service",
    "exposure": "management interfaces (web GUI, AMI, ARI, SSH) reachable from outside",
    "version": "PBX version against published security advisories",
    "numbering": "extension numbering that makes enumeration easy",
}


def _planned_epilog(title: str, planned: dict[str, str]) -> str:
    width = max(len(name) for name in planned) + 2
    rows = "\n".join(f"  {name:<{width}}{what}" for name, what in planned.items())
    return f"\b\n{title} (not available yet):\n{rows}"


class _PlannedGroup(click.Group):
    """A group whose subcommands are still being written: a planned name is a clear
    usage error ("not available yet") rather than click's bare "No such command"."""

    def __init__(self, *args: Any, planned: dict[str, str], **kwargs: Any) -> None:  # noqa: ANN401
        self.planned = planned
        super().__init__(*args, **kwargs)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """Resolve as usual; a planned but unbuilt name raises a usage error saying so."""
        name = args[0] if args else ""
        if self.get_command(ctx, name) is None and name in self.planned:
            raise click.UsageError(
                f"{ctx.command_path} {name} ({self.planned[name]}) is planned but not "
                "available yet.",
                ctx=ctx,
            )
        return super().resolve_command(ctx, args)


@cli.group(
    cls=_PlannedGroup,
    planned=_PLANNED_AUDITS,
    short_help="One-shot security checks of a PBX, its configuration and traffic.",
    epilog=_planned_epilog("Planned checks", _PLANNED_AUDITS),
)
def audit() -> None:
    """One-shot security checks of a PBX, its configuration and its traffic.

    Use it before going live, after a change, or on a schedule: each check reads
    configuration files, captures or a service, reports findings with what to fix, and
    exits 1 when it found a problem (0 when clean), so it can gate a deployment.

    No check is available yet; the list below is what is coming. An example of what
    the commands will look like:

    \b
      sipwarden audit config /etc/asterisk
    """


@cli.group(short_help="Generate host and edge firewall rules (nftables, fail2ban, ...).")
def rules() -> None:
    """Generate host and edge firewall rules from the configuration.

    Use it to harden the PBX host itself, or the router in front of it, with rules
    you review and load yourself: the output is printed (or written), never applied.
    Every generator reads [rules], [sip] and [bans] (the allowlist is never limited or
    banned) and comments each block with why it is there.

    \b
    Examples:
      sipwarden rules nftables > sipwarden.nft && nft -c -f sipwarden.nft
      sipwarden rules iptables > rules.v4; sipwarden rules iptables --ipv6 > rules.v6
      sipwarden rules fail2ban --output /etc/fail2ban --enable sipwarden-asterisk
      sipwarden rules edge --syntax cisco-ios --outside Gi0/0/0 --inside Gi0/0/1
    """


@rules.command(name="nftables")
@click.pass_context
def rules_nftables(ctx: click.Context) -> None:
    """A complete nftables ruleset for the PBX host, with sipwarden's ban sets hooked in.

    SIP ports with per-source rate and connection limits, the RTP range, management
    ports only from rules.management_networks, BCP 38 on rules.public_interface.
    Check it with `nft -c -f FILE` before loading it.

    \b
    Example:
      sipwarden rules nftables > /etc/nftables.d/sipwarden.nft
    """
    from sipwarden.enforce.rules.nftables import render_nftables  # noqa: PLC0415

    click.echo(render_nftables(_state(ctx).config()), nl=False)


@rules.command(name="iptables")
@click.option("--ipv6", is_flag=True, help="ip6tables rules instead of iptables.")
@click.pass_context
def rules_iptables(ctx: click.Context, ipv6: bool) -> None:
    """An iptables-restore ruleset (with ipset ban sets) for hosts without nftables.

    The ipset commands to run first are in the header; check the output with
    `iptables-restore --test`.

    \b
    Examples:
      sipwarden rules iptables > /etc/iptables/rules.v4
      sipwarden rules iptables --ipv6 > /etc/iptables/rules.v6
    """
    from sipwarden.enforce.rules.iptables import render_iptables  # noqa: PLC0415

    click.echo(render_iptables(_state(ctx).config(), ipv6=ipv6), nl=False)


@rules.command(name="fail2ban")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the files under this directory (filter.d/, jail.d/, fail2ban.d/).",
)
@click.option("--json-log", help="sipwarden's JSON event log the sipwarden jails read.")
@click.option("--all-ports", is_flag=True, help="Ban on every port, not only the SIP ports.")
@click.option("--enable", "enabled", multiple=True, help="Enable this jail (repeatable).")
@click.pass_context
def rules_fail2ban(
    ctx: click.Context,
    output: Path | None,
    json_log: str | None,
    all_ports: bool,
    enabled: tuple[str, ...],
) -> None:
    """fail2ban filters and jails: Asterisk (chan_sip, PJSIP, security log), FreeSWITCH and
    sipwarden's own JSON log, with escalating bans that mirror [bans].

    \b
    Examples:
      sipwarden rules fail2ban                       (prints every file)
      sipwarden rules fail2ban --output /etc/fail2ban --enable sipwarden-asterisk
    """
    from sipwarden.enforce.rules.fail2ban import DEFAULT_JSON_LOG, render_fail2ban  # noqa: PLC0415

    try:
        files = render_fail2ban(
            _state(ctx).config(),
            json_log=json_log or DEFAULT_JSON_LOG,
            all_ports=all_ports,
            enable=enabled,
        )
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--enable") from None
    for name, text in files.items():
        if output is None:
            click.echo(f"# ===== {name} =====\n{text}")
        else:
            target = output / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            click.echo(f"wrote {target}", err=True)


@rules.command(name="edge")
@click.option("--syntax", default="cisco-ios", show_default=True, help="cisco-ios or routeros.")
@click.option("--outside", help="The router's Internet-facing interface.")
@click.option("--inside", help="The router's interface towards the PBX.")
@click.option(
    "--site-prefix", "site_prefixes", multiple=True, help="Your own prefix (egress BCP 38)."
)
@click.pass_context
def rules_edge(
    ctx: click.Context,
    syntax: str,
    outside: str | None,
    inside: str | None,
    site_prefixes: tuple[str, ...],
) -> None:
    """A template for the edge router: BCP 38 ingress and egress filtering, SIP rate
    limits, management ports only from the management networks.

    \b
    Example:
      sipwarden rules edge --syntax routeros --outside ether1 --site-prefix 198.51.100.0/24
    """
    from sipwarden.enforce.rules.edge import render_edge  # noqa: PLC0415

    try:
        text = render_edge(
            _state(ctx).config(),
            syntax=syntax,
            outside=outside,
            inside=inside,
            site_prefixes=site_prefixes,
        )
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    click.echo(text, nl=False)


# --------------------------------------------------------------------------- bans


@cli.group(short_help="List, explain, make and lift bans.")
def bans() -> None:
    """List, explain, make and lift bans.

    Bans come from the engine (gateway, live monitor), from other nodes (shared
    Redis state) and from you. They are kept in the store (store.path), so these
    commands see every ban made on this host; making or lifting one applies it to
    the kernel backends ([enforce] backends) and the other nodes ([shared]) too.

    \b
    Examples:
      sipwarden bans list
      sipwarden bans show 203.0.113.7
      sipwarden bans ban 203.0.113.7 --duration 1d --reason "toll fraud attempt"
      sipwarden bans ban 2001:db8:1:2::/64 --duration 1h
      sipwarden bans unban 203.0.113.7
    """


@bans.command(name="list")
@click.option("--all", "history", is_flag=True, help="Every ban kept, not only those in force.")
@click.option("--json", "json_lines", is_flag=True, help="One JSON object per ban and line.")
@click.pass_context
def bans_list(ctx: click.Context, history: bool, json_lines: bool) -> None:
    """The bans in force (or, with --all, every ban kept), soonest expiry last.

    \b
    Examples:
      sipwarden bans list
      sipwarden bans list --all --json | jq .
    """
    from sipwarden.alerts.records import to_json_line  # noqa: PLC0415 - keep --help light
    from sipwarden.enforce.admin import describe_ban, open_store  # noqa: PLC0415

    now = time.time()
    with open_store(_state(ctx).config()) as store:
        if history:
            records = store.ban_history()
            for record in records:
                click.echo(to_json_line(record) if json_lines else _history_text(record))
            return
        active = sorted(store.active_bans(now), key=lambda ban: ban.until)
    for ban in active:
        click.echo(to_json_line(ban.record()) if json_lines else describe_ban(ban, now))
    if not json_lines:
        click.echo(f"{len(active)} bans in force", err=True)


def _history_text(record: dict[str, Any]) -> str:
    lifted = " (lifted)" if record.get("lifted") else ""
    return (
        f"{record['source']:<39} {record['since']} .. {record['until']}  {record['rule']}{lifted}"
    )


@bans.command(name="show")
@click.argument("source")
@click.pass_context
def bans_show(ctx: click.Context, source: str) -> None:
    """Why SOURCE is (or was) banned: the ban, its evidence, its history and its events.

    \b
    Example:
      sipwarden bans show 203.0.113.7
    """
    from sipwarden.enforce.admin import explain_source, open_store  # noqa: PLC0415

    with open_store(_state(ctx).config()) as store:
        for line in explain_source(store, _source_argument(source), time.time()):
            click.echo(line)


@bans.command(name="ban")
@click.argument("source")
@click.option("--duration", default="1d", show_default=True, help="e.g. 90, 10m, 1h, 2d, 1w.")
@click.option("--reason", default="banned by hand", show_default=True, help="Kept with the ban.")
@click.pass_context
def bans_ban(ctx: click.Context, source: str, duration: str, reason: str) -> None:
    """Ban SOURCE (an address or a network); an existing ban is extended, never shortened.

    The ban is kept in the store and applied to the kernel backends and the other
    nodes; exit 2 (the ban still kept) when a backend refused it.

    \b
    Examples:
      sipwarden bans ban 203.0.113.7 --duration 1d --reason "toll fraud attempt"
      sipwarden bans ban 2001:db8:1:2::/64 --duration 1h
    """
    from sipwarden.enforce.admin import ban_source, describe_ban, parse_duration  # noqa: PLC0415

    try:
        seconds = parse_duration(duration)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--duration") from None
    now = time.time()
    ban = ban_source(
        _state(ctx).config(), _source_argument(source), duration=seconds, reason=reason, now=now
    )
    click.echo(f"banned: {describe_ban(ban, now)}")


@bans.command(name="unban")
@click.argument("source")
@click.pass_context
def bans_unban(ctx: click.Context, source: str) -> None:
    """Lift the ban on SOURCE everywhere (exit 1 if it was not banned).

    \b
    Example:
      sipwarden bans unban 203.0.113.7
    """
    from sipwarden.enforce.admin import lift_source  # noqa: PLC0415

    lifted = lift_source(_state(ctx).config(), _source_argument(source), now=time.time())
    if lifted is None:
        click.echo(f"{source} was not banned here; the lift was still sent to every backend")
        ctx.exit(1)
    click.echo(f"lifted the ban on {lifted.source} ({lifted.rule}: {lifted.reason})")


def _source_argument(text: str) -> str:
    from sipwarden.enforce.ban import canonical_source  # noqa: PLC0415

    try:
        return canonical_source(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not an IP address or network", param_hint="SOURCE"
        ) from None


# --------------------------------------------------------------------------- version, config


@cli.command(short_help="Print the sipwarden and Python versions.")
def version() -> None:
    """Print the sipwarden and Python versions (include them in bug reports).

    \b
    Example:
      sipwarden version
    """
    click.echo(f"sipwarden {__version__}")
    click.echo(
        f"Python {platform.python_version()} ({platform.python_implementation()}, "
        f"{platform.system() or sys.platform})"
    )


@cli.group(name="config")
def config_group() -> None:
    """Write the example configuration, or check a configuration file.

    sipwarden reads ./sipwarden.toml when present (or the file given with --config);
    without one it runs on built-in defaults. Every key, its meaning and its default are
    in the example configuration.

    \b
    Examples:
      sipwarden config example > sipwarden.toml
      sipwarden config check sipwarden.toml
    """


@config_group.command()
def example() -> None:
    """Print the commented example configuration (all keys, with their defaults).

    \b
    Example:
      sipwarden config example > sipwarden.toml
    """
    click.echo(render_example_config(), nl=False)


@config_group.command()
@click.argument("path", required=False, type=click.Path(path_type=str))
@click.pass_context
def check(ctx: click.Context, path: str | None) -> None:
    """Check a configuration file: print "OK: PATH" (exit 0) or every problem (exit 2).

    PATH defaults to the global --config, else ./sipwarden.toml. Run it after every edit
    and before a restart; unknown keys (typos) are reported, not ignored.

    \b
    Examples:
      sipwarden config check /etc/sipwarden/sipwarden.toml
      sipwarden --config /etc/sipwarden/sipwarden.toml config check
    """
    chosen = resolve_config_path(path if path is not None else _state(ctx).config_path)
    if chosen is None:
        click.echo(
            f"OK: no {DEFAULT_CONFIG_FILE} in the current directory; the built-in defaults apply "
            "(see `sipwarden config example`)."
        )
        return
    load_config(chosen)
    click.echo(f"OK: {click.format_filename(chosen)}")


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the ``sipwarden`` command (the console script's entry point)."""
    tune_garbage_collector()
    cli.main(args=list(argv) if argv is not None else None, prog_name="sipwarden")
