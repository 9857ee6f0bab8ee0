"""``sipwarden rules nftables``: the text, ``nft -c``, and real traffic through both rulesets.

The output and bogon-list tests read the generated text; the check tests load
it with ``nft -c -f`` (and ``nft -f``) in a fresh namespace; the traffic tests
load the nftables ruleset, and the iptables one from ``test_rules_iptables.py``
(parametrised), into the ``net_lab`` host namespace and send real packets:
probes, SIPp and TCP connections from the outside namespace.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from enforce.test_rules_iptables import IptablesFirewall, lab_config, scratch_namespace
from peers.netns import (
    ATTACKER4,
    BOGON4,
    BOGON_HOST4,
    CLIENT4,
    CLIENT6,
    HOST4,
    HOST6,
    MGMT4,
    MGMT_HOST4,
    PROBE,
    PUBLIC_IF,
    Namespace,
    NetLab,
)
from sipwarden.config import Config, parse_config
from sipwarden.enforce.nftables import ban_table_script, set_name
from sipwarden.enforce.rules.bogons import BOGONS4, BOGONS6
from sipwarden.enforce.rules.nftables import host_table_name, render_nftables
from support import require_tool

__all__ = ["scratch_namespace"]  # a fixture, imported to be used here

NFT_INSTALL = "apt-get install nftables"
SIPP_INSTALL = "apt-get install sip-tester"
FLOOD_SCENARIO = Path(__file__).with_name("sipp_options_flood.xml")

# A unique-local (RFC 4193) pair added to the lab's link: a bogon IPv6 source.
ULA_OUTSIDE, ULA_HOST = "fd00:99::2", "fd00:99::1"


# --------------------------------------------------------------------------- firewalls


class Firewall(Protocol):
    """A ruleset generator under test, as the traffic tests drive it."""

    name: str

    def load(self, namespace: Namespace, config: Config) -> None: ...

    def ban(self, namespace: Namespace, config: Config, address: str, seconds: int) -> None: ...

    def dropped(self, namespace: Namespace, comment: str) -> int: ...


class NftFirewall:
    """Loads the nftables ruleset into a namespace; bans go into sipwarden's sets."""

    name = "nftables"

    def load(self, namespace: Namespace, config: Config) -> None:
        require_tool("nft", NFT_INSTALL)
        namespace.run(["nft", "-f", "-"], stdin=render_nftables(config))

    def ban(self, namespace: Namespace, config: Config, address: str, seconds: int) -> None:
        table, ban_set = config.enforce.nftables_table, set_name(address)
        element = f"{{ {address} timeout {seconds}s }}"
        namespace.run(["nft", "add", "element", "inet", table, ban_set, element])

    def dropped(self, namespace: Namespace, comment: str) -> int:
        """Packets counted so far by the host table's rules carrying ``comment``."""
        listing = namespace.run(["nft", "-j", "list", "table", "inet", "sipwarden_host"])
        total = 0
        for item in json.loads(listing.stdout)["nftables"]:
            rule = item.get("rule")
            if rule and rule.get("comment") == comment:
                total += sum(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
        return total


FIREWALLS: tuple[Firewall, ...] = (NftFirewall(), IptablesFirewall())


@pytest.fixture(params=FIREWALLS, ids=[firewall.name for firewall in FIREWALLS])
def firewall(request: pytest.FixtureRequest) -> Firewall:
    chosen: Firewall = request.param
    return chosen


# --------------------------------------------------------------------------- bogon lists


REQUIRED_BOGONS = {
    # the ranges the issue names, each with the RFC that must be cited for it
    "10.0.0.0/8": "RFC 1918",
    "172.16.0.0/12": "RFC 1918",
    "192.168.0.0/16": "RFC 1918",
    "100.64.0.0/10": "RFC 6598",
    "127.0.0.0/8": "RFC 1122",
    "0.0.0.0/8": "RFC 1122",
    "169.254.0.0/16": "RFC 3927",
    "192.0.2.0/24": "RFC 5737",
    "198.51.100.0/24": "RFC 5737",
    "203.0.113.0/24": "RFC 5737",
    "198.18.0.0/15": "RFC 2544",
    "224.0.0.0/4": "RFC 5771",
    "240.0.0.0/4": "RFC 1112",
    "::/128": "RFC 4291",
    "::1/128": "RFC 4291",
    "2001:db8::/32": "RFC 3849",
    "fc00::/7": "RFC 4193",
    "fe80::/10": "RFC 4291",
    "ff00::/8": "RFC 4291",
    "::ffff:0:0/96": "RFC 4291",
    "100::/64": "RFC 6666",
}


def test_bogon_lists_hold_the_required_ranges_with_their_rfc() -> None:
    listed = {bogon.network: bogon.rfc for bogon in (*BOGONS4, *BOGONS6)}
    for network, rfc in REQUIRED_BOGONS.items():
        assert listed[network].startswith(rfc), network


def test_bogons_are_canonical_apart_and_of_their_family() -> None:
    for version, bogons in ((4, BOGONS4), (6, BOGONS6)):
        networks = [ipaddress.ip_network(bogon.network) for bogon in bogons]
        assert [str(n) for n in networks] == [bogon.network for bogon in bogons]
        assert all(n.version == version for n in networks)
        # An nftables interval set refuses overlapping elements.
        for index, network in enumerate(networks):
            assert not any(network.overlaps(other) for other in networks[index + 1 :]), network
        assert all(bogon.rfc.startswith("RFC ") and bogon.why for bogon in bogons)


def test_traffic_that_must_flow_is_not_a_bogon() -> None:
    bogons = [ipaddress.ip_network(b.network) for b in (*BOGONS4, *BOGONS6)]
    # the lab's public addresses, NAT64 (RFC 6052), 6to4, Teredo, a public resolver
    for address in (
        HOST4,
        CLIENT4,
        HOST6,
        "64:ff9b::c000:201",
        "2002:c000:201::1",
        "2001::1",
        "8.8.8.8",
        "2a00:1450:4001::1",
    ):
        assert not any(ipaddress.ip_address(address) in network for network in bogons), address


# --------------------------------------------------------------------------- output


MANAGED = parse_config("""
[sip]
ports = [5060, 5080]
[rules]
public_interface = "wan0"
management_networks = ["10.8.0.0/24", "2001:db8:8::/48", "10.8.0.128/25"]
rtp_ports = [16384, 16384]
sip_rate = 7
sip_burst = 9
sip_tcp_connections = 4
[bans]
allowlist = ["192.0.2.10", "2001:db8:99::/48"]
[enforce]
nftables_table = "swtest"
max_kernel_bans = 4096
""")


def test_the_ban_table_is_the_backends_own_definition() -> None:
    assert ban_table_script("sipwarden", 262_144) in render_nftables(Config())
    text = render_nftables(MANAGED)
    assert ban_table_script("swtest", 4096, ["2001:db8:99::/48", "192.0.2.10"]) in text
    assert host_table_name(MANAGED) == "swtest_host"
    assert "table inet swtest_host {" in text


def test_default_ruleset_drops_by_default_and_closes_management() -> None:
    text = render_nftables(Config())
    assert "type filter hook input priority 0; policy drop;" in text
    assert 'iifname != "eth0" return' in text
    assert "set management4 { type ipv4_addr; flags interval; }" in text  # empty: closed
    assert "(none configured: closed)" in text
    assert "set sip_ports { type inet_service; elements = { 5060, 5061 }; }" in text
    assert "udp dport 10000-20000 accept" in text
    assert "limit rate over 50/second burst 100 packets" in text
    assert "ct count over 20" in text
    for bogon in (*BOGONS4, *BOGONS6):
        assert f'{bogon.network} comment "{bogon.comment}",' in text
    # No string match in nftables: the output says why instead.
    assert "nftables matches payload" in text


def test_config_values_reach_the_sets_and_limits() -> None:
    text = render_nftables(MANAGED)
    # 10.8.0.128/25 lies inside 10.8.0.0/24: merged (interval sets refuse overlaps).
    assert "set management4 { type ipv4_addr; flags interval; elements = { 10.8.0.0/24 }; }" in text
    assert "elements = { 2001:db8:8::/48 }" in text
    assert "set allowlist4 { type ipv4_addr; flags interval; elements = { 192.0.2.10 }; }" in text
    assert (
        "set allowlist6 { type ipv6_addr; flags interval; elements = { 2001:db8:99::/48 }; }"
        in (text)
    )
    assert "elements = { 5060, 5080 }" in text
    assert "udp dport 16384 accept" in text
    assert "limit rate over 7/second burst 9 packets" in text
    assert "ct count over 4" in text
    assert 'iifname != "wan0" return' in text
    # Trusted peers are accepted before the limits.
    assert text.index("ip6 saddr @allowlist6 meta l4proto") < text.index("update @sip_rate4")


def test_ipv6_sources_are_limited_per_64_and_neighbour_discovery_is_kept() -> None:
    text = render_nftables(Config())
    assert "update @sip_rate6 { ip6 saddr & ffff:ffff:ffff:ffff:: limit rate over" in text
    assert "add @sip_conn6 { ip6 saddr & ffff:ffff:ffff:ffff:: ct count over" in text
    nd = "nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert"
    assert f"icmpv6 type {{ {nd} }} ip6 hoplimit 255 accept" in text
    # and before the link-local bogon drop, ND from link-local leaves the BCP 38 chain
    assert text.index(f"ip6 saddr fe80::/10 icmpv6 type {{ {nd} }}") < text.index(
        "ip6 saddr @bogons6 counter drop"
    )


def test_bcp38_can_be_switched_off() -> None:
    text = render_nftables(parse_config("[rules]\nbcp38 = false\n"))
    assert "bogons4" not in text
    assert "chain bcp38" not in text
    assert "BCP 38 filtering is off" in text


def test_output_is_deterministic_whatever_the_order_of_the_file() -> None:
    shuffled = parse_config("""
[sip]
ports = [5080, 5060]
[rules]
public_interface = "wan0"
management_networks = ["2001:db8:8::/48", "10.8.0.128/25", "10.8.0.0/24"]
rtp_ports = [16384, 16384]
sip_rate = 7
sip_burst = 9
sip_tcp_connections = 4
[bans]
allowlist = ["2001:db8:99::/48", "192.0.2.10"]
[enforce]
nftables_table = "swtest"
max_kernel_bans = 4096
""")
    assert render_nftables(shuffled) == render_nftables(MANAGED)
    assert render_nftables(MANAGED) == render_nftables(MANAGED)


# --------------------------------------------------------------------------- nft -c / nft -f


@pytest.mark.parametrize(
    "config",
    [Config(), MANAGED, parse_config("[rules]\nbcp38 = false\n"), lab_config()],
    ids=["default", "managed", "no-bcp38", "lab"],
)
def test_nft_check_accepts_the_ruleset(scratch_namespace: Namespace, config: Config) -> None:
    nft = require_tool("nft", NFT_INSTALL)
    done = scratch_namespace.run([nft, "-c", "-f", "-"], stdin=render_nftables(config), check=False)
    assert done.returncode == 0, done.stderr


def test_loading_twice_gives_the_same_ruleset_and_keeps_the_bans(
    scratch_namespace: Namespace,
) -> None:
    nft = require_tool("nft", NFT_INSTALL)
    text = render_nftables(MANAGED)
    scratch_namespace.run([nft, "-f", "-"], stdin=text)
    scratch_namespace.run([nft, "add", "element", "inet", "swtest", "banned4", "{ 198.51.100.9 }"])
    first = scratch_namespace.run([nft, "list", "ruleset"]).stdout
    scratch_namespace.run([nft, "-f", "-"], stdin=text)
    assert scratch_namespace.run([nft, "list", "ruleset"]).stdout == first
    assert "198.51.100.9" in first


# --------------------------------------------------------------------------- real traffic


def outer_link(lab: NetLab) -> str:
    """The outside end of the lab's veth pair."""
    links = json.loads(lab.outside.run(["ip", "-j", "link", "show", "type", "veth"]).stdout)
    name: str = links[0]["ifname"]
    return name


def add_pair(lab: NetLab, host: str, outside: str, *, pin: bool) -> None:
    """``host`` on pub0 and ``outside`` on the outside end, both /64.

    ``pin`` writes the host's MAC into the outside's neighbour table, so the
    outside sends at once: no neighbour solicitation (which BCP 38 drops too,
    from a bogon source) stands between the test packet and the rule under test.
    The lab pins its own IPv6 addresses that way, so tests of neighbour
    discovery itself need a pair of their own, unpinned.
    """
    outer = outer_link(lab)
    lab.host.run(["ip", "addr", "add", f"{host}/64", "dev", PUBLIC_IF, "nodad"])
    lab.outside.run(["ip", "addr", "add", f"{outside}/64", "dev", outer, "nodad"])
    if pin:
        host_link = json.loads(lab.host.run(["ip", "-j", "link", "show", PUBLIC_IF]).stdout)
        mac = host_link[0]["address"]
        lab.outside.run(["ip", "neigh", "replace", host, "lladdr", mac, "dev", outer])


@pytest.mark.parametrize("bcp38", [True, False], ids=["bcp38", "no-bcp38"])
def test_bogon_sources_are_dropped_on_the_public_side(
    net_lab: NetLab, firewall: Firewall, bcp38: bool
) -> None:
    lab = net_lab
    firewall.load(lab.host, lab_config(f"bcp38 = {str(bcp38).lower()}\n"))
    add_pair(lab, ULA_HOST, ULA_OUTSIDE, pin=True)
    with lab.host.listen_udp(5060) as listener:
        lab.outside.send_udp(BOGON_HOST4, 5060, source=BOGON4)  # RFC 1918 source
        lab.outside.send_udp(ULA_HOST, 5060, source=ULA_OUTSIDE)  # RFC 4193 source
        lab.outside.send_udp(HOST4, 5060, source=CLIENT4)
        lab.outside.send_udp(HOST6, 5060, source=CLIENT6)
        sources = set(listener.sources())
    expected = {CLIENT4, CLIENT6} if bcp38 else {CLIENT4, CLIENT6, BOGON4, ULA_OUTSIDE}
    assert sources == expected


# A public IPv6 pair of the test's own, without pinned neighbours.
ND_HOST6, ND_OUTSIDE6 = "2a05:d000:1::1", "2a05:d000:1::2"
NEIGHBOUR_FOUND = {"REACHABLE", "STALE", "DELAY", "PROBE"}
SEND_ONE = (
    "import socket, sys\n"
    "socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b'nd', (sys.argv[1], 5060))\n"
)


def link_local(namespace: Namespace, device: str) -> str:
    """The link-local address of ``device``, once duplicate address detection is done."""
    deadline = time.monotonic() + 5
    while True:
        shown = namespace.run(["ip", "-j", "-6", "addr", "show", "dev", device, "scope", "link"])
        links = json.loads(shown.stdout)
        infos = [info for link in links for info in link["addr_info"] if "local" in info]
        ready = [info["local"] for info in infos if not info.get("tentative")]
        if ready:
            address: str = ready[0]
            return address
        assert time.monotonic() < deadline, f"no usable link-local address on {device}: {infos}"
        time.sleep(0.1)


def neighbour_state(namespace: Namespace, device: str, address: str) -> set[str]:
    shown = namespace.run(["ip", "-j", "-6", "neigh", "show", "dev", device])
    return {
        s for entry in json.loads(shown.stdout) if entry["dst"] == address for s in entry["state"]
    }


def test_neighbour_discovery_survives_the_ruleset(net_lab: NetLab, firewall: Firewall) -> None:
    lab = net_lab
    firewall.load(lab.host, lab_config())
    add_pair(lab, ND_HOST6, ND_OUTSIDE6, pin=False)
    with lab.host.listen_tcp(5060):
        # The host must take the outside's solicitation (global source, hop limit
        # 255) and answer it, or the handshake never starts.
        assert lab.outside.tcp_open(ND_HOST6, 5060, source=ND_OUTSIDE6, timeout=3.0)
    # Solicitations from a link-local source get past BCP 38 as well.
    outer = outer_link(lab)
    link_local(lab.outside, outer)
    target = link_local(lab.host, PUBLIC_IF)
    lab.outside.run([sys.executable, "-c", SEND_ONE, f"{target}%{outer}"])
    deadline = time.monotonic() + 3
    while not neighbour_state(lab.outside, outer, target) & NEIGHBOUR_FOUND:
        assert time.monotonic() < deadline, neighbour_state(lab.outside, outer, target)
        time.sleep(0.1)


def test_management_ports_are_open_to_the_management_network_only(
    net_lab: NetLab, firewall: Firewall
) -> None:
    lab = net_lab
    firewall.load(lab.host, lab_config())
    with (
        lab.host.listen_tcp(5038),  # Asterisk AMI
        lab.host.listen_tcp(3306),  # not a management port: nobody's
        lab.host.listen_udp(161) as snmp,
    ):
        assert lab.outside.tcp_open(MGMT_HOST4, 5038, source=MGMT4)
        assert not lab.outside.tcp_open(HOST4, 5038, source=ATTACKER4, timeout=0.5)
        assert not lab.outside.tcp_open(MGMT_HOST4, 3306, source=MGMT4, timeout=0.5)
        lab.outside.send_udp(MGMT_HOST4, 161, source=MGMT4)
        lab.outside.send_udp(HOST4, 161, source=ATTACKER4)
        assert snmp.sources() == [MGMT4]
    # Reloaded without management networks (the ruleset replaces itself): closed to all.
    firewall.load(lab.host, lab_config(management=False))
    with lab.host.listen_tcp(5038):
        assert not lab.outside.tcp_open(MGMT_HOST4, 5038, source=MGMT4, timeout=0.5)


def stop(process: subprocess.Popen[str]) -> None:
    """Kill a peer this test started (its own session) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def start_flood(lab: NetLab, count: int, interval: float) -> subprocess.Popen[str]:
    """The probe sending ``count`` datagrams from ATTACKER4 in the background."""
    argv = [sys.executable, PROBE, "send", HOST4, "5060", "--source", ATTACKER4]
    argv += ["--count", str(count), "--interval", str(interval)]
    return lab.outside.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_the_rate_limit_cuts_a_flood_while_a_low_rate_client_gets_through(
    net_lab: NetLab, firewall: Firewall
) -> None:
    lab = net_lab
    config = lab_config()  # 50 packets/s per source after a burst of 100
    rate, burst, sent = config.rules.sip_rate, config.rules.sip_burst, 3000
    firewall.load(lab.host, config)
    with lab.host.listen_udp(5060) as listener:
        started = time.monotonic()
        flood = start_flood(lab, sent, 0.0005)  # about 2 s at 1,500 packets/s
        lab.outside.send_udp(HOST4, 5060, source=CLIENT4, count=10, interval=0.1)
        assert flood.wait(timeout=30) == 0
        elapsed = time.monotonic() - started
        sources = listener.sources()
    attacker, client = sources.count(ATTACKER4), sources.count(CLIENT4)
    print(f"{firewall.name}: flood {attacker}/{sent} in {elapsed:.2f} s, client {client}/10")
    assert client == 10
    # The burst passes whole, then the rate: never more than the bucket allows.
    assert burst <= attacker <= burst + rate * elapsed + 2
    assert firewall.dropped(lab.host, "SIP rate limit") == sent - attacker


def test_a_sipp_flood_is_cut_and_a_sipp_client_is_not(
    net_lab: NetLab, firewall: Firewall, tmp_path: Path
) -> None:
    sipp = require_tool("sipp", SIPP_INSTALL)
    lab = net_lab
    config = lab_config()
    rate, burst = config.rules.sip_rate, config.rules.sip_burst
    firewall.load(lab.host, config)

    def run_sipp(source: str, local_port: int, calls: int, per_second: int) -> list[str]:
        return [
            sipp, f"{HOST4}:5060", "-sf", str(FLOOD_SCENARIO), "-i", source,
            "-p", str(local_port), "-cp", str(local_port + 1000), "-m", str(calls),
            "-r", str(per_second), "-nostdin", "-timeout", "20s",
        ]  # fmt: skip

    with lab.host.listen_udp(5060) as listener:
        started = time.monotonic()
        peers = [
            lab.outside.popen(
                argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            for argv in (
                run_sipp(ATTACKER4, 15060, 2000, 1000),  # 2000 OPTIONS in 2 s
                run_sipp(CLIENT4, 15062, 10, 5),  # a phone's keep-alives
            )
        ]
        try:
            codes = [peer.wait(timeout=30) for peer in peers]
        finally:
            for peer in peers:
                stop(peer)
        elapsed = time.monotonic() - started
        sources = listener.sources()
    assert codes == [0, 0]
    attacker, client = sources.count(ATTACKER4), sources.count(CLIENT4)
    print(f"{firewall.name}: SIPp flood {attacker}/2000 in {elapsed:.2f} s, client {client}/10")
    assert client == 10
    assert burst <= attacker <= burst + rate * elapsed + 2


def test_a_ban_stops_the_source_within_a_second_and_lifts_on_expiry(
    net_lab: NetLab, firewall: Firewall
) -> None:
    lab = net_lab
    config = lab_config()
    firewall.load(lab.host, config)
    with lab.host.listen_udp(5060) as listener:
        lab.outside.send_udp(HOST4, 5060, source=ATTACKER4)
        assert listener.sources() == [ATTACKER4]
        firewall.ban(lab.host, config, ATTACKER4, 3)
        banned_at = time.monotonic()
        # From the moment the ban is in, for half a second: nothing gets through.
        lab.outside.send_udp(HOST4, 5060, source=ATTACKER4, count=10, interval=0.05)
        lab.outside.send_udp(HOST4, 5060, source=CLIENT4)
        assert listener.sources() == [CLIENT4]
        assert time.monotonic() - banned_at < 3  # all of that inside the ban
        time.sleep(max(0.0, banned_at + 3.3 - time.monotonic()))
        lab.outside.send_udp(HOST4, 5060, source=ATTACKER4)
        assert listener.sources() == [ATTACKER4]


HOLD_LISTENER = """
import socket, sys, time
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", 5060))
server.listen(128)  # the kernel completes handshakes; never accepting keeps them open
print("ready", flush=True)
time.sleep(60)
"""

OPEN_AND_HOLD = """
import socket, sys, time
address, source, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
held = []
for _ in range(count):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(2)
    sock.bind((source, 0))
    try:
        sock.connect((address, 5060))
    except OSError as error:
        print(type(error).__name__, flush=True)
        continue
    held.append(sock)
    print("open", flush=True)
time.sleep(60)
"""


@pytest.fixture
def held_processes() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        stop(process)
        if process.stdout is not None:
            process.stdout.close()


def test_tcp_connections_per_source_are_limited(
    net_lab: NetLab, firewall: Firewall, held_processes: list[subprocess.Popen[str]]
) -> None:
    lab = net_lab
    firewall.load(lab.host, lab_config("sip_tcp_connections = 3\n"))
    server = lab.host.popen([sys.executable, "-c", HOLD_LISTENER], stdout=subprocess.PIPE)
    held_processes.append(server)
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "ready"
    opener = lab.outside.popen(
        [sys.executable, "-c", OPEN_AND_HOLD, HOST4, ATTACKER4, "5"], stdout=subprocess.PIPE
    )
    held_processes.append(opener)
    assert opener.stdout is not None
    results = [opener.stdout.readline().strip() for _ in range(5)]
    # Three held connections; the fourth and fifth are reset at once.
    assert results == ["open"] * 3 + ["ConnectionRefusedError"] * 2
    # Another source is not affected while the attacker holds its three.
    assert lab.outside.tcp_open(HOST4, 5060, source=CLIENT4)
    assert firewall.dropped(lab.host, "SIP connection limit") == 2


def test_an_allowlisted_peer_is_not_rate_limited(net_lab: NetLab, firewall: Firewall) -> None:
    lab = net_lab
    firewall.load(lab.host, lab_config(f'[bans]\nallowlist = ["{CLIENT4}"]\n'))
    with lab.host.listen_udp(5060) as listener:
        for source in (CLIENT4, ATTACKER4):
            lab.outside.send_udp(HOST4, 5060, source=source, count=400, interval=0.001)
        sources = listener.sources()
    assert sources.count(CLIENT4) == 400
    assert sources.count(ATTACKER4) < 200
