"""Tests of frame decoding and IP reassembly (``sipwarden.net.packet``).

Frames are built here with ``struct``, one builder per header, so each test
shows the layers it stacks.
"""

from __future__ import annotations

import random
import struct
from socket import AF_INET6, inet_aton, inet_pton

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwarden.net import packet
from sipwarden.net.packet import (
    MAX_VLAN_TAGS,
    REASON_FRAGMENT,
    REASON_MALFORMED,
    REASON_NOT_IP,
    REASON_NOT_UDP_TCP,
    REASON_TRUNCATED,
    REASON_UNSUPPORTED_LINKTYPE,
    TCP_ACK,
    TCP_PSH,
    TCP_SYN,
    Defragmenter,
    PacketDecoder,
    Segment,
    decode,
)

# --- builders ---------------------------------------------------------------

INVITE = (
    b"INVITE sip:100@127.0.0.1:15060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1\r\n"
    b"Content-Length: 0\r\n\r\n"
)
V4_SRC, V4_DST = "192.0.2.10", "198.51.100.7"
V6_SRC, V6_DST = "2001:db8::10", "2001:db8:0:1::7"


def udp(payload: bytes, sport: int = 5060, dport: int = 15060, length: int | None = None) -> bytes:
    return (
        struct.pack("!HHHH", sport, dport, len(payload) + 8 if length is None else length, 0)
        + payload
    )


def tcp(
    payload: bytes,
    *,
    seq: int = 0x01020304,
    flags: int = TCP_ACK | TCP_PSH,
    options: bytes = b"",
    data_offset: int | None = None,
) -> bytes:
    words = (20 + len(options)) // 4 if data_offset is None else data_offset
    head = struct.pack("!HHIIBBHHH", 40000, 5061, seq, 7, words << 4, flags, 65535, 0, 0)
    return head + options + payload


def ipv4(
    payload: bytes,
    *,
    proto: int = 17,
    src: str = V4_SRC,
    dst: str = V4_DST,
    ident: int = 0x1234,
    frag: int = 0x4000,  # DF
    options: bytes = b"",
    total: int | None = None,
    version: int = 4,
    ihl: int | None = None,
) -> bytes:
    words = (20 + len(options)) // 4 if ihl is None else ihl
    length = 20 + len(options) + len(payload) if total is None else total
    head = struct.pack(
        "!BBHHHBBH4s4s",
        version << 4 | words,
        0,
        length,
        ident,
        frag,
        64,
        proto,
        0,
        inet_aton(src),
        inet_aton(dst),
    )
    return head + options + payload


def ipv6(
    payload: bytes,
    *,
    nh: int = 17,
    src: str = V6_SRC,
    dst: str = V6_DST,
    plen: int | None = None,
) -> bytes:
    length = len(payload) if plen is None else plen
    head = struct.pack("!IHBB", 6 << 28, length, nh, 64)
    return head + inet_pton(AF_INET6, src) + inet_pton(AF_INET6, dst) + payload


def ext(nh: int, body_len: int = 6) -> bytes:
    """A hop-by-hop / routing / destination options header: 8-octet units after the first."""
    assert (body_len + 2) % 8 == 0
    return bytes([nh, (body_len + 2) // 8 - 1]) + b"\x01" * body_len


def frag6(nh: int, offset: int, more: bool, ident: int = 0xCAFE) -> bytes:
    return struct.pack("!BBHI", nh, 0, offset | int(more), ident)


def eth(payload: bytes, ethertype: int = 0x0800, tags: tuple[int, ...] = ()) -> bytes:
    head = b"\x00\x11\x22\x33\x44\x55" + b"\x66\x77\x88\x99\xaa\xbb"
    for tpid in tags:
        head += struct.pack("!HH", tpid, 100)
    return head + struct.pack("!H", ethertype) + payload


def sll(payload: bytes, protocol: int = 0x0800) -> bytes:
    return struct.pack("!HHH8sH", 0, 772, 6, b"\0" * 8, protocol) + payload


def sll2(payload: bytes, protocol: int = 0x0800) -> bytes:
    return struct.pack("!HHIHBB8s", protocol, 0, 1, 772, 0, 6, b"\0" * 8) + payload


def null(payload: bytes, family: int, order: str = "<") -> bytes:
    return struct.pack(order + "I", family) + payload


def reason(linktype: int, data: bytes) -> str | None:
    """Why a frame is not decoded (None if it is)."""
    decoder = PacketDecoder()
    if decoder.decode(linktype, data, 0) is not None:
        return None
    (why,) = decoder.reasons
    return why


UDP_V4 = Segment(V4_SRC, V4_DST, 5060, 15060, "udp", INVITE)
UDP_V6 = Segment(V6_SRC, V6_DST, 5060, 15060, "udp", INVITE)

# --- link layers ------------------------------------------------------------


def test_ethernet_ipv4_udp() -> None:
    assert decode(1, eth(ipv4(udp(INVITE)))) == UDP_V4


def test_ethernet_padding_is_trimmed_by_ip_and_udp_lengths() -> None:
    frame = eth(ipv4(udp(b"hi")))
    assert len(frame) < 60
    padded = frame + b"\0" * (60 - len(frame))
    assert decode(1, padded) == Segment(V4_SRC, V4_DST, 5060, 15060, "udp", b"hi")
    # A UDP length shorter than the IP payload trims as well.
    short = eth(ipv4(udp(b"hi", length=9) + b"XX"))
    assert decode(1, short) == Segment(V4_SRC, V4_DST, 5060, 15060, "udp", b"h")


def test_ethernet_ipv4_tcp_with_options() -> None:
    segment = decode(1, eth(ipv4(tcp(INVITE, flags=TCP_SYN, options=b"\x02\x04\x05\xb4"), proto=6)))
    assert segment == Segment(V4_SRC, V4_DST, 40000, 5061, "tcp", INVITE, 0x01020304, TCP_SYN)


def test_ipv4_header_options() -> None:
    options = b"\x94\x04\x00\x00" + b"\x01\x01\x01\x00"  # router alert, NOPs, end
    assert decode(1, eth(ipv4(udp(INVITE), options=options))) == UDP_V4


@pytest.mark.parametrize(
    "tags",
    [(0x8100,), (0x88A8, 0x8100), (0x9100, 0x8100), (0x8100,) * MAX_VLAN_TAGS],
    ids=["802.1Q", "802.1ad QinQ", "pre-standard QinQ", "most tags allowed"],
)
def test_vlan_tags(tags: tuple[int, ...]) -> None:
    assert decode(1, eth(ipv4(udp(INVITE)), tags=tags)) == UDP_V4
    assert decode(1, eth(ipv6(udp(INVITE)), 0x86DD, tags=tags)) == UDP_V6


def test_too_many_vlan_tags() -> None:
    assert reason(1, eth(ipv4(udp(INVITE)), tags=(0x8100,) * (MAX_VLAN_TAGS + 1))) == (
        REASON_MALFORMED
    )


def test_linux_cooked_captures() -> None:
    assert decode(113, sll(ipv4(udp(INVITE)))) == UDP_V4
    assert decode(113, sll(ipv6(udp(INVITE)), 0x86DD)) == UDP_V6
    assert decode(276, sll2(ipv4(udp(INVITE)))) == UDP_V4
    assert decode(276, sll2(ipv6(udp(INVITE)), 0x86DD)) == UDP_V6
    assert reason(113, sll(b"\0" * 28, 0x0806)) == REASON_NOT_IP  # ARP
    assert decode(113, sll(b"\x00\x64\x08\x00" + ipv4(udp(INVITE)), 0x8100)) == UDP_V4


@pytest.mark.parametrize("linktype", [0, 108])
@pytest.mark.parametrize("order", ["<", ">"])
def test_bsd_loopback(linktype: int, order: str) -> None:
    assert decode(linktype, null(ipv4(udp(INVITE)), 2, order)) == UDP_V4
    for family in (24, 28, 30, 10, 23):
        assert decode(linktype, null(ipv6(udp(INVITE)), family, order)) == UDP_V6
    assert reason(linktype, null(ipv4(udp(INVITE)), 7, order)) == REASON_NOT_IP


@pytest.mark.parametrize("linktype", [101, 12, 14])
def test_raw_ip(linktype: int) -> None:
    assert decode(linktype, ipv4(udp(INVITE))) == UDP_V4
    assert decode(linktype, ipv6(udp(INVITE))) == UDP_V6
    assert reason(linktype, b"\x50" + bytes(40)) == REASON_NOT_IP
    assert reason(linktype, b"") == REASON_TRUNCATED


def test_raw_ipv4_and_ipv6_link_types() -> None:
    assert decode(228, ipv4(udp(INVITE))) == UDP_V4
    assert decode(229, ipv6(udp(INVITE))) == UDP_V6
    assert reason(228, ipv6(udp(INVITE))) == REASON_MALFORMED
    assert reason(229, ipv4(udp(INVITE)) + bytes(20)) == REASON_MALFORMED


def test_unsupported_link_type() -> None:
    assert reason(147, ipv4(udp(INVITE))) == REASON_UNSUPPORTED_LINKTYPE


def test_not_udp_or_tcp() -> None:
    icmp = ipv4(b"\x08\x00\x00\x00\x00\x01\x00\x01", proto=1)
    assert reason(1, eth(icmp)) == REASON_NOT_UDP_TCP
    icmpv6 = ipv6(b"\x80\x00\x00\x00\x00\x01\x00\x01", nh=58)
    assert reason(1, eth(icmpv6, 0x86DD)) == REASON_NOT_UDP_TCP
    assert reason(1, eth(ipv6(b"", nh=59), 0x86DD)) == REASON_NOT_UDP_TCP  # no next header
    assert reason(1, eth(b"\0" * 28, 0x0806)) == REASON_NOT_IP  # ARP
    assert reason(1, eth(b"\xaa\xaa\x03" + b"\0" * 40, 46)) == REASON_NOT_IP  # 802.3 length


# --- IPv6 -------------------------------------------------------------------


def test_ipv6_address_text_is_compressed() -> None:
    segment = decode(229, ipv6(udp(b"x"), src="2001:0db8:0000:0000:0000:0000:0000:0001", dst="::1"))
    assert segment is not None
    assert (segment.src, segment.dst) == ("2001:db8::1", "::1")


def test_ipv6_extension_headers() -> None:
    # hop-by-hop -> routing -> destination options (16 bytes) -> AH -> UDP
    ah = bytes([17, 4]) + b"\0" * 22  # (4 + 2) * 4 = 24 bytes
    chain = ext(43) + ext(60) + ext(51, 14) + ah + udp(INVITE)
    assert decode(1, eth(ipv6(chain, nh=0), 0x86DD)) == UDP_V6


def test_ipv6_tcp_after_extension_header() -> None:
    segment = decode(229, ipv6(ext(6) + tcp(b"REGISTER", flags=TCP_ACK), nh=60))
    assert segment == Segment(V6_SRC, V6_DST, 40000, 5061, "tcp", b"REGISTER", 0x01020304, TCP_ACK)


def test_ipv6_atomic_fragment_is_a_whole_packet() -> None:
    packet = ipv6(frag6(17, 0, more=False) + udp(INVITE), nh=44)
    assert decode(229, packet) == UDP_V6


def test_ipv6_payload_length_trims_and_zero_means_rest() -> None:
    packet = ipv6(udp(INVITE))
    assert decode(229, packet + b"\0" * 6) == UDP_V6
    assert decode(229, ipv6(udp(INVITE), plen=0)) == UDP_V6  # jumbogram / offload


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (ipv6(udp(INVITE))[:39], REASON_TRUNCATED),
        (ipv6(udp(INVITE), plen=len(udp(INVITE)) + 1), REASON_TRUNCATED),
        (ipv6(ext(17)[:4], nh=0), REASON_TRUNCATED),
        (ipv6(bytes([17, 200]) + b"\0" * 6 + udp(INVITE), nh=0), REASON_TRUNCATED),
        (ipv6(frag6(17, 0, more=False)[:5], nh=44), REASON_TRUNCATED),
        (ipv6(ext(60, 6) * 20, nh=60), REASON_MALFORMED),  # too many extension headers
        (ipv6(udp(INVITE)[:7]), REASON_TRUNCATED),
    ],
    ids=[
        "short header",
        "payload length beyond frame",
        "short extension header",
        "extension header beyond payload",
        "short fragment header",
        "extension header loop",
        "short UDP",
    ],
)
def test_malformed_ipv6(frame: bytes, why: str) -> None:
    assert reason(229, frame) == why


# --- malformed IPv4 / transport ---------------------------------------------


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (eth(b"")[:13], REASON_TRUNCATED),
        (eth(ipv4(udp(INVITE))[:19]), REASON_TRUNCATED),
        (eth(ipv4(udp(INVITE), ihl=4)), REASON_MALFORMED),
        (eth(ipv4(udp(INVITE), version=5)), REASON_MALFORMED),
        (eth(ipv4(udp(INVITE), total=16)), REASON_MALFORMED),
        (eth(ipv4(udp(INVITE), total=2000)), REASON_TRUNCATED),
        (eth(ipv4(udp(INVITE), ihl=15, total=40)), REASON_MALFORMED),  # options beyond total length
        (eth(ipv4(udp(b"x", length=7))), REASON_MALFORMED),
        (eth(ipv4(udp(b"x", length=200))), REASON_TRUNCATED),
        (eth(ipv4(udp(b"")[:6])), REASON_TRUNCATED),
        (eth(ipv4(tcp(b"x", data_offset=4), proto=6)), REASON_MALFORMED),
        (eth(ipv4(tcp(b"x", data_offset=15), proto=6)), REASON_TRUNCATED),
        (eth(ipv4(tcp(b"")[:19], proto=6)), REASON_TRUNCATED),
        (eth(b"\x00", 0x8100), REASON_TRUNCATED),
        (eth(ipv4(udp(INVITE)), tags=(0x8100,))[:16], REASON_TRUNCATED),
    ],
    ids=[
        "short ethernet",
        "short IPv4 header",
        "IHL below 5",
        "wrong version",
        "total length below header",
        "total length beyond frame",
        "header beyond total length",
        "UDP length below 8",
        "UDP length beyond payload",
        "short UDP header",
        "TCP data offset below 5",
        "TCP data offset beyond payload",
        "short TCP header",
        "short VLAN tag",
        "VLAN tag cut",
    ],
)
def test_malformed_frames(frame: bytes, why: str) -> None:
    assert decode(1, frame) is None
    assert reason(1, frame) == why


def test_short_link_headers() -> None:
    assert reason(113, sll(b"")[:15]) == REASON_TRUNCATED
    assert reason(276, sll2(b"")[:19]) == REASON_TRUNCATED
    assert reason(0, b"\x02\0\0") == REASON_TRUNCATED


def test_address_text_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packet, "ADDRESS_CACHE_SIZE", 2)
    monkeypatch.setattr(packet, "_v4_names", {})
    monkeypatch.setattr(packet, "_v6_names", {})
    for i in range(1, 6):
        v4 = decode(1, eth(ipv4(udp(b"x"), src=f"10.0.0.{i}")))
        v6 = decode(229, ipv6(udp(b"x"), src=f"2001:db8::{i}"))
        assert v4 is not None
        assert v6 is not None
        assert (v4.src, v6.src) == (f"10.0.0.{i}", f"2001:db8::{i}")
        assert len(packet._v4_names) <= 2
        assert len(packet._v6_names) <= 2


def test_zero_lengths_mean_rest_of_frame() -> None:
    # Segmentation offload on the capturing host writes 0 in length fields.
    assert decode(1, eth(ipv4(udp(INVITE, length=0), total=0))) == UDP_V4


# --- fragments --------------------------------------------------------------


def fragments_v4(payload: bytes, size: int, ident: int = 0x1234, proto: int = 17) -> list[bytes]:
    """IPv4 fragments (Ethernet frames) of an IP payload, ``size`` bytes each."""
    frames = []
    for offset in range(0, len(payload), size):
        more = offset + size < len(payload)
        chunk = payload[offset : offset + size]
        flags = (offset // 8) | (0x2000 if more else 0)
        frames.append(eth(ipv4(chunk, proto=proto, ident=ident, frag=flags)))
    return frames


def fragments_v6(payload: bytes, size: int, nh: int = 17, ident: int = 0xCAFE) -> list[bytes]:
    frames = []
    for offset in range(0, len(payload), size):
        more = offset + size < len(payload)
        chunk = payload[offset : offset + size]
        frames.append(ipv6(frag6(nh, offset, more, ident) + chunk, nh=44))
    return frames


BIG_INVITE = INVITE.replace(
    b"Content-Length: 0", b"X-Pad: " + b"p" * 3000 + b"\r\nContent-Length: 0"
)
BIG_V4 = Segment(V4_SRC, V4_DST, 5060, 15060, "udp", BIG_INVITE)
BIG_V6 = Segment(V6_SRC, V6_DST, 5060, 15060, "udp", BIG_INVITE)


def feed(decoder: PacketDecoder, linktype: int, frames: list[bytes], ts: int = 0) -> list[Segment]:
    out = []
    for frame in frames:
        segment = decoder.decode(linktype, frame, ts)
        if segment is not None:
            out.append(segment)
    return out


def test_ipv4_fragments_in_order() -> None:
    frames = fragments_v4(udp(BIG_INVITE), 1480)
    assert len(frames) == 3
    decoder = PacketDecoder()
    assert feed(decoder, 1, frames) == [BIG_V4]
    assert decoder.reasons == {REASON_FRAGMENT: 2}
    assert decoder.defragmenter.stats["completed"] == 1
    assert len(decoder.defragmenter) == 0
    assert decoder.defragmenter.pending_bytes == 0


def test_stateless_decode_drops_fragments() -> None:
    for frame in fragments_v4(udp(BIG_INVITE), 1480):
        assert decode(1, frame) is None
    for frame in fragments_v6(udp(BIG_INVITE), 1232):
        assert decode(229, frame) is None
        assert reason(229, frame) == REASON_FRAGMENT


def test_ipv4_fragments_out_of_order_with_duplicates() -> None:
    frames = fragments_v4(udp(BIG_INVITE), 1024)
    shuffled = [frames[2], frames[0], frames[0], frames[3], frames[1]]
    decoder = PacketDecoder()
    assert feed(decoder, 1, shuffled) == [BIG_V4]
    assert decoder.defragmenter.stats["duplicate"] == 1


def test_fragments_of_interleaved_datagrams() -> None:
    first = fragments_v4(udp(BIG_INVITE), 1480, ident=1)
    second = fragments_v4(udp(BIG_INVITE.replace(b"p", b"q")), 1480, ident=2)
    interleaved = [f for pair in zip(first, second, strict=True) for f in pair]
    segments = feed(PacketDecoder(), 1, interleaved)
    assert [s.payload.count(b"p" * 3000) for s in segments] == [1, 0]
    assert segments[1].payload.count(b"q" * 3000) == 1


def test_ipv4_fragment_with_tcp() -> None:
    frames = fragments_v4(tcp(BIG_INVITE), 1480, proto=6)
    segments = feed(PacketDecoder(), 1, frames)
    assert [(s.proto, s.payload) for s in segments] == [("tcp", BIG_INVITE)]


def test_consistent_overlap_is_accepted() -> None:
    payload = udp(BIG_INVITE)
    frames = fragments_v4(payload, 1024)
    # A retransmission cut differently: bytes 512..2048 again, identical.
    overlap = eth(ipv4(payload[512:2048], frag=(512 // 8) | 0x2000))
    decoder = PacketDecoder()
    assert feed(decoder, 1, [frames[0], overlap, frames[1], frames[3], frames[2]]) == [BIG_V4]


def test_conflicting_overlap_drops_the_datagram() -> None:
    payload = udp(BIG_INVITE)
    frames = fragments_v4(payload, 1024)
    forged = bytearray(payload[512:2048])
    forged[600] ^= 0xFF
    teardrop = eth(ipv4(bytes(forged), frag=(512 // 8) | 0x2000))
    decoder = PacketDecoder()
    assert feed(decoder, 1, [frames[0], frames[1], teardrop, frames[2], frames[3]]) == []
    assert decoder.defragmenter.stats["overlap"] == 1


def test_conflicting_last_fragments_drop_the_datagram() -> None:
    payload = udp(BIG_INVITE)
    frames = fragments_v4(payload, 1024)
    other_end = eth(ipv4(payload[2048:2056], frag=2048 // 8))  # a second, shorter "last"
    decoder = PacketDecoder()
    assert feed(decoder, 1, [frames[3], other_end, frames[0], frames[1], frames[2]]) == []
    assert decoder.defragmenter.stats["overlap"] == 1
    beyond = eth(ipv4(payload[:8], frag=(8000 // 8) | 0x2000))  # data after the last fragment
    decoder = PacketDecoder()
    assert feed(decoder, 1, [frames[3], beyond, frames[0], frames[1], frames[2]]) == []
    assert decoder.defragmenter.stats["overlap"] == 1


def test_fragments_time_out_by_packet_timestamps() -> None:
    frames = fragments_v4(udp(BIG_INVITE), 1480)
    second = 10**9
    decoder = PacketDecoder(Defragmenter(timeout_ns=5 * second))
    assert decoder.decode(1, frames[0], 100 * second) is None
    assert decoder.decode(1, frames[1], 104 * second) is None
    # The last fragment comes 6 s after the first: the datagram is gone.
    assert decoder.decode(1, frames[2], 106 * second) is None
    assert decoder.defragmenter.stats["timed_out"] == 1
    assert len(decoder.defragmenter) == 1  # the late fragment started a new one
    assert decoder.defragmenter.expire(200 * second) == 1
    assert len(decoder.defragmenter) == 0


def test_timeout_of_a_datagram_that_is_not_the_oldest() -> None:
    # Capture timestamps can go back: the datagram created second is older.
    second = 10**9
    decoder = PacketDecoder(Defragmenter(timeout_ns=30 * second))
    late = fragments_v4(udp(BIG_INVITE), 1480, ident=1)
    early = fragments_v4(udp(BIG_INVITE), 1480, ident=2)
    assert decoder.decode(1, late[0], 100 * second) is None
    assert decoder.decode(1, early[0], 50 * second) is None
    assert decoder.decode(1, early[1], 90 * second) is None  # 40 s after its first
    assert decoder.defragmenter.stats["timed_out"] == 1
    assert feed(decoder, 1, late[1:], 101 * second) == [BIG_V4]


def test_fragment_table_is_bounded() -> None:
    decoder = PacketDecoder(Defragmenter(max_datagrams=2))
    datagrams = [fragments_v4(udp(BIG_INVITE), 1480, ident=i) for i in range(3)]
    for frames in datagrams:
        assert decoder.decode(1, frames[0], 0) is None
    assert len(decoder.defragmenter) == 2
    assert decoder.defragmenter.stats["evicted"] == 1
    # The oldest (ident 0) was dropped; the others still complete.
    assert feed(decoder, 1, datagrams[0][1:]) == []
    assert feed(decoder, 1, datagrams[2][1:]) == [BIG_V4]


def test_fragment_bytes_are_bounded() -> None:
    defrag = Defragmenter(max_datagram_bytes=4000, max_total_bytes=5000)
    assert defrag.add("a", 0, b"x" * 3008, more=True, proto=17, ts_ns=0) is None
    assert defrag.add("b", 0, b"y" * 2000, more=True, proto=17, ts_ns=0) is None
    assert len(defrag) == 1  # "a" made room for "b"
    assert defrag.pending_bytes == 2000
    assert defrag.stats["evicted"] == 1


def test_oversize_datagram_is_dropped() -> None:
    # Ping of death: offset 65528 plus data runs past 65535.
    decoder = PacketDecoder()
    frames = fragments_v4(udp(BIG_INVITE), 1480)
    huge = eth(ipv4(b"z" * 1000, frag=65528 // 8))
    assert feed(decoder, 1, [frames[0], huge, frames[1], frames[2]]) == []
    assert decoder.defragmenter.stats["oversize"] == 1


def test_bad_fragment_lengths_are_ignored() -> None:
    defrag = Defragmenter()
    assert defrag.add("k", 0, b"x" * 7, more=True, proto=17, ts_ns=0) is None
    assert defrag.add("k", 8, b"", more=True, proto=17, ts_ns=0) is None
    assert defrag.stats["bad_length"] == 2
    assert len(defrag) == 0


def test_too_many_fragments_drop_the_datagram() -> None:
    defrag = Defragmenter(max_fragments=3)
    for i in range(3):
        assert defrag.add("k", i * 8, b"x" * 8, more=True, proto=17, ts_ns=0) is None
    assert defrag.add("k", 24, b"x" * 8, more=True, proto=17, ts_ns=0) is None
    assert defrag.stats["too_many_fragments"] == 1
    assert len(defrag) == 0


def test_zero_length_last_fragment() -> None:
    defrag = Defragmenter()
    assert defrag.add("k", 8, b"", more=False, proto=99, ts_ns=0) is None
    assert defrag.add("k", 0, b"abcdefgh", more=True, proto=17, ts_ns=0) == (17, b"abcdefgh")


def test_defragmenter_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Defragmenter(max_datagrams=0)
    with pytest.raises(ValueError, match="max_total_bytes"):
        Defragmenter(max_datagram_bytes=10, max_total_bytes=5)


def test_ipv6_fragments_out_of_order() -> None:
    frames = fragments_v6(udp(BIG_INVITE), 1232)
    decoder = PacketDecoder()
    assert feed(decoder, 229, frames[::-1]) == [BIG_V6]
    assert decoder.reasons == {REASON_FRAGMENT: len(frames) - 1}


def test_ipv6_fragments_take_next_header_of_first_fragment() -> None:
    # The fragmentable part holds a destination options header before UDP;
    # later fragments announce a different next header, which is ignored.
    payload = ext(17) + udp(BIG_INVITE)
    frames = fragments_v6(payload, 1232, nh=60)
    frames[1:] = [f[:40] + bytes([58]) + f[41:] for f in frames[1:]]
    assert feed(PacketDecoder(), 229, frames) == [BIG_V6]


def test_ipv6_fragment_header_after_extension_headers() -> None:
    frames = [ipv6(ext(44) + f[40:], nh=0) for f in fragments_v6(udp(BIG_INVITE), 1232)]
    assert feed(PacketDecoder(), 229, frames) == [BIG_V6]


def test_ipv6_nested_fragment_header_is_malformed() -> None:
    inner = frag6(17, 8, more=False, ident=9) + udp(b"x")
    frames = fragments_v6(inner, 8, nh=44)
    decoder = PacketDecoder()
    assert feed(decoder, 229, frames) == []
    assert decoder.reasons[REASON_MALFORMED] == 1


def test_ipv4_and_ipv6_fragments_do_not_mix() -> None:
    v4 = fragments_v4(udp(BIG_INVITE), 1480, ident=0xCAFE)
    v6 = fragments_v6(udp(BIG_INVITE), 1480, ident=0xCAFE)
    decoder = PacketDecoder()
    got = [decoder.decode(1, v4[0], 0), decoder.decode(229, v6[0], 0)]
    got += [decoder.decode(1, f, 0) for f in v4[1:]]
    got += [decoder.decode(229, f, 0) for f in v6[1:]]
    assert [s for s in got if s is not None] == [BIG_V4, BIG_V6]


# --- property tests ---------------------------------------------------------

LINKTYPES = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 147]


@settings(max_examples=300, deadline=None)
@given(linktype=st.sampled_from(LINKTYPES), data=st.binary(max_size=200))
def test_decode_never_raises(linktype: int, data: bytes) -> None:
    result = decode(linktype, data)
    assert result is None or isinstance(result, Segment)


HEADERS = [
    eth(b""),
    eth(b"", 0x86DD),
    eth(b"", tags=(0x8100,)),
    eth(ipv4(b"", frag=0x2000, total=0)[:20]),
    ipv6(b"", nh=44)[:40],
    ipv6(b"", nh=0)[:40],
]


@settings(max_examples=300, deadline=None)
@given(
    frames=st.lists(
        st.tuples(st.sampled_from(HEADERS), st.binary(max_size=120), st.integers(0, 10**11)),
        max_size=12,
    )
)
def test_decoder_with_fragments_never_raises(frames: list[tuple[bytes, bytes, int]]) -> None:
    decoder = PacketDecoder(Defragmenter(max_datagrams=4, max_total_bytes=70_000))
    for head, tail, ts in frames:
        frame = head + tail
        result = decoder.decode(1 if head[:6] == eth(b"")[:6] else 229, frame, ts)
        assert result is None or isinstance(result, Segment)
    defrag = decoder.defragmenter
    assert len(defrag) <= 4
    assert 0 <= defrag.pending_bytes <= 70_000


@settings(max_examples=200, deadline=None)
@given(
    payload=st.binary(min_size=1, max_size=3000),
    size=st.integers(1, 200).map(lambda n: n * 8),
    seed=st.integers(0, 2**32),
)
def test_any_fragmentation_and_order_reassembles(payload: bytes, size: int, seed: int) -> None:
    pieces = [(o, payload[o : o + size]) for o in range(0, len(payload), size)]
    rng = random.Random(seed)
    if len(pieces) > 1:
        pieces += rng.sample(pieces, k=2)  # duplicates
    rng.shuffle(pieces)
    defrag = Defragmenter()
    results = [
        defrag.add("key", o, d, more=o + len(d) < len(payload), proto=17, ts_ns=0)
        for o, d in pieces
    ]
    # Duplicates after completion may start (and even finish) a new datagram.
    completed = [r for r in results if r is not None]
    assert completed
    assert all(r == (17, payload) for r in completed)
