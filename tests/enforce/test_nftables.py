"""The nftables backend for real, in a network namespace: bans stop packets in the kernel.

Every test runs sipwarden inside the ``host`` namespace of :class:`~peers.netns.NetLab`
(``ip netns exec``), the way it runs on a PBX host, and sends real traffic from
the ``outside`` namespace.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from monitor.live_support import LiveMonitor
from peers.netns import (
    ATTACKER4,
    ATTACKER6,
    CLIENT4,
    CLIENT6,
    HOST4,
    HOST6,
    PUBLIC_IF,
    Namespace,
    NetLab,
)
from support import require_tool

NFT_INSTALL = "apt-get install nftables"
SIP_PORT = 5060


def sipwarden(namespace: Namespace, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return namespace.run(
        [sys.executable, "-m", "sipwarden", "--config", str(config), *args], check=False
    )


def write_config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "sipwarden.toml"
    store = tmp_path / "store.sqlite3"
    config.write_text(f'[store]\npath = "{store}"\n\n[enforce]\nbackends = ["nftables"]\n{extra}')
    return config


def elements(namespace: Namespace, name: str) -> list[dict[str, Any]]:
    """The elements of one of sipwarden's ban sets, as ``nft -j`` lists them."""
    listing = namespace.run(["nft", "-j", "list", "set", "inet", "sipwarden", name]).stdout
    (entry,) = [item["set"] for item in json.loads(listing)["nftables"] if "set" in item]
    return [element["elem"] for element in entry.get("elem", [])]


def members(namespace: Namespace, name: str) -> set[str]:
    found: set[str] = set()
    for element in elements(namespace, name):
        value = element["val"]
        if isinstance(value, dict):
            value = f"{value['prefix']['addr']}/{value['prefix']['len']}"
        found.add(value)
    return found


def host_monitor(lab: NetLab, tmp_path: Path, *, store: Path | None = None) -> LiveMonitor:
    """The live monitor on the host's public interface, enforcing through nftables."""
    return LiveMonitor(
        tmp_path / "monitor",
        ports=[SIP_PORT],
        source=("--interface", PUBLIC_IF),
        prefix=lab.host.argv([]),
        extra_config='\n[enforce]\nbackends = ["nftables"]\n',
        store=store,
    )


def reached(lab: NetLab, sources: list[str], destination: str) -> set[str]:
    """Which of ``sources`` get a datagram through to the SIP port."""
    with lab.host.listen_udp(SIP_PORT) as listener:
        for source in sources:
            lab.outside.send_udp(destination, SIP_PORT, source=source, count=3)
        return set(listener.sources())


def test_a_ban_by_hand_stops_the_source_within_a_second_and_expires(
    net_lab: NetLab, tmp_path: Path
) -> None:
    require_tool("nft", NFT_INSTALL)
    config = write_config(tmp_path)
    assert reached(net_lab, [ATTACKER4, CLIENT4], HOST4) == {ATTACKER4, CLIENT4}
    started = time.monotonic()
    done = sipwarden(net_lab.host, config, "bans", "ban", ATTACKER4, "--duration", "3")
    assert done.returncode == 0, done.stderr
    six = sipwarden(net_lab.host, config, "bans", "ban", ATTACKER6, "--duration", "3")
    assert six.returncode == 0, six.stderr
    assert reached(net_lab, [ATTACKER4, CLIENT4], HOST4) == {CLIENT4}
    applied_after = time.monotonic() - started
    assert reached(net_lab, [ATTACKER6, CLIENT6], HOST6) == {CLIENT6}
    assert members(net_lab.host, "banned4") == {ATTACKER4}
    assert members(net_lab.host, "banned6") == {ATTACKER6}
    # The command returns once the ban is in the kernel; the rest is the interpreter starting.
    assert applied_after < 3.0, applied_after
    # The kernel expires the element on its own, about 3 s after the command made it.
    deadline = time.monotonic() + 6.0
    while members(net_lab.host, "banned4") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert members(net_lab.host, "banned4") == set()
    assert reached(net_lab, [ATTACKER4], HOST4) == {ATTACKER4}


def test_a_prefix_ban_covers_every_address_of_the_64(net_lab: NetLab, tmp_path: Path) -> None:
    require_tool("nft", NFT_INSTALL)
    config = write_config(tmp_path)
    done = sipwarden(net_lab.host, config, "bans", "ban", f"{ATTACKER6}/64", "--duration", "60")
    assert done.returncode == 0, done.stderr
    assert members(net_lab.host, "banned6_nets") == {"2a05:d000::/64"}
    assert reached(net_lab, [ATTACKER6, CLIENT6], HOST6) == set()
    assert reached(net_lab, [ATTACKER4], HOST4) == {ATTACKER4}


def test_unban_lifts_at_once_and_a_second_ban_extends(net_lab: NetLab, tmp_path: Path) -> None:
    require_tool("nft", NFT_INSTALL)
    config = write_config(tmp_path)
    for duration in ("10", "1h"):
        made = sipwarden(net_lab.host, config, "bans", "ban", ATTACKER4, "--duration", duration)
        assert made.returncode == 0, made.stderr
    (element,) = elements(net_lab.host, "banned4")
    assert element["timeout"] > 3000  # extended, one element
    lifted = sipwarden(net_lab.host, config, "bans", "unban", ATTACKER4)
    assert lifted.returncode == 0, lifted.stderr
    assert members(net_lab.host, "banned4") == set()
    assert reached(net_lab, [ATTACKER4], HOST4) == {ATTACKER4}


def test_the_ban_table_is_installed_once_however_often_it_starts(
    net_lab: NetLab, tmp_path: Path
) -> None:
    require_tool("nft", NFT_INSTALL)
    config = write_config(tmp_path)
    for source in (ATTACKER4, CLIENT4):
        assert sipwarden(net_lab.host, config, "bans", "ban", source).returncode == 0
    rules = net_lab.host.run(["nft", "-a", "list", "chain", "inet", "sipwarden", "drop_banned"])
    assert rules.stdout.count("drop comment") == 4
    assert "priority raw" in rules.stdout or "priority -300" in rules.stdout
    # The second start synchronised the set from the store: both bans are there.
    assert members(net_lab.host, "banned4") == {ATTACKER4, CLIENT4}


def test_a_ban_flushes_the_conntrack_entries_of_the_source(net_lab: NetLab, tmp_path: Path) -> None:
    require_tool("nft", NFT_INSTALL)
    require_tool("conntrack", "apt-get install conntrack")
    # Connection tracking runs in a namespace only once a rule needs it.
    net_lab.host.run(
        [
            "nft",
            "add table inet track; add chain inet track c { type filter hook input"
            " priority 0; }; add rule inet track c ct state new counter",
        ]
    )
    with net_lab.host.listen_udp(SIP_PORT):
        net_lab.outside.send_udp(HOST4, SIP_PORT, source=ATTACKER4, count=2)
        net_lab.outside.send_udp(HOST4, SIP_PORT, source=CLIENT4, count=2)
    tracked = net_lab.host.run(["conntrack", "-L", "-p", "udp"], check=False).stdout
    assert ATTACKER4 in tracked
    assert CLIENT4 in tracked
    assert sipwarden(net_lab.host, write_config(tmp_path), "bans", "ban", ATTACKER4).returncode == 0
    tracked = net_lab.host.run(["conntrack", "-L", "-p", "udp"], check=False).stdout
    assert f"src={ATTACKER4}" not in tracked
    assert f"src={CLIENT4}" in tracked


def test_without_permission_the_failure_is_clear_and_the_ban_is_kept(
    net_lab: NetLab, tmp_path: Path
) -> None:
    require_tool("nft", NFT_INSTALL)
    require_tool("setpriv", "apt-get install util-linux")
    config = write_config(tmp_path)
    # Root without CAP_NET_ADMIN: what a service account or a container without the
    # capability gets.
    command = [sys.executable, "-m", "sipwarden", "--config", str(config), "bans", "ban", ATTACKER4]
    done = net_lab.host.run(["setpriv", "--bounding-set=-net_admin", *command], check=False)
    assert done.returncode == 2
    assert "root or CAP_NET_ADMIN" in done.stderr
    assert "kept in the store" in done.stderr
    listed = sipwarden(net_lab.host, config, "bans", "list", "--json")
    assert json.loads(listed.stdout.splitlines()[0])["source"] == ATTACKER4
    # Run again with the permission: the kept ban reaches the kernel.
    assert sipwarden(net_lab.host, config, "bans", "ban", CLIENT6).returncode == 0
    assert members(net_lab.host, "banned4") == {ATTACKER4}


def test_the_live_monitor_bans_a_scanner_in_the_kernel(net_lab: NetLab, tmp_path: Path) -> None:
    """svmap from outside; the monitor on the host's public interface detects and bans it."""
    require_tool("nft", NFT_INSTALL)
    svmap = require_tool("svmap", "apt-get install sipvicious")
    monitor = host_monitor(net_lab, tmp_path)
    with net_lab.host.listen_udp(SIP_PORT) as pbx, monitor:
        net_lab.outside.run([svmap, "-p", str(SIP_PORT), HOST4], check=False)
        ban = monitor.wait_for(lambda record: record.kind == "ban", timeout=5.0, what="ban")
        assert ban.record["source"] == ATTACKER4
        deadline = time.monotonic() + 1.0
        while ATTACKER4 not in members(net_lab.host, "banned4") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ATTACKER4 in members(net_lab.host, "banned4"), "not in the kernel within 1 s"
        pbx.sources()  # drain what reached the PBX before the ban
        net_lab.outside.send_udp(HOST4, SIP_PORT, source=ATTACKER4, count=5)
        net_lab.outside.send_udp(HOST4, SIP_PORT, source=CLIENT4, count=5)
        assert pbx.sources() == [CLIENT4] * 5


def test_a_restart_puts_the_stored_bans_back_into_the_kernel(
    net_lab: NetLab, tmp_path: Path
) -> None:
    """A reboot empties the kernel; the next sipwarden start restores every ban in force."""
    require_tool("nft", NFT_INSTALL)
    config = write_config(tmp_path)
    assert (
        sipwarden(net_lab.host, config, "bans", "ban", ATTACKER4, "--duration", "1h").returncode
        == 0
    )
    net_lab.host.run(["nft", "delete", "table", "inet", "sipwarden"])  # the reboot
    assert reached(net_lab, [ATTACKER4], HOST4) == {ATTACKER4}
    monitor = host_monitor(net_lab, tmp_path, store=tmp_path / "store.sqlite3")
    with monitor:
        assert members(net_lab.host, "banned4") == {ATTACKER4}  # restored before capturing
        assert reached(net_lab, [ATTACKER4, CLIENT4], HOST4) == {CLIENT4}
