"""What the host rulesets allow, taken from the configuration once for both generators.

:func:`host_policy` turns a :class:`~sipwarden.config.Config` into a
:class:`HostPolicy`: the same decisions, already normalised (networks split
by address family, overlaps merged, ports deduplicated and sorted), so the
nftables and iptables renderers only spell them, and their output is stable
for a given configuration whatever order the file lists things in.
"""

from __future__ import annotations

import ipaddress
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from sipwarden.config import Config
from sipwarden.detection_config import ban_settings

__all__ = [
    "ICMP_BURST",
    "ICMP_RATE",
    "IPV6_SOURCE_PREFIX",
    "METER_SIZE",
    "METER_TIMEOUT",
    "SCANNER_USER_AGENTS",
    "HostPolicy",
    "ScannerAgent",
    "address_text",
    "chunks",
    "comment_block",
    "host_policy",
]

METER_SIZE: Final = 65_536
"""Sources tracked at most by each per-source rate or connection meter (bounded memory:
a flood of spoofed sources fills the meter, it does not grow without end)."""

METER_TIMEOUT: Final = 60
"""Seconds a quiet source stays in a rate meter: longer than the burst takes to refill."""

ICMP_RATE: Final = 10
"""ICMP/ICMPv6 echo requests accepted per second, all sources together (errors about
the host's own connections come in as RELATED, unlimited)."""

ICMP_BURST: Final = 20

COMMENT_WIDTH: Final = 80
"""Width the rulesets' comment paragraphs are wrapped to."""

IPV6_SOURCE_PREFIX: Final = 64
"""IPv6 sources are limited per /64: one subscriber or site gets a whole /64, and an
attacker rotates through its addresses for free (the ban sets use /64s too)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScannerAgent:
    """A User-Agent literal dropped in the kernel, and the signature that vouches for it."""

    text: str
    signature: str  # name of the built-in signature (data/signatures.toml) it belongs to

    @property
    def header(self) -> str:
        """The bytes searched for: the header name too, so that a message body or another
        header mentioning the tool (a chat MESSAGE, a Subject) is not dropped."""
        return f"User-Agent: {self.text}"


SCANNER_USER_AGENTS: Final[tuple[ScannerAgent, ...]] = (
    ScannerAgent(text="friendly-scanner", signature="sipvicious-user-agent"),
    ScannerAgent(text="sipvicious", signature="sipvicious-user-agent"),
    ScannerAgent(text="pplsip", signature="pplsip-user-agent"),
    ScannerAgent(text="sipptk", signature="pplsip-user-agent"),
    ScannerAgent(text="sipcli/", signature="sipcli-user-agent"),
    ScannerAgent(text="sip-scan", signature="sip-scan-user-agent"),
    ScannerAgent(text="sundayddr", signature="sundayddr-user-agent"),
    ScannerAgent(text="siparmyknife", signature="siparmyknife-user-agent"),
    ScannerAgent(text="Nmap NSE", signature="nmap-nse-user-agent"),
)
"""Known attack tools' default User-Agents, each backed by a high-confidence signature.

Short and explicit on purpose: a kernel string match cannot look at context, so only
strings no legitimate product sends are listed. Left out although block lists carry
them: VaxSIPUserAgent (a commercial SDK in real softphones; its signature only alerts),
sipsak (a monitoring probe), and short names such as smap or iWar that occur inside
other products' names. Renamed tools are sipwarden's own detection's job."""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class HostPolicy:
    """The host ruleset's decisions, normalised; see :class:`~sipwarden.config.RulesConfig`."""

    interface: str
    sip_ports: tuple[int, ...]
    sip_rate: int
    sip_burst: int
    sip_tcp_connections: int
    rtp_ports: tuple[int, int]
    management4: tuple[str, ...]
    management6: tuple[str, ...]
    management_tcp_ports: tuple[int, ...]
    management_udp_ports: tuple[int, ...]
    allowlist4: tuple[str, ...]
    allowlist6: tuple[str, ...]
    bcp38: bool
    scanner_agents: tuple[ScannerAgent, ...]
    ban_table: str
    ban_set_size: int
    ipset_prefix: str

    @property
    def ipset4(self) -> str:
        """The ipset ban backend's IPv4 set."""
        return f"{self.ipset_prefix}-v4"

    @property
    def ipset6(self) -> str:
        """The ipset ban backend's IPv6 set."""
        return f"{self.ipset_prefix}-v6"


def host_policy(config: Config) -> HostPolicy:
    """The normalised host-ruleset decisions of ``config``."""
    rules = config.rules
    management4, management6 = _split_networks(rules.management_networks)
    allowlist4, allowlist6 = _split_networks(ban_settings(config.bans).allowlist)
    return HostPolicy(
        interface=rules.public_interface,
        sip_ports=_ports(config.sip.ports),
        sip_rate=rules.sip_rate,
        sip_burst=rules.sip_burst,
        sip_tcp_connections=rules.sip_tcp_connections,
        rtp_ports=rules.rtp_ports,
        management4=management4,
        management6=management6,
        management_tcp_ports=_ports(rules.management_tcp_ports),
        management_udp_ports=_ports(rules.management_udp_ports),
        allowlist4=allowlist4,
        allowlist6=allowlist6,
        bcp38=rules.bcp38,
        scanner_agents=SCANNER_USER_AGENTS if rules.drop_scanner_user_agents else (),
        ban_table=config.enforce.nftables_table,
        ban_set_size=config.enforce.max_kernel_bans,
        ipset_prefix=config.enforce.ipset_prefix,
    )


def _ports(ports: Iterable[int]) -> tuple[int, ...]:
    return tuple(sorted(set(ports)))


def _split_networks(entries: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """IPv4 and IPv6 networks apart, overlaps merged (nftables interval sets reject
    overlapping elements), in address order."""
    networks = [ipaddress.ip_network(entry, strict=False) for entry in entries]
    v4 = ipaddress.collapse_addresses(n for n in networks if n.version == 4)
    v6 = ipaddress.collapse_addresses(n for n in networks if n.version == 6)
    return tuple(address_text(n) for n in v4), tuple(address_text(n) for n in v6)


def address_text(network: Network) -> str:
    """A network as rulesets print it: a single address without its /32 or /128."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def chunks(items: Sequence[int], size: int) -> Iterator[tuple[int, ...]]:
    """``items`` in runs of at most ``size`` (iptables multiport takes 15 ports a rule)."""
    for start in range(0, len(items), size):
        yield tuple(items[start : start + size])


def comment_block(text: str, width: int = COMMENT_WIDTH) -> list[str]:
    """``#`` comment lines for a block of text (both formats take shell-style comments).

    Paragraphs are re-wrapped to ``width``, so text with substituted values stays tidy;
    lines indented by four spaces (commands to type) and ``---`` headings are kept
    as they are.
    """
    lines: list[str] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            wrapped = textwrap.wrap(" ".join(paragraph), width=width - 2, break_on_hyphens=False)
            lines.extend(f"# {line}" for line in wrapped)
            paragraph.clear()

    for line in text.strip("\n").splitlines():
        if line.startswith(("    ", "---")) or not line.strip():
            flush()
            lines.append(f"# {line}".rstrip())
        else:
            paragraph.append(line.strip())
    flush()
    return lines
