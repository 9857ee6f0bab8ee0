"""HEP, the Homer Encapsulation Protocol: versions 1, 2 and 3 (pure codec, no sockets).

A SIP server that mirrors its traffic to a capture server (Kamailio ``siptrace``
with ``hep_mode_on``, OpenSIPS ``proto_hep``, Asterisk ``res_hep``, FreeSWITCH,
captagent, heplify) wraps every message it received or sent in a HEP packet:
the original addresses, ports, transport and capture time, then the SIP bytes.
:func:`decode_hep` turns one such packet into a :class:`HepPacket`, which the
monitor analyses exactly like a captured datagram. :func:`encode_hep3` and
:func:`encode_hep2` produce feeds for tests and benchmarks (and for forwarding).

Wire formats (all integers big-endian unless said otherwise):

HEPv3 ("HEP3 Network Protocol Specification", sipcapture)
    ``"HEP3"``, a 16-bit total length (header included), then chunks of
    ``vendor id (16) | type id (16) | length (16, header included) | data``.
    Vendor 0 ("generic") types used here:

    ====  ==========================  =========================================
    1     IP protocol family (u8)     2 = IPv4, 10 = IPv6 (the Linux AF_ values)
    2     IP protocol ID (u8)         17 UDP, 6 TCP, 132 SCTP, 22 "TLS" (below)
    3, 4  IPv4 source, destination    4 bytes each
    5, 6  IPv6 source, destination    16 bytes each
    7, 8  source, destination port    u16
    9     timestamp seconds           u32, Unix epoch
    10    timestamp microseconds      u32, added to the seconds
    11    protocol type (u8)          1 = SIP; 5 RTCP, 100 log, … kept as int
    12    capture agent id (u32)
    13    keep-alive timer (u16)      checked and ignored
    14    authentication key          bytes (text)
    15    payload                     the captured message
    16    compressed payload          zlib (or gzip) deflated payload (OpenSIPS)
    17    correlation id              bytes (text), e.g. a Call-ID
    ====  ==========================  =========================================

    Chunks of any other vendor and unknown generic types (VLAN, node name,
    MOS, …) are skipped by their length.

HEPv1 and HEPv2 (Kamailio ``sipcapture/hep.h``)
    ``version (u8) | header length (u8) | family (u8) | protocol (u8) |
    source port (u16) | destination port (u16) | source address |
    destination address``; the header length counts these fields (16 for
    IPv4, 40 for IPv6). Version 2 then carries ``struct hep_timehdr``:
    seconds (u32), microseconds (u32), capture id (u16) and two bytes of C
    struct padding, 12 bytes in all, the three numbers **little-endian**
    (Kamailio converts them with ``to_le()``; OpenSIPS writes host order,
    which is little-endian on every platform that runs it). The payload is
    the rest of the datagram. Verified byte for byte against Kamailio 5.6
    ``siptrace`` (captured samples in ``tests/net/test_hep.py``, a live
    Kamailio in ``tests/net/test_hep_collector.py``).

Deliberate choices (a security monitor prefers a counted rejection to a guess):

* Any malformed input raises :class:`~sipwarden.errors.RemoteProtocolError`
  naming the rule (``"HEPv3 chunk length"``, ``"HEPv2 header length"``, …)
  and the byte offset; no other exception escapes on any input bytes.
* The HEPv3 total length must equal the datagram length; a generic chunk
  1-17 may appear once; fixed-size chunks must have their exact size; the
  addresses must match the family chunk; family, protocol, both addresses,
  both ports, the timestamp seconds, the protocol type and a payload are
  required (the microseconds and the capture id default to 0).
* Transports: IP protocol numbers 17, 6 and 132 map to ``"udp"``, ``"tcp"``
  and ``"sctp"``; 22 (``IPPROTO_IDP``) is the number Kamailio, sofia-sip
  (FreeSWITCH) and reSIProcate write for TLS and maps to ``"tls"``. No sender
  tells WebSocket apart on the wire (Kamailio writes 22 for ws and wss,
  FreeSWITCH and reSIProcate write 6), so ``"ws"``/``"wss"`` are never
  decoded; the SIP layer can read them from the Via header (the encoders
  write ws as 6 and wss as 22). Any other number is rejected.
* A compressed payload is inflated with a hard output bound
  (``max_payload``, the 64 KiB SIP message limit by default): a
  decompression bomb costs at most that much memory and work.
* Text chunks (authentication key, correlation id) are UTF-8, undecodable
  bytes kept as ``\\xNN`` escapes so that nothing downstream chokes on them.
* Timestamps come from the packet (nanoseconds since the epoch; HEPv1 has
  none and gives 0). Nothing here reads a clock.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from socket import AF_INET, AF_INET6, inet_ntoa, inet_ntop, inet_pton
from typing import Final, Literal, NamedTuple

from sipwarden.errors import LocalProtocolError, RemoteProtocolError
from sipwarden.sip.limits import MAX_MESSAGE_SIZE

__all__ = [
    "CHUNK_AUTH_KEY",
    "CHUNK_CAPTURE_ID",
    "CHUNK_COMPRESSED_PAYLOAD",
    "CHUNK_CORRELATION_ID",
    "CHUNK_DST_PORT",
    "CHUNK_IPV4_DST",
    "CHUNK_IPV4_SRC",
    "CHUNK_IPV6_DST",
    "CHUNK_IPV6_SRC",
    "CHUNK_IP_FAMILY",
    "CHUNK_IP_PROTO",
    "CHUNK_KEEP_ALIVE",
    "CHUNK_PAYLOAD",
    "CHUNK_PROTO_TYPE",
    "CHUNK_SRC_PORT",
    "CHUNK_TIME_SEC",
    "CHUNK_TIME_USEC",
    "DEFAULT_MAX_PAYLOAD",
    "HEP3_MAGIC",
    "HEP_FAMILY_IPV4",
    "HEP_FAMILY_IPV6",
    "MAX_HEP3_LENGTH",
    "PROTO_TYPE_SIP",
    "HepPacket",
    "HepStreamBuffer",
    "Transport",
    "decode_hep",
    "encode_hep",
    "encode_hep2",
    "encode_hep3",
]

Transport = Literal["udp", "tcp", "tls", "sctp", "ws", "wss"]

HEP3_MAGIC: Final = b"HEP3"
#: The HEPv3 total length is a 16-bit field.
MAX_HEP3_LENGTH: Final = 0xFFFF
#: Largest payload accepted (after inflating a compressed one): the SIP message limit.
DEFAULT_MAX_PAYLOAD: Final = MAX_MESSAGE_SIZE
#: HEP protocol type of SIP (chunk 11); other types (RTCP, logs, …) are kept as numbers.
PROTO_TYPE_SIP: Final = 1
#: Address family values on the wire (Linux AF_INET / AF_INET6, whatever the sender's OS).
HEP_FAMILY_IPV4: Final = 2
HEP_FAMILY_IPV6: Final = 10

# Generic (vendor 0) chunk types.
CHUNK_IP_FAMILY: Final = 1
CHUNK_IP_PROTO: Final = 2
CHUNK_IPV4_SRC: Final = 3
CHUNK_IPV4_DST: Final = 4
CHUNK_IPV6_SRC: Final = 5
CHUNK_IPV6_DST: Final = 6
CHUNK_SRC_PORT: Final = 7
CHUNK_DST_PORT: Final = 8
CHUNK_TIME_SEC: Final = 9
CHUNK_TIME_USEC: Final = 10
CHUNK_PROTO_TYPE: Final = 11
CHUNK_CAPTURE_ID: Final = 12
CHUNK_KEEP_ALIVE: Final = 13
CHUNK_AUTH_KEY: Final = 14
CHUNK_PAYLOAD: Final = 15
CHUNK_COMPRESSED_PAYLOAD: Final = 16
CHUNK_CORRELATION_ID: Final = 17

_CHUNK_NAMES: Final[dict[int, str]] = {
    CHUNK_IP_FAMILY: "IP protocol family",
    CHUNK_IP_PROTO: "IP protocol ID",
    CHUNK_IPV4_SRC: "IPv4 source address",
    CHUNK_IPV4_DST: "IPv4 destination address",
    CHUNK_IPV6_SRC: "IPv6 source address",
    CHUNK_IPV6_DST: "IPv6 destination address",
    CHUNK_SRC_PORT: "source port",
    CHUNK_DST_PORT: "destination port",
    CHUNK_TIME_SEC: "timestamp seconds",
    CHUNK_TIME_USEC: "timestamp microseconds",
    CHUNK_PROTO_TYPE: "protocol type",
    CHUNK_CAPTURE_ID: "capture agent id",
    CHUNK_KEEP_ALIVE: "keep-alive timer",
    CHUNK_AUTH_KEY: "authentication key",
    CHUNK_PAYLOAD: "payload",
    CHUNK_COMPRESSED_PAYLOAD: "compressed payload",
    CHUNK_CORRELATION_ID: "correlation id",
}
# Data sizes of the fixed-size generic chunks.
_CHUNK_SIZES: Final[dict[int, int]] = {
    CHUNK_IP_FAMILY: 1,
    CHUNK_IP_PROTO: 1,
    CHUNK_IPV4_SRC: 4,
    CHUNK_IPV4_DST: 4,
    CHUNK_IPV6_SRC: 16,
    CHUNK_IPV6_DST: 16,
    CHUNK_SRC_PORT: 2,
    CHUNK_DST_PORT: 2,
    CHUNK_TIME_SEC: 4,
    CHUNK_TIME_USEC: 4,
    CHUNK_PROTO_TYPE: 1,
    CHUNK_CAPTURE_ID: 4,
    CHUNK_KEEP_ALIVE: 2,
}
_LAST_GENERIC: Final = CHUNK_CORRELATION_ID
# The same, indexed by chunk type; -1 for variable-size chunks.
_CHUNK_DATA_SIZES: Final = tuple(_CHUNK_SIZES.get(ctype, -1) for ctype in range(_LAST_GENERIC + 1))

# IP protocol number -> transport (see the module docstring for 22).
_TRANSPORTS: Final[dict[int, Transport]] = {17: "udp", 6: "tcp", 22: "tls", 132: "sctp"}
# Transport -> IP protocol number written by the encoders. WebSocket has no
# number of its own: ws goes out as TCP (what FreeSWITCH and reSIProcate do),
# wss as Kamailio's TLS number 22 so the encryption is not lost.
_PROTO_NUMBERS: Final[dict[str, int]] = {
    "udp": 17,
    "tcp": 6,
    "tls": 22,
    "sctp": 132,
    "ws": 6,
    "wss": 22,
}

_unpack_chunk: Final = struct.Struct("!HHH").unpack_from
_pack_chunk: Final = struct.Struct("!HHH").pack
_unpack_u16: Final = struct.Struct("!H").unpack_from
_unpack_u32: Final = struct.Struct("!I").unpack_from
# HEPv1/v2 header: version, header length, family, protocol, source port, destination port.
_unpack_hep12: Final = struct.Struct("!BBBBHH").unpack_from
_pack_hep12: Final = struct.Struct("!BBBBHH").pack
# HEPv2 struct hep_timehdr: seconds, microseconds, capture id, padding; little-endian.
_HEP2_TIME: Final = struct.Struct("<IIH2x")

_NS_PER_S: Final = 1_000_000_000
_NS_PER_US: Final = 1_000
_new_tuple: Final = tuple.__new__


class HepPacket(NamedTuple):
    """One decoded HEP packet (a hot-path record: a NamedTuple).

    ``src``/``dst`` are the captured message's addresses as :mod:`net.packet
    <sipwarden.net.packet>` writes them (dotted quad, compressed IPv6),
    ``ts_ns`` its capture time in nanoseconds since the epoch (0 for HEPv1),
    ``proto_type`` the HEP payload type (:data:`PROTO_TYPE_SIP` = 1) and
    ``payload`` the captured message, inflated if it came compressed.
    ``auth_key`` and ``correlation_id`` are ``None`` when absent (always for
    HEPv1/v2); ``capture_id`` is 0 when absent.
    """

    version: int
    ts_ns: int
    src: str
    sport: int
    dst: str
    dport: int
    transport: Transport
    proto_type: int
    capture_id: int
    auth_key: str | None
    correlation_id: str | None
    payload: bytes


def decode_hep(datagram: bytes, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> HepPacket:
    """Decode one HEPv1, v2 or v3 packet (one UDP datagram or one framed TCP packet).

    Raises :class:`~sipwarden.errors.RemoteProtocolError` (and nothing else)
    on malformed input, including a payload longer than ``max_payload``
    bytes, compressed or not.
    """
    if datagram[:4] == HEP3_MAGIC:
        return _decode_hep3(datagram, max_payload)
    if datagram[:1] in (b"\x01", b"\x02"):
        return _decode_hep12(datagram, max_payload)
    raise RemoteProtocolError(
        "not a HEP packet (neither the HEP3 magic nor version 1 or 2)",
        rule="HEP version",
        offset=0,
    )


def _chunk_error(ctype: int, message: str, offset: int) -> RemoteProtocolError:
    return RemoteProtocolError(
        message, rule=f"HEPv3 chunk {ctype} ({_CHUNK_NAMES[ctype]})", offset=offset
    )


def _decode_hep3(data: bytes, max_payload: int) -> HepPacket:
    """The HEPv3 packet ``data`` (it starts with the magic)."""
    size = len(data)
    if size < 6:
        raise RemoteProtocolError(
            f"{size} bytes are shorter than the 6-byte HEP3 header", rule="HEPv3 header", offset=0
        )
    total = data[4] << 8 | data[5]
    if total != size:
        raise RemoteProtocolError(
            f"total length {total} differs from the packet's {size} bytes",
            rule="HEPv3 total length",
            offset=4,
        )
    # One pass records where each generic chunk lies (its header offset; 0 =
    # absent), checking lengths, sizes and duplicates; the fields are read after.
    at = [0] * (_LAST_GENERIC + 1)
    sizes = _CHUNK_DATA_SIZES
    unpack_chunk = _unpack_chunk
    pos = 6
    while pos < total:
        if total - pos < 6:
            raise RemoteProtocolError(
                f"{total - pos} bytes left, too few for a 6-byte chunk header",
                rule="HEPv3 chunk header",
                offset=pos,
            )
        vendor, ctype, clen = unpack_chunk(data, pos)
        if clen < 6:
            raise RemoteProtocolError(
                f"chunk length {clen} is shorter than the chunk header",
                rule="HEPv3 chunk length",
                offset=pos,
            )
        end = pos + clen
        if end > total:
            raise RemoteProtocolError(
                f"chunk of {clen} bytes runs {end - total} bytes past the end of the packet",
                rule="HEPv3 chunk length",
                offset=pos,
            )
        # Vendor chunks and unknown generic types are skipped by their length.
        if vendor == 0 and 0 < ctype <= _LAST_GENERIC:
            if at[ctype]:
                raise _chunk_error(ctype, "chunk appears twice", pos)
            want = sizes[ctype]
            if want >= 0 and clen - 6 != want:
                raise _chunk_error(
                    ctype, f"chunk carries {clen - 6} bytes where {want} are required", pos
                )
            at[ctype] = pos
        pos = end

    # Presence and consistency; a missing chunk is reported at the end of the packet.
    if not at[CHUNK_IP_FAMILY]:
        raise _chunk_error(CHUNK_IP_FAMILY, "chunk missing", size)
    family = data[at[CHUNK_IP_FAMILY] + 6]
    if family == HEP_FAMILY_IPV4:
        src_chunk, dst_chunk, wrong = CHUNK_IPV4_SRC, CHUNK_IPV4_DST, CHUNK_IPV6_SRC
    elif family == HEP_FAMILY_IPV6:
        src_chunk, dst_chunk, wrong = CHUNK_IPV6_SRC, CHUNK_IPV6_DST, CHUNK_IPV4_SRC
    else:
        raise _chunk_error(CHUNK_IP_FAMILY, f"unsupported address family {family}", size)
    for ctype in (wrong, wrong + 1):
        if at[ctype]:
            raise _chunk_error(ctype, f"address chunk in a packet of family {family}", at[ctype])
    for ctype in (src_chunk, dst_chunk, CHUNK_SRC_PORT, CHUNK_DST_PORT, CHUNK_TIME_SEC):
        if not at[ctype]:
            raise _chunk_error(ctype, "chunk missing", size)
    if not at[CHUNK_IP_PROTO]:
        raise _chunk_error(CHUNK_IP_PROTO, "chunk missing", size)
    ip_proto = data[at[CHUNK_IP_PROTO] + 6]
    transport = _TRANSPORTS.get(ip_proto)
    if transport is None:
        raise _chunk_error(CHUNK_IP_PROTO, f"unsupported IP protocol {ip_proto}", size)
    if not at[CHUNK_PROTO_TYPE]:
        raise _chunk_error(CHUNK_PROTO_TYPE, "chunk missing", size)
    plain = at[CHUNK_PAYLOAD]
    packed = at[CHUNK_COMPRESSED_PAYLOAD]
    if plain and packed:
        raise _chunk_error(
            CHUNK_COMPRESSED_PAYLOAD, "both a payload and a compressed payload", packed
        )
    if plain:
        payload = data[plain + 6 : plain + (data[plain + 4] << 8 | data[plain + 5])]
        if len(payload) > max_payload:
            raise _chunk_error(
                CHUNK_PAYLOAD,
                f"payload of {len(payload)} bytes exceeds the {max_payload}-byte limit",
                plain + 6,
            )
    elif packed:
        end = packed + (data[packed + 4] << 8 | data[packed + 5])
        payload = _inflate(data[packed + 6 : end], max_payload, packed)
    else:
        raise _chunk_error(CHUNK_PAYLOAD, "missing payload (neither chunk 15 nor 16)", size)

    src = data[at[src_chunk] + 6 : at[src_chunk] + 6 + _CHUNK_SIZES[src_chunk]]
    dst = data[at[dst_chunk] + 6 : at[dst_chunk] + 6 + _CHUNK_SIZES[dst_chunk]]
    if family == HEP_FAMILY_IPV4:
        src_name = inet_ntoa(src)
        dst_name = inet_ntoa(dst)
    else:
        src_name = inet_ntop(AF_INET6, src)
        dst_name = inet_ntop(AF_INET6, dst)
    ts_ns = _unpack_u32(data, at[CHUNK_TIME_SEC] + 6)[0] * _NS_PER_S
    if at[CHUNK_TIME_USEC]:
        ts_ns += _unpack_u32(data, at[CHUNK_TIME_USEC] + 6)[0] * _NS_PER_US
    where = at[CHUNK_CAPTURE_ID]
    capture_id = _unpack_u32(data, where + 6)[0] if where else 0
    where = at[CHUNK_AUTH_KEY]
    auth_key = _text_chunk(data, where) if where else None
    where = at[CHUNK_CORRELATION_ID]
    correlation_id = _text_chunk(data, where) if where else None
    return _new_tuple(
        HepPacket,
        (
            3,
            ts_ns,
            src_name,
            _unpack_u16(data, at[CHUNK_SRC_PORT] + 6)[0],
            dst_name,
            _unpack_u16(data, at[CHUNK_DST_PORT] + 6)[0],
            transport,
            data[at[CHUNK_PROTO_TYPE] + 6],
            capture_id,
            auth_key,
            correlation_id,
            payload,
        ),
    )


def _text_chunk(data: bytes, pos: int) -> str:
    """The text of the chunk whose header is at ``pos``."""
    return data[pos + 6 : pos + (data[pos + 4] << 8 | data[pos + 5])].decode(
        "utf-8", "backslashreplace"
    )


def _inflate(compressed: bytes, limit: int, offset: int) -> bytes:
    """Inflate a zlib or gzip stream, never producing more than ``limit`` + 1 bytes.

    zlib stops as soon as ``max_length`` output bytes exist, so a bomb costs
    ``limit`` bytes of memory and the work to produce them, not its full size.
    """
    inflater = zlib.decompressobj(wbits=32 + zlib.MAX_WBITS)  # zlib or gzip header
    try:
        out = inflater.decompress(compressed, max(limit, 0) + 1)  # 0 would mean "no limit"
    except zlib.error as exc:
        raise _chunk_error(
            CHUNK_COMPRESSED_PAYLOAD, f"payload does not inflate ({exc})", offset
        ) from None
    if len(out) > limit:
        raise _chunk_error(
            CHUNK_COMPRESSED_PAYLOAD, f"payload inflates to more than {limit} bytes", offset
        )
    if not inflater.eof:
        raise _chunk_error(CHUNK_COMPRESSED_PAYLOAD, "compressed payload is truncated", offset)
    if inflater.unused_data:
        raise _chunk_error(
            CHUNK_COMPRESSED_PAYLOAD,
            f"{len(inflater.unused_data)} bytes after the end of the compressed stream",
            offset,
        )
    return out


def _decode_hep12(data: bytes, max_payload: int) -> HepPacket:
    """The HEPv1 or HEPv2 packet ``data`` (its first byte is 1 or 2)."""
    size = len(data)
    version = data[0]
    rule = f"HEPv{version}"
    if size < 8:
        raise RemoteProtocolError(
            f"{size} bytes are shorter than the 8-byte header", rule=f"{rule} header", offset=0
        )
    _, hlen, family, ip_proto, sport, dport = _unpack_hep12(data, 0)
    if family == HEP_FAMILY_IPV4:
        alen = 4
    elif family == HEP_FAMILY_IPV6:
        alen = 16
    else:
        raise RemoteProtocolError(
            f"unsupported address family {family}", rule=f"{rule} address family", offset=2
        )
    if hlen != 8 + 2 * alen:
        raise RemoteProtocolError(
            f"header length {hlen} does not fit family {family} ({8 + 2 * alen} expected)",
            rule=f"{rule} header length",
            offset=1,
        )
    pos = hlen
    if version == 2:
        pos += _HEP2_TIME.size
    if size < pos:
        raise RemoteProtocolError(
            f"{size} bytes are shorter than the {pos}-byte header",
            rule=f"{rule} header length",
            offset=0,
        )
    transport = _TRANSPORTS.get(ip_proto)
    if transport is None:
        raise RemoteProtocolError(
            f"unsupported IP protocol {ip_proto}", rule=f"{rule} protocol", offset=3
        )
    if size == pos:
        raise RemoteProtocolError("missing payload", rule=f"{rule} payload", offset=pos)
    if size - pos > max_payload:
        raise RemoteProtocolError(
            f"payload of {size - pos} bytes exceeds the {max_payload}-byte limit",
            rule=f"{rule} payload",
            offset=pos,
        )
    if version == 2:
        tsec, usec, capture_id = _HEP2_TIME.unpack_from(data, hlen)
        ts_ns = tsec * _NS_PER_S + usec * _NS_PER_US
    else:
        ts_ns = capture_id = 0
    if alen == 4:
        src = inet_ntoa(data[8:12])
        dst = inet_ntoa(data[12:16])
    else:
        src = inet_ntop(AF_INET6, data[8:24])
        dst = inet_ntop(AF_INET6, data[24:40])
    return _new_tuple(
        HepPacket,
        (
            version,
            ts_ns,
            src,
            sport,
            dst,
            dport,
            transport,
            PROTO_TYPE_SIP,  # HEPv1/v2 carry nothing but SIP
            capture_id,
            None,
            None,
            data[pos:],
        ),
    )


# --- encoding ------------------------------------------------------------------


def _addresses(src: str, dst: str) -> tuple[int, bytes, bytes]:
    """(HEP family, packed source, packed destination); both of one family."""
    for family, af in ((HEP_FAMILY_IPV4, AF_INET), (HEP_FAMILY_IPV6, AF_INET6)):
        try:
            packed_src = inet_pton(af, src)
        except OSError:
            continue
        try:
            packed_dst = inet_pton(af, dst)
        except OSError:
            raise LocalProtocolError(
                f"source {src!r} and destination {dst!r} are not of one address family"
            ) from None
        return family, packed_src, packed_dst
    raise LocalProtocolError(f"source {src!r} is not an IPv4 or IPv6 address")


def _proto_number(transport: Transport | int) -> int:
    if isinstance(transport, int):
        if not 0 <= transport <= 0xFF:
            raise LocalProtocolError(f"IP protocol number {transport} out of range")
        return transport
    try:
        return _PROTO_NUMBERS[transport]
    except KeyError:
        raise LocalProtocolError(f"unknown transport {transport!r}") from None


def _check_range(name: str, value: int, maximum: int) -> None:
    if not 0 <= value <= maximum:
        raise LocalProtocolError(f"{name} {value} is out of range 0..{maximum}")


def _time_fields(ts_ns: int) -> tuple[int, int]:
    seconds, rest = divmod(ts_ns, _NS_PER_S)
    _check_range("timestamp seconds", seconds, 0xFFFFFFFF)
    return seconds, rest // _NS_PER_US


def _chunk(ctype: int, data: bytes, vendor: int = 0) -> bytes:
    length = len(data) + 6
    if length > MAX_HEP3_LENGTH:
        raise LocalProtocolError(f"chunk {ctype} of {length} bytes exceeds {MAX_HEP3_LENGTH}")
    return _pack_chunk(vendor, ctype, length) + data


def encode_hep3(
    payload: bytes,
    *,
    src: str,
    sport: int,
    dst: str,
    dport: int,
    ts_ns: int = 0,
    transport: Transport | int = "udp",
    proto_type: int = PROTO_TYPE_SIP,
    capture_id: int = 0,
    auth_key: str | None = None,
    correlation_id: str | None = None,
    keep_alive: int | None = None,
    compress: bool = False,
    vendor_chunks: Sequence[tuple[int, int, bytes]] = (),
) -> bytes:
    """Build a HEPv3 packet around ``payload``.

    Chunks come in Kamailio's order (family, protocol, addresses, ports,
    time, protocol type, capture id, correlation id, authentication key)
    followed by ``vendor_chunks`` (``(vendor id, type id, data)``) and the
    payload, deflated into a chunk 16 (zlib format, as OpenSIPS sends it)
    when ``compress`` is true. ``transport`` may be an IP protocol number to
    produce what other senders write. ``ts_ns`` keeps microsecond precision.
    Raises :class:`~sipwarden.errors.LocalProtocolError` for values the
    format cannot carry (mixed address families, a packet over 65535 bytes).
    """
    family, packed_src, packed_dst = _addresses(src, dst)
    _check_range("source port", sport, 0xFFFF)
    _check_range("destination port", dport, 0xFFFF)
    _check_range("protocol type", proto_type, 0xFF)
    _check_range("capture id", capture_id, 0xFFFFFFFF)
    tsec, usec = _time_fields(ts_ns)
    v4 = family == HEP_FAMILY_IPV4
    parts = [
        _chunk(CHUNK_IP_FAMILY, bytes((family,))),
        _chunk(CHUNK_IP_PROTO, bytes((_proto_number(transport),))),
        _chunk(CHUNK_IPV4_SRC if v4 else CHUNK_IPV6_SRC, packed_src),
        _chunk(CHUNK_IPV4_DST if v4 else CHUNK_IPV6_DST, packed_dst),
        _chunk(CHUNK_SRC_PORT, sport.to_bytes(2, "big")),
        _chunk(CHUNK_DST_PORT, dport.to_bytes(2, "big")),
        _chunk(CHUNK_TIME_SEC, tsec.to_bytes(4, "big")),
        _chunk(CHUNK_TIME_USEC, usec.to_bytes(4, "big")),
        _chunk(CHUNK_PROTO_TYPE, bytes((proto_type,))),
        _chunk(CHUNK_CAPTURE_ID, capture_id.to_bytes(4, "big")),
    ]
    if keep_alive is not None:
        _check_range("keep-alive timer", keep_alive, 0xFFFF)
        parts.append(_chunk(CHUNK_KEEP_ALIVE, keep_alive.to_bytes(2, "big")))
    if correlation_id is not None:
        parts.append(_chunk(CHUNK_CORRELATION_ID, correlation_id.encode()))
    if auth_key is not None:
        parts.append(_chunk(CHUNK_AUTH_KEY, auth_key.encode()))
    for vendor, ctype, data in vendor_chunks:
        _check_range("vendor id", vendor, 0xFFFF)
        _check_range("chunk type", ctype, 0xFFFF)
        parts.append(_chunk(ctype, data, vendor))
    if compress:
        parts.append(_chunk(CHUNK_COMPRESSED_PAYLOAD, zlib.compress(payload)))
    else:
        parts.append(_chunk(CHUNK_PAYLOAD, payload))
    body = b"".join(parts)
    total = len(body) + 6
    if total > MAX_HEP3_LENGTH:
        raise LocalProtocolError(f"HEPv3 packet of {total} bytes exceeds {MAX_HEP3_LENGTH}")
    return HEP3_MAGIC + total.to_bytes(2, "big") + body


def encode_hep2(
    payload: bytes,
    *,
    src: str,
    sport: int,
    dst: str,
    dport: int,
    ts_ns: int = 0,
    transport: Transport | int = "udp",
    capture_id: int = 0,
    version: Literal[1, 2] = 2,
) -> bytes:
    """Build a HEPv2 (or, with ``version=1``, HEPv1) packet around ``payload``.

    Laid out as Kamailio ``siptrace`` sends it: the time header's numbers
    little-endian, two zero bytes of padding after the 16-bit capture id.
    HEPv1 carries no time and no capture id.
    """
    if version not in (1, 2):
        raise LocalProtocolError(f"HEP version {version} is not 1 or 2")
    family, packed_src, packed_dst = _addresses(src, dst)
    _check_range("source port", sport, 0xFFFF)
    _check_range("destination port", dport, 0xFFFF)
    header = _pack_hep12(
        version,
        8 + 2 * len(packed_src),
        family,
        _proto_number(transport),
        sport,
        dport,
    )
    if version == 1:
        return header + packed_src + packed_dst + payload
    _check_range("HEPv2 capture id", capture_id, 0xFFFF)
    tsec, usec = _time_fields(ts_ns)
    return header + packed_src + packed_dst + _HEP2_TIME.pack(tsec, usec, capture_id) + payload


def encode_hep(packet: HepPacket, *, compress: bool = False) -> bytes:
    """Encode ``packet`` again in its own HEP version (forwarding a feed)."""
    if packet.version == 3:
        return encode_hep3(
            packet.payload,
            src=packet.src,
            sport=packet.sport,
            dst=packet.dst,
            dport=packet.dport,
            ts_ns=packet.ts_ns,
            transport=packet.transport,
            proto_type=packet.proto_type,
            capture_id=packet.capture_id,
            auth_key=packet.auth_key,
            correlation_id=packet.correlation_id,
            compress=compress,
        )
    if packet.version in (1, 2):
        return encode_hep2(
            packet.payload,
            src=packet.src,
            sport=packet.sport,
            dst=packet.dst,
            dport=packet.dport,
            ts_ns=packet.ts_ns,
            transport=packet.transport,
            capture_id=packet.capture_id,
            version=1 if packet.version == 1 else 2,
        )
    raise LocalProtocolError(f"HEP version {packet.version} is not 1, 2 or 3")


# --- TCP framing ---------------------------------------------------------------


class HepStreamBuffer:
    """Cut a TCP byte stream into HEPv3 packets by their total-length field.

    HEP over TCP (OpenSIPS ``hep_tcp``, heplify, captagent) is a plain
    concatenation of HEPv3 packets; HEPv1/v2 have no total length and are
    UDP only. :meth:`feed` returns the complete packets and keeps the tail:
    at most one incomplete packet, so fewer than :data:`MAX_HEP3_LENGTH`
    bytes are held between calls, and every byte is copied a constant number
    of times (O(bytes), fed whole or byte by byte).

    A stream that does not continue with ``"HEP3"`` or carries a total length
    below 6 cannot be resynchronised: :meth:`feed` still returns the packets
    before the damage, then sets :attr:`error` (a
    :class:`~sipwarden.errors.RemoteProtocolError` whose offset counts from
    the start of the stream), drops what it held and ignores further input;
    the connection should be closed.
    """

    __slots__ = ("_buf", "_consumed", "error")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._consumed = 0  # stream offset of _buf[0]
        #: Why the stream broke, once it did; ``None`` while it is sound.
        self.error: RemoteProtocolError | None = None

    def __len__(self) -> int:
        """Bytes held: the start of a packet not complete yet."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the packets it completed, in order."""
        if self.error is not None:
            return []
        buf = self._buf
        buf += data
        size = len(buf)
        frames: list[bytes] = []
        pos = 0
        with memoryview(buf) as view:
            while size - pos >= 6:
                if not buf.startswith(HEP3_MAGIC, pos):
                    return self._broken(frames, "stream does not continue with HEP3", pos)
                total = buf[pos + 4] << 8 | buf[pos + 5]
                if total < 6:
                    return self._broken(frames, f"total length {total} below 6", pos + 4)
                if size - pos < total:
                    break
                frames.append(bytes(view[pos : pos + total]))
                pos += total
            # Reject garbage as soon as it shows, not once 6 bytes are in.
            head = bytes(view[pos : pos + 4])
        if head != HEP3_MAGIC[: len(head)]:
            return self._broken(frames, "stream does not continue with HEP3", pos)
        if pos:
            del buf[:pos]
            self._consumed += pos
        return frames

    def _broken(self, frames: list[bytes], message: str, pos: int) -> list[bytes]:
        self.error = RemoteProtocolError(
            message, rule="HEPv3 stream framing", offset=self._consumed + pos
        )
        # Drop what was held; a new buffer, as the old one may still be
        # exported to the caller's memoryview.
        self._buf = bytearray()
        return frames
