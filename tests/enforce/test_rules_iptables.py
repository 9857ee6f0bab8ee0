"""``sipwarden rules iptables``: the text, ``iptables-restore --test``, and real traffic.

The output tests check what the ruleset says; the restore tests load it into
a fresh network namespace with ``--test`` (the kernel still has to accept
every match); the traffic tests load it into the ``net_lab`` host namespace
and send real packets, with SIPVicious for the User-Agent string match.

:class:`IptablesFirewall` and :func:`scratch_namespace` are shared with
``test_rules_nftables.py``, whose traffic tests run against both rulesets.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from peers.netns import (
    ATTACKER4,
    CLIENT4,
    HOST4,
    MGMT_NET4,
    PUBLIC_IF,
    Namespace,
    NetLab,
)
from sipwarden.config import Config, parse_config
from sipwarden.detect.scanner import builtin_signatures
from sipwarden.enforce.ipset import create_set_args
from sipwarden.enforce.rules.bogons import BOGONS4, BOGONS6
from sipwarden.enforce.rules.common import SCANNER_USER_AGENTS
from sipwarden.enforce.rules.iptables import BCP38_CHAIN, SIP_CHAIN, render_iptables
from support import require_tool

IPTABLES_INSTALL = "apt-get install iptables"
IPSET_INSTALL = "apt-get install ipset"
SVMAP_INSTALL = "apt-get install sipvicious"

_names = itertools.count()


# --------------------------------------------------------------------------- shared helpers


@pytest.fixture
def scratch_namespace() -> Iterator[Namespace]:
    """A fresh, empty network namespace: checks (``nft -c``, ``--test``) still need a kernel."""
    require_tool("ip", "apt-get install iproute2")
    if os.geteuid() != 0:
        pytest.fail("ruleset checks need root (CI runs as root): run them with sudo")
    namespace = Namespace(f"swr{os.getpid() % 100000}{next(_names)}")
    subprocess.run(["ip", "netns", "add", namespace.name], check=True, timeout=30)
    try:
        yield namespace
    finally:
        subprocess.run(["ip", "netns", "del", namespace.name], check=False, timeout=30)


def lab_config(extra: str = "", *, management: bool = True) -> Config:
    """A configuration for the lab: public interface pub0, management from MGMT_NET4."""
    networks = f'["{MGMT_NET4}"]' if management else "[]"
    rules = f'public_interface = "{PUBLIC_IF}"\nmanagement_networks = {networks}\n'
    return parse_config(f"[rules]\n{rules}{extra}")


class IptablesFirewall:
    """Loads the iptables and ip6tables rulesets (and the ban ipsets) into a namespace."""

    name = "iptables"

    def load(self, namespace: Namespace, config: Config) -> None:
        require_tool("ipset", IPSET_INSTALL)
        require_tool("iptables-restore", IPTABLES_INSTALL)
        create_ipsets(namespace, config)
        namespace.run(["iptables-restore"], stdin=render_iptables(config))
        namespace.run(["ip6tables-restore"], stdin=render_iptables(config, ipv6=True))

    def ban(self, namespace: Namespace, config: Config, address: str, seconds: int) -> None:
        family = "v6" if ":" in address else "v4"
        name = f"{config.enforce.ipset_prefix}-{family}"
        namespace.run(["ipset", "add", name, address, "timeout", str(seconds)])

    def dropped(self, namespace: Namespace, comment: str) -> int:
        """Packets dropped so far by the rules carrying ``comment`` (both families)."""
        total = 0
        for save in ("iptables-save", "ip6tables-save"):
            for line in namespace.run([save, "-c"]).stdout.splitlines():
                found = re.match(r"\[(\d+):\d+\] ", line)
                if found and f'--comment "{comment}"' in line:
                    total += int(found.group(1))
        return total


def create_ipsets(namespace: Namespace, config: Config) -> None:
    """The ban sets, created the way the header of the ruleset tells the user to."""
    prefix, size = config.enforce.ipset_prefix, config.enforce.max_kernel_bans
    versions: tuple[Literal[4, 6], ...] = (4, 6)
    for version in versions:
        args = create_set_args(f"{prefix}-v{version}", version, size)
        namespace.run(["ipset", "create", *args, "-exist"])


# --------------------------------------------------------------------------- output


MANAGED = parse_config("""
[rules]
public_interface = "wan0"
management_networks = ["10.8.0.0/24", "2001:db8:8::/48", "10.8.0.128/25"]
management_udp_ports = [161]
rtp_ports = [16384, 16384]
[bans]
allowlist = ["192.0.2.10", "2001:db8:99::/48"]
[enforce]
ipset_prefix = "swtest"
""")


def test_default_ruleset_drops_by_default_and_names_the_ban_set() -> None:
    text = render_iptables(Config())
    assert "ipset create sipwarden-v4 hash:net family inet timeout 0 maxelem 262144 -exist" in text
    assert ":INPUT DROP [0:0]" in text
    assert ":FORWARD DROP [0:0]" in text
    # The ban backend's chain, hooked first in raw PREROUTING, as the backend does.
    assert "-A SIPWARDEN -m set --match-set sipwarden-v4 src" in text
    assert text.index("-A PREROUTING -j SIPWARDEN") < text.index(f"-j {BCP38_CHAIN}")
    assert f"-A PREROUTING -i eth0 -j {BCP38_CHAIN}" in text
    for bogon in BOGONS4:
        assert f"-A {BCP38_CHAIN} -s {bogon.network} " in text
    # No management network: no management rule at all.
    assert "--dports 22," not in text
    assert "None configured for this family: the management ports stay closed." in text
    assert "-A INPUT -p udp -m udp --dport 10000:20000 -j ACCEPT" in text


def test_every_table_is_committed_and_every_chain_declared() -> None:
    for ipv6 in (False, True):
        lines = render_iptables(MANAGED, ipv6=ipv6).splitlines()
        tables = [line for line in lines if line.startswith("*")]
        assert tables == ["*raw", "*filter"]
        assert lines.count("COMMIT") == 2
        declared = {line[1:].split()[0] for line in lines if line.startswith(":")}
        used = {word for line in lines for word in re.findall(r"-[AJj] (\S+)", line)}
        builtin = {"ACCEPT", "DROP", "REJECT", "RETURN"}
        assert used - builtin <= declared


def test_management_and_allowlist_follow_the_family() -> None:
    v4 = render_iptables(MANAGED)
    v6 = render_iptables(MANAGED, ipv6=True)
    # 10.8.0.128/25 lies inside 10.8.0.0/24: merged into one rule per protocol.
    assert (
        "-A INPUT -s 10.8.0.0/24 -p tcp -m multiport --dports 22,80,443,5038,8021,8088,8089 "
        "-j ACCEPT" in v4
    )
    assert "-A INPUT -s 10.8.0.0/24 -p udp -m multiport --dports 161 -j ACCEPT" in v4
    assert "10.8.0.128" not in v4
    assert "2001:db8:8::/48" not in v4
    assert "-A INPUT -s 2001:db8:8::/48 -p udp -m multiport --dports 161 -j ACCEPT" in v6
    # Allowlisted networks skip the bans (raw) and the SIP limits (filter).
    assert '-A PREROUTING -s 192.0.2.10 -m comment --comment "bans.allowlist' in v4
    assert f"-A {SIP_CHAIN} -s 192.0.2.10 -j ACCEPT" in v4
    assert f"-A {SIP_CHAIN} -s 2001:db8:99::/48 -j ACCEPT" in v6
    assert "192.0.2.10" not in v6
    assert "--match-set swtest-v6 src" in v6
    assert "-A PREROUTING -j SWTEST" in v6
    assert "--dport 16384 -j ACCEPT" in v4


def test_ipv6_ruleset_keeps_neighbour_discovery_and_limits_per_64() -> None:
    text = render_iptables(Config(), ipv6=True)
    for bogon in BOGONS6:
        assert f"-A {BCP38_CHAIN} -s {bogon.network} " in text
    nd = "-p ipv6-icmp -m icmp6 --icmpv6-type neighbour-solicitation -m hl --hl-eq 255"
    assert f"-A INPUT {nd} -j ACCEPT" in text
    # Link-local ND is let through before the link-local bogon drop.
    assert text.index(f"-s fe80::/10 {nd} -j RETURN") < text.index("-s fe80::/10 -m comment")
    assert "--hashlimit-srcmask 64" in text
    assert "--connlimit-mask 64" in text
    assert "-p icmp " not in text


def test_sip_limits_come_from_the_config() -> None:
    config = parse_config(
        "[sip]\nports = [5060, 5080]\n[rules]\nsip_rate = 7\nsip_burst = 9\n"
        "sip_tcp_connections = 4\n"
    )
    text = render_iptables(config)
    assert "-A INPUT -p udp -m multiport --dports 5060,5080 -j sw-host-sip" in text
    assert "--hashlimit-above 7/sec --hashlimit-burst 9 --hashlimit-mode srcip" in text
    assert "--connlimit-above 4 --connlimit-mask 32" in text
    # The limits sit after the trusted peers and before the accept.
    sip = [line for line in text.splitlines() if line.startswith(f"-A {SIP_CHAIN}")]
    assert "hashlimit" in sip[-3]
    assert "connlimit" in sip[-2]
    assert sip[-1] == f"-A {SIP_CHAIN} -j ACCEPT"


def test_many_ports_are_split_into_multiport_runs_of_fifteen() -> None:
    ports = ", ".join(str(5060 + n) for n in range(20))
    text = render_iptables(parse_config(f"[sip]\nports = [{ports}]\n"))
    udp = [line for line in text.splitlines() if line.startswith("-A INPUT -p udp -m multiport")]
    assert len(udp) == 2
    assert udp[0].split("--dports ")[1].split()[0].count(",") == 14
    assert "5079" in udp[1]


def test_switches_turn_off_bcp38_and_the_user_agent_match() -> None:
    text = render_iptables(
        parse_config("[rules]\nbcp38 = false\ndrop_scanner_user_agents = false\n")
    )
    assert BCP38_CHAIN not in text
    assert "-m string" not in text
    assert "BCP 38 filtering is off" in text
    assert "-A PREROUTING -j SIPWARDEN" in text  # the bans stay


def test_output_is_deterministic_whatever_the_order_of_the_file() -> None:
    shuffled = parse_config("""
[rules]
public_interface = "wan0"
management_networks = ["10.8.0.128/25", "2001:db8:8::/48", "10.8.0.0/24"]
management_udp_ports = [161]
rtp_ports = [16384, 16384]
[bans]
allowlist = ["2001:db8:99::/48", "192.0.2.10"]
[enforce]
ipset_prefix = "swtest"
""")
    for ipv6 in (False, True):
        assert render_iptables(shuffled, ipv6=ipv6) == render_iptables(MANAGED, ipv6=ipv6)


# --------------------------------------------------------------------------- scanner agents


SIGNATURES = {signature.name: signature for signature in builtin_signatures()}

# User-Agents of real products (phones, softphones, PBXs, SDKs, test tools):
# none may be dropped by the kernel string match.
LEGITIMATE_USER_AGENTS = (
    "Asterisk PBX 20.5.0",
    "FPBX-16.0.40(18.20.0)",
    "FreeSWITCH-mod_sofia/1.10.11",
    "Yealink SIP-T46S 66.86.0.15",
    "Grandstream GXP2170 1.0.11.23",
    "PolycomVVX-VVX_411-UA/6.4.3.4726",
    "Cisco-CP8845/14.1.1",
    "snom D785/10.1.141.12",
    "Z 5.6.1 v2.10.19.6",
    "Linphone/5.2.0 (belle-sip/5.2.0)",
    "MicroSIP/3.21.3",
    "Bria 6 release 6.5.1",
    "PortSIP VoIP SDK 16.2",
    "VaxSIPUserAgent/3.1",
    "sipsak 0.9.8",
    "sipwarden-test-sipp",
    "Kamailio (5.7.4 (x86_64/linux))",
    "3CXPhoneSystem 18.0.8.915",
)


def test_each_dropped_user_agent_is_a_high_confidence_signature() -> None:
    for agent in SCANNER_USER_AGENTS:
        signature = SIGNATURES[agent.signature]
        assert signature.confidence == "high", agent
        patterns = dict(signature.patterns)
        assert patterns["user_agent"].search(agent.text), agent


def test_no_legitimate_user_agent_is_dropped() -> None:
    for user_agent in LEGITIMATE_USER_AGENTS:
        header = f"User-Agent: {user_agent}".lower()
        assert not [agent for agent in SCANNER_USER_AGENTS if agent.header.lower() in header]


def test_the_string_match_names_the_header_and_ignores_case() -> None:
    text = render_iptables(Config())
    match = (
        f'-A {SIP_CHAIN} -p udp -m string --string "User-Agent: friendly-scanner" --algo bm --icase'
    )
    assert match in text
    assert text.count("-m string") == len(SCANNER_USER_AGENTS)


# --------------------------------------------------------------------------- iptables-restore


@pytest.mark.parametrize("ipv6", [False, True], ids=["iptables", "ip6tables"])
@pytest.mark.parametrize(
    "config",
    [Config(), MANAGED, parse_config("[rules]\nbcp38 = false\ndrop_scanner_user_agents = false\n")],
    ids=["default", "managed", "switched-off"],
)
def test_restore_test_accepts_the_ruleset(
    scratch_namespace: Namespace, config: Config, ipv6: bool
) -> None:
    require_tool("ipset", IPSET_INSTALL)
    restore = require_tool("ip6tables-restore" if ipv6 else "iptables-restore", IPTABLES_INSTALL)
    create_ipsets(scratch_namespace, config)
    done = scratch_namespace.run(
        [restore, "--test"], stdin=render_iptables(config, ipv6=ipv6), check=False
    )
    assert done.returncode == 0, done.stderr


def test_restore_refuses_the_ruleset_without_the_ban_set(scratch_namespace: Namespace) -> None:
    # Why the header says to create the ipset first.
    restore = require_tool("iptables-restore", IPTABLES_INSTALL)
    done = scratch_namespace.run([restore, "--test"], stdin=render_iptables(Config()), check=False)
    assert done.returncode != 0


# --------------------------------------------------------------------------- real traffic


def scanner_drops(namespace: Namespace) -> int:
    """Packets the friendly-scanner string match has dropped."""
    saved = namespace.run(["iptables-save", "-c", "-t", "filter"]).stdout
    found = re.search(r'\[(\d+):\d+\] .*"User-Agent: friendly-scanner"', saved)
    assert found, saved
    return int(found.group(1))


def options(user_agent: str) -> str:
    return (
        "OPTIONS sip:100@11.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 11.0.0.3:5060;branch=z9hG4bKx\r\n"
        f"User-Agent: {user_agent}\r\nContent-Length: 0\r\n\r\n"
    )


def test_svmap_is_dropped_by_its_user_agent(net_lab: NetLab, tmp_path: Path) -> None:
    svmap = require_tool("svmap", SVMAP_INSTALL)
    lab = net_lab
    IptablesFirewall().load(lab.host, lab_config())
    with lab.host.listen_udp(5060) as listener:
        # SIPVicious svmap sends OPTIONS with "User-Agent: friendly-scanner" (its
        # session files go to $HOME/.sipvicious: kept in tmp_path).
        lab.outside.run(["env", f"HOME={tmp_path}", svmap, "-p", "5060", "-b", ATTACKER4, HOST4])
        # A phone's OPTIONS passes; the same from it with the scanner's agent, in
        # other letter case, does not.
        for user_agent in ("Yealink SIP-T46S 66.86.0.15", "FRIENDLY-SCANNER"):
            lab.outside.probe(
                "send", HOST4, "5060", "--source", CLIENT4, "--payload", options(user_agent)
            )
        assert listener.sources() == [CLIENT4]
    # svmap's probe did arrive and was dropped by the string match (not by anything else).
    assert scanner_drops(lab.host) >= 2


def test_without_the_match_svmap_gets_through(net_lab: NetLab, tmp_path: Path) -> None:
    svmap = require_tool("svmap", SVMAP_INSTALL)
    lab = net_lab
    IptablesFirewall().load(lab.host, lab_config("drop_scanner_user_agents = false\n"))
    with lab.host.listen_udp(5060) as listener:
        lab.outside.run(["env", f"HOME={tmp_path}", svmap, "-p", "5060", "-b", ATTACKER4, HOST4])
        assert ATTACKER4 in listener.sources()


def test_an_allowlisted_source_is_never_dropped_as_banned(net_lab: NetLab) -> None:
    # The ban manager never bans the allowlist; the ruleset makes sure of it even
    # if a ban slips into the set (by hand, or from another node).
    lab = net_lab
    config = lab_config(f'[bans]\nallowlist = ["{CLIENT4}"]\n')
    firewall = IptablesFirewall()
    firewall.load(lab.host, config)
    firewall.ban(lab.host, config, CLIENT4, 30)
    firewall.ban(lab.host, config, ATTACKER4, 30)
    with lab.host.listen_udp(5060) as listener:
        lab.outside.send_udp(HOST4, 5060, source=ATTACKER4)
        lab.outside.send_udp(HOST4, 5060, source=CLIENT4)
        assert listener.sources() == [CLIENT4]
