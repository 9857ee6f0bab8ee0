"""Bogon source ranges for BCP 38 (RFC 2827) / BCP 84 (RFC 3704) ingress filtering.

A packet arriving on the Internet-facing interface with one of these source
addresses cannot be genuine: the range is private, loopback, link-local,
reserved for documentation or benchmarking, multicast, or otherwise never
routed on the public Internet. Such packets are spoofed (a reflection or
flood aimed at us, with a source chosen to slip past allowlists) or leaked
from a misconfigured network, and both get dropped.

The lists are deliberately conservative: only ranges that the IETF has made
non-routable for good, never "not yet allocated" space (which changes and
would need updating, like Team Cymru's full-bogon feed). Ranges that do carry
real traffic are left out on purpose and say why below. No two entries
overlap, so both lists load as nftables interval sets as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["BOGONS4", "BOGONS6", "LINK_LOCAL6", "Bogon"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Bogon:
    """One bogon source range and the RFC that takes it off the public Internet."""

    network: str
    rfc: str
    why: str

    @property
    def comment(self) -> str:
        """The ruleset comment for this range, e.g. ``RFC 1918: private``."""
        return f"{self.rfc}: {self.why}"


BOGONS4: Final[tuple[Bogon, ...]] = (
    # "This network": only a source while a host learns its address (DHCP), never routed.
    Bogon(network="0.0.0.0/8", rfc="RFC 1122", why="this network"),
    Bogon(network="10.0.0.0/8", rfc="RFC 1918", why="private"),
    # Carrier-grade NAT space: customers' packets are translated before they leave the ISP.
    Bogon(network="100.64.0.0/10", rfc="RFC 6598", why="shared address space (CGN)"),
    Bogon(network="127.0.0.0/8", rfc="RFC 1122", why="loopback"),
    Bogon(network="169.254.0.0/16", rfc="RFC 3927", why="link-local"),
    Bogon(network="172.16.0.0/12", rfc="RFC 1918", why="private"),
    Bogon(network="192.0.0.0/24", rfc="RFC 6890", why="IETF protocol assignments"),
    Bogon(network="192.0.2.0/24", rfc="RFC 5737", why="documentation (TEST-NET-1)"),
    Bogon(network="192.168.0.0/16", rfc="RFC 1918", why="private"),
    Bogon(network="198.18.0.0/15", rfc="RFC 2544", why="benchmarking"),
    Bogon(network="198.51.100.0/24", rfc="RFC 5737", why="documentation (TEST-NET-2)"),
    Bogon(network="203.0.113.0/24", rfc="RFC 5737", why="documentation (TEST-NET-3)"),
    # A multicast group is a destination, never a source.
    Bogon(network="224.0.0.0/4", rfc="RFC 5771", why="multicast"),
    # Class E, reserved for future use; holds the limited broadcast 255.255.255.255 (RFC 919).
    Bogon(network="240.0.0.0/4", rfc="RFC 1112", why="reserved (class E) and broadcast"),
)
"""IPv4 bogon sources. 192.88.99.0/24 (deprecated 6to4 relays, RFC 7526) is left out:
its packets are protocol 41 tunnels that no SIP rule concerns."""

LINK_LOCAL6: Final = "fe80::/10"
"""IPv6 link-local: a bogon from the Internet, but neighbour discovery and MLD need it
on the link itself (the rulesets let those through before the bogon drop)."""

BOGONS6: Final[tuple[Bogon, ...]] = (
    # The unspecified address; duplicate address detection (DAD) sends from it,
    # which the rulesets allow for neighbour solicitations and MLD reports only.
    Bogon(network="::/128", rfc="RFC 4291 2.5.2", why="unspecified"),
    Bogon(network="::1/128", rfc="RFC 4291 2.5.3", why="loopback"),
    # IPv4-mapped addresses exist inside a dual-stack socket API, never on the wire.
    Bogon(network="::ffff:0:0/96", rfc="RFC 4291 2.5.5.2", why="IPv4-mapped"),
    Bogon(network="100::/64", rfc="RFC 6666", why="discard-only"),
    Bogon(network="2001:2::/48", rfc="RFC 5180", why="benchmarking"),
    Bogon(network="2001:10::/28", rfc="RFC 4843", why="ORCHID (deprecated), not routable"),
    Bogon(network="2001:20::/28", rfc="RFC 7343", why="ORCHIDv2, not routable"),
    Bogon(network="2001:db8::/32", rfc="RFC 3849", why="documentation"),
    Bogon(network="3fff::/20", rfc="RFC 9637", why="documentation"),
    Bogon(network="fc00::/7", rfc="RFC 4193", why="unique local (private)"),
    Bogon(network=LINK_LOCAL6, rfc="RFC 4291 2.5.6", why="link-local"),
    Bogon(network="fec0::/10", rfc="RFC 3879", why="site-local (deprecated)"),
    Bogon(network="ff00::/8", rfc="RFC 4291 2.7", why="multicast"),
)
"""IPv6 bogon sources. Left out on purpose: 64:ff9b::/96 (NAT64, RFC 6052: an IPv6-only
host talking to IPv4 trunks receives from it), 2002::/16 (6to4) and 2001::/32 (Teredo),
which still carry real traffic."""
