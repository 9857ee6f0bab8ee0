"""Edge router templates (sipwarden.enforce.rules.edge): structure and values from the config.

No router runs here, so the tests check what a reviewer would: that every
bogon of :mod:`sipwarden.enforce.rules.bogons` is dropped, that management
ports open to the management networks only, that rates, ports and trusted
peers come from the configuration, that every name a rule refers to is
defined, and that the text says it is a template.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from typing import Final

import pytest

from sipwarden.config import Config, parse_config
from sipwarden.enforce.rules import edge
from sipwarden.enforce.rules.bogons import BOGONS4, BOGONS6, LINK_LOCAL6
from sipwarden.enforce.rules.common import SCANNER_USER_AGENTS
from sipwarden.enforce.rules.edge import SYNTAXES, render_edge

CONFIG: Final = """
[sip]
ports = [5060, 5061, 5080]
[rules]
management_networks = ["10.8.0.0/24", "2001:db8:8::/64"]
management_tcp_ports = [22, 443]
management_udp_ports = [161]
sip_rate = 35
sip_burst = 70
sip_tcp_connections = 12
[bans]
allowlist = ["198.51.100.0/24", "2001:db8:1::/48"]
"""


@pytest.fixture
def config() -> Config:
    return parse_config(CONFIG)


def _lines(text: str) -> list[str]:
    return text.splitlines()


def _wildcard(network: str) -> str:
    """An IPv4 network as IOS spells it, worked out here independently of the module."""
    net = ipaddress.IPv4Network(network)
    if net.prefixlen == 32:
        return f"host {net.network_address}"
    return f"{net.network_address} {net.hostmask}"


def _block(text: str, header: str) -> list[str]:
    """The indented lines under ``header`` in an IOS configuration."""
    lines = _lines(text)
    start = lines.index(header) + 1
    block = []
    for line in lines[start:]:
        if not line.startswith(" "):
            break
        block.append(line.strip())
    return block


# --------------------------------------------------------------------------- both


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_every_template_says_it_is_one(config: Config, syntax: str) -> None:
    text = render_edge(config, syntax=syntax)
    head = "\n".join(_lines(text)[:8])
    assert "THIS IS A TEMPLATE" in head
    assert "sipwarden applies none of it" in head
    assert edge.__doc__ is not None
    assert "**templates**" in edge.__doc__


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_output_is_stable_and_independent_of_list_order(syntax: str) -> None:
    shuffled = CONFIG.replace(
        '["10.8.0.0/24", "2001:db8:8::/64"]', '["2001:db8:8::/64", "10.8.0.0/24"]'
    )
    first = render_edge(parse_config(CONFIG), syntax=syntax)
    assert render_edge(parse_config(CONFIG), syntax=syntax) == first
    assert render_edge(parse_config(shuffled), syntax=syntax) == first


def test_unknown_syntax_and_bad_prefixes_are_errors(config: Config) -> None:
    with pytest.raises(ValueError, match="unknown edge syntax 'junos'"):
        render_edge(config, syntax="junos")
    with pytest.raises(ValueError, match=r"'192\.0\.2\.300/24' is not an IP network"):
        render_edge(config, site_prefixes=["192.0.2.300/24"])


# --------------------------------------------------------------------------- Cisco IOS


def test_cisco_ingress_drops_every_bogon_before_anything_is_permitted(config: Config) -> None:
    text = render_edge(config, syntax="cisco-ios")
    acl4 = _block(text, "ip access-list extended SIPWARDEN-IN")
    denies4 = [f"deny   ip {_wildcard(bogon.network)} any" for bogon in BOGONS4]
    assert [line for line in acl4 if line.startswith("deny   ip ")] == denies4
    first_permit = next(i for i, line in enumerate(acl4) if line.startswith("permit"))
    assert acl4.index(denies4[-1]) < first_permit
    assert acl4[-1] == "permit ip any any"

    acl6 = _block(text, "ipv6 access-list SIPWARDEN-IN6")
    for bogon in BOGONS6:
        network = ipaddress.IPv6Network(bogon.network)
        source = f"host {network.network_address}" if network.prefixlen == 128 else str(network)
        assert f"deny   ipv6 {source} any" in acl6
    assert acl6[-1] == "permit ipv6 any any"


def test_cisco_neighbour_discovery_passes_before_the_link_local_drop(config: Config) -> None:
    acl6 = _block(render_edge(config, syntax="cisco-ios"), "ipv6 access-list SIPWARDEN-IN6")
    link_local = acl6.index(f"deny   ipv6 {LINK_LOCAL6} any")
    for kind in ("nd-ns", "nd-na", "router-solicitation", "router-advertisement"):
        assert acl6.index(f"permit icmp any any {kind}") < link_local


def test_cisco_management_ports_only_from_management_networks(config: Config) -> None:
    text = render_edge(config, syntax="cisco-ios")
    acl4 = _block(text, "ip access-list extended SIPWARDEN-IN")
    acl6 = _block(text, "ipv6 access-list SIPWARDEN-IN6")
    for proto, port in (("tcp", 22), ("tcp", 443), ("udp", 161)):
        permit4 = acl4.index(f"permit {proto} 10.8.0.0 0.0.0.255 any eq {port}")
        permit6 = acl6.index(f"permit {proto} 2001:db8:8::/64 any eq {port}")
        assert permit4 < acl4.index(f"deny   {proto} any any eq {port}")
        assert permit6 < acl6.index(f"deny   {proto} any any eq {port}")
    # The default ports that the configuration dropped are not mentioned.
    assert "eq 5038" not in text


def test_cisco_management_closed_without_management_networks() -> None:
    acl4 = _block(render_edge(Config(), syntax="cisco-ios"), "ip access-list extended SIPWARDEN-IN")
    assert not [line for line in acl4 if line.startswith(("permit tcp", "permit udp"))]
    assert "deny   tcp any any eq 22" in acl4


def test_cisco_sip_is_policed_at_the_configured_rate(config: Config) -> None:
    text = render_edge(config, syntax="cisco-ios")
    assert _block(text, "policy-map SIPWARDEN-SIP")[:2] == [
        "class SIPWARDEN-SIP",
        "police rate 35 pps burst 70 packets",
    ]
    sip4 = _block(text, "ip access-list extended SIPWARDEN-SIP")
    sip6 = _block(text, "ipv6 access-list SIPWARDEN-SIP6")
    # Trusted peers are excluded from the class before any SIP port is matched.
    assert sip4[1] == "deny   ip 198.51.100.0 0.0.0.255 any"
    assert sip6[1] == "deny   ipv6 2001:db8:1::/48 any"
    for port in (5060, 5061, 5080):
        for proto in ("udp", "tcp"):
            assert f"permit {proto} any any eq {port}" in sip4
            assert f"permit {proto} any any eq {port}" in sip6
    assert _block(text, "control-plane") == ["service-policy input SIPWARDEN-SIP"]
    assert "service-policy input SIPWARDEN-SIP" in _block(text, "interface GigabitEthernet0/0/0")


def test_cisco_bcp38_off_drops_no_bogons() -> None:
    text = render_edge(parse_config("[rules]\nbcp38 = false\n"), syntax="cisco-ios")
    assert "deny   ip 10.0.0.0" not in text
    assert "deny   ipv6 2001:db8::/32" not in text


def test_cisco_egress_with_and_without_site_prefixes(config: Config) -> None:
    without = render_edge(config, syntax="cisco-ios")
    assert "SIPWARDEN-SITE" not in without.replace("--site-prefix", "")
    inside = _block(without, "interface GigabitEthernet0/0/1")
    assert "ip verify unicast source reachable-via rx" in inside

    text = render_edge(
        config,
        syntax="cisco-ios",
        site_prefixes=["192.0.2.0/25", "192.0.2.128/25", "2001:db8:2::/48"],
        outside="Dialer0",
        inside="Vlan10",
    )
    site4 = _block(text, "ip access-list extended SIPWARDEN-SITE")
    assert "permit ip 192.0.2.0 0.0.0.255 any" in site4  # the two halves merged
    assert site4[-1] == "deny   ip any any"
    site6 = _block(text, "ipv6 access-list SIPWARDEN-SITE6")
    assert "permit ipv6 2001:db8:2::/48 any" in site6
    assert site6[-1] == "deny   ipv6 any any"
    assert {"ip access-group SIPWARDEN-SITE in", "ipv6 traffic-filter SIPWARDEN-SITE6 in"} <= set(
        _block(text, "interface Vlan10")
    )
    assert "ip access-group SIPWARDEN-IN in" in _block(text, "interface Dialer0")


def test_cisco_every_referenced_name_is_defined(config: Config) -> None:
    text = render_edge(
        config, syntax="cisco-ios", site_prefixes=["192.0.2.0/24", "2001:db8:2::/48"]
    )
    defined = set(re.findall(r"^(?:ip access-list extended|ipv6 access-list) (\S+)$", text, re.M))
    defined |= set(re.findall(r"^(?:class-map match-any|policy-map) (\S+)$", text, re.M))
    used = set(re.findall(r"access-group (?:name )?(\S+)", text))
    used |= set(re.findall(r"traffic-filter (\S+)", text))
    used |= set(re.findall(r"service-policy input (\S+)", text))
    used |= set(re.findall(r"^ class (\S+)$", text, re.M))
    assert used <= defined
    for line in _lines(text):
        # Comments, top-level commands, and entries indented beneath them; no tabs.
        assert "\t" not in line
        assert line == line.rstrip()
        if line.lstrip().startswith("remark"):
            assert len(line.strip()) <= 107  # "remark " and IOS's 100 characters


# --------------------------------------------------------------------------- MikroTik RouterOS


def _commands(text: str) -> list[tuple[str, dict[str, str]]]:
    """(menu, {key: value}) for every ``add``/``set`` command, parsed like RouterOS would."""
    menu = ""
    commands = []
    for line in _lines(text):
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line)
        if line.startswith("/"):  # a menu, maybe followed by a command on the same line
            verb_at = next((i for i, word in enumerate(words) if word in {"add", "set"}), None)
            if verb_at is None:
                menu = line
                continue
            menu, words = " ".join(words[:verb_at]), words[verb_at:]
        verb, *pairs = words
        assert verb in {"add", "set"}, line
        assert all("=" in pair for pair in pairs), line
        commands.append((menu, dict(pair.split("=", 1) for pair in pairs)))
    return commands


def test_routeros_drops_every_bogon_on_the_outside_interface(config: Config) -> None:
    commands = _commands(render_edge(config, syntax="routeros"))
    for menu, bogons in (
        ("/ip firewall address-list", BOGONS4),
        ("/ipv6 firewall address-list", BOGONS6),
    ):
        listed = [
            c["address"] for m, c in commands if m == menu and c["list"] == "sipwarden-bogons"
        ]
        assert listed == [bogon.network for bogon in bogons]
    for family in ("ip", "ipv6"):
        raw = [c for m, c in commands if m == f"/{family} firewall raw"]
        drops = [c for c in raw if c.get("src-address-list") == "sipwarden-bogons"]
        assert drops == [
            {
                "chain": "prerouting",
                "in-interface": "ether1",
                "src-address-list": "sipwarden-bogons",
                "action": "drop",
                "comment": "sipwarden: BCP 38 (RFC 2827), bogon source",
            }
        ]
    raw6 = [c for m, c in commands if m == "/ipv6 firewall raw"]
    # Neighbour discovery is accepted before the bogon drop.
    assert raw6[0]["src-address"] == LINK_LOCAL6
    assert raw6[0]["action"] == "accept"


def test_routeros_limits_sip_per_source_from_the_config(config: Config) -> None:
    commands = _commands(render_edge(config, syntax="routeros", outside="sfp1"))
    for family, mask in (("ip", 32), ("ipv6", 128)):
        rules = [c for m, c in commands if m == f"/{family} firewall filter"]
        jumps = [c for c in rules if c.get("action") == "jump"]
        assert [(c["protocol"], c["dst-port"]) for c in jumps] == [
            ("udp", "5060,5061,5080"),
            ("tcp", "5060,5061,5080"),
        ]
        assert all(c["src-address-list"] == "!sipwarden-trusted" for c in jumps)
        assert all(c["in-interface"] == "sfp1" for c in jumps)
        chain = [c for c in rules if c["chain"] == "sipwarden-sip"]
        assert chain[0]["connection-limit"] == f"12,{mask}"
        assert chain[1]["dst-limit"] == "35,70,src-address/1m"
        assert chain[1]["action"] == "return"
        assert chain[2]["action"] == "drop"
    trusted = [c["address"] for m, c in commands if c.get("list") == "sipwarden-trusted"]
    assert trusted == ["198.51.100.0/24", "2001:db8:1::/48"]


def test_routeros_management_ports_only_from_management_networks(config: Config) -> None:
    commands = _commands(render_edge(config, syntax="routeros"))
    management = [c["address"] for m, c in commands if c.get("list") == "sipwarden-management"]
    assert management == ["10.8.0.0/24", "2001:db8:8::/64"]
    drops = [
        (m, c["chain"], c["protocol"], c["dst-port"])
        for m, c in commands
        if c.get("src-address-list") == "!sipwarden-management"
    ]
    assert sorted(drops) == sorted(
        (f"/{family} firewall filter", chain, proto, ports)
        for family in ("ip", "ipv6")
        for chain in ("input", "forward")
        for proto, ports in (("tcp", "22,443"), ("udp", "161"))
    )


def test_routeros_scanner_user_agents_follow_the_switch() -> None:
    on = render_edge(Config(), syntax="routeros")
    for agent in SCANNER_USER_AGENTS:
        assert f'content="{agent.header}"' in on
    off = render_edge(
        parse_config("[rules]\ndrop_scanner_user_agents = false\n"), syntax="routeros"
    )
    assert "content=" not in off


def test_routeros_egress_with_site_prefixes(config: Config) -> None:
    commands = _commands(render_edge(config, syntax="routeros", site_prefixes=["192.0.2.0/24"]))
    assert ("/ip settings", {"rp-filter": "strict"}) in commands
    site = [c["address"] for m, c in commands if c.get("list") == "sipwarden-site"]
    assert site == ["192.0.2.0/24"]
    drops = [c for m, c in commands if c.get("src-address-list") == "!sipwarden-site"]
    assert drops[0]["in-interface"] == "bridge"
    assert drops[0]["chain"] == "forward"
