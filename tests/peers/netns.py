"""Network namespaces for enforcement tests: a protected host and the Internet outside it.

:class:`NetLab` creates two namespaces joined by a veth pair: ``host`` (the
PBX host, where rulesets and ban sets are loaded; its end of the pair is the
public interface ``pub0``) and ``outside`` (attackers, clients and the
management network). Traffic never leaves the two namespaces: the addresses
below are used only on that veth link.

Addresses (the outside end holds several, so one namespace can speak as many sources):

* ``HOST4``/``HOST6`` on the host; ``ATTACKER4``, ``CLIENT4``, ``ATTACKER6``,
  ``CLIENT6`` outside, in "public" space so BCP 38 rules let them through;
* ``MGMT4`` outside, inside ``MGMT_NET4`` (the management/VPN range the tests configure);
* ``BOGON4`` outside, a private (RFC 1918) source that BCP 38 must drop on the public side.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from support import PeerError, require_tool

__all__ = ["Namespace", "NetLab", "UdpListener", "net_lab"]

IP_INSTALL = "apt-get install iproute2"
PROBE = str(Path(__file__).with_name("netprobe.py"))

HOST4, HOST6 = "11.0.0.1", "2a05:d000::1"
ATTACKER4, CLIENT4 = "11.0.0.2", "11.0.0.3"
ATTACKER6, CLIENT6 = "2a05:d000::2", "2a05:d000::3"
MGMT_NET4, MGMT4, MGMT_HOST4 = "11.8.0.0/24", "11.8.0.2", "11.8.0.1"
BOGON4, BOGON_HOST4 = "10.99.0.2", "10.99.0.1"
PUBLIC_IF = "pub0"

_counter = itertools.count()


class Namespace:
    """One network namespace; commands run in it with ``ip netns exec``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def argv(self, command: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *command]

    def run(
        self, command: Sequence[str], *, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.argv(command), input=stdin, capture_output=True, text=True, check=False, timeout=30
        )
        if check and done.returncode != 0:
            raise PeerError(
                f"`{' '.join(command)}` in {self.name} failed ({done.returncode}): "
                f"{done.stderr.strip() or done.stdout.strip()}"
            )
        return done

    def popen(self, command: Sequence[str], **kwargs: object) -> subprocess.Popen[str]:
        return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
            self.argv(command), text=True, start_new_session=True, **kwargs
        )

    def probe(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run([sys.executable, PROBE, *args])

    def send_udp(
        self, address: str, port: int, *, source: str, count: int = 1, interval: float = 0.0
    ) -> None:
        self.probe(
            "send",
            address,
            str(port),
            "--source",
            source,
            "--count",
            str(count),
            "--interval",
            str(interval),
        )

    def tcp_open(self, address: str, port: int, *, source: str, timeout: float = 1.0) -> bool:
        result = self.probe(
            "connect", address, str(port), "--source", source, "--timeout", str(timeout)
        )
        return result.stdout.strip() == "open"

    def listen_udp(self, port: int) -> UdpListener:
        return UdpListener(self, "udp", port)

    def listen_tcp(self, port: int) -> UdpListener:
        return UdpListener(self, "tcp", port)


class UdpListener:
    """A probe listening in a namespace; :meth:`sources` drains who reached it so far."""

    def __init__(self, namespace: Namespace, proto: str, port: int) -> None:
        self.proc = namespace.popen(
            [sys.executable, PROBE, "listen", proto, str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        threading.Thread(target=self._read, args=(stdout,), daemon=True).start()
        try:
            ready = self._lines.get(timeout=10)
        except queue.Empty:
            ready = ""
        if ready != "ready":
            self.close()
            raise PeerError(f"probe listener on {proto}/{port} did not start: {ready!r}")

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self._lines.put(line.strip())

    def sources(self, settle: float = 0.3) -> list[str]:
        """Sources of everything received so far, after ``settle`` seconds of quiet."""
        time.sleep(settle)
        seen: list[str] = []
        with contextlib.suppress(queue.Empty):
            while True:
                seen.append(self._lines.get_nowait())
        return seen

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> UdpListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NetLab:
    """The two namespaces and their link; removed again by :meth:`close`."""

    def __init__(self) -> None:
        require_tool("ip", IP_INSTALL)
        if os.geteuid() != 0:
            pytest.fail("network namespace tests need root (CI runs as root): run them with sudo")
        tag = f"{os.getpid() % 100000}{next(_counter)}"
        self.host = Namespace(f"swt{tag}h")
        self.outside = Namespace(f"swt{tag}o")
        self._created: list[str] = []
        try:
            self._build(tag)
        except BaseException:
            self.close()
            raise

    def _ip(self, *args: str) -> None:
        done = subprocess.run(
            ["ip", *args], capture_output=True, text=True, check=False, timeout=30
        )
        if done.returncode != 0:
            raise PeerError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")

    def _build(self, tag: str) -> None:
        for namespace in (self.host, self.outside):
            self._ip("netns", "add", namespace.name)
            self._created.append(namespace.name)
        outer = f"swt{tag}x"
        self._ip(
            "link",
            "add",
            PUBLIC_IF,
            "netns",
            self.host.name,
            "type",
            "veth",
            "peer",
            "name",
            outer,
            "netns",
            self.outside.name,
        )
        host_cmds = [
            ["ip", "link", "set", "lo", "up"],
            ["ip", "link", "set", PUBLIC_IF, "up"],
            ["ip", "addr", "add", f"{HOST4}/24", "dev", PUBLIC_IF],
            ["ip", "addr", "add", f"{MGMT_HOST4}/24", "dev", PUBLIC_IF],
            ["ip", "addr", "add", f"{BOGON_HOST4}/24", "dev", PUBLIC_IF],
            ["ip", "addr", "add", f"{HOST6}/64", "dev", PUBLIC_IF, "nodad"],
            [
                "sysctl",
                "-qw",
                "net.ipv4.conf.all.rp_filter=0",
                f"net.ipv4.conf.{PUBLIC_IF}.rp_filter=0",
            ],
        ]
        outside_cmds = [
            ["ip", "link", "set", "lo", "up"],
            ["ip", "link", "set", outer, "up"],
            *(
                ["ip", "addr", "add", f"{a}/24", "dev", outer]
                for a in (ATTACKER4, CLIENT4, MGMT4, BOGON4)
            ),
            *(
                ["ip", "addr", "add", f"{a}/64", "dev", outer, "nodad"]
                for a in (ATTACKER6, CLIENT6)
            ),
        ]
        for command in host_cmds:
            self.host.run(command)
        for command in outside_cmds:
            self.outside.run(command)
        self._pin_neighbours(outer)

    def _pin_neighbours(self, outer: str) -> None:
        """Permanent IPv6 neighbour entries on both ends.

        Neighbour discovery travels as ICMPv6 from one of the link's addresses:
        when a test bans that address, the solicitations die with it and every
        other IPv6 source of the namespace goes dark too. On the Internet an
        attacker is never on-link, so the tests take discovery out of the picture.
        """
        host_mac = self._mac(self.host, PUBLIC_IF)
        outer_mac = self._mac(self.outside, outer)
        self.outside.run(
            [
                "ip",
                "-6",
                "neigh",
                "replace",
                HOST6,
                "lladdr",
                host_mac,
                "dev",
                outer,
                "nud",
                "permanent",
            ]
        )
        for address in (ATTACKER6, CLIENT6):
            self.host.run(
                [
                    "ip",
                    "-6",
                    "neigh",
                    "replace",
                    address,
                    "lladdr",
                    outer_mac,
                    "dev",
                    PUBLIC_IF,
                    "nud",
                    "permanent",
                ]
            )

    @staticmethod
    def _mac(namespace: Namespace, device: str) -> str:
        return namespace.run(["cat", f"/sys/class/net/{device}/address"]).stdout.strip()

    def close(self) -> None:
        for name in reversed(self._created):
            subprocess.run(
                ["ip", "netns", "del", name], capture_output=True, check=False, timeout=30
            )
        self._created.clear()


@pytest.fixture
def net_lab() -> Iterator[NetLab]:
    lab = NetLab()
    try:
        yield lab
    finally:
        lab.close()
