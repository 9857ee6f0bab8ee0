"""Edge router templates (``sipwarden rules edge``): BCP 38 and SIP limits before the host.

The host rulesets (nftables, iptables) protect the PBX's own machine; this is
the same policy one hop earlier, on the router between the Internet and the
PBX, where a flood or a spoofed packet costs the PBX's uplink nothing. Two
widely deployed syntaxes:

* ``cisco-ios``: Cisco IOS and IOS XE. Extended ACLs for BCP 38 ingress
  filtering (bogon sources, RFC 2827 / RFC 3704) and for the management ports,
  an MQC policy that polices SIP, applied to the Internet-facing interface and
  to the control plane, and unicast RPF (plus an egress ACL when the own
  prefixes are known) for BCP 38 on what the site sends;
* ``routeros``: MikroTik RouterOS 7. Address lists, raw-table drops of bogon
  sources and of known scanners' User-Agents, and filter rules limiting SIP per
  source address (packets per second and TCP connections).

Both are **templates**: interface names, the placement of the rules among the
router's existing ones, and the platform's exact feature set differ from
router to router, so the text is printed for an engineer to review and adapt,
never applied by sipwarden. Every value in it comes from the configuration
(``[rules]``, ``[sip]``, ``[bans]``) or from :mod:`.bogons`, as in the host
rulesets. Pure: the same configuration always renders the same text.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from sipwarden.config import Config

from .bogons import BOGONS4, BOGONS6, LINK_LOCAL6, Bogon
from .common import HostPolicy, address_text, host_policy

__all__ = ["DEFAULT_INTERFACES", "SYNTAXES", "render_edge"]

SYNTAXES: Final[tuple[str, ...]] = ("cisco-ios", "routeros")
"""The router syntaxes :func:`render_edge` writes."""

DEFAULT_INTERFACES: Final[dict[str, tuple[str, str]]] = {
    "cisco-ios": ("GigabitEthernet0/0/0", "GigabitEthernet0/0/1"),
    "routeros": ("ether1", "bridge"),
}
"""Placeholder (outside, inside) interfaces per syntax: the Internet-facing one and the
one towards the PBX's network. ``rules.public_interface`` names the PBX host's own
interface (``eth0``), not the router's."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class _Edge:
    """Everything a template needs: the host policy, plus the router's own facts."""

    policy: HostPolicy
    outside: str
    inside: str
    site4: tuple[Network, ...]
    site6: tuple[Network, ...]


def render_edge(
    config: Config,
    *,
    syntax: str = "cisco-ios",
    outside: str | None = None,
    inside: str | None = None,
    site_prefixes: Iterable[str] = (),
) -> str:
    """The edge router template for ``config`` in ``syntax`` (one of :data:`SYNTAXES`).

    ``outside`` and ``inside`` name the router's Internet-facing interface and the one
    towards the PBX's network (placeholders from :data:`DEFAULT_INTERFACES` otherwise).
    ``site_prefixes`` are the site's own prefixes, as its hosts use them behind the
    inside interface (public, or the private ranges the router translates): with them,
    the inside interface accepts no other source address (BCP 38 for what we send).
    """
    if syntax not in SYNTAXES:
        raise ValueError(f"unknown edge syntax {syntax!r}; known: {', '.join(SYNTAXES)}")
    default_outside, default_inside = DEFAULT_INTERFACES[syntax]
    site = _networks(site_prefixes)
    edge = _Edge(
        policy=host_policy(config),
        outside=outside or default_outside,
        inside=inside or default_inside,
        site4=tuple(n for n in site if n.version == 4),
        site6=tuple(n for n in site if n.version == 6),
    )
    lines = _cisco(edge) if syntax == "cisco-ios" else _routeros(edge)
    return "\n".join(lines) + "\n"


def _networks(entries: Iterable[str]) -> tuple[Network, ...]:
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP network (CIDR prefix)") from None
    v4 = ipaddress.collapse_addresses(n for n in networks if n.version == 4)
    v6 = ipaddress.collapse_addresses(n for n in networks if n.version == 6)
    return (*v4, *v6)


def _parse(entries: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(entry) for entry in entries]


def _template_notice(comment: str, syntax_name: str) -> list[str]:
    """The statement every template opens with: what it is, and that it is a template."""
    text = f"""\
sipwarden edge router template for {syntax_name}, made by `sipwarden rules edge`
from sipwarden's configuration ([rules], [sip], [bans]).

THIS IS A TEMPLATE, NOT A CONFIGURATION TO PASTE BLINDLY. Interface names are
placeholders, the rules must be placed among the router's existing ones, and
platforms differ in the features they accept: review every line, adapt it, and
apply it from a console that a mistake cannot lock out. sipwarden applies none of it."""
    return [f"{comment} {line}".rstrip() for line in text.splitlines()]


# --------------------------------------------------------------------------- Cisco IOS / IOS XE

_BANG: Final = "!"


def _wildcard(network: Network) -> str:
    """An IPv4 source or destination as an IOS extended ACL spells it."""
    if network.prefixlen == 0:
        return "any"
    if network.prefixlen == network.max_prefixlen:
        return f"host {network.network_address}"
    return f"{network.network_address} {network.hostmask}"


def _prefix6(network: Network) -> str:
    """An IPv6 source or destination as an IOS IPv6 ACL spells it."""
    if network.prefixlen == 0:
        return "any"
    if network.prefixlen == network.max_prefixlen:
        return f"host {network.network_address}"
    return str(network)


def _remark(text: str) -> str:
    # IOS cuts a remark at 100 characters.
    return f" remark {text}"[:108]


def _cisco(edge: _Edge) -> list[str]:
    policy = edge.policy
    return [
        *_template_notice(_BANG, "Cisco IOS and IOS XE"),
        _BANG,
        _BANG + " Rates: IOS polices a class as a whole, not per source address. The SIP",
        _BANG + f" policer below caps all untrusted SIP together at rules.sip_rate"
        f" ({policy.sip_rate} pps,",
        _BANG + f" burst {policy.sip_burst} packets): raise it to the busiest legitimate"
        " load of your",
        _BANG + " phones; trunks in bans.allowlist are never policed. Per-source limits and",
        _BANG + " the TCP connection limit are the host ruleset's job (sipwarden rules nftables).",
        _BANG,
        *_cisco_ingress4(edge),
        _BANG,
        *_cisco_ingress6(edge),
        _BANG,
        *_cisco_sip(policy),
        _BANG,
        *_cisco_egress(edge),
        _BANG,
        *_cisco_interfaces(edge),
        "end",
    ]


def _cisco_management(management: Sequence[Network], policy: HostPolicy, *, v6: bool) -> list[str]:
    """Management ports: permitted from the management networks, denied to everyone else."""
    lines = [_remark("management ports: only from rules.management_networks")]
    ports = [("tcp", port) for port in policy.management_tcp_ports]
    ports += [("udp", port) for port in policy.management_udp_ports]
    for network in management:
        source = _prefix6(network) if v6 else _wildcard(network)
        lines += [f" permit {proto} {source} any eq {port}" for proto, port in ports]
    lines += [f" deny   {proto} any any eq {port}" for proto, port in ports]
    return lines


def _cisco_bogons(bogons: Iterable[Bogon], *, v6: bool) -> list[str]:
    lines = []
    for bogon in bogons:
        network = ipaddress.ip_network(bogon.network)
        source = _prefix6(network) if v6 else _wildcard(network)
        lines += [_remark(bogon.comment), f" deny   {'ipv6' if v6 else 'ip'} {source} any"]
    return lines


def _cisco_ingress4(edge: _Edge) -> list[str]:
    policy = edge.policy
    lines = [
        _BANG + " Ingress, IPv4: BCP 38 (RFC 2827, RFC 3704) drops bogon sources; management",
        _BANG + " networks inside a bogon range (a VPN pool) reach the PBX through the tunnel,",
        _BANG + " not through this interface.",
        "ip access-list extended SIPWARDEN-IN",
    ]
    if policy.bcp38:
        lines += [_remark("BCP 38: bogon sources"), *_cisco_bogons(BOGONS4, v6=False)]
    lines += _cisco_management(_parse(policy.management4), policy, v6=False)
    return [
        *lines,
        _remark("everything else: SIP is policed by SIPWARDEN-SIP"),
        " permit ip any any",
    ]


def _cisco_ingress6(edge: _Edge) -> list[str]:
    policy = edge.policy
    lines = [
        _BANG + " Ingress, IPv6: neighbour discovery first (RFC 4890: it comes from link-local",
        _BANG + " and unspecified sources, which are bogons for anything else).",
        "ipv6 access-list SIPWARDEN-IN6",
        _remark("RFC 4890: neighbour discovery, never dropped"),
        *(
            f" permit icmp any any {kind}"
            for kind in ("nd-ns", "nd-na", "router-solicitation", "router-advertisement")
        ),
    ]
    if policy.bcp38:
        lines += [_remark("BCP 38: bogon sources"), *_cisco_bogons(BOGONS6, v6=True)]
    lines += _cisco_management(_parse(policy.management6), policy, v6=True)
    return [*lines, _remark("everything else"), " permit ipv6 any any"]


def _cisco_sip(policy: HostPolicy) -> list[str]:
    allow4, allow6 = _parse(policy.allowlist4), _parse(policy.allowlist6)
    matches = [
        f" permit {proto} any any eq {port}"
        for port in policy.sip_ports
        for proto in ("udp", "tcp")
    ]
    return [
        _BANG + " SIP (sip.ports over UDP and TCP) from untrusted sources, policed.",
        "ip access-list extended SIPWARDEN-SIP",
        _remark("bans.allowlist (trunks): not matched, so never policed"),
        *(f" deny   ip {_wildcard(network)} any" for network in allow4),
        *matches,
        "ipv6 access-list SIPWARDEN-SIP6",
        _remark("bans.allowlist (trunks): not matched, so never policed"),
        *(f" deny   ipv6 {_prefix6(network)} any" for network in allow6),
        *matches,
        "class-map match-any SIPWARDEN-SIP",
        " match access-group name SIPWARDEN-SIP",
        " match access-group name SIPWARDEN-SIP6",
        "policy-map SIPWARDEN-SIP",
        " class SIPWARDEN-SIP",
        f"  police rate {policy.sip_rate} pps burst {policy.sip_burst} packets",
        "   conform-action transmit",
        "   exceed-action drop",
        _BANG + " The router's own SIP (a CUBE, or SIP ALG) is policed the same way.",
        "control-plane",
        " service-policy input SIPWARDEN-SIP",
    ]


def _cisco_egress(edge: _Edge) -> list[str]:
    lines = [
        _BANG + " Egress, BCP 38: the site sends nothing with a source address that is not its",
        _BANG + " own. Unicast RPF on the inside interface (below) drops packets whose source",
        _BANG + " is not routed back through it.",
    ]
    if not (edge.site4 or edge.site6):
        return [
            *lines,
            _BANG + " Give the site's prefixes (sipwarden rules edge --site-prefix) for an ACL on",
            _BANG + " the inside interface that names them as well.",
        ]
    lines.append(_BANG + " The inside ACL accepts the site's own prefixes only, before any NAT.")
    if edge.site4:
        lines += [
            "ip access-list extended SIPWARDEN-SITE",
            _remark("BCP 38: the site's own prefixes only"),
            *(f" permit ip {_wildcard(network)} any" for network in edge.site4),
            _remark("DHCP clients before they have an address"),
            " permit udp host 0.0.0.0 eq bootpc any eq bootps",
            " deny   ip any any",
        ]
    if edge.site6:
        lines += [
            "ipv6 access-list SIPWARDEN-SITE6",
            _remark("BCP 38: the site's own prefixes only"),
            *(f" permit ipv6 {_prefix6(network)} any" for network in edge.site6),
            _remark("link-local (never forwarded): ND, DHCPv6, routing on the link"),
            f" permit ipv6 {LINK_LOCAL6} any",
            _remark("duplicate address detection"),
            " permit icmp host :: any nd-ns",
            " deny   ipv6 any any",
        ]
    return lines


def _cisco_interfaces(edge: _Edge) -> list[str]:
    lines = [
        f"interface {edge.outside}",
        " description Internet (sipwarden edge template: adapt the interface name)",
        " ip access-group SIPWARDEN-IN in",
        " ipv6 traffic-filter SIPWARDEN-IN6 in",
        " service-policy input SIPWARDEN-SIP",
        f"interface {edge.inside}",
        " description PBX network (sipwarden edge template: adapt the interface name)",
        " ip verify unicast source reachable-via rx",
        " ipv6 verify unicast source reachable-via rx",
    ]
    if edge.site4:
        lines.append(" ip access-group SIPWARDEN-SITE in")
    if edge.site6:
        lines.append(" ipv6 traffic-filter SIPWARDEN-SITE6 in")
    return lines


# --------------------------------------------------------------------------- MikroTik RouterOS 7

_HASH: Final = "#"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _routeros(edge: _Edge) -> list[str]:
    policy = edge.policy
    return [
        *_template_notice(_HASH, "MikroTik RouterOS 7"),
        _HASH,
        _HASH + " `add` appends to a chain: move these rules before the router's own accept",
        _HASH + " rules (or add place-before=...), or they never see a packet.",
        "",
        *_routeros_lists(policy, "ip", policy.management4, policy.allowlist4, BOGONS4),
        "",
        *_routeros_lists(policy, "ipv6", policy.management6, policy.allowlist6, BOGONS6),
        "",
        *_routeros_raw(edge, "ip"),
        "",
        *_routeros_raw(edge, "ipv6"),
        "",
        *_routeros_filter(edge, "ip"),
        "",
        *_routeros_filter(edge, "ipv6"),
        *_routeros_egress(edge),
    ]


def _routeros_lists(
    policy: HostPolicy,
    family: str,
    management: Sequence[str],
    allowlist: Sequence[str],
    bogons: Sequence[Bogon],
) -> list[str]:
    lines = [f"/{family} firewall address-list"]
    if policy.bcp38:
        lines += [
            f"add list=sipwarden-bogons address={bogon.network}"
            f" comment={_quoted('sipwarden: ' + bogon.comment)}"
            for bogon in bogons
        ]
    lines += [
        f"add list=sipwarden-management address={network}"
        f" comment={_quoted('sipwarden: rules.management_networks')}"
        for network in management
    ]
    lines += [
        f"add list=sipwarden-trusted address={network}"
        f" comment={_quoted('sipwarden: bans.allowlist (trunks)')}"
        for network in allowlist
    ]
    return lines


def _sip_ports(policy: HostPolicy) -> str:
    return ",".join(str(port) for port in policy.sip_ports)


def _routeros_raw(edge: _Edge, family: str) -> list[str]:
    policy = edge.policy
    where = f"chain=prerouting in-interface={edge.outside}"
    lines = [f"/{family} firewall raw"]
    if family == "ipv6":
        # RFC 4890: neighbour discovery and MLD come from link-local (and, for duplicate
        # address detection, unspecified) sources; accept in raw only skips the rest of raw.
        lines += [
            f"add {where} protocol=icmpv6 src-address={source} action=accept"
            f" comment={_quoted('sipwarden: RFC 4890 neighbour discovery and MLD')}"
            for source in (LINK_LOCAL6, "::/128")
        ]
    if policy.bcp38:
        lines.append(
            f"add {where} src-address-list=sipwarden-bogons action=drop"
            f" comment={_quoted('sipwarden: BCP 38 (RFC 2827), bogon source')}"
        )
    for agent in policy.scanner_agents:
        for proto in ("udp", "tcp"):
            lines.append(
                f"add {where} protocol={proto} dst-port={_sip_ports(policy)}"
                f" content={_quoted(agent.header)} action=drop"
                f" comment={_quoted('sipwarden: scanner, signature ' + agent.signature)}"
            )
    return lines


def _routeros_filter(edge: _Edge, family: str) -> list[str]:
    policy = edge.policy
    mask = 32 if family == "ip" else 128
    where = f"in-interface={edge.outside}"
    sip = f"dst-port={_sip_ports(policy)}"
    lines = [f"/{family} firewall filter"]
    for proto, ports in (
        ("tcp", policy.management_tcp_ports),
        ("udp", policy.management_udp_ports),
    ):
        if not ports:
            continue
        port_list = ",".join(str(port) for port in ports)
        lines += [
            f"add chain={chain} {where} protocol={proto} dst-port={port_list}"
            " src-address-list=!sipwarden-management action=drop"
            f" comment={_quoted('sipwarden: management ports, management networks only')}"
            for chain in ("input", "forward")
        ]
    # Untrusted SIP goes through a chain of its own, which returns what is within the
    # limits to the caller (the router's own rules decide the rest) and drops the excess.
    lines += [
        f"add chain=forward {where} protocol={proto} {sip}"
        " src-address-list=!sipwarden-trusted action=jump jump-target=sipwarden-sip"
        f" comment={_quoted('sipwarden: SIP from untrusted sources')}"
        for proto in ("udp", "tcp")
    ]
    lines += [
        "add chain=sipwarden-sip protocol=tcp connection-state=new"
        f" connection-limit={policy.sip_tcp_connections},{mask} action=drop"
        f" comment={_quoted('sipwarden: rules.sip_tcp_connections per source')}",
        f"add chain=sipwarden-sip dst-limit={policy.sip_rate},{policy.sip_burst},src-address/1m"
        f" action=return comment={_quoted('sipwarden: rules.sip_rate and sip_burst per source')}",
        f"add chain=sipwarden-sip action=drop comment={_quoted('sipwarden: over the SIP rate')}",
    ]
    return lines


def _routeros_egress(edge: _Edge) -> list[str]:
    lines = [
        "",
        _HASH + " Egress, BCP 38: the site sends nothing with a source address that is not its",
        _HASH + " own. Reverse-path filtering drops packets whose source is not routed back",
        _HASH + " through the interface they came in on (router-wide; use loose if multihomed):",
        "/ip settings set rp-filter=strict",
    ]
    for family, site in (("ip", edge.site4), ("ipv6", edge.site6)):
        if not site:
            continue
        lines += [
            f"/{family} firewall address-list",
            *(
                f"add list=sipwarden-site address={address_text(network)}"
                f" comment={_quoted('sipwarden: the site prefix')}"
                for network in site
            ),
            f"/{family} firewall filter",
            # Forwarded only: link-local and DHCP traffic to the router itself is not affected.
            f"add chain=forward in-interface={edge.inside}"
            " src-address-list=!sipwarden-site action=drop"
            f" comment={_quoted('sipwarden: BCP 38, not a source address of the site')}",
        ]
    if not (edge.site4 or edge.site6):
        lines += [
            _HASH + " Give the site's prefixes (sipwarden rules edge --site-prefix) for a filter",
            _HASH + " on the inside interface that names them as well.",
        ]
    return lines
