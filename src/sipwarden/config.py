"""The one typed configuration model of sipwarden, and its TOML loader.

Every setting is declared once, here, with its default, its allowed range and
its documentation (``Field(description=...)``). The example configuration
(``sipwarden.toml`` at the repository root, ``sipwarden config example``) is
generated from these declarations by :func:`render_example_config`, so the
documentation cannot drift from the code.

Adding a section means two steps: write a ``_Section`` subclass whose
docstring explains the section to an administrator, and add one field of that
type to :class:`Config`. The loader, the error messages and the example
configuration pick it up from there.

A file is validated strictly, with TOML's own types: ``"5060"`` is not an
integer and ``"yes"`` is not a boolean. Unknown keys and sections are errors
(a typo such as ``[sip] prots = ...`` must not silently fall back to a
default), and every problem in a file is reported at once, each naming its
dotted key path.
"""

from __future__ import annotations

import datetime as dt
import difflib
import inspect
import ipaddress
import json
import math
import os
import re
import textwrap
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, get_args, get_origin

import annotated_types
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from sipwarden.detection_config import BANS_SECTION, DETECT_SECTION, settings_problems
from sipwarden.errors import ConfigError
from sipwarden.logs import LogFormat, LogLevel
from sipwarden.sip.limits import DEFAULT_LIMITS, ParserLimits

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "Config",
    "EnforceConfig",
    "GatewayConfig",
    "GatewayMediaConfig",
    "GatewayTlsConfig",
    "LogConfig",
    "MonitorConfig",
    "ParserConfig",
    "RulesConfig",
    "SharedConfig",
    "SipConfig",
    "StoreConfig",
    "load_config",
    "parse_config",
    "render_example_config",
    "resolve_config_path",
]

DEFAULT_CONFIG_FILE: Final = "sipwarden.toml"
"""The file :func:`load_config` reads from the working directory when no path is given."""

KIB: Final = 1024
MIB: Final = 1024 * KIB

Port = Annotated[int, Field(ge=1, le=65535)]


class _Section(BaseModel):
    """Base of every model in the configuration: immutable, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LogConfig(_Section):
    """Logging: how much sipwarden reports, and in which format it writes to stderr."""

    level: LogLevel = Field(
        default="info",
        description=(
            'Least severe messages that are logged: "debug", "info", "warning" or "error". '
            "The command line option --log-level overrides it."
        ),
    )
    format: LogFormat = Field(
        default="text",
        description=(
            '"text" is one human-readable line per message, for a terminal or journald; '
            '"json" is one JSON object per line (time, level, logger, message and the '
            "event's fields), for a SIEM or a log shipper. The command line option "
            "--log-format overrides it."
        ),
    )


class SipConfig(_Section):
    """SIP transport: where SIP signalling is expected."""

    ports: tuple[Port, ...] = Field(
        default=(5060, 5061),
        description=(
            "Ports that carry SIP, over UDP and TCP (5061 is SIP over TLS by "
            "convention). The gateway listens on them and the monitor decodes traffic to "
            "or from them as SIP. Add the non-standard ports your PBX or trunks use."
        ),
    )

    @field_validator("ports")
    @classmethod
    def _distinct_ports(cls, ports: tuple[int, ...]) -> tuple[int, ...]:
        # Checked here rather than with min_length, which pydantic also reports (wrongly)
        # when items were dropped for being invalid.
        if not ports:
            raise ValueError("at least one port is needed")
        seen: set[int] = set()
        for port in ports:
            if port in seen:
                raise ValueError(f"port {port} is listed more than once")
            seen.add(port)
        return ports


class ParserConfig(_Section):
    """SIP parser limits: the bounds that keep hostile input from costing unbounded memory
    or time. A message that exceeds one is rejected (513 Message Too Large, or 400 Bad
    Request) and reported as malformed. The defaults fit every legitimate message seen in
    practice; raise them only if a trusted peer sends larger ones."""

    # The defaults are the parser's own (sipwarden.sip.limits), declared there once.
    max_message_size: int = Field(
        default=DEFAULT_LIMITS.max_message_size,
        ge=1 * KIB,
        le=1 * MIB,
        description=(
            "Largest SIP message accepted, in bytes: start line, headers and body "
            "together. A UDP datagram carries at most 65535 bytes anyway."
        ),
    )
    max_header_count: int = Field(
        default=DEFAULT_LIMITS.max_header_count,
        ge=8,
        le=4096,
        description=(
            "Most header fields accepted in one message. A basic INVITE has about ten; "
            "thousands of headers are an attack on the parser."
        ),
    )
    max_line_length: int = Field(
        default=DEFAULT_LIMITS.max_line_length,
        ge=256,
        le=1 * MIB,
        description=(
            "Longest start line or header line accepted, in bytes; at most max_message_size."
        ),
    )

    def limits(self) -> ParserLimits:
        """These bounds in the form the SIP parser takes."""
        return ParserLimits(
            max_message_size=self.max_message_size,
            max_header_count=self.max_header_count,
            max_line_length=self.max_line_length,
        )

    @field_validator("max_line_length")
    @classmethod
    def _line_fits_in_message(cls, value: int, info: ValidationInfo) -> int:
        message_size = info.data.get("max_message_size")
        if message_size is not None and value > message_size:
            raise ValueError(f"cannot be larger than parser.max_message_size ({message_size})")
        return value


class MonitorConfig(_Section):
    """Monitor (tap mode): passive analysis of captures, live interfaces and HEP feeds."""

    sniff_any_port: bool = Field(
        default=True,
        description=(
            "Also analyse UDP and TCP payloads on ports not listed in sip.ports when they "
            "start like a SIP message. Scanners and some trunks use non-standard ports; "
            "set to false to decode only the listed ports (cheaper on busy links)."
        ),
    )


class StoreConfig(_Section):
    """Persistence: where security events and bans are kept. The embedded default is a
    SQLite file, which needs no server; a later query or the dashboard reads it."""

    path: str = Field(
        default="sipwarden.sqlite3",
        description=(
            "SQLite file that keeps events and bans, created when missing. An empty string "
            "keeps nothing (events still go to the report or the JSON output)."
        ),
    )
    busy_timeout: float = Field(
        default=5.0,
        ge=0,
        le=600,
        description=(
            "Seconds to wait when another sipwarden process holds the store's write lock. "
            "A store still locked after that is reported and retried later; the analysis "
            "and the bans in memory go on meanwhile."
        ),
    )


def _network(value: str) -> str:
    """An address or CIDR prefix, written back in canonical form."""
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or network (CIDR prefix)") from None


Network = Annotated[str, AfterValidator(_network)]
NftName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,30}$")]
IpsetName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,22}$")]


class EnforceConfig(_Section):
    """Enforcement: where bans are applied. Every ban is always kept in memory (the gateway
    drops a banned source before parsing) and in the store, so a restart forgets nothing;
    the backends listed here also push bans into the kernel, where a banned packet costs
    no Python time. Kernel backends need root (or CAP_NET_ADMIN); when one fails, the
    failure is logged, the in-memory bans keep working, and the backend is brought back
    up to date as soon as it works again."""

    backends: tuple[Literal["nftables", "ipset"], ...] = Field(
        default=(),
        description=(
            'Kernel backends: "nftables" (a table of sipwarden\'s own with IPv4 and IPv6 '
            'sets whose elements time out), "ipset" (ipset sets matched by iptables and '
            "ip6tables rules, for hosts that still use iptables). Empty keeps bans in "
            "sipwarden's own process only."
        ),
    )
    nftables_table: NftName = Field(
        default="sipwarden",
        description=(
            "Name of sipwarden's nftables table (family inet). sipwarden owns it: it is "
            "created when missing and never shares rules with yours."
        ),
    )
    ipset_prefix: IpsetName = Field(
        default="sipwarden",
        description=(
            "Prefix of the ipset sets (PREFIX-v4 and PREFIX-v6) and of the iptables chain "
            "that drops their members."
        ),
    )
    max_kernel_bans: int = Field(
        default=262_144,
        ge=1024,
        le=16_777_216,
        description=(
            "Most bans each kernel set holds (per address family). When full, new bans "
            "are still enforced in memory and a warning is logged."
        ),
    )
    flush_conntrack: bool = Field(
        default=True,
        description=(
            "Delete the connection-tracking entries of a source when it is banned, so an "
            "established UDP flow or TCP connection of the attacker does not outlive the ban."
        ),
    )
    retry_interval: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description=(
            "Seconds between attempts to bring a failed backend (kernel or Redis) back; "
            "when it works again, every active ban is re-applied to it."
        ),
    )


class SharedConfig(_Section):
    """Shared state between nodes: several gateways and monitors share their bans and
    per-source counters through one Redis server. A ban made on one node reaches every
    other node within a second (publish/subscribe), and a node that starts later reads
    the bans already in force (a persisted sorted set)."""

    redis_url: str = Field(
        default="",
        description=(
            'Redis server, e.g. "redis://10.0.0.5:6379/0" or "rediss://..." for TLS; an '
            "empty string keeps this node on its own."
        ),
    )
    key_prefix: str = Field(
        default="sipwarden",
        min_length=1,
        max_length=64,
        description="Prefix of every Redis key and channel sipwarden uses (one per cluster).",
    )
    node_name: str = Field(
        default="",
        max_length=64,
        description=(
            "Name of this node in shared bans (which node decided a ban); empty uses the host name."
        ),
    )


class RulesConfig(_Section):
    """Host and edge firewall rules (the "sipwarden rules" commands): what the generated rulesets
    allow. They are printed for you to review and load; sipwarden never applies them."""

    public_interface: str = Field(
        default="eth0",
        min_length=1,
        max_length=15,
        description=(
            "Interface facing the Internet. BCP 38 (RFC 2827) checks apply to it: packets "
            "arriving there from private, loopback, link-local, documentation, multicast "
            "or other bogon sources are dropped."
        ),
    )
    management_networks: tuple[Network, ...] = Field(
        default=(),
        description=(
            "Networks (your VPN, your office) allowed to reach the management ports. Empty "
            "closes the management ports to everyone, which is the safe default: put PBX "
            'administration behind a VPN and list its range here, e.g. ["10.8.0.0/24"].'
        ),
    )
    management_tcp_ports: tuple[Port, ...] = Field(
        default=(22, 80, 443, 5038, 8021, 8088, 8089),
        description=(
            "TCP management ports, reachable only from management_networks: SSH, web "
            "administration and provisioning over HTTP(S), Asterisk AMI (5038) and "
            "ARI/HTTP (8088, 8089), FreeSWITCH event socket (8021)."
        ),
    )
    management_udp_ports: tuple[Port, ...] = Field(
        default=(69, 161),
        description="UDP management ports: TFTP provisioning (69) and SNMP (161).",
    )
    sip_rate: int = Field(
        default=50,
        ge=1,
        le=100_000,
        description=(
            "SIP packets per second accepted from one source address; more is dropped. A "
            "busy phone sends a few per second, a trunk with many calls more: allowlist "
            "trunks in bans.allowlist, they bypass the limit."
        ),
    )
    sip_burst: int = Field(
        default=100,
        ge=1,
        le=1_000_000,
        description="Packets a source may send above sip_rate in a short burst.",
    )
    sip_tcp_connections: int = Field(
        default=20,
        ge=1,
        le=65_535,
        description="Concurrent TCP/TLS connections to the SIP ports from one source address.",
    )
    rtp_ports: tuple[Port, Port] = Field(
        default=(10_000, 20_000),
        description=(
            "First and last UDP port of the PBX's media (RTP/RTCP) range, opened to everyone."
        ),
    )
    bcp38: bool = Field(
        default=True,
        description="Drop packets with bogon source addresses on public_interface (BCP 38).",
    )
    drop_scanner_user_agents: bool = Field(
        default=True,
        description=(
            "Drop SIP packets carrying the User-Agent of a known scanner (friendly-scanner, "
            "sipvicious, sipcli, ...) by string match in the kernel, before they reach any "
            "process. Cheap; sipwarden's own detection still catches renamed tools."
        ),
    )

    @field_validator("rtp_ports")
    @classmethod
    def _ordered_range(cls, ports: tuple[int, int]) -> tuple[int, int]:
        if ports[0] > ports[1]:
            raise ValueError(f"the first port ({ports[0]}) is after the last ({ports[1]})")
        return ports


_LISTEN = r"^(udp|tcp|tls):(\[[0-9A-Fa-f:.]+\]|[0-9.]+):[0-9]{1,5}$"
_UPSTREAM = r"^(udp|tcp|tls):(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$"
TransportAddress = Annotated[str, Field(pattern=_LISTEN)]
UpstreamAddress = Annotated[str, Field(pattern=_UPSTREAM)]


class GatewayTlsConfig(_Section):
    """SIP over TLS on the gateway's tls: listeners. The certificate and key are files you
    supply (sipwarden ships no key); only TLS 1.2 and 1.3 with forward-secret AEAD ciphers
    are offered. With mutual TLS, a client must present a certificate signed by ca_file."""

    cert_file: str = Field(
        default="",
        description="PEM certificate chain of the gateway (leaf first). Needed for tls: listeners.",
    )
    key_file: str = Field(default="", description="PEM private key of cert_file.")
    ca_file: str = Field(
        default="",
        description=(
            "PEM CA certificates that sign client certificates (mutual TLS), and that the "
            "PBX's certificate must chain to when an upstream is reached over tls:."
        ),
    )
    require_client_cert: bool = Field(
        default=False,
        description=(
            "Mutual TLS: refuse a TLS client without a valid certificate signed by ca_file."
        ),
    )
    bind_account_to_subject: bool = Field(
        default=False,
        description=(
            "With mutual TLS, a REGISTER or INVITE is accepted only for the SIP account "
            "named in the client certificate (its subject CN or a SAN URI sip:user@...)."
        ),
    )


class GatewayMediaConfig(_Section):
    """Media: SRTP policy and optional media anchoring through rtpengine, so the PBX's media
    address never reaches the outside."""

    require_srtp: bool = Field(
        default=False,
        description=(
            "Refuse (488 Not Acceptable Here) a call from outside whose SDP offers no SRTP: "
            "RTP/SAVP(F) with a=crypto, or DTLS-SRTP (UDP/TLS/RTP/SAVP(F) with a=fingerprint)."
        ),
    )
    rtpengine: str = Field(
        default="",
        pattern=r"^$|^udp:(\[[0-9A-Fa-f:.]+\]|[0-9.]+):[0-9]{1,5}$",
        description=(
            'rtpengine\'s ng control socket, e.g. "udp:127.0.0.1:2223"; empty sends media '
            "directly between the phones and the PBX (its media address is then visible)."
        ),
    )
    rtpengine_outside_interface: str = Field(
        default="external",
        pattern=r"^[A-Za-z0-9_.-]{1,32}$",
        description=(
            "rtpengine's logical interface facing the outside (its --interface=NAME/ADDRESS); "
            "the names must match rtpengine's command line, which falls back to its first "
            "interface for a name it does not know."
        ),
    )
    rtpengine_inside_interface: str = Field(
        default="internal",
        pattern=r"^[A-Za-z0-9_.-]{1,32}$",
        description="rtpengine's logical interface facing the PBX.",
    )


class GatewayConfig(_Section):
    """The in-line gateway (the "sipwarden gateway" command): where it listens, which PBX
    it protects, and what it hides. It forwards what the engine allows to the PBX,
    record-routes itself so in-dialog requests come back through it, and rewrites what
    would reveal the PBX."""

    listen: tuple[TransportAddress, ...] = Field(
        default=("udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"),
        description=(
            'Listeners as "transport:address:port" (udp, tcp or tls; IPv6 in brackets, e.g. '
            '"udp:[::]:5060"). The gateway takes the address the PBX used to listen on.'
        ),
    )
    public_address: str = Field(
        default="",
        description=(
            "Address (or host name) the outside sees in Via, Record-Route and Contact. Empty "
            "uses the listener's address or, for a wildcard listener, the address of this "
            "host's default route (set it when the gateway is behind NAT)."
        ),
    )
    upstreams: tuple[UpstreamAddress, ...] = Field(
        default=("udp:127.0.0.1:5080",),
        description=(
            'The PBX (or PBXs, in order of preference) as "transport:host:port". The default '
            "is a PBX moved to port 5080 of this host, the gateway taking 5060; a PBX "
            'elsewhere is e.g. ["udp:10.0.0.5:5060"]. The first healthy one receives new '
            "requests."
        ),
    )
    health_check_interval: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description=(
            "Seconds between OPTIONS probes of each upstream. An upstream that misses three "
            "answers in a row is skipped until it answers again."
        ),
    )
    identity: str = Field(
        default="",
        max_length=128,
        description=(
            "What the outside sees in User-Agent and Server instead of the PBX's own product "
            'and version, e.g. "Avaya CM"; empty removes both headers.'
        ),
    )
    strip_outbound_headers: tuple[str, ...] = Field(
        default=("Organization", "Warning", "X-*", "P-*"),
        description=(
            "Headers removed from messages going out (names, or a prefix ending in *): they "
            "reveal the PBX product, its version or internal names."
        ),
    )
    strip_inbound_headers: tuple[str, ...] = Field(
        default=("P-Asserted-Identity", "P-Preferred-Identity", "Remote-Party-ID", "X-*"),
        description=(
            "Headers removed from messages coming in from outside: identity headers the PBX "
            "would trust (RFC 3325 trust ends at the gateway) and private extensions."
        ),
    )
    sdp_session_name: str = Field(
        default="-",
        max_length=64,
        description=(
            "SDP s= line written on the outside (PBXs put their product name there); the "
            "o= line's address is replaced by the gateway's too."
        ),
    )
    bogon_check: bool = Field(
        default=True,
        description=(
            "Drop requests from bogon sources (private, loopback, documentation, ... "
            "addresses: BCP 38) arriving from outside. Turn it off when phones reach the "
            "gateway from a private network; bans.allowlist networks always pass."
        ),
    )
    uniform_auth_answers: bool = Field(
        default=True,
        description=(
            "Answer unknown and known accounts alike (a challenge, then 403), so the PBX "
            "cannot serve as an oracle for extension enumeration."
        ),
    )
    answer_options: bool = Field(
        default=True,
        description=(
            "Answer out-of-dialog OPTIONS from outside at the gateway (200, the same for "
            "every Request-URI, with the capabilities the PBX gave its health checks) "
            "instead of forwarding them: phones' keep-alives never reach the PBX, and a "
            "PBX that answers 200 for its accounts and 404 for others cannot be used to "
            "enumerate them (svwar -m OPTIONS)."
        ),
    )
    secret_file: str = Field(
        default="sipwarden.key",
        description=(
            "File of the key that signs the routing state the gateway writes into Record-Route "
            "and Contact (so calls survive a restart); created, readable by its owner only, "
            "when missing. Every gateway node of one PBX needs the same file."
        ),
    )
    workers: int = Field(
        default=0,
        ge=0,
        le=256,
        description="Worker processes sharing the listeners (SO_REUSEPORT); 0 is one per core.",
    )
    tls: GatewayTlsConfig = Field(
        default_factory=GatewayTlsConfig, description="SIP over TLS and mutual TLS."
    )
    media: GatewayMediaConfig = Field(
        default_factory=GatewayMediaConfig, description="SRTP policy and media anchoring."
    )


if TYPE_CHECKING:
    # Made at import time from the detectors' settings dataclasses (see
    # detection_config.py); to mypy they are plain sections.
    _DetectConfig = _Section
    _BansConfig = _Section
else:
    _DetectConfig = DETECT_SECTION
    _BansConfig = BANS_SECTION


class Config(_Section):
    """The whole sipwarden configuration: one table per section."""

    log: LogConfig = Field(default_factory=LogConfig)
    sip: SipConfig = Field(default_factory=SipConfig)
    parser: ParserConfig = Field(default_factory=ParserConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    bans: _BansConfig = Field(default_factory=_BansConfig)
    enforce: EnforceConfig = Field(default_factory=EnforceConfig)
    shared: SharedConfig = Field(default_factory=SharedConfig)
    rules: RulesConfig = Field(default_factory=RulesConfig)
    detect: _DetectConfig = Field(default_factory=_DetectConfig)


# --------------------------------------------------------------------------- loading


def resolve_config_path(path: str | os.PathLike[str] | None) -> Path | None:
    """Return the file :func:`load_config` would read, or ``None`` for the built-in defaults.

    An explicit ``path`` is returned as given (relative paths stay relative). Without
    one, ``./sipwarden.toml`` is used if anything by that name exists in the working
    directory (a directory or a dangling link by that name is then reported as an error
    by :func:`load_config`, not ignored).
    """
    if path is not None:
        return Path(path)
    default = Path(DEFAULT_CONFIG_FILE)
    return default if os.path.lexists(default) else None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate a TOML configuration file.

    With ``path=None``, ``./sipwarden.toml`` is read if it exists, and the built-in
    defaults are returned if it does not. A file named explicitly must exist.

    Raises:
        ConfigError: the file is missing, unreadable, not UTF-8, not valid TOML, or
            fails validation. The message names the file and, for validation problems,
            the dotted key path of every problem with what was expected and found.
    """
    resolved = resolve_config_path(path)
    if resolved is None:
        return Config()
    file = os.fspath(resolved)
    try:
        raw = resolved.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            "configuration file not found (write an example with "
            f"`sipwarden config example > {file}`)",
            file=file,
        ) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, expected a TOML file", file=file) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror or exc}", file=file) from None
    try:
        text = raw.decode("utf-8-sig")  # tolerate the BOM some Windows editors write
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text: invalid byte 0x{raw[exc.start]:02x} at offset {exc.start}",
            file=file,
        ) from None
    return parse_config(text, file=file)


def parse_config(text: str, *, file: str | None = None) -> Config:
    """Parse and validate configuration from TOML text.

    ``file`` is only used to name the source in error messages.

    Raises:
        ConfigError: as for :func:`load_config`.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_describe_toml_error(exc, text), file=file) from None
    try:
        # TOML values are JSON values (plus dates), so validate in pydantic's strict JSON
        # mode: an array becomes a tuple and a string a Path or an address, but "5060" is
        # not an integer and "yes" not a boolean, exactly as TOML means them.
        config = Config.model_validate_json(json.dumps(data, default=_json_default), strict=True)
    except ValidationError as exc:
        problems = [_describe_problem(error) for error in exc.errors()]
    else:
        problems = settings_problems(config.detect, config.bans)
        if not problems:
            return config
    if len(problems) == 1:
        key_path, message = problems[0]
        raise ConfigError(message, key_path=key_path, file=file)
    listing = "\n".join(f"  {key_path}: {message}" for key_path, message in problems)
    raise ConfigError(f"{len(problems)} problems:\n{listing}", file=file)


def _json_default(value: object) -> str:
    if isinstance(value, dt.date | dt.time):  # TOML dates and times (datetime is a date)
        return value.isoformat()
    raise TypeError(f"unexpected TOML value {value!r}")  # pragma: no cover - tomllib types only


_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")


def _describe_toml_error(exc: tomllib.TOMLDecodeError, text: str) -> str:
    """Turn tomllib's message into "not valid TOML at line L, column C: reason (line text)"."""
    message = str(exc)
    match = _TOML_POSITION.search(message)
    if match is None:  # pragma: no cover - tomllib always gives a position
        return f"not valid TOML: {message}"
    reason = message[: match.start()]
    if match.group(1) is None:
        return f"not valid TOML at the end of the file: {reason}"
    line_no, column = int(match.group(1)), int(match.group(2))
    lines = text.splitlines()
    shown = ""
    if 0 < line_no <= len(lines):
        source = lines[line_no - 1].strip()
        shown = f" (line {line_no} reads: {_shorten(source, 60)})"
    return f"not valid TOML at line {line_no}, column {column}: {reason}{shown}"


def _key_path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path or "(top level)"


def _describe_problem(error: ErrorDetails) -> tuple[str, str]:
    """Map one pydantic error to (dotted key path, "expected …; found …")."""
    loc = error["loc"]
    kind = error["type"]
    ctx = error.get("ctx", {})
    found = error["input"]
    key_path = _key_path(loc)
    if kind == "extra_forbidden":
        return key_path, _unknown_key_message(loc, found)
    if kind == "missing":
        return key_path, "required key is missing"
    if kind == "value_error":
        return key_path, f"{ctx['error']}; found {_describe_value(found)}"
    if kind in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"}:
        expected = _range_expectation(loc, ctx)
    elif kind in {"too_short", "too_long"}:
        bound = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        which = "at least" if kind == "too_short" else "at most"
        expected = f"{which} {bound} item{'s' if bound != 1 else ''}"
    elif kind == "literal_error":
        expected = "one of " + str(ctx.get("expected", "")).replace("'", '"')
    else:
        expected = _TYPE_EXPECTATIONS.get(kind, "")
    if not expected:  # a type this table does not know yet: pydantic's own words
        return key_path, f"{error['msg']}; found {_describe_value(found)}"
    return key_path, f"expected {expected}; found {_describe_value(found)}"


_TYPE_EXPECTATIONS: Final[Mapping[str, str]] = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "an array",
    "tuple_type": "an array",
    "set_type": "an array",
    "frozen_set_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
}


def _range_expectation(loc: Sequence[int | str], ctx: Mapping[str, Any]) -> str:
    low, high = _bounds(_metadata_at(loc))
    if low is not None and high is not None:
        return f"an integer from {low} to {high}"
    for key, words in (("ge", "at least"), ("gt", "more than"), ("le", "at most")):
        if key in ctx:
            return f"{words} {ctx[key]}"
    return f"less than {ctx.get('lt')}"


def _bounds(metadata: Sequence[object]) -> tuple[object | None, object | None]:
    low = high = None
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            low = item.ge
        elif isinstance(item, annotated_types.Le):
            high = item.le
    return low, high


def _metadata_at(loc: Sequence[int | str]) -> list[object]:
    """The constraints (``annotated_types.Ge`` ...) declared for the value at ``loc``.

    ``loc`` is pydantic's error location: key names, and indexes into arrays, whose
    item constraints come from the item type (``tuple[Port, ...]``).
    """
    model: type[BaseModel] | None = Config
    annotation: object = None
    metadata: list[object] = []
    for part in loc:
        if isinstance(part, str):
            if model is None or part not in model.model_fields:
                return []
            field = model.model_fields[part]
            annotation, metadata = field.annotation, list(field.metadata)
        else:
            args = get_args(annotation)
            if not args:
                return []
            annotation, metadata = args[0], []
            if get_origin(annotation) is Annotated:
                annotation, *extras = get_args(annotation)
                for extra in extras:
                    metadata.extend(extra.metadata if isinstance(extra, FieldInfo) else [extra])
        model = _model_type(annotation)
    return metadata


def _unknown_key_message(loc: Sequence[int | str], found: object) -> str:
    *parents, name = (str(part) for part in loc)
    model: type[BaseModel] = Config
    for part in parents:
        section = _section_type(model.model_fields[part])
        if section is None:  # pragma: no cover - pydantic only reports keys of tables
            break
        model = section
    known = list(model.model_fields)
    if not parents and isinstance(found, dict):
        message = f"unknown section [{name}]"
        where = "known sections: " + ", ".join(f"[{key}]" for key in known)
    elif not parents:
        message = f"unknown key {name!r} at the top level, outside any [section]"
        owners = [
            section_name
            for section_name, field in Config.model_fields.items()
            if (section := _section_type(field)) is not None and name in section.model_fields
        ]
        if owners:
            return f"{message}; it belongs in [{owners[0]}]"
        where = "known sections: " + ", ".join(f"[{key}]" for key in known)
    else:
        message = f"unknown key {name!r} in [{'.'.join(parents)}]"
        where = "known keys: " + ", ".join(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{message}{hint} ({where})"


def _describe_value(value: object) -> str:
    """Describe a TOML value the way the file spells it, with its TOML type."""
    if isinstance(value, dict):
        return "a table"
    return f"{_shorten(_toml_inline(value), 60)} ({_toml_type_name(value)})"


def _toml_type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


# --------------------------------------------------------------------------- example


_EXAMPLE_HEADER: Final = """\
# sipwarden configuration (TOML).
#
# Generated from the configuration model by `sipwarden config example`: every value
# below is the built-in default. A key that is absent takes its default, so keep only
# what you change; an unknown key or section is an error. Check a file with
# `sipwarden config check PATH`, and use it with `sipwarden --config PATH ...`
# (./sipwarden.toml is read when present).
"""

_WIDTH: Final = 88


def render_example_config() -> str:
    """Render the commented example configuration from the model.

    Each section is introduced by its docstring and each key by its description and
    allowed range, followed by its default value. Loading the result gives the defaults.
    """
    lines = _EXAMPLE_HEADER.splitlines()
    lines.extend(_render_table(Config, Config(), ()))
    return "\n".join(lines) + "\n"


def _render_table(
    model: type[BaseModel], instance: BaseModel, path: tuple[str, ...]
) -> Iterator[str]:
    values = instance.model_dump(mode="json")
    tables: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        section = _section_type(field)
        if section is not None:
            tables.append((name, section))
            continue
        if not field.description:
            raise TypeError(f"{'.'.join((*path, name))} has no description")
        yield ""
        text = field.description
        low, high = _bounds(field.metadata)
        if low is not None and high is not None:
            text += f" Allowed: {low} to {high}."
        else:
            low, high = _bounds(_metadata_at((*path, name, 0)))  # items of an array
            if low is not None and high is not None:
                text += f" Allowed: {low} to {high} each."
        yield from _comment(text)
        value = values[name]
        if value is None:  # TOML has no null: show the key commented out
            yield f"# {name} ="
        else:
            yield from _assignment(name, value)
    for name, section in tables:
        doc = section.__dict__.get("__doc__")
        if not doc:
            raise TypeError(f"section class {section.__name__} has no docstring")
        yield ""
        yield ""
        yield from _comment(inspect.cleandoc(doc))
        yield f"[{'.'.join((*path, name))}]"
        yield from _render_table(section, getattr(instance, name), (*path, name))


def _assignment(name: str, value: object) -> Iterator[str]:
    """``name = value``; an array too long for one line is wrapped, one line per run."""
    line = f"{name} = {_toml_inline(value)}"
    if len(line) <= _WIDTH or not isinstance(value, list | tuple):
        yield line
        return
    yield f"{name} = ["
    row = "   "
    for item in value:
        text = f" {_toml_inline(item)},"  # items whole: a string may contain spaces
        if len(row) + len(text) > _WIDTH and row.strip():
            yield row
            row = "   "
        row += text
    yield row
    yield "]"


def _comment(text: str) -> Iterator[str]:
    for index, paragraph in enumerate(text.split("\n\n")):
        if index:
            yield "#"
        for line in textwrap.wrap(" ".join(paragraph.split()), width=_WIDTH - 2):
            yield f"# {line}"


def _section_type(field: FieldInfo) -> type[BaseModel] | None:
    return _model_type(field.annotation)


def _model_type(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _toml_inline(value: object) -> str:
    """Spell a JSON-mode value as a TOML inline value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_inline(item) for item in value) + "]"
    if isinstance(value, dict):
        items = (f"{_toml_key(str(key))} = {_toml_inline(item)}" for key, item in value.items())
        return "{" + ", ".join(items) + "}"
    return _toml_string(str(value))


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_STRING_ESCAPES: Final[Mapping[str, str]] = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in _STRING_ESCAPES:
            out.append(_STRING_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F or 0xD800 <= ord(char) <= 0xDFFF:
            out.append(f"\\u{ord(char):04x}" if ord(char) < 0xD800 else "\\ufffd")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
