"""Decode captured frames: link layer → IPv4/IPv6 → UDP/TCP.

:func:`decode` is stateless: it turns one frame into a :class:`Segment` or
returns ``None`` for anything that is not UDP or TCP over IP (ARP, ICMP,
ESP, …), for malformed or snap-length-truncated frames, and for IP fragments.
:class:`PacketDecoder` adds IP fragment reassembly (a bounded
:class:`Defragmenter`) and counts why frames were not decoded. Neither ever
raises on any input bytes.

Link types (LINKTYPE_* values as written in pcap/pcapng files):

=========  =====================================================================
0, 108     BSD loopback (NULL) and OpenBSD LOOP: a 4-byte address family in host
           or network byte order; AF_INET is 2, AF_INET6 is 24 (NetBSD, OpenBSD),
           28 (FreeBSD), 30 (Darwin), also 10 (Linux) and 23 (Windows)
1          Ethernet, with any number (up to :data:`MAX_VLAN_TAGS`) of 802.1Q,
           802.1ad (QinQ) and the pre-standard 0x9100/0x9200 VLAN tags
12, 14     raw IP as some systems write DLT_RAW (the IP version nibble decides)
101        raw IP (LINKTYPE_RAW)
113, 276   Linux cooked capture SLL and SLL2 (``tcpdump -i any``)
228, 229   raw IPv4, raw IPv6
=========  =====================================================================

Deliberate choices:

* ``Segment.payload`` is ``bytes``, not a memoryview: the SIP parser wants
  ``bytes`` methods (``find``, ``split``), a slice of a SIP-sized payload
  costs tens of nanoseconds, and a memoryview would pin the whole frame.
* IPv4 total length and the UDP length trim Ethernet padding. A zero IPv4
  total length, IPv6 payload length or UDP length (segmentation offload on
  the capturing host, RFC 2675 jumbograms) means "up to the end of the frame".
* Checksums are not verified: captures taken on the sending host (loopback
  included) carry checksums the NIC was to fill in.
* Addresses are ``str``: dotted quad for IPv4, the compressed RFC 5952 form
  (``inet_ntop``) for IPv6.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable
from socket import AF_INET6, inet_ntoa, inet_ntop
from typing import Final, Literal, NamedTuple

__all__ = [
    "ADDRESS_CACHE_SIZE",
    "DEFAULT_FRAGMENT_TIMEOUT_NS",
    "DEFAULT_MAX_DATAGRAMS",
    "DEFAULT_MAX_DATAGRAM_BYTES",
    "DEFAULT_MAX_FRAGMENTS",
    "DEFAULT_MAX_TOTAL_BYTES",
    "MAX_EXTENSION_HEADERS",
    "MAX_VLAN_TAGS",
    "REASON_FRAGMENT",
    "REASON_MALFORMED",
    "REASON_NOT_IP",
    "REASON_NOT_UDP_TCP",
    "REASON_TRUNCATED",
    "REASON_UNSUPPORTED_LINKTYPE",
    "TCP_ACK",
    "TCP_FIN",
    "TCP_PSH",
    "TCP_RST",
    "TCP_SYN",
    "TCP_URG",
    "Defragmenter",
    "PacketDecoder",
    "Segment",
    "decode",
]

# TCP flag bits of Segment.flags (RFC 9293 section 3.1).
TCP_FIN: Final = 0x01
TCP_SYN: Final = 0x02
TCP_RST: Final = 0x04
TCP_PSH: Final = 0x08
TCP_ACK: Final = 0x10
TCP_URG: Final = 0x20

#: Most VLAN tags followed in one frame (QinQ needs two; more is an attack or junk).
MAX_VLAN_TAGS: Final = 8
#: Most IPv6 extension headers walked in one packet (RFC 8200 section 4.1 lists 6 kinds).
MAX_EXTENSION_HEADERS: Final = 16

#: Datagrams being reassembled at once; the oldest is dropped to make room.
DEFAULT_MAX_DATAGRAMS: Final = 1024
#: Largest reassembled IP payload (the IPv4 total length / IPv6 payload length field).
DEFAULT_MAX_DATAGRAM_BYTES: Final = 65535
#: Most fragments of one datagram (FreeBSD's maxfragsperpacket is 16; SIP needs 2 or 3).
DEFAULT_MAX_FRAGMENTS: Final = 64
#: Bytes held over all pending datagrams (Linux's ipfrag_high_thresh is 4 MiB).
DEFAULT_MAX_TOTAL_BYTES: Final = 8 * 1024 * 1024
#: A datagram not complete this long after its first fragment is dropped (Linux: 30 s).
DEFAULT_FRAGMENT_TIMEOUT_NS: Final = 30 * 1_000_000_000

# Why a frame did not decode (PacketDecoder.reasons keys).
REASON_TRUNCATED: Final = "truncated"  # shorter than a header or length field says
REASON_MALFORMED: Final = "malformed"  # a header field that cannot be right
REASON_NOT_IP: Final = "not-ip"  # ARP, LLDP, IPX, unknown address family, …
REASON_NOT_UDP_TCP: Final = "not-udp-tcp"  # ICMP, ESP, SCTP, no next header, …
REASON_UNSUPPORTED_LINKTYPE: Final = "unsupported-linktype"
REASON_FRAGMENT: Final = "fragment"  # an IP fragment: held for reassembly or dropped

_ETH_IPV4: Final = 0x0800
_ETH_IPV6: Final = 0x86DD
# 802.1Q, 802.1ad (QinQ) and the pre-standard QinQ tag protocol identifiers.
_VLAN_TPIDS: Final = frozenset((0x8100, 0x88A8, 0x9100, 0x9200))
_AF_INET: Final = 2
_AF_INET6_VALUES: Final = frozenset((10, 23, 24, 28, 30))

_PROTO_TCP: Final = 6
_PROTO_UDP: Final = 17
# IPv6 extension headers that carry (next header, length in 8-octet units
# after the first 8) in their first two bytes (RFC 8200 section 4.3-4.6).
_IPV6_HOP_BY_HOP: Final = 0
_IPV6_ROUTING: Final = 43
_IPV6_DEST_OPTS: Final = 60
_IPV6_FRAGMENT: Final = 44
_IPV6_AH: Final = 51  # RFC 4302: its length is in 4-octet units minus 2

# version/IHL, total length, identification, flags/fragment offset, protocol, source, destination
_unpack_ipv4: Final = struct.Struct("!BxHHHxB2x4s4s").unpack_from
# version/class, payload length, next header, source, destination
_unpack_ipv6: Final = struct.Struct("!B3xHBx16s16s").unpack_from
_unpack_udp: Final = struct.Struct("!HHH").unpack_from
# ports, sequence number, (acknowledgement skipped), data offset, flags
_unpack_tcp: Final = struct.Struct("!HHI4xBB").unpack_from
_unpack_u32_le: Final = struct.Struct("<I").unpack_from
_unpack_u32_be: Final = struct.Struct(">I").unpack_from


#: Entries of each address-text cache; a full cache is cleared, so a flood of
#: spoofed sources costs a fixed amount of memory.
ADDRESS_CACHE_SIZE: Final = 8192

# Formatting an address is the biggest single cost of a decode (inet_ntoa
# ~185 ns, a dict hit ~40 ns), and a capture holds few distinct addresses.
_v4_names: Final[dict[bytes, str]] = {}
_v6_names: Final[dict[bytes, str]] = {}


def _v4_name(packed: bytes) -> str:
    if len(_v4_names) >= ADDRESS_CACHE_SIZE:
        _v4_names.clear()
    name = _v4_names[packed] = inet_ntoa(packed)
    return name


def _v6_name(packed: bytes) -> str:
    if len(_v6_names) >= ADDRESS_CACHE_SIZE:
        _v6_names.clear()
    name = _v6_names[packed] = inet_ntop(AF_INET6, packed)
    return name


class Segment(NamedTuple):
    """A UDP datagram or TCP segment with its IP addresses (a hot-path record).

    ``payload`` is ``bytes`` (the transport payload, padding trimmed). For TCP
    ``seq`` is the sequence number and ``flags`` the flag byte (``TCP_SYN`` …),
    enough to reassemble streams; both are 0 for UDP.
    """

    src: str
    dst: str
    sport: int
    dport: int
    proto: Literal["udp", "tcp"]
    payload: bytes
    seq: int = 0
    flags: int = 0


# tuple.__new__ skips the NamedTuple's Python-level __new__ (half the cost).
_new_tuple: Final = tuple.__new__


class _Datagram:
    """One datagram being reassembled."""

    __slots__ = ("buf", "first_ts", "fragments", "intervals", "proto", "total")

    def __init__(self, first_ts: int) -> None:
        self.first_ts = first_ts
        self.buf = bytearray()
        # Covered byte ranges [start, end), sorted, disjoint and not adjacent.
        self.intervals: list[tuple[int, int]] = []
        self.fragments = 0
        self.proto = -1  # known once the offset-0 fragment arrived
        self.total = -1  # known once the last fragment (MF clear) arrived


class Defragmenter:
    """Bounded IPv4/IPv6 fragment reassembly; time comes from the packets.

    Fragments are keyed by what the RFCs say identifies a datagram (RFC 791:
    source, destination, protocol, identification; RFC 8200 section 4.5:
    source, destination, identification). Every bound is a parameter:
    pending datagrams (the oldest is dropped to make room), bytes per datagram,
    fragments per datagram, bytes over all datagrams, and a timeout measured
    against the ``ts_ns`` of the fragments fed in (no clock is read, so a
    capture replays at full speed and tests are deterministic).

    Overlaps (RFC 5722, teardrop): a fragment that repeats bytes already held
    is accepted only if the repeated bytes are identical (an exact duplicate is
    ignored); a conflicting overlap drops the whole datagram, because the
    receiving host's choice of bytes cannot be known. ``stats`` counts
    completions and every kind of drop.
    """

    __slots__ = (
        "_bytes",
        "_table",
        "max_datagram_bytes",
        "max_datagrams",
        "max_fragments",
        "max_total_bytes",
        "stats",
        "timeout_ns",
    )

    def __init__(
        self,
        *,
        max_datagrams: int = DEFAULT_MAX_DATAGRAMS,
        max_datagram_bytes: int = DEFAULT_MAX_DATAGRAM_BYTES,
        max_fragments: int = DEFAULT_MAX_FRAGMENTS,
        max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
        timeout_ns: int = DEFAULT_FRAGMENT_TIMEOUT_NS,
    ) -> None:
        if min(max_datagrams, max_datagram_bytes, max_fragments, timeout_ns) < 1:
            raise ValueError("defragmenter limits must be positive")
        if max_total_bytes < max_datagram_bytes:
            raise ValueError("max_total_bytes must be at least max_datagram_bytes")
        self.max_datagrams = max_datagrams
        self.max_datagram_bytes = max_datagram_bytes
        self.max_fragments = max_fragments
        self.max_total_bytes = max_total_bytes
        self.timeout_ns = timeout_ns
        self._table: dict[Hashable, _Datagram] = {}  # insertion order = age
        self._bytes = 0
        #: Counters: completed, duplicate, overlap, oversize, too_many_fragments,
        #: bad_length, timed_out, evicted.
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "completed",
                "duplicate",
                "overlap",
                "oversize",
                "too_many_fragments",
                "bad_length",
                "timed_out",
                "evicted",
            ),
            0,
        )

    def __len__(self) -> int:
        """Number of datagrams being reassembled."""
        return len(self._table)

    @property
    def pending_bytes(self) -> int:
        """Bytes held for the datagrams being reassembled."""
        return self._bytes

    def expire(self, now_ns: int) -> int:
        """Drop datagrams whose first fragment is older than the timeout; return how many.

        Datagrams are checked oldest first and the scan stops at the first one
        still in time, so the cost is proportional to what expires.
        """
        table = self._table
        dropped = 0
        limit = now_ns - self.timeout_ns
        while table:
            key = next(iter(table))
            if table[key].first_ts >= limit:
                break
            self._drop(key)
            dropped += 1
        self.stats["timed_out"] += dropped
        return dropped

    def _drop(self, key: Hashable) -> None:
        self._bytes -= len(self._table.pop(key).buf)

    def add(
        self, key: Hashable, offset: int, data: bytes, *, more: bool, proto: int, ts_ns: int
    ) -> tuple[int, bytes] | None:
        """Feed one fragment; return ``(protocol, payload)`` when its datagram is complete.

        ``offset`` is the fragment offset in bytes, ``more`` the More Fragments
        flag, ``data`` the fragment's payload, ``proto`` the upper-layer
        protocol it announces (only the offset-0 fragment's counts, RFC 8200
        section 4.5) and ``ts_ns`` its capture time.
        """
        if self._table:
            self.expire(ts_ns)
        size = len(data)
        end = offset + size
        if end > self.max_datagram_bytes:
            # Ping of death: the datagram would exceed the largest IP payload.
            self.stats["oversize"] += 1
            if key in self._table:
                self._drop(key)
            return None
        if more and (size == 0 or size & 7):
            # Every fragment but the last carries a multiple of 8 bytes (RFC 791, RFC 8200).
            self.stats["bad_length"] += 1
            return None
        dgram = self._table.get(key)
        if dgram is not None and ts_ns - dgram.first_ts > self.timeout_ns:
            # Timed out, though not the oldest (capture timestamps can go back).
            self._drop(key)
            self.stats["timed_out"] += 1
            dgram = None
        if dgram is None:
            if len(self._table) >= self.max_datagrams:
                self._drop(next(iter(self._table)))
                self.stats["evicted"] += 1
            dgram = self._table[key] = _Datagram(ts_ns)
        buf = dgram.buf
        # The last fragment fixes the length; nothing may lie beyond it.
        if (not more and ((dgram.total >= 0 and dgram.total != end) or len(buf) > end)) or (
            dgram.total >= 0 and end > dgram.total
        ):
            self.stats["overlap"] += 1
            self._drop(key)
            return None
        # Overlap check against the bytes already held.
        covered = 0
        for start, stop in dgram.intervals:
            if start >= end:
                break
            if stop > offset:
                lo = max(start, offset)
                hi = min(stop, end)
                if buf[lo:hi] != data[lo - offset : hi - offset]:
                    self.stats["overlap"] += 1
                    self._drop(key)
                    return None
                covered += hi - lo
        if covered == size and size:
            self.stats["duplicate"] += 1
            return None
        if dgram.fragments >= self.max_fragments:
            self.stats["too_many_fragments"] += 1
            self._drop(key)
            return None
        dgram.fragments += 1
        grow = end - len(buf)
        if grow > 0:
            if self._bytes + grow > self.max_total_bytes:
                self._make_room(key, grow)
            buf.extend(bytes(grow))
            self._bytes += grow
        if size:
            buf[offset:end] = data
            dgram.intervals = _merge(dgram.intervals, offset, end)
        if offset == 0:
            dgram.proto = proto
        if not more:
            dgram.total = end
        if dgram.total >= 0 and dgram.intervals == [(0, dgram.total)]:
            self._drop(key)
            self.stats["completed"] += 1
            return dgram.proto, bytes(buf)
        return None

    def _make_room(self, keep: Hashable, need: int) -> None:
        """Drop the oldest datagrams but ``keep`` until ``need`` more bytes fit."""
        excess = self._bytes + need - self.max_total_bytes
        victims = []
        for key, dgram in self._table.items():
            if excess <= 0:
                break
            if key != keep:
                victims.append(key)
                excess -= len(dgram.buf)
        for key in victims:
            self._drop(key)
        self.stats["evicted"] += len(victims)


def _merge(intervals: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """Insert [start, end) into sorted disjoint intervals, merging touching ones."""
    merged: list[tuple[int, int]] = []
    placed = False
    for lo, hi in intervals:
        if hi < start:
            merged.append((lo, hi))
        elif lo > end:
            if not placed:
                merged.append((start, end))
                placed = True
            merged.append((lo, hi))
        else:
            start = min(start, lo)
            end = max(end, hi)
    if not placed:
        merged.append((start, end))
    return merged


def _transport(  # noqa: PLR0917 - positional on the hot path
    proto: int, data: bytes, off: int, end: int, src: str, dst: str
) -> Segment | str:
    """The UDP or TCP header at ``data[off:end]``."""
    avail = end - off
    if proto == _PROTO_UDP:
        if avail < 8:
            return REASON_TRUNCATED
        sport, dport, ulen = _unpack_udp(data, off)
        if ulen == 0:
            ulen = avail  # RFC 2675 jumbogram, or UDP segmentation offload
        elif ulen < 8:
            return REASON_MALFORMED
        elif ulen > avail:
            return REASON_TRUNCATED
        return _new_tuple(
            Segment, (src, dst, sport, dport, "udp", data[off + 8 : off + ulen], 0, 0)
        )
    if proto == _PROTO_TCP:
        if avail < 20:
            return REASON_TRUNCATED
        sport, dport, seq, data_offset, flags = _unpack_tcp(data, off)
        hlen = (data_offset >> 4) << 2
        if hlen < 20:
            return REASON_MALFORMED
        if hlen > avail:
            return REASON_TRUNCATED
        return _new_tuple(
            Segment, (src, dst, sport, dport, "tcp", data[off + hlen : end], seq, flags)
        )
    return REASON_NOT_UDP_TCP


def _ipv4(data: bytes, off: int, defrag: Defragmenter | None, ts_ns: int) -> Segment | str:
    """The IPv4 packet at ``data[off:]`` (RFC 791)."""
    avail = len(data) - off
    if avail < 20:
        return REASON_TRUNCATED
    vihl, total, ident, frag, proto, src, dst = _unpack_ipv4(data, off)
    ihl = (vihl & 0x0F) << 2
    if vihl >> 4 != 4 or ihl < 20:
        return REASON_MALFORMED
    if total == 0:
        total = avail  # segmentation offload on the capturing host
    elif total > avail:
        return REASON_TRUNCATED
    if total < ihl:
        return REASON_MALFORMED
    end = off + total  # drops Ethernet padding
    if frag & 0x3FFF:  # More Fragments set or a non-zero fragment offset
        if defrag is None:
            return REASON_FRAGMENT
        done = defrag.add(
            (4, src, dst, proto, ident),
            (frag & 0x1FFF) << 3,
            data[off + ihl : end],
            more=bool(frag & 0x2000),
            proto=proto,
            ts_ns=ts_ns,
        )
        if done is None:
            return REASON_FRAGMENT
        data = done[1]
        off = ihl = 0
        end = len(data)
    src_name = _v4_names.get(src) or _v4_name(src)
    dst_name = _v4_names.get(dst) or _v4_name(dst)
    return _transport(proto, data, off + ihl, end, src_name, dst_name)


def _ipv6(data: bytes, off: int, defrag: Defragmenter | None, ts_ns: int) -> Segment | str:
    """The IPv6 packet at ``data[off:]`` (RFC 8200), extension headers walked."""
    size = len(data)
    if size - off < 40:
        return REASON_TRUNCATED
    version, plen, nh, src, dst = _unpack_ipv6(data, off)
    if version >> 4 != 6:
        return REASON_MALFORMED
    off += 40
    if plen == 0:
        end = size  # RFC 2675 jumbo payload, or segmentation offload
    else:
        end = off + plen
        if end > size:
            return REASON_TRUNCATED
    reassembled = False
    for _ in range(MAX_EXTENSION_HEADERS):
        if nh in (_PROTO_UDP, _PROTO_TCP):
            src_name = _v6_names.get(src) or _v6_name(src)
            dst_name = _v6_names.get(dst) or _v6_name(dst)
            return _transport(nh, data, off, end, src_name, dst_name)
        if nh in (_IPV6_HOP_BY_HOP, _IPV6_ROUTING, _IPV6_DEST_OPTS, _IPV6_AH):
            if end - off < 8:
                return REASON_TRUNCATED
            hlen = ((data[off + 1] + 2) << 2) if nh == _IPV6_AH else ((data[off + 1] + 1) << 3)
            nh = data[off]
            off += hlen
            if off > end:
                return REASON_TRUNCATED
        elif nh == _IPV6_FRAGMENT:
            if end - off < 8:
                return REASON_TRUNCATED
            frag_nh = data[off]
            frag = data[off + 2] << 8 | data[off + 3]
            ident = data[off + 4 : off + 8]
            off += 8
            if not frag & 0xFFF9:
                # An atomic fragment (offset 0, M clear) is processed as a
                # whole packet, outside any reassembly (RFC 6946 section 4).
                nh = frag_nh
                continue
            if reassembled:
                return REASON_MALFORMED  # a Fragment header inside a reassembled payload
            if defrag is None:
                return REASON_FRAGMENT
            done = defrag.add(
                (6, src, dst, ident),
                frag & 0xFFF8,
                data[off:end],
                more=bool(frag & 1),
                proto=frag_nh,
                ts_ns=ts_ns,
            )
            if done is None:
                return REASON_FRAGMENT
            # Headers after the Fragment header belong to the fragmentable
            # part: keep walking them in the reassembled payload.
            nh, data = done
            off = 0
            end = len(data)
            reassembled = True
        else:
            return REASON_NOT_UDP_TCP  # ICMPv6, ESP, no next header (59), …
    return REASON_MALFORMED


def _decode(linktype: int, data: bytes, defrag: Defragmenter | None, ts_ns: int) -> Segment | str:
    """Decode one frame; a ``str`` return names why it is not a Segment."""
    if linktype == 1:  # Ethernet
        if len(data) < 14:
            return REASON_TRUNCATED
        ethertype = data[12] << 8 | data[13]
        off = 14
    elif linktype == 113:  # Linux SLL: protocol type at bytes 14-15 of a 16-byte header
        if len(data) < 16:
            return REASON_TRUNCATED
        ethertype = data[14] << 8 | data[15]
        off = 16
    elif linktype == 276:  # Linux SLL2: protocol type at bytes 0-1 of a 20-byte header
        if len(data) < 20:
            return REASON_TRUNCATED
        ethertype = data[0] << 8 | data[1]
        off = 20
    elif linktype in (0, 108):  # BSD NULL / OpenBSD LOOP
        if len(data) < 4:
            return REASON_TRUNCATED
        family = _unpack_u32_le(data, 0)[0]
        if family > 0xFFFF:  # written in the other byte order
            family = _unpack_u32_be(data, 0)[0]
        if family == _AF_INET:
            return _ipv4(data, 4, defrag, ts_ns)
        if family in _AF_INET6_VALUES:
            return _ipv6(data, 4, defrag, ts_ns)
        return REASON_NOT_IP
    elif linktype in (101, 12, 14):  # raw IP: the version nibble decides
        if not data:
            return REASON_TRUNCATED
        version = data[0] >> 4
        if version == 4:
            return _ipv4(data, 0, defrag, ts_ns)
        if version == 6:
            return _ipv6(data, 0, defrag, ts_ns)
        return REASON_NOT_IP
    elif linktype == 228:
        return _ipv4(data, 0, defrag, ts_ns)
    elif linktype == 229:
        return _ipv6(data, 0, defrag, ts_ns)
    else:
        return REASON_UNSUPPORTED_LINKTYPE
    tags = 0
    while ethertype in _VLAN_TPIDS:
        if tags == MAX_VLAN_TAGS:
            return REASON_MALFORMED
        if len(data) < off + 4:
            return REASON_TRUNCATED
        ethertype = data[off + 2] << 8 | data[off + 3]
        off += 4
        tags += 1
    if ethertype == _ETH_IPV4:
        return _ipv4(data, off, defrag, ts_ns)
    if ethertype == _ETH_IPV6:
        return _ipv6(data, off, defrag, ts_ns)
    return REASON_NOT_IP


def decode(linktype: int, data: bytes) -> Segment | None:
    """Decode one captured frame to a UDP/TCP :class:`Segment`, statelessly.

    Returns ``None`` for anything else: frames that are not UDP or TCP over
    IP, malformed or truncated frames, unsupported link types and IP
    fragments (use :class:`PacketDecoder` to reassemble those). Never raises.
    """
    result = _decode(linktype, data, None, 0)
    return None if isinstance(result, str) else result


class PacketDecoder:
    """Decode frames with IP fragment reassembly, counting why frames were dropped.

    ``decode(linktype, data, ts_ns)`` returns a :class:`Segment` for every
    unfragmented UDP/TCP packet and for the fragment that completes a
    datagram; ``None`` otherwise, with the reason counted in ``reasons``
    (keys are the ``REASON_*`` constants). ``ts_ns`` is the capture time and
    drives the reassembly timeout. Never raises on any bytes.
    """

    __slots__ = ("defragmenter", "reasons")

    def __init__(self, defragmenter: Defragmenter | None = None) -> None:
        self.defragmenter = defragmenter if defragmenter is not None else Defragmenter()
        self.reasons: dict[str, int] = {}

    def decode(self, linktype: int, data: bytes, ts_ns: int) -> Segment | None:
        """Decode one frame captured at ``ts_ns``; see the class docstring."""
        result = _decode(linktype, data, self.defragmenter, ts_ns)
        if isinstance(result, str):
            self.reasons[result] = self.reasons.get(result, 0) + 1
            return None
        return result
