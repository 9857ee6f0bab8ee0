"""Tests of the HEP codec (``sipwarden.net.hep``).

Two packets captured from Kamailio 5.6 ``siptrace`` (HEPv3 and HEPv2, the
OPTIONS of the interop test in ``test_hep_collector.py``) are decoded field
by field and re-encoded byte for byte; everything else is built with the
encoders or, for the malformed cases, chunk by chunk so every byte is visible.
"""

from __future__ import annotations

import gzip
import itertools
import struct
import tracemalloc
import zlib
from socket import AF_INET6, inet_ntop, inet_pton
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipwarden.errors import LocalProtocolError, RemoteProtocolError
from sipwarden.net.hep import (
    DEFAULT_MAX_PAYLOAD,
    MAX_HEP3_LENGTH,
    HepPacket,
    HepStreamBuffer,
    Transport,
    decode_hep,
    encode_hep,
    encode_hep2,
    encode_hep3,
)

# --- samples from the real peer -----------------------------------------------

# Kamailio 5.6.3 siptrace, hep_version 3, hep_capture_id 4242, auth_key "sekrit",
# sip_trace("sip:127.0.0.1:<hep port>", "$ci-corr"): an OPTIONS it received.
KAMAILIO_HEP3 = bytes.fromhex(
    "48455033016d000000010007020000000200071100000003000a7f00000100000004000a7f00000100000007"
    "0008d5c3000000080008a65800000009000a6b07cdc40000000a000a00089e240000000b0007010000000c00"
    "0a00001092000000110018616263403132372e302e302e312d636f72720000000e000c73656b726974000000"
    "0f00ec4f5054494f4e53207369703a70696e67403132372e302e302e313a3432353834205349502f322e300d"
    "0a5669613a205349502f322e302f554450203132372e302e302e313a35343732333b6272616e63683d7a3968"
    "4734624b2d310d0a4d61782d466f7277617264733a2037300d0a46726f6d3a203c7369703a74403132372e30"
    "2e302e313e3b7461673d310d0a546f3a203c7369703a70696e67403132372e302e302e313e0d0a43616c6c2d"
    "49443a20616263403132372e302e302e310d0a435365713a2031204f5054494f4e530d0a436f6e74656e742d"
    "4c656e6774683a20300d0a0d0a"
)
# The same with hep_version 2: 16-byte header, 12-byte little-endian time header.
KAMAILIO_HEP2 = bytes.fromhex(
    "02100211d206973c7f0000017f000001cbcd076be8050300921000004f5054494f4e53207369703a70696e67"
    "403132372e302e302e313a3338373136205349502f322e300d0a5669613a205349502f322e302f5544502031"
    "32372e302e302e313a35333736363b6272616e63683d7a39684734624b2d310d0a4d61782d466f7277617264"
    "733a2037300d0a46726f6d3a203c7369703a74403132372e302e302e313e3b7461673d310d0a546f3a203c73"
    "69703a70696e67403132372e302e302e313e0d0a43616c6c2d49443a20616263403132372e302e302e310d0a"
    "435365713a2031204f5054494f4e530d0a436f6e74656e742d4c656e6774683a20300d0a0d0a"
)
OPTIONS_TAIL = b"Call-ID: abc@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"


def test_kamailio_hep3_sample() -> None:
    packet = decode_hep(KAMAILIO_HEP3)
    assert packet._replace(payload=b"") == HepPacket(
        version=3,
        ts_ns=1_795_673_540_564_772_000,
        src="127.0.0.1",
        sport=54723,
        dst="127.0.0.1",
        dport=42584,
        transport="udp",
        proto_type=1,
        capture_id=4242,
        auth_key="sekrit",
        correlation_id="abc@127.0.0.1-corr",
        payload=b"",
    )
    assert packet.payload.startswith(b"OPTIONS sip:ping@127.0.0.1:42584 SIP/2.0\r\n")
    assert packet.payload.endswith(OPTIONS_TAIL)
    # Our encoder writes the chunks in Kamailio's order: byte for byte the same.
    assert encode_hep(packet) == KAMAILIO_HEP3


def test_kamailio_hep2_sample() -> None:
    packet = decode_hep(KAMAILIO_HEP2)
    assert packet._replace(payload=b"") == HepPacket(
        version=2,
        ts_ns=1_795_673_547_198_120_000,
        src="127.0.0.1",
        sport=53766,
        dst="127.0.0.1",
        dport=38716,
        transport="udp",
        proto_type=1,
        capture_id=4242,
        auth_key=None,
        correlation_id=None,
        payload=b"",
    )
    assert packet.payload.startswith(b"OPTIONS sip:ping@127.0.0.1:38716 SIP/2.0\r\n")
    assert packet.payload.endswith(OPTIONS_TAIL)
    assert encode_hep(packet) == KAMAILIO_HEP2


# --- round trips -------------------------------------------------------------

SIP = b"INVITE sip:+15550100@pbx.example SIP/2.0\r\nCall-ID: rt@example\r\n\r\n"
ADDRESSES = {
    "ipv4": ("192.0.2.10", "198.51.100.7"),
    "ipv6": ("2001:db8::10", "2001:db8:0:0:1::7"),
}


def packet(version: int, family: str, **changes: Any) -> HepPacket:
    src, dst = ADDRESSES[family]
    base = HepPacket(
        version=version,
        ts_ns=1_700_000_000_123_456_000 if version > 1 else 0,
        src=inet_ntop(AF_INET6, inet_pton(AF_INET6, src)) if ":" in src else src,
        sport=5062,
        dst=inet_ntop(AF_INET6, inet_pton(AF_INET6, dst)) if ":" in dst else dst,
        dport=5060,
        transport="udp",
        proto_type=1,
        capture_id=2001 if version > 1 else 0,
        auth_key=None,
        correlation_id=None,
        payload=SIP,
    )
    return base._replace(**changes)


def chunk_types(data: bytes) -> list[int]:
    """The (vendor 0) chunk types of a well-formed HEPv3 packet, in order."""
    types = []
    pos = 6
    while pos < len(data):
        vendor, ctype, length = struct.unpack_from("!HHH", data, pos)
        types.append(ctype if vendor == 0 else -ctype)
        pos += length
    assert pos == len(data)
    return types


@pytest.mark.parametrize("family", sorted(ADDRESSES))
@pytest.mark.parametrize("compress", [False, True])
def test_hep3_round_trip(family: str, compress: bool) -> None:
    original = packet(
        3,
        family,
        transport="tcp",
        capture_id=0xFFFFFFFF,
        auth_key="myHep",
        correlation_id="call-1@example",
    )
    data = encode_hep(original, compress=compress)
    assert data[:4] == b"HEP3"
    assert struct.unpack_from("!H", data, 4)[0] == len(data)
    types = chunk_types(data)
    assert (16 in types, 15 in types) == (compress, not compress)
    assert decode_hep(data) == original


@pytest.mark.parametrize("family", sorted(ADDRESSES))
@pytest.mark.parametrize("version", [1, 2])
def test_hep12_round_trip(family: str, version: int) -> None:
    original = packet(version, family, transport="tls")
    data = encode_hep(original)
    assert data[0] == version
    assert data[1] == (16 if family == "ipv4" else 40)
    assert decode_hep(data) == original


def test_hep2_layout_is_kamailios() -> None:
    data = encode_hep2(
        b"x", src="10.0.0.1", sport=1, dst="10.0.0.2", dport=2, ts_ns=5_000_006_000, capture_id=7
    )
    assert data == (
        b"\x02\x10\x02\x11\x00\x01\x00\x02\x0a\x00\x00\x01\x0a\x00\x00\x02"
        + struct.pack("<IIH2x", 5, 6, 7)
        + b"x"
    )


def test_hep1_has_no_time() -> None:
    data = encode_hep2(b"x", src="10.0.0.1", sport=1, dst="10.0.0.2", dport=2, version=1)
    assert len(data) == 17
    decoded = decode_hep(data)
    assert (decoded.version, decoded.ts_ns, decoded.capture_id) == (1, 0, 0)
    assert decoded.payload == b"x"


def test_vendor_and_unknown_chunks_are_skipped() -> None:
    vendor_chunks = [
        (0x0003, 0x0001, b"opensips vendor chunk"),
        (0, 18, b"\x00\x2a"),  # VLAN id, not handled
        (0, 19, b"node-7"),  # node name, not handled
        (0, 0x20, b""),  # future generic type, empty
        (0xFFFF, 15, b"not the payload"),  # a vendor's type 15 is not chunk 15
    ]
    data = encode_hep3(
        SIP, src="10.0.0.1", sport=5060, dst="10.0.0.2", dport=5060, vendor_chunks=vendor_chunks
    )
    decoded = decode_hep(data)
    assert decoded.payload == SIP
    assert decoded.auth_key is None


def test_keep_alive_chunk_is_accepted() -> None:
    data = encode_hep3(SIP, src="::1", sport=1, dst="::1", dport=2, keep_alive=30)
    assert decode_hep(data).payload == SIP


@pytest.mark.parametrize(
    ("transport", "decoded"),
    [
        ("udp", "udp"),
        ("tcp", "tcp"),
        ("tls", "tls"),
        ("sctp", "sctp"),
        # No sender distinguishes WebSocket on the wire; see the module docstring.
        ("ws", "tcp"),
        ("wss", "tls"),
        (17, "udp"),
        (6, "tcp"),
        (22, "tls"),
        (132, "sctp"),
    ],
)
def test_transport_numbers(transport: str | int, decoded: str) -> None:
    for version in (2, 3):
        data = (encode_hep3 if version == 3 else encode_hep2)(
            SIP,
            src="10.0.0.1",
            sport=1,
            dst="10.0.0.2",
            dport=2,
            transport=transport,  # type: ignore[arg-type]
        )
        assert decode_hep(data).transport == decoded


def test_text_chunks_keep_undecodable_bytes_visible() -> None:
    data = raw3(
        [*REQUIRED, (0, 14, b"k\xffey"), (0, 17, "é".encode()), (0, 15, SIP)],
    )
    decoded = decode_hep(data)
    assert decoded.auth_key == "k\\xffey"
    assert decoded.correlation_id == "é"


def test_non_sip_proto_type_is_kept() -> None:
    data = encode_hep3(
        b'{"rtcp": 1}', src="10.0.0.1", sport=1, dst="10.0.0.2", dport=2, proto_type=5
    )
    assert decode_hep(data).proto_type == 5


# --- malformed input, one rule at a time ------------------------------------------


def chunk(ctype: int, data: bytes, vendor: int = 0, length: int | None = None) -> bytes:
    return struct.pack("!HHH", vendor, ctype, len(data) + 6 if length is None else length) + data


def raw3(chunks: list[tuple[int, int, bytes]], *, total: int | None = None) -> bytes:
    """A HEPv3 packet of exactly these (vendor, type, data) chunks."""
    body = b"".join(chunk(ctype, data, vendor) for vendor, ctype, data in chunks)
    return b"HEP3" + struct.pack("!H", len(body) + 6 if total is None else total) + body


# Every required chunk but the payload, for an IPv4 UDP packet.
REQUIRED: list[tuple[int, int, bytes]] = [
    (0, 1, b"\x02"),
    (0, 2, b"\x11"),
    (0, 3, bytes([10, 0, 0, 1])),
    (0, 4, bytes([10, 0, 0, 2])),
    (0, 7, b"\x13\xc4"),
    (0, 8, b"\x13\xc4"),
    (0, 9, struct.pack("!I", 1_700_000_000)),
    (0, 11, b"\x01"),
]
PAYLOAD = (0, 15, SIP)


def without(ctype: int) -> list[tuple[int, int, bytes]]:
    return [c for c in [*REQUIRED, PAYLOAD] if c[1] != ctype]


def replaced(ctype: int, data: bytes) -> list[tuple[int, int, bytes]]:
    return [(v, t, data if t == ctype else d) for v, t, d in [*REQUIRED, PAYLOAD]]


def test_minimal_packet_decodes() -> None:
    decoded = decode_hep(raw3([*REQUIRED, PAYLOAD]))
    assert (decoded.ts_ns, decoded.capture_id, decoded.sport) == (1_700_000_000 * 10**9, 0, 5060)


GOOD = raw3([*REQUIRED, PAYLOAD])
V6 = [(0, 5, bytes(15) + b"\x01"), (0, 6, bytes(15) + b"\x01")]
HEP2 = encode_hep2(SIP, src="10.0.0.1", sport=1, dst="10.0.0.2", dport=2)

MALFORMED: list[tuple[str, bytes, str, int | None]] = [
    # (id, input, rule, offset)
    ("empty", b"", "HEP version", 0),
    ("not-hep", b"SIP/2.0 200 OK\r\n\r\n", "HEP version", 0),
    ("hep4", b"HEP4" + GOOD[4:], "HEP version", 0),
    ("magic-only", b"HEP3", "HEPv3 header", 0),
    (
        "total-too-long",
        GOOD[:4] + struct.pack("!H", len(GOOD) + 1) + GOOD[6:],
        "HEPv3 total length",
        4,
    ),
    ("total-too-short", GOOD[:4] + struct.pack("!H", 6) + GOOD[6:], "HEPv3 total length", 4),
    ("truncated-datagram", GOOD[:-1], "HEPv3 total length", 4),
    ("trailing-bytes", GOOD + b"\r\n", "HEPv3 total length", 4),
    ("no-chunks", b"HEP3\x00\x06", "HEPv3 chunk 1 (IP protocol family)", 6),
    (
        "chunk-header-short",
        GOOD[:4] + struct.pack("!H", len(GOOD) + 3) + GOOD[6:] + b"\x00\x00\x00",
        "HEPv3 chunk header",
        len(GOOD),
    ),
    (
        "chunk-length-below-6",
        b"HEP3" + struct.pack("!H", 12) + chunk(1, b"", length=5),
        "HEPv3 chunk length",
        6,
    ),
    (
        "chunk-length-zero",
        b"HEP3" + struct.pack("!H", 12) + chunk(1, b"", length=0),
        "HEPv3 chunk length",
        6,
    ),
    (
        "chunk-past-end",
        b"HEP3" + struct.pack("!H", 13) + chunk(15, b"x", length=8),
        "HEPv3 chunk length",
        6,
    ),
    (
        "vendor-chunk-past-end",
        b"HEP3" + struct.pack("!H", 13) + chunk(1, b"x", vendor=3, length=8),
        "HEPv3 chunk length",
        6,
    ),
    (
        "duplicate-port",
        raw3([*REQUIRED, (0, 7, b"\x00\x01"), PAYLOAD]),
        "HEPv3 chunk 7 (source port)",
        None,
    ),
    ("duplicate-payload", raw3([*REQUIRED, PAYLOAD, PAYLOAD]), "HEPv3 chunk 15 (payload)", None),
    ("family-size", raw3(replaced(1, b"\x02\x00")), "HEPv3 chunk 1 (IP protocol family)", 6),
    (
        "ipv4-size",
        raw3(replaced(3, b"\x0a\x00\x00\x01\x00")),
        "HEPv3 chunk 3 (IPv4 source address)",
        None,
    ),
    (
        "ipv6-size",
        raw3([*without(3), (0, 5, bytes(4))]),
        "HEPv3 chunk 5 (IPv6 source address)",
        None,
    ),
    ("port-size", raw3(replaced(8, b"\x13")), "HEPv3 chunk 8 (destination port)", None),
    ("time-size", raw3(replaced(9, b"\x00\x00\x00")), "HEPv3 chunk 9 (timestamp seconds)", None),
    (
        "usec-size",
        raw3([*REQUIRED, (0, 10, b"\x00"), PAYLOAD]),
        "HEPv3 chunk 10 (timestamp microseconds)",
        None,
    ),
    (
        "captid-size",
        raw3([*REQUIRED, (0, 12, b"\x00\x01"), PAYLOAD]),
        "HEPv3 chunk 12 (capture agent id)",
        None,
    ),
    (
        "keepalive-size",
        raw3([*REQUIRED, (0, 13, b"\x00"), PAYLOAD]),
        "HEPv3 chunk 13 (keep-alive timer)",
        None,
    ),
    ("family-missing", raw3(without(1)), "HEPv3 chunk 1 (IP protocol family)", None),
    ("family-unknown", raw3(replaced(1, b"\x1c")), "HEPv3 chunk 1 (IP protocol family)", None),
    ("ipv6-in-ipv4", raw3([*REQUIRED, *V6, PAYLOAD]), "HEPv3 chunk 5 (IPv6 source address)", None),
    (
        "ipv4-in-ipv6",
        raw3([*replaced(1, b"\x0a")[:2], *V6, *REQUIRED[2:3], *REQUIRED[4:], PAYLOAD]),
        "HEPv3 chunk 3 (IPv4 source address)",
        None,
    ),
    ("src-missing", raw3(without(3)), "HEPv3 chunk 3 (IPv4 source address)", None),
    ("dst-missing", raw3(without(4)), "HEPv3 chunk 4 (IPv4 destination address)", None),
    (
        "ipv6-dst-missing",
        raw3([*replaced(1, b"\x0a")[:2], V6[0], *REQUIRED[4:], PAYLOAD]),
        "HEPv3 chunk 6 (IPv6 destination address)",
        None,
    ),
    ("sport-missing", raw3(without(7)), "HEPv3 chunk 7 (source port)", None),
    ("dport-missing", raw3(without(8)), "HEPv3 chunk 8 (destination port)", None),
    ("time-missing", raw3(without(9)), "HEPv3 chunk 9 (timestamp seconds)", None),
    ("proto-missing", raw3(without(2)), "HEPv3 chunk 2 (IP protocol ID)", None),
    ("proto-icmp", raw3(replaced(2, b"\x01")), "HEPv3 chunk 2 (IP protocol ID)", None),
    ("proto-type-missing", raw3(without(11)), "HEPv3 chunk 11 (protocol type)", None),
    ("payload-missing", raw3(REQUIRED), "HEPv3 chunk 15 (payload)", None),
    ("vendor-payload-only", raw3([*REQUIRED, (7, 15, SIP)]), "HEPv3 chunk 15 (payload)", None),
    (
        "both-payloads",
        raw3([*REQUIRED, PAYLOAD, (0, 16, zlib.compress(SIP))]),
        "HEPv3 chunk 16 (compressed payload)",
        None,
    ),
    (
        "deflate-garbage",
        raw3([*REQUIRED, (0, 16, b"not zlib")]),
        "HEPv3 chunk 16 (compressed payload)",
        None,
    ),
    (
        "deflate-truncated",
        raw3([*REQUIRED, (0, 16, zlib.compress(SIP)[:-6])]),
        "HEPv3 chunk 16 (compressed payload)",
        None,
    ),
    (
        "deflate-empty",
        raw3([*REQUIRED, (0, 16, b"")]),
        "HEPv3 chunk 16 (compressed payload)",
        None,
    ),
    (
        "deflate-trailing",
        raw3([*REQUIRED, (0, 16, zlib.compress(SIP) + b"junk")]),
        "HEPv3 chunk 16 (compressed payload)",
        None,
    ),
    # HEPv1/v2
    ("v2-short", HEP2[:7], "HEPv2 header", 0),
    ("v1-short", b"\x01\x10\x02", "HEPv1 header", 0),
    ("v2-family", HEP2[:2] + b"\x07" + HEP2[3:], "HEPv2 address family", 2),
    ("v2-length-ipv4", HEP2[:1] + b"\x28" + HEP2[2:], "HEPv2 header length", 1),
    ("v2-length-ipv6", b"\x02\x10\x0a" + HEP2[3:], "HEPv2 header length", 1),
    ("v2-time-cut", HEP2[:20], "HEPv2 header length", 0),
    ("v2-addresses-cut", HEP2[:12], "HEPv2 header length", 0),
    ("v1-addresses-cut", b"\x01\x28\x0a\x11" + bytes(20), "HEPv1 header length", 0),
    ("v2-proto", HEP2[:3] + b"\x01" + HEP2[4:], "HEPv2 protocol", 3),
    ("v2-no-payload", HEP2[:28], "HEPv2 payload", 28),
    ("v1-no-payload", b"\x01\x10\x02\x11" + bytes(12), "HEPv1 payload", 16),
]


@pytest.mark.parametrize(
    ("data", "rule", "offset"),
    [pytest.param(data, rule, offset, id=name) for name, data, rule, offset in MALFORMED],
)
def test_malformed(data: bytes, rule: str, offset: int | None) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_hep(data)
    assert info.value.rule == rule, info.value
    if offset is not None:
        assert info.value.offset == offset, info.value
    assert info.value.status_hint == 400


def test_malformed_offsets_point_into_the_packet() -> None:
    for _, data, _, _ in MALFORMED:
        with pytest.raises(RemoteProtocolError) as info:
            decode_hep(data)
        assert info.value.offset is not None
        assert 0 <= info.value.offset <= len(data)


def test_unknown_ip_protocol_offset_is_the_packet_end() -> None:
    data = raw3(replaced(2, b"\x32"))  # ESP
    with pytest.raises(RemoteProtocolError, match="unsupported IP protocol 50"):
        decode_hep(data)


# --- payload bounds and the decompression bomb -----------------------------------


def compressed_packet(payload: bytes) -> bytes:
    return encode_hep3(payload, src="10.0.0.1", sport=1, dst="10.0.0.2", dport=2, compress=True)


def test_compressed_payload_up_to_the_limit() -> None:
    payload = b"A" * DEFAULT_MAX_PAYLOAD
    assert decode_hep(compressed_packet(payload)).payload == payload
    with pytest.raises(RemoteProtocolError, match="inflates to more than 65536 bytes") as info:
        decode_hep(compressed_packet(payload + b"A"))
    assert info.value.rule == "HEPv3 chunk 16 (compressed payload)"


def test_gzip_payload_is_accepted() -> None:
    data = raw3([*REQUIRED, (0, 16, gzip.compress(SIP))])
    assert decode_hep(data).payload == SIP


def test_decompression_bomb_costs_at_most_the_limit() -> None:
    bomb = zlib.compress(bytes(32 * 1024 * 1024), 9)  # 32 MiB of zeros in ~32 KiB
    assert len(bomb) < MAX_HEP3_LENGTH - 200
    data = raw3([*REQUIRED, (0, 16, bomb)])
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError) as info:
            decode_hep(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.rule == "HEPv3 chunk 16 (compressed payload)"
    assert "inflates to more than" in info.value.reason
    # The output bound (64 KiB) plus zlib's state, nowhere near 32 MiB.
    assert peak < 512 * 1024, peak


def test_max_payload_applies_to_plain_payloads() -> None:
    data = encode_hep3(SIP, src="10.0.0.1", sport=1, dst="10.0.0.2", dport=2)
    assert decode_hep(data, max_payload=len(SIP)).payload == SIP
    with pytest.raises(RemoteProtocolError) as info:
        decode_hep(data, max_payload=len(SIP) - 1)
    assert info.value.rule == "HEPv3 chunk 15 (payload)"
    assert info.value.offset == len(data) - len(SIP)
    with pytest.raises(RemoteProtocolError) as info:
        decode_hep(HEP2, max_payload=len(SIP) - 1)
    assert info.value.rule == "HEPv2 payload"
    with pytest.raises(RemoteProtocolError, match="inflates"):
        decode_hep(compressed_packet(SIP), max_payload=10)


# --- encoder misuse ------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"src": "10.0.0.1", "dst": "::1"},
        {"src": "::1", "dst": "10.0.0.1"},
        {"src": "pbx.example"},
        {"sport": 65536},
        {"dport": -1},
        {"ts_ns": 2**32 * 10**9},
        {"capture_id": 2**32},
        {"proto_type": 256},
        {"transport": "quic"},
        {"transport": 256},
        {"keep_alive": 70000},
        {"vendor_chunks": [(70000, 1, b"")]},
    ],
)
def test_encode_hep3_rejects_what_the_format_cannot_carry(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"src": "10.0.0.1", "sport": 1, "dst": "10.0.0.2", "dport": 2}
    args.update(kwargs)
    with pytest.raises(LocalProtocolError):
        encode_hep3(SIP, **args)  # type: ignore[arg-type]


def test_encode_size_limits() -> None:
    with pytest.raises(LocalProtocolError, match="exceeds 65535"):
        encode_hep3(bytes(65535), src="10.0.0.1", sport=1, dst="10.0.0.2", dport=2)
    with pytest.raises(LocalProtocolError, match="exceeds 65535"):
        encode_hep3(bytes(65500), src="10.0.0.1", sport=1, dst="10.0.0.2", dport=2)
    with pytest.raises(LocalProtocolError, match="capture id"):
        encode_hep2(SIP, src="10.0.0.1", sport=1, dst="10.0.0.2", dport=2, capture_id=65536)
    with pytest.raises(LocalProtocolError, match="version"):
        encode_hep2(SIP, src="10.0.0.1", sport=1, dst="10.0.0.2", dport=2, version=3)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="version"):
        encode_hep(packet(3, "ipv4")._replace(version=4))


# --- properties -----------------------------------------------------------------

transports: st.SearchStrategy[Transport] = st.sampled_from(("udp", "tcp", "tls", "sctp"))
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


@st.composite
def hep_packets(draw: st.DrawFn) -> HepPacket:
    version = draw(st.sampled_from([1, 2, 3]))
    v6 = draw(st.booleans())
    address = st.ip_addresses(v=6 if v6 else 4).map(str)
    src, dst = draw(address), draw(address)
    if v6:
        src = inet_ntop(AF_INET6, inet_pton(AF_INET6, src))
        dst = inet_ntop(AF_INET6, inet_pton(AF_INET6, dst))
    return HepPacket(
        version=version,
        ts_ns=0
        if version == 1
        else draw(st.integers(0, 2**32 - 1)) * 10**9 + draw(st.integers(0, 999_999)) * 1000,
        src=src,
        sport=draw(st.integers(0, 65535)),
        dst=dst,
        dport=draw(st.integers(0, 65535)),
        transport=draw(transports),
        proto_type=draw(st.integers(0, 255)) if version == 3 else 1,
        capture_id={1: 0, 2: draw(st.integers(0, 65535)), 3: draw(st.integers(0, 2**32 - 1))}[
            version
        ],
        auth_key=draw(st.none() | texts) if version == 3 else None,
        correlation_id=draw(st.none() | texts) if version == 3 else None,
        payload=draw(st.binary(min_size=1, max_size=300)),
    )


@given(hep_packets(), st.booleans())
def test_round_trip_property(original: HepPacket, compress: bool) -> None:
    assert decode_hep(encode_hep(original, compress=compress)) == original


def check_decode(data: bytes) -> None:
    """The fuzz invariant: a HepPacket or a RemoteProtocolError, nothing else."""
    error: RemoteProtocolError | None = None
    try:
        decoded = decode_hep(data)
    except RemoteProtocolError as exc:
        error = exc
    if error is not None:
        assert error.rule.startswith("HEP")
        assert error.offset is None or 0 <= error.offset <= len(data)
        return
    assert isinstance(decoded, HepPacket)
    assert 0 < len(decoded.payload) <= DEFAULT_MAX_PAYLOAD or decoded.version == 3


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=200),
        st.binary(max_size=200).map(lambda b: b"HEP3" + struct.pack("!H", len(b) + 6) + b),
        st.binary(max_size=80).map(lambda b: b"\x02\x10\x02" + b),
        st.binary(max_size=80).map(lambda b: b"\x01\x28\x0a" + b),
    )
)
def test_arbitrary_bytes_decode_or_raise(data: bytes) -> None:
    check_decode(data)


mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "cut", "insert", "delete", "fix-length"]),
        st.integers(0, 2**16),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=6,
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(hep_packets(), st.booleans(), mutations)
def test_mutated_packets_decode_or_raise(
    original: HepPacket, compress: bool, steps: list[tuple[str, int, bytes]]
) -> None:
    data = bytearray(encode_hep(original, compress=compress))
    for kind, where, blob in steps:
        at = where % (len(data) + 1)
        if kind == "flip" and data:
            data[at % len(data)] ^= blob[0] or 0xFF
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = blob
        elif kind == "delete":
            del data[at : at + len(blob)]
        elif kind == "fix-length" and data[:4] == b"HEP3" and len(data) <= 0xFFFF:
            data[4:6] = struct.pack("!H", len(data))  # reach past the total-length check
        check_decode(bytes(data))


# --- TCP framing ------------------------------------------------------------------

FRAMES = [
    encode_hep3(SIP, src="10.0.0.1", sport=1, dst="10.0.0.2", dport=2),
    encode_hep3(b"x", src="::1", sport=3, dst="::2", dport=4, compress=True),
    encode_hep3(bytes(60000), src="10.0.0.1", sport=1, dst="10.0.0.2", dport=2),
]
STREAM = b"".join(FRAMES)


def test_stream_whole() -> None:
    buffer = HepStreamBuffer()
    assert buffer.feed(STREAM) == FRAMES
    assert len(buffer) == 0


def test_stream_byte_by_byte() -> None:
    buffer = HepStreamBuffer()
    out: list[bytes] = []
    for i in range(len(STREAM)):
        out += buffer.feed(STREAM[i : i + 1])
        assert len(buffer) < MAX_HEP3_LENGTH
    assert out == FRAMES
    assert [decode_hep(f).payload for f in out] == [SIP, b"x", bytes(60000)]


@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_stream_any_split(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM)]
    buffer = HepStreamBuffer()
    out: list[bytes] = []
    for a, b in itertools.pairwise(points):
        out += buffer.feed(STREAM[a:b])
    assert out == FRAMES
    assert len(buffer) == 0


def test_stream_keeps_the_incomplete_tail() -> None:
    buffer = HepStreamBuffer()
    assert buffer.feed(FRAMES[0] + FRAMES[1][:10]) == [FRAMES[0]]
    assert len(buffer) == 10
    assert buffer.feed(FRAMES[1][10:]) == [FRAMES[1]]


@pytest.mark.parametrize(
    ("data", "good", "offset"),
    [
        (b"GET / HTTP/1.1\r\n", 0, 0),  # not HEP at all
        (b"HX", 0, 0),  # a prefix of the magic is fine until it stops matching
        (HEP2, 0, 0),  # HEPv2 cannot be framed
        (FRAMES[0] + b"HEP4\x00\x10", 1, len(FRAMES[0])),
        (FRAMES[0] + b"HEP3\x00\x05", 1, len(FRAMES[0]) + 4),  # total length below 6
    ],
)
def test_stream_framing_errors(data: bytes, good: int, offset: int) -> None:
    buffer = HepStreamBuffer()
    # The packets before the damage are still delivered.
    assert buffer.feed(data) == FRAMES[:good]
    assert buffer.error is not None
    assert buffer.error.rule == "HEPv3 stream framing"
    assert buffer.error.offset == offset
    assert len(buffer) == 0
    assert buffer.feed(FRAMES[1]) == []  # a broken stream stays broken


def test_stream_magic_prefix_waits() -> None:
    buffer = HepStreamBuffer()
    for byte in b"HEP3\x00":
        assert buffer.feed(bytes([byte])) == []
        assert buffer.error is None


def test_stream_error_offsets_count_from_the_stream_start() -> None:
    buffer = HepStreamBuffer()
    buffer.feed(FRAMES[0])
    buffer.feed(FRAMES[1][:3])
    buffer.feed(FRAMES[1][3:])
    assert buffer.feed(b"xx") == []
    assert buffer.error is not None
    assert buffer.error.offset == len(FRAMES[0]) + len(FRAMES[1])
