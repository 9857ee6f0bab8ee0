"""Streaming reader for pcap and pcapng capture files.

Our own :mod:`struct` reader (DESIGN: "pcap/pcapng reading"): it reads the file
in chunks of :data:`READ_CHUNK` bytes and slices packets out of the chunk, so
memory stays constant (one chunk plus the largest block) however big the
capture is, and the per-packet cost is two ``unpack_from`` calls and one slice.

Formats, told apart by the first four bytes and never by the file name:

* pcap (libpcap, draft-ietf-opsawg-pcap): both byte orders, microsecond
  (``0xa1b2c3d4``) and nanosecond (``0xa1b23c4d``) timestamps.
* pcapng (draft-ietf-opsawg-pcapng): Section Header Blocks of either byte
  order (a file may hold several sections, each with its own byte order and
  interfaces), Interface Description Blocks (link type, snap length, the
  ``if_tsresol`` and ``if_tsoffset`` options), Enhanced, Simple and the
  obsolete Packet Blocks. Every other block type is skipped by its length.

A truncated or corrupt file raises :class:`~sipwarden.errors.CaptureError`
naming the number of the packet that would have come next and the file
offset of the damaged header or block, *after* every packet before the damage
was yielded, so a caller keeps what it analysed. No other exception escapes on
any input bytes; an ``OSError`` from the file object is translated into a
``CaptureError`` as well (foreign exceptions are translated at the edge).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final, NamedTuple

from sipwarden.errors import CaptureError

__all__ = [
    "MAX_BLOCK_BYTES",
    "READ_CHUNK",
    "CaptureReader",
    "CapturedPacket",
    "iter_packets",
    "open_capture",
]

#: Largest pcap record or pcapng block accepted; anything bigger is corrupt.
#: Real snap lengths are at most 256 KiB, so this only guards memory.
MAX_BLOCK_BYTES: Final = 256 * 1024 * 1024

#: How much is read from the file object at a time.
READ_CHUNK: Final = 1024 * 1024

# The most one read() asks for: file objects allocate the size asked for up
# front, so a corrupt length field must not turn into one 256 MiB request.
_MAX_READ: Final = 16 * 1024 * 1024


class CapturedPacket(NamedTuple):
    """One packet record of a capture file (a hot-path record: a NamedTuple).

    ``number`` is the 1-based index of the packet in the file (over all
    pcapng sections), ``ts_ns`` the capture time in nanoseconds since the Unix
    epoch, ``linktype`` the LINKTYPE_* value of the interface it was captured
    on, ``data`` the captured bytes (possibly cut at the snap length) and
    ``orig_len`` the length of the packet on the wire.
    """

    number: int
    ts_ns: int
    linktype: int
    data: bytes
    orig_len: int


# Building the NamedTuple through tuple.__new__ skips the generated Python-level
# __new__ and halves the construction cost (~120 ns instead of ~240 ns).
_new_tuple: Final = tuple.__new__

_PCAP_MAGICS: Final[dict[bytes, tuple[str, int]]] = {
    # first four bytes -> (struct byte order, nanoseconds per fraction unit)
    b"\xd4\xc3\xb2\xa1": ("<", 1000),  # microseconds, little-endian
    b"\xa1\xb2\xc3\xd4": (">", 1000),  # microseconds, big-endian
    b"\x4d\x3c\xb2\xa1": ("<", 1),  # nanoseconds, little-endian
    b"\xa1\xb2\x3c\x4d": (">", 1),  # nanoseconds, big-endian
}
_PCAPNG_SHB: Final = 0x0A0D0D0A  # the same in both byte orders on purpose
_PCAPNG_SHB_BYTES: Final = b"\x0a\x0d\x0d\x0a"
_PCAPNG_LE_MAGIC: Final = b"\x4d\x3c\x2b\x1a"  # 0x1A2B3C4D written little-endian
_PCAPNG_BE_MAGIC: Final = b"\x1a\x2b\x3c\x4d"

_BT_IDB: Final = 0x00000001
_BT_PB: Final = 0x00000002  # obsolete Packet Block
_BT_SPB: Final = 0x00000003
_BT_EPB: Final = 0x00000006

_OPT_ENDOFOPT: Final = 0
_OPT_IF_TSRESOL: Final = 9
_OPT_IF_TSOFFSET: Final = 14

_NS_PER_S: Final = 1_000_000_000


class _Structs(NamedTuple):
    """Precompiled layouts of one byte order (a pcapng section switches them)."""

    header: struct.Struct  # block type, block total length
    u32: struct.Struct
    shb: struct.Struct  # byte-order magic (skipped), major, minor
    idb: struct.Struct  # link type, reserved, snap length
    epb: struct.Struct  # interface id, ts high, ts low, captured len, original len
    pb: struct.Struct  # interface id, drops, ts high, ts low, captured len, original len
    option: struct.Struct  # option code, option length
    i64: struct.Struct
    pcap_header: struct.Struct  # version major, minor, thiszone, sigfigs, snaplen, network
    pcap_record: struct.Struct  # ts seconds, ts fraction, included len, original len


def _structs(order: str) -> _Structs:
    return _Structs(
        header=struct.Struct(order + "II"),
        u32=struct.Struct(order + "I"),
        shb=struct.Struct(order + "4xHH"),
        idb=struct.Struct(order + "HHI"),
        epb=struct.Struct(order + "IIIII"),
        pb=struct.Struct(order + "HHIIII"),
        option=struct.Struct(order + "HH"),
        i64=struct.Struct(order + "q"),
        pcap_header=struct.Struct(order + "4xHHiIII"),
        pcap_record=struct.Struct(order + "IIII"),
    )


_LE: Final = _structs("<")
_BE: Final = _structs(">")

# Per-interface conversion of a raw timestamp to nanoseconds:
# (link type, snap length, multiplier, divisor, offset in ns).
_Interface = tuple[int, int, int, int, int]


def _refill(
    read: Callable[[int], bytes], buf: bytes, pos: int, need: int, *, number: int, offset: int
) -> bytes:
    """Return ``buf[pos:]`` extended by reads until it holds ``need`` bytes or EOF.

    Called only on the slow path, when the current chunk runs out.
    """
    parts = [buf[pos:]]
    have = len(parts[0])
    want = max(need - have, READ_CHUNK)
    while have < need:
        try:
            chunk = read(min(want, _MAX_READ))
        except OSError as exc:
            raise CaptureError(f"read error: {exc}", packet_number=number, offset=offset) from exc
        if not chunk:
            break
        parts.append(chunk)
        have += len(chunk)
        want -= len(chunk)
    return b"".join(parts)


def _timestamp_scale(code: int) -> tuple[int, int]:
    """(multiplier, divisor) turning ``if_tsresol`` units into nanoseconds.

    pcapng ``if_tsresol``: the most significant bit tells the base, the rest
    the negative exponent: 0x06 means 10^-6 s, 0x94 means 2^-20 s.
    """
    exponent = code & 0x7F
    if code & 0x80:
        return _NS_PER_S, 1 << exponent
    if exponent <= 9:
        return 10 ** (9 - exponent), 1
    return 1, 10 ** (exponent - 9)


def _parse_idb(buf: bytes, pos: int, blen: int, s: _Structs) -> _Interface:
    """Link type, snap length and timestamp scale of an Interface Description Block.

    Options are read leniently (like Wireshark): a malformed option list only
    ends the parsing of the options, and an option of the wrong size is
    ignored; the block itself has already been validated by its lengths.
    """
    linktype, _reserved, snaplen = s.idb.unpack_from(buf, pos + 8)
    mul, div, offset_ns = 1000, 1, 0  # default resolution: microseconds
    p = pos + 16
    end = pos + blen - 4
    while p + 4 <= end:
        code, olen = s.option.unpack_from(buf, p)
        p += 4
        if code == _OPT_ENDOFOPT or p + olen > end:
            break
        if code == _OPT_IF_TSRESOL and olen == 1:
            mul, div = _timestamp_scale(buf[p])
        elif code == _OPT_IF_TSOFFSET and olen == 8:
            offset_ns = s.i64.unpack_from(buf, p)[0] * _NS_PER_S
        p += (olen + 3) & ~3  # option values are padded to 32 bits
    return linktype, snaplen, mul, div, offset_ns


class CaptureReader:
    """Iterate the packets of a pcap or pcapng capture read from a binary file object.

    Streaming: the file is read chunk by chunk, never whole. The iterator is
    single-use (iterating again continues where it stopped). Used as a context
    manager it closes the iteration and, when ``close=True`` (as
    :func:`open_capture` passes), the file object; the file is also closed
    when the iteration ends, normally or by a :class:`CaptureError`.

    Offsets in errors are counted from the position the file object was at
    when reading began (the start of the file for :func:`open_capture`).
    """

    __slots__ = ("_close", "_file", "_packets", "format")

    def __init__(self, fileobj: BinaryIO, *, close: bool = False) -> None:
        self._file = fileobj
        self._close = close
        #: ``"pcap"`` or ``"pcapng"`` once the first bytes were read, else None.
        self.format: str | None = None
        self._packets = self._generate()

    def __iter__(self) -> Iterator[CapturedPacket]:
        return self._packets

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the iteration and close the file if this reader owns it."""
        self._packets.close()
        if self._close:
            self._file.close()

    def _generate(self) -> Generator[CapturedPacket, None, None]:
        try:
            read = self._file.read
            buf = _refill(read, b"", 0, 4, number=1, offset=0)
            magic = buf[:4]
            if not buf:
                raise CaptureError("empty capture file", packet_number=1, offset=0)
            if len(buf) < 4:
                raise CaptureError("truncated file magic", packet_number=1, offset=0)
            if magic == _PCAPNG_SHB_BYTES:
                self.format = "pcapng"
                yield from _read_pcapng(read, buf)
                return
            pcap = _PCAP_MAGICS.get(magic)
            if pcap is None:
                raise CaptureError(
                    f"not a pcap or pcapng file (magic {magic.hex()})", packet_number=1, offset=0
                )
            self.format = "pcap"
            yield from _read_pcap(read, buf, _LE if pcap[0] == "<" else _BE, pcap[1])
        finally:
            if self._close:
                self._file.close()


def _read_pcap(
    read: Callable[[int], bytes], buf: bytes, s: _Structs, frac_ns: int
) -> Iterator[CapturedPacket]:
    """Packets of a classic pcap file; ``buf`` holds the start of the file."""
    if len(buf) < 24:
        buf = _refill(read, buf, 0, 24, number=1, offset=0)
        if len(buf) < 24:
            raise CaptureError("truncated pcap file header", packet_number=1, offset=0)
    network = s.pcap_header.unpack_from(buf, 0)[5]
    # The upper bits of the link type field carry FCS information (libpcap's
    # LT_LINKTYPE mask); the link type proper is in the low bits.
    linktype = network & 0x03FFFFFF
    unpack_record = s.pcap_record.unpack_from
    new = _new_tuple
    number = 1
    base = 0  # file offset of buf[0]
    pos = 24
    size = len(buf)
    while True:
        if size - pos < 16:
            buf = _refill(read, buf, pos, 16, number=number, offset=base + pos)
            base += pos
            pos = 0
            size = len(buf)
            if size == 0:
                return
            if size < 16:
                raise CaptureError(
                    "truncated pcap record header", packet_number=number, offset=base
                )
        sec, frac, incl_len, orig_len = unpack_record(buf, pos)
        if incl_len > MAX_BLOCK_BYTES:
            raise CaptureError(
                f"absurd captured length {incl_len}", packet_number=number, offset=base + pos
            )
        start = pos + 16
        end = start + incl_len
        if end > size:
            buf = _refill(read, buf, pos, 16 + incl_len, number=number, offset=base + pos)
            base += pos
            pos = 0
            start = 16
            end = start + incl_len
            size = len(buf)
            if end > size:
                raise CaptureError(
                    f"truncated packet data ({size - 16} of {incl_len} bytes)",
                    packet_number=number,
                    offset=base,
                )
        yield new(
            CapturedPacket,
            (number, sec * _NS_PER_S + frac * frac_ns, linktype, buf[start:end], orig_len),
        )
        number += 1
        pos = end


def _read_pcapng(read: Callable[[int], bytes], buf: bytes) -> Iterator[CapturedPacket]:
    """Packets of a pcapng file; ``buf`` starts with the first Section Header Block."""
    new = _new_tuple
    s = _LE
    unpack_header = s.header.unpack_from
    unpack_epb = s.epb.unpack_from
    unpack_u32 = s.u32.unpack_from
    interfaces: list[_Interface] = []
    last_ts = 0
    number = 1
    base = 0  # file offset of buf[0]
    pos = 0
    size = len(buf)
    while True:
        if size - pos < 12:
            buf = _refill(read, buf, pos, 12, number=number, offset=base + pos)
            base += pos
            pos = 0
            size = len(buf)
            if size == 0:
                return
            if size < 12:
                raise CaptureError("truncated block header", packet_number=number, offset=base)
        btype, blen = unpack_header(buf, pos)
        if btype == _PCAPNG_SHB:
            # A new section: its byte-order magic decides how everything up to
            # the next section is read, the length field included.
            order_magic = buf[pos + 8 : pos + 12]
            if order_magic == _PCAPNG_LE_MAGIC:
                s = _LE
            elif order_magic == _PCAPNG_BE_MAGIC:
                s = _BE
            else:
                raise CaptureError(
                    f"bad pcapng byte-order magic {order_magic.hex()}",
                    packet_number=number,
                    offset=base + pos,
                )
            unpack_header = s.header.unpack_from
            unpack_epb = s.epb.unpack_from
            unpack_u32 = s.u32.unpack_from
            blen = unpack_header(buf, pos)[1]
            interfaces = []  # interface ids are per section
        if blen < 12 or blen & 3 or blen > MAX_BLOCK_BYTES:
            raise CaptureError(
                f"bad block total length {blen}", packet_number=number, offset=base + pos
            )
        if size - pos < blen:
            buf = _refill(read, buf, pos, blen, number=number, offset=base + pos)
            base += pos
            pos = 0
            size = len(buf)
            if size < blen:
                raise CaptureError(
                    f"truncated block (type {btype:#x}, {size} of {blen} bytes)",
                    packet_number=number,
                    offset=base,
                )
        if unpack_u32(buf, pos + blen - 4)[0] != blen:
            raise CaptureError(
                "block length in trailer differs from block length in header",
                packet_number=number,
                offset=base + pos,
            )
        if btype in (_BT_EPB, _BT_PB):
            # The obsolete Packet Block differs from the Enhanced one only in
            # its header (a 16-bit interface id and a drops count).
            if blen < 32:
                raise CaptureError(
                    "enhanced packet block too short"
                    if btype == _BT_EPB
                    else "packet block too short",
                    packet_number=number,
                    offset=base + pos,
                )
            if btype == _BT_EPB:
                iface, ts_high, ts_low, cap_len, orig_len = unpack_epb(buf, pos + 8)
            else:
                iface, _drops, ts_high, ts_low, cap_len, orig_len = s.pb.unpack_from(buf, pos + 8)
            if cap_len > blen - 32:
                raise CaptureError(
                    f"captured length {cap_len} exceeds the block",
                    packet_number=number,
                    offset=base + pos,
                )
            if iface >= len(interfaces):
                raise CaptureError(
                    f"packet refers to unknown interface {iface}",
                    packet_number=number,
                    offset=base + pos,
                )
            linktype, _snaplen, mul, div, offset_ns = interfaces[iface]
            ts = (ts_high << 32 | ts_low) * mul
            last_ts = (ts if div == 1 else ts // div) + offset_ns
            yield new(
                CapturedPacket,
                (number, last_ts, linktype, buf[pos + 28 : pos + 28 + cap_len], orig_len),
            )
            number += 1
        elif btype == _BT_SPB:
            if blen < 16:
                raise CaptureError(
                    "simple packet block too short", packet_number=number, offset=base + pos
                )
            if not interfaces:
                raise CaptureError(
                    "simple packet block before any interface description",
                    packet_number=number,
                    offset=base + pos,
                )
            # An SPB belongs to the first interface and has no timestamp; it
            # gets the previous packet's so a replay clock never goes back.
            # Its captured length is the smallest of the original length, the
            # snap length and the room in the block.
            linktype, snaplen = interfaces[0][:2]
            orig_len = unpack_u32(buf, pos + 8)[0]
            cap_len = min(orig_len, blen - 16)
            if snaplen:
                cap_len = min(cap_len, snaplen)
            yield new(
                CapturedPacket,
                (number, last_ts, linktype, buf[pos + 12 : pos + 12 + cap_len], orig_len),
            )
            number += 1
        elif btype == _BT_IDB:
            if blen < 20:
                raise CaptureError(
                    "interface description block too short",
                    packet_number=number,
                    offset=base + pos,
                )
            interfaces.append(_parse_idb(buf, pos, blen, s))
        elif btype == _PCAPNG_SHB:
            if blen < 28:
                raise CaptureError(
                    "section header block too short", packet_number=number, offset=base + pos
                )
            major, minor = s.shb.unpack_from(buf, pos + 8)
            if major != 1:
                raise CaptureError(
                    f"unsupported pcapng version {major}.{minor}",
                    packet_number=number,
                    offset=base + pos,
                )
        # Any other block (name resolution, statistics, decryption secrets,
        # custom, systemd journal, future types) is skipped by its length.
        pos += blen


def iter_packets(fileobj: BinaryIO) -> Iterator[CapturedPacket]:
    """Yield the packets of the pcap or pcapng capture in ``fileobj``, streaming.

    The file object is left open. Raises :class:`CaptureError` on a truncated
    or corrupt file after yielding every packet before the damage.
    """
    return iter(CaptureReader(fileobj))


def open_capture(path: str | Path) -> CaptureReader:
    """Open the capture file at ``path`` for reading; the reader owns the file.

    ``with open_capture(path) as packets: for packet in packets: ...``. The
    file is closed when the iteration ends or the ``with`` block is left.
    Raises :class:`CaptureError` if the file cannot be opened.
    """
    try:
        fileobj = Path(path).open("rb")  # noqa: SIM115 - the reader owns and closes it
    except OSError as exc:
        raise CaptureError(f"cannot open capture {path}: {exc}") from exc
    return CaptureReader(fileobj, close=True)
