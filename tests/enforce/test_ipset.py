"""The ipset + iptables/ip6tables backend against the real kernel, inside test namespaces.

The backend runs in the lab's ``host`` namespace (through ``ipset_driver.py``),
attackers and clients send real datagrams from ``outside``, and the tests look
at the result with ``ipset``, ``iptables`` and ``conntrack`` in the namespace.
The first tests need no namespace: they check the scripts the backend writes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from peers.netns import (
    ATTACKER4,
    ATTACKER6,
    BOGON4,
    CLIENT4,
    CLIENT6,
    HOST4,
    HOST6,
    MGMT4,
    Namespace,
    NetLab,
    UdpListener,
)
from sipwarden.enforce import conntrack, ipset
from sipwarden.enforce.ban import Ban
from sipwarden.enforce.ipset import MAX_TIMEOUT, IpsetBackend
from support import PeerError, require_tool

DRIVER = str(Path(__file__).with_name("ipset_driver.py"))
PORT = 5060
EVERYONE = {ATTACKER4, CLIENT4, ATTACKER6, CLIENT6}
CLIENTS = {CLIENT4, CLIENT6}
NET6 = "2a05:d000::/64"  # the /64 of ATTACKER6 (and of CLIENT6: the lab puts both in one)
KERNEL_TOOLS = {
    "ipset": "apt-get install ipset",
    "iptables": "apt-get install iptables",
    "ip6tables": "apt-get install iptables",
    "iptables-restore": "apt-get install iptables",
    "ip6tables-restore": "apt-get install iptables",
    "conntrack": "apt-get install conntrack",
}


# --------------------------------------------------------------------- without a namespace


def _ban(source: str, seconds: float, now: float, *, returnable: bool = True) -> Ban:
    return Ban(
        source=source,
        since=now,
        until=now + seconds,
        rule="test",
        reason="test",
        returnable=returnable,
    )


@pytest.fixture
def scripts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], str | None]]:
    """Every command the backend (and the conntrack flush) would run, instead of running it."""
    ran: list[tuple[list[str], str | None]] = []

    def record(argv: Sequence[str], *, stdin: str | None = None, timeout: float = 10.0) -> str:
        ran.append((list(argv), stdin))
        return ""

    monkeypatch.setattr(ipset, "run_tool", record)
    monkeypatch.setattr(conntrack, "run_tool", record)
    return ran


@pytest.mark.parametrize("prefix", ["", "9lives", "with-dash", "x" * 25])
def test_prefix_must_fit_ipset_and_iptables_names(prefix: str) -> None:
    with pytest.raises(ValueError, match="ipset prefix"):
        IpsetBackend(prefix=prefix)


def test_names_derive_from_the_prefix() -> None:
    backend = IpsetBackend(prefix="edge_1")
    assert backend.sets == {4: "edge_1-v4", 6: "edge_1-v6"}
    assert backend.chain == "EDGE_1"


def test_add_is_one_restore_with_whole_clamped_timeouts(
    scripts: list[tuple[list[str], str | None]],
) -> None:
    now = 1000.0
    bans = [
        _ban("192.0.2.1", 0.2, now),  # less than a second left: still 1 s
        _ban("2001:db8::/64", 59.6, now),
        _ban("198.51.100.0/24", 10.0**9, now),  # beyond ipset's limit
        _ban("192.0.2.9", 30.0, now - 60),  # already expired: not sent
    ]
    IpsetBackend(flush_conntrack=False).add(bans, now)
    assert scripts == [
        (
            ["ipset", "-exist", "restore"],
            "add sipwarden-v4 192.0.2.1 timeout 1\n"
            "add sipwarden-v6 2001:db8::/64 timeout 60\n"
            f"add sipwarden-v4 198.51.100.0/24 timeout {MAX_TIMEOUT}\n",
        )
    ]


def test_conntrack_is_flushed_after_the_add_proven_sources_first(
    scripts: list[tuple[list[str], str | None]],
) -> None:
    now = 1000.0
    bans = [
        _ban("192.0.2.1", 60, now, returnable=False),
        _ban("2001:db8::/64", 60, now),  # a prefix: conntrack -s takes one address
        _ban("2001:db8:1::5", 60, now),
    ]
    IpsetBackend().add(bans, now)
    assert [argv for argv, _ in scripts[1:]] == [
        ["conntrack", "-D", "-f", "ipv6", "-s", "2001:db8:1::5"],
        ["conntrack", "-D", "-f", "ipv4", "-s", "192.0.2.1"],
    ]
    assert scripts[0][0] == ["ipset", "-exist", "restore"]


def test_sync_fills_fresh_sets_and_swaps_them_in(
    scripts: list[tuple[list[str], str | None]],
) -> None:
    IpsetBackend(prefix="pbx", max_elements=2048).sync([_ban("192.0.2.1", 5, 0.0)], 0.0)
    ((argv, script),) = scripts
    assert argv == ["ipset", "-exist", "restore"]
    assert script == (
        "destroy pbx-v4-new\n"
        "create pbx-v4-new hash:net family inet timeout 0 maxelem 2048\n"
        "destroy pbx-v6-new\n"
        "create pbx-v6-new hash:net family inet6 timeout 0 maxelem 2048\n"
        "add pbx-v4-new 192.0.2.1 timeout 5\n"
        "swap pbx-v4-new pbx-v4\ndestroy pbx-v4-new\n"
        "swap pbx-v6-new pbx-v6\ndestroy pbx-v6-new\n"
    )


# --------------------------------------------------------------------- the namespace lab


class Driver:
    """``ipset_driver.py`` running in a namespace: one JSON command, one JSON answer."""

    def __init__(self, namespace: Namespace, wrapper: Sequence[str] = ()) -> None:
        self.proc = namespace.popen(
            [*wrapper, sys.executable, DRIVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def call(self, op: str, **args: object) -> dict[str, object]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            assert self.proc.stderr is not None
            raise PeerError(f"ipset driver died on {op}: {self.proc.stderr.read()[-2000:]}")
        answer: dict[str, object] = json.loads(line)
        return answer

    def ok(self, op: str, **args: object) -> object:
        answer = self.call(op, **args)
        assert answer["ok"], f"{op} failed: {answer['error']}"
        return answer["result"]

    def error(self, op: str, **args: object) -> str:
        answer = self.call(op, **args)
        assert not answer["ok"], f"{op} succeeded where it should fail"
        return str(answer["error"])

    def close(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=5)


@pytest.fixture
def lab(net_lab: NetLab) -> NetLab:
    for tool, install in KERNEL_TOOLS.items():
        require_tool(tool, install)
    return net_lab


@pytest.fixture
def driver(lab: NetLab) -> Iterator[Driver]:
    running = Driver(lab.host)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def listener(lab: NetLab) -> Iterator[UdpListener]:
    with lab.host.listen_udp(PORT) as listening:
        yield listening


def members(lab: NetLab, prefix: str = "sipwarden") -> dict[str, int]:
    """The members of both ban sets, with their remaining timeouts."""
    saved = lab.host.run(["ipset", "save"]).stdout
    wanted = {f"{prefix}-v4", f"{prefix}-v6"}
    found: dict[str, int] = {}
    for line in saved.splitlines():
        words = line.split()
        if words[0] == "add" and words[1] in wanted:
            found[words[2]] = int(words[words.index("timeout") + 1])
    return found


def set_list(lab: NetLab) -> set[str]:
    return set(lab.host.run(["ipset", "list", "-n"]).stdout.split())


def arrivals(lab: NetLab, listener: UdpListener, sources: set[str] = EVERYONE) -> set[str]:
    """Which of ``sources`` reach the host's listener with one datagram each."""
    for source in sorted(sources):
        lab.outside.send_udp(HOST6 if ":" in source else HOST4, PORT, source=source)
    return set(listener.sources(settle=0.2)) & sources


def flows_from(lab: NetLab, source: str, destination: str) -> list[str]:
    """The host's conntrack entries of UDP flows that ``source`` began."""
    listed = lab.host.run(["conntrack", "-L", "-p", "udp"]).stdout
    return [line for line in listed.splitlines() if f"src={source} dst={destination} " in line]


# --------------------------------------------------------------------- install


@pytest.mark.parametrize(("prefix", "chain"), [("sipwarden", "SIPWARDEN"), ("edge_1", "EDGE_1")])
def test_install_creates_sets_and_one_jump_and_twice_changes_nothing(
    lab: NetLab, driver: Driver, prefix: str, chain: str
) -> None:
    # A rule of the administrator's: our jump goes in front of it.
    lab.host.run(["iptables", "-t", "raw", "-A", "PREROUTING", "-p", "tcp", "-j", "ACCEPT"])
    driver.ok("backend", prefix=prefix)
    driver.ok("install")
    driver.ok("add", bans=[[ATTACKER4, 600, True]])
    driver.ok("install")
    # Two installs racing could both insert the jump; the next install mends it.
    lab.host.run(["ip6tables", "-t", "raw", "-I", "PREROUTING", "-j", chain])
    driver.ok("install")

    assert {f"{prefix}-v4", f"{prefix}-v6"} <= set_list(lab)
    assert ATTACKER4 in members(lab, prefix), "a second install must keep the bans"
    for tool, family in (("iptables", "v4"), ("ip6tables", "v6")):
        rules = lab.host.run([tool, "-t", "raw", "-S"]).stdout.splitlines()
        prerouting = [rule for rule in rules if rule.startswith("-A PREROUTING ")]
        assert prerouting[0] == f"-A PREROUTING -j {chain}", tool
        assert prerouting.count(f"-A PREROUTING -j {chain}") == 1, tool
        drops = [rule for rule in rules if rule.startswith(f"-A {chain} ")]
        assert len(drops) == 1, (tool, drops)
        assert f"--match-set {prefix}-{family} src" in drops[0]
        assert drops[0].endswith("-j DROP")


# --------------------------------------------------------------------- real traffic


def test_ban_drops_the_attacker_at_once_and_expires_in_the_kernel(
    lab: NetLab, driver: Driver, listener: UdpListener
) -> None:
    driver.ok("install")
    assert arrivals(lab, listener) == EVERYONE

    answer = driver.call("add", bans=[[ATTACKER4, 2, True], [ATTACKER6, 2, True]])
    banned_at = time.monotonic()
    assert answer["ok"], answer
    assert isinstance(answer["elapsed"], float) and answer["elapsed"] < 1.0
    assert arrivals(lab, listener) == CLIENTS

    attackers = {ATTACKER4, ATTACKER6}
    back: set[str] = set()
    while back != attackers and time.monotonic() - banned_at < 4.0:
        back |= arrivals(lab, listener, attackers)
    returned_after = time.monotonic() - banned_at
    assert back == attackers, "the 2 s ban did not expire in the kernel"
    assert returned_after > 1.0, f"the ban expired early ({returned_after:.2f} s)"


def test_remove_lets_the_source_back_at_once(
    lab: NetLab, driver: Driver, listener: UdpListener
) -> None:
    driver.ok("install")
    driver.ok("add", bans=[[ATTACKER4, 600, True], [ATTACKER6, 600, False]])
    assert arrivals(lab, listener) == CLIENTS
    driver.ok("remove", sources=[ATTACKER4, ATTACKER6, "192.0.2.77"])  # one was never banned
    assert arrivals(lab, listener) == EVERYONE
    assert members(lab) == {}


def test_prefix_ban_covers_every_address_in_it(
    lab: NetLab, driver: Driver, listener: UdpListener
) -> None:
    driver.ok("install")
    driver.ok("add", bans=[[NET6, 600, True], [ATTACKER4, 600, True]])
    assert set(members(lab)) == {NET6, ATTACKER4}
    # hash:net holds a prefix and an address inside it side by side.
    driver.ok("add", bans=[["11.0.0.0/24", 600, True]])
    assert set(members(lab)) == {NET6, ATTACKER4, "11.0.0.0/24"}
    assert arrivals(lab, listener) == set()
    driver.ok("remove", sources=["11.0.0.0/24"])
    assert arrivals(lab, listener) == {CLIENT4}


def test_established_flow_of_the_banned_source_is_flushed(
    lab: NetLab, driver: Driver, listener: UdpListener
) -> None:
    # The administrator's ruleset accepts established flows, as most do; that
    # makes the kernel track them, and the entry would outlive a ban.
    lab.host.run(
        ["iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED", "-j", "ACCEPT"]
    )
    driver.ok("install")
    for source in (ATTACKER4, CLIENT4):
        lab.outside.send_udp(HOST4, PORT, source=source, count=3)
    assert flows_from(lab, ATTACKER4, HOST4), "no conntrack entry to flush"
    assert set(listener.sources(settle=0.1)) == {ATTACKER4, CLIENT4}

    driver.ok("add", bans=[[ATTACKER4, 600, True]])
    assert flows_from(lab, ATTACKER4, HOST4) == []
    assert flows_from(lab, CLIENT4, HOST4), "only the banned source's flows go"
    # Dropped before connection tracking: the attacker's next datagrams make no new entry.
    lab.outside.send_udp(HOST4, PORT, source=ATTACKER4, count=3)
    assert flows_from(lab, ATTACKER4, HOST4) == []
    assert arrivals(lab, listener, {ATTACKER4, CLIENT4}) == {CLIENT4}


# --------------------------------------------------------------------- sync and full sets


def test_sync_makes_the_sets_hold_exactly_the_bans(
    lab: NetLab, driver: Driver, listener: UdpListener
) -> None:
    driver.ok("install")
    driver.ok("add", bans=[[ATTACKER4, 600, True], [CLIENT4, 600, True], [NET6, 600, True]])
    driver.ok(
        "sync", bans=[[ATTACKER6, 300, True], ["10.20.0.0/16", 300, True], [CLIENT4, 300, True]]
    )

    held = members(lab)
    assert set(held) == {ATTACKER6, "10.20.0.0/16", CLIENT4}
    assert all(timeout <= 300 for timeout in held.values()), held
    assert set_list(lab) == {"sipwarden-v4", "sipwarden-v6"}, "no fresh set left behind"
    # The rules follow the swapped-in sets.
    assert arrivals(lab, listener) == {ATTACKER4, CLIENT6}

    driver.ok("sync", bans=[])
    assert members(lab) == {}


def test_sync_after_a_changed_size_replaces_the_sets(lab: NetLab, driver: Driver) -> None:
    driver.ok("backend", max_elements=1024)
    driver.ok("install")
    driver.ok("add", bans=[[ATTACKER4, 600, True]])
    driver.ok("backend", max_elements=4096)
    driver.ok("install")  # the sets exist with maxelem 1024: no error, replaced by the sync
    driver.ok("sync", bans=[[ATTACKER4, 600, True]])
    header = lab.host.run(["ipset", "list", "-t", "sipwarden-v4"]).stdout
    assert "maxelem 4096" in header
    assert "References: 1" in header, "the iptables rule must follow the swap"
    assert set(members(lab)) == {ATTACKER4}


def test_a_full_set_loses_only_the_bans_it_refuses(lab: NetLab, driver: Driver) -> None:
    driver.ok("backend", max_elements=2)
    driver.ok("install")
    driver.ok("add", bans=[[ATTACKER4, 600, True], [CLIENT4, 600, True], [MGMT4, 600, True]])
    assert set(members(lab)) == {ATTACKER4, CLIENT4}
    error = driver.error("add", bans=[[BOGON4, 600, True]])
    assert "ipset refused every ban of the batch" in error
    assert "Hash is full" in error


def test_a_foreign_set_in_the_way_is_reported(lab: NetLab, driver: Driver) -> None:
    lab.host.run(["ipset", "create", "sipwarden-v4", "hash:ip", "timeout", "0"])
    driver.ok("install")  # the rule can use a hash:ip set too
    error = driver.error("sync", bans=[[ATTACKER4, 60, True]])
    assert "cannot be swapped" in error
    assert "`ipset destroy` it" in error


# --------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("tool", "package"), [("ipset", "ipset"), ("ip6tables-restore", "iptables")]
)
def test_a_missing_tool_is_named_with_its_package(driver: Driver, tool: str, package: str) -> None:
    driver.ok("hide", tools=[tool])
    error = driver.error("install")
    assert f"`{tool}` is not installed" in error
    assert f"apt-get install {package}" in error


def test_without_privilege_the_error_says_what_is_needed(lab: NetLab) -> None:
    require_tool("setpriv", "apt-get install util-linux")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    unprivileged = Driver(lab.host, nobody)
    try:
        for op, args in (("install", {}), ("add", {"bans": [[ATTACKER4, 60, True]]})):
            error = unprivileged.error(op, **args)
            assert "root or CAP_NET_ADMIN" in error, error
    finally:
        unprivileged.close()


def test_manager_keeps_banning_through_an_outage_and_reapplies_every_ban(
    lab: NetLab, driver: Driver, listener: UdpListener
) -> None:
    driver.ok("manager", retry_interval=1.0)
    driver.ok("hide", tools=["ipset"])
    now = time.time()
    driver.ok("start", now=now)
    driver.ok("ban", source=ATTACKER4, duration=600, now=now)
    driver.ok("ban", source=NET6, duration=600, now=now)
    driver.ok("ban", source=CLIENT4, duration=600, now=now)
    driver.ok("tick", now=now + 0.1)
    driver.ok("lift", source=CLIENT4)  # lifted while the backend is down
    driver.ok("tick", now=now + 0.2)

    assert driver.ok("banned", address=ATTACKER4, now=now + 0.3) == ATTACKER4
    assert driver.ok("banned", address=ATTACKER6, now=now + 0.3) == NET6
    status = driver.ok("status")
    assert isinstance(status, list)
    ((name, healthy, error),) = status
    assert (name, healthy) == ("ipset", False)
    assert "apt-get install ipset" in error
    assert "sipwarden-v4" not in set_list(lab)

    driver.ok("unhide")
    driver.ok("tick", now=now + 0.5)  # before the retry interval: not yet
    assert "sipwarden-v4" not in set_list(lab)
    driver.ok("tick", now=now + 1.1)
    assert driver.ok("status") == [["ipset", True, ""]]
    assert set(members(lab)) == {ATTACKER4, NET6}
    assert arrivals(lab, listener) == {CLIENT4}
