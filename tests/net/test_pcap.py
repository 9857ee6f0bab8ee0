"""Tests of the pcap/pcapng reader (``sipwarden.net.pcap``).

Captures are built here with ``struct`` so every field is visible in the
test; the real captures in ``../shared/testdata/captures`` are read too and
cross-checked against tshark.
"""

from __future__ import annotations

import io
import itertools
import shutil
import struct
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipwarden.errors import CaptureError
from sipwarden.net import pcap
from sipwarden.net.packet import decode
from sipwarden.net.pcap import (
    MAX_BLOCK_BYTES,
    CapturedPacket,
    CaptureReader,
    iter_packets,
    open_capture,
)

CAPTURES = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "captures"

# --- builders ---------------------------------------------------------------

FRAME_A = bytes(range(60))
FRAME_B = b"\xff" * 7  # odd length: exercises pcapng padding
FRAME_C = b"sip" * 100


def pcap_file(
    records: list[tuple[int, int, bytes]],
    *,
    order: str = "<",
    nanos: bool = False,
    network: int = 1,
) -> bytes:
    """A classic pcap file; records are (seconds, fraction, data)."""
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, network)
    for sec, frac, data in records:
        out += struct.pack(order + "IIII", sec, frac, len(data), len(data) + 4) + data
    return out


def block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    total = len(body) + 12
    return struct.pack(order + "II", btype, total) + body + struct.pack(order + "I", total)


def option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


END_OF_OPTIONS = b"\0\0\0\0"


def shb(order: str = "<", *, major: int = 1) -> bytes:
    body = struct.pack(order + "IHHq", 0x1A2B3C4D, major, 0, -1)
    body += option(order, 4, b"sipwarden tests") + END_OF_OPTIONS  # shb_userappl
    return block(order, 0x0A0D0D0A, body)


def idb(
    order: str,
    linktype: int,
    *,
    snaplen: int = 0,
    tsresol: int | None = None,
    tsoffset: int | None = None,
) -> bytes:
    body = struct.pack(order + "HHI", linktype, 0, snaplen)
    body += option(order, 2, b"eth0")  # if_name, before the interesting ones
    if tsresol is not None:
        body += option(order, 9, bytes([tsresol]))
    if tsoffset is not None:
        body += option(order, 14, struct.pack(order + "q", tsoffset))
    return block(order, 1, body + END_OF_OPTIONS)


def epb(
    order: str, iface: int, ts: int, data: bytes, *, orig_len: int | None = None, opts: bytes = b""
) -> bytes:
    head = struct.pack(
        order + "IIIII",
        iface,
        ts >> 32,
        ts & 0xFFFFFFFF,
        len(data),
        len(data) if orig_len is None else orig_len,
    )
    padded = data + b"\0" * (-len(data) % 4)
    return block(order, 6, head + padded + opts)


def spb(order: str, data: bytes, *, orig_len: int | None = None) -> bytes:
    return block(
        order, 3, struct.pack(order + "I", len(data) if orig_len is None else orig_len) + data
    )


def packet_block(order: str, iface: int, ts: int, data: bytes) -> bytes:
    head = struct.pack(order + "HHIIII", iface, 0, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data))
    return block(order, 2, head + data)


def read_all(data: bytes) -> list[CapturedPacket]:
    return list(iter_packets(io.BytesIO(data)))


def read_until_error(data: bytes) -> tuple[list[CapturedPacket], CaptureError]:
    got: list[CapturedPacket] = []
    with pytest.raises(CaptureError) as info:
        got.extend(iter_packets(io.BytesIO(data)))
    return got, info.value


# --- pcap -------------------------------------------------------------------

THREE_RECORDS = [
    (1_700_000_000, 123_456, FRAME_A),
    (1_700_000_001, 0, FRAME_B),
    (5, 999_999, FRAME_C),
]


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nanos", [False, True])
def test_pcap_byte_orders_and_resolutions(order: str, nanos: bool) -> None:
    packets = read_all(pcap_file(THREE_RECORDS, order=order, nanos=nanos))
    scale = 1 if nanos else 1000
    assert packets == [
        CapturedPacket(1, 1_700_000_000 * 10**9 + 123_456 * scale, 1, FRAME_A, 64),
        CapturedPacket(2, 1_700_000_001 * 10**9, 1, FRAME_B, 11),
        CapturedPacket(3, 5 * 10**9 + 999_999 * scale, 1, FRAME_C, 304),
    ]


def test_pcap_reader_reports_format_and_link_type_without_fcs_bits() -> None:
    # The top bits of the link type field say "FCS present"; the type is 113.
    reader = CaptureReader(io.BytesIO(pcap_file(THREE_RECORDS, network=0x1000_0000 | 113)))
    formats = [reader.format]
    packets = list(reader)
    formats.append(reader.format)
    assert formats == [None, "pcap"]  # known once the first bytes were read
    assert {p.linktype for p in packets} == {113}


def test_pcap_header_only_has_no_packets() -> None:
    assert read_all(pcap_file([])) == []


def test_pcap_truncated_in_packet_data() -> None:
    data = pcap_file(THREE_RECORDS)
    third = 24 + 16 + len(FRAME_A) + 16 + len(FRAME_B)
    got, err = read_until_error(data[: third + 16 + 10])
    assert [p.number for p in got] == [1, 2]
    assert (err.packet_number, err.offset) == (3, third)
    assert "truncated packet data" in str(err)
    assert "packet 3" in str(err)
    assert f"file offset {third}" in str(err)


def test_pcap_truncated_in_record_header() -> None:
    data = pcap_file(THREE_RECORDS)
    second = 24 + 16 + len(FRAME_A)
    got, err = read_until_error(data[: second + 5])
    assert [p.number for p in got] == [1]
    assert (err.packet_number, err.offset) == (2, second)


def test_pcap_truncated_file_header() -> None:
    got, err = read_until_error(pcap_file([])[:20])
    assert got == []
    assert (err.packet_number, err.offset) == (1, 0)


def test_pcap_absurd_length() -> None:
    data = pcap_file(THREE_RECORDS[:1])
    data += struct.pack("<IIII", 0, 0, MAX_BLOCK_BYTES + 1, 100)
    got, err = read_until_error(data)
    assert len(got) == 1
    assert (err.packet_number, err.offset) == (2, 24 + 16 + len(FRAME_A))
    assert "absurd" in str(err)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\xd4\xc3", "truncated file magic"),
        (b"GIF89a" + b"\0" * 100, "not a pcap or pcapng file (magic 47494638)"),
    ],
)
def test_not_a_capture(data: bytes, message: str) -> None:
    got, err = read_until_error(data)
    assert got == []
    assert message in str(err)
    assert (err.packet_number, err.offset) == (1, 0)


# --- pcapng -----------------------------------------------------------------


def two_interface_capture(order: str = "<") -> bytes:
    return b"".join(
        [
            shb(order),
            idb(order, 1),  # Ethernet, default resolution (microseconds)
            idb(order, 113, tsresol=9, snaplen=4),  # Linux SLL, nanoseconds
            block(order, 4, b"\x00\x00\x00\x00"),  # name resolution block: skipped
            epb(order, 0, 1_700_000_000_123_456, FRAME_A),
            epb(order, 1, 1_700_000_000_123_456_789, FRAME_B, orig_len=1500),
            block(order, 0x40000BAD, b"PENx custom block"),  # unknown/custom: skipped
            spb(order, b"abcdefgh", orig_len=8),  # first interface; snaplen 0 = none
            block(order, 5, b"\x00" * 20),  # interface statistics: skipped
            epb(order, 0, 1_700_000_001_000_000, FRAME_C, opts=option(order, 1, b"\0\0\0\1")),
        ]
    )


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_two_interfaces_spb_and_unknown_blocks(order: str) -> None:
    reader = CaptureReader(io.BytesIO(two_interface_capture(order)))
    assert list(reader) == [
        CapturedPacket(1, 1_700_000_000_123_456_000, 1, FRAME_A, 60),
        CapturedPacket(2, 1_700_000_000_123_456_789, 113, FRAME_B, 1500),
        # No timestamp in an SPB: it inherits the previous packet's.
        CapturedPacket(3, 1_700_000_000_123_456_789, 1, b"abcdefgh", 8),
        CapturedPacket(4, 1_700_000_001_000_000_000, 1, FRAME_C, 300),
    ]
    assert reader.format == "pcapng"


def test_pcapng_spb_cut_to_snaplen_and_block() -> None:
    data = b"".join(
        [
            shb(),
            idb("<", 101, snaplen=5),
            spb("<", b"0123456789", orig_len=1000),
            idb("<", 1),  # a second interface does not change SPB's owner
            spb("<", b"abc", orig_len=3),
        ]
    )
    assert [(p.data, p.orig_len, p.linktype) for p in read_all(data)] == [
        (b"01234", 1000, 101),
        (b"abc", 3, 101),
    ]


@pytest.mark.parametrize(
    ("tsresol", "raw", "expected_ns"),
    [
        (6, 1_500_000, 1_500_000_000),  # 10^-6 written out
        (3, 1_500, 1_500_000_000),  # milliseconds
        (0, 2, 2_000_000_000),  # seconds
        (12, 1_500_000_000_999, 1_500_000_000),  # picoseconds: floor to ns
        (0x80 | 10, 1536, 1_500_000_000),  # 2^-10 s units
        (0x80 | 0, 3, 3_000_000_000),  # 2^0 s units
    ],
)
def test_pcapng_if_tsresol(tsresol: int, raw: int, expected_ns: int) -> None:
    data = shb() + idb("<", 1, tsresol=tsresol) + epb("<", 0, raw, FRAME_B)
    assert read_all(data)[0].ts_ns == expected_ns


def test_pcapng_if_tsoffset_and_bad_size_option_ignored() -> None:
    bad_resol = option("<", 9, b"\x09\x09")  # if_tsresol must be one byte: ignored
    body = struct.pack("<HHI", 1, 0, 0) + bad_resol + option("<", 14, struct.pack("<q", 100))
    data = shb() + block("<", 1, body + END_OF_OPTIONS) + epb("<", 0, 5, FRAME_B)
    assert read_all(data)[0].ts_ns == 100 * 10**9 + 5_000


def test_pcapng_option_list_overrunning_the_block_is_tolerated() -> None:
    # Like Wireshark, bad options end option parsing but keep the interface.
    body = struct.pack("<HHI", 1, 0, 0) + struct.pack("<HH", 9, 200) + b"\x09\0\0\0"
    data = shb() + block("<", 1, body) + epb("<", 0, 7, FRAME_B)
    assert read_all(data)[0].ts_ns == 7_000


def test_pcapng_two_sections_with_different_byte_order_and_interfaces() -> None:
    data = b"".join(
        [
            shb("<"),
            idb("<", 1),
            epb("<", 0, 1, FRAME_A),
            shb(">"),  # interface ids restart in a new section
            idb(">", 228, tsresol=9),
            epb(">", 0, 2, FRAME_B),
            packet_block(">", 0, 3, FRAME_C),  # obsolete Packet Block
        ]
    )
    packets = read_all(data)
    assert [(p.number, p.ts_ns, p.linktype, p.data) for p in packets] == [
        (1, 1_000, 1, FRAME_A),
        (2, 2, 228, FRAME_B),
        (3, 3, 228, FRAME_C),
    ]


def test_pcapng_new_section_forgets_old_interfaces() -> None:
    first = shb() + idb("<", 1) + idb("<", 1) + epb("<", 1, 1, FRAME_A)
    data = first + shb() + idb("<", 1) + epb("<", 1, 1, FRAME_B)
    got, err = read_until_error(data)
    assert [p.data for p in got] == [FRAME_A]
    assert (err.packet_number, err.offset) == (2, len(first) + len(shb()) + len(idb("<", 1)))
    assert "unknown interface 1" in str(err)


def corrupt_cases() -> list[tuple[str, bytes, bytes, str]]:
    """(name, good prefix, damaged tail, message) for pcapng damage after two packets."""
    good = shb() + idb("<", 1) + epb("<", 0, 1, FRAME_A) + epb("<", 0, 2, FRAME_B)
    third = epb("<", 0, 3, FRAME_C)
    mismatch = bytearray(third)
    mismatch[-4:] = struct.pack("<I", len(third) + 4)
    too_long_capture = bytearray(third)
    too_long_capture[20:24] = struct.pack("<I", len(FRAME_C) + 8)
    too_long_pb = bytearray(packet_block("<", 0, 3, FRAME_C))
    too_long_pb[20:24] = struct.pack("<I", len(FRAME_C) + 8)
    return [
        ("truncated block", good, third[:-10], "truncated block"),
        ("truncated block header", good, third[:6], "truncated block header"),
        ("trailer mismatch", good, bytes(mismatch), "trailer differs"),
        (
            "length not multiple of 4",
            good,
            struct.pack("<II", 6, 30) + b"\0" * 40,
            "total length 30",
        ),
        ("length below 12", good, struct.pack("<II", 6, 8) + b"\0" * 40, "total length 8"),
        (
            "absurd length",
            good,
            struct.pack("<II", 6, MAX_BLOCK_BYTES + 4) + b"\0" * 40,
            "total length",
        ),
        ("unknown interface", good, epb("<", 7, 3, FRAME_C), "unknown interface 7"),
        ("captured length exceeds block", good, bytes(too_long_capture), "exceeds the block"),
        ("short EPB", good, block("<", 6, b"\0" * 8), "enhanced packet block too short"),
        ("short IDB", good, block("<", 1, b"\0" * 4), "interface description block too short"),
        ("short SPB", good, block("<", 3, b""), "simple packet block too short"),
        ("short PB", good, block("<", 2, b"\0" * 8), "packet block too short"),
        ("PB unknown interface", good, packet_block("<", 1, 3, FRAME_C), "unknown interface 1"),
        ("PB captured length exceeds block", good, bytes(too_long_pb), "exceeds the block"),
        (
            "bad byte-order magic",
            good,
            block("<", 0x0A0D0D0A, b"\1\2\3\4" + b"\0" * 12),
            "byte-order",
        ),
        ("version 2", good, shb(major=2), "unsupported pcapng version 2.0"),
        (
            "short SHB",
            good,
            block("<", 0x0A0D0D0A, b"\x4d\x3c\x2b\x1a"),
            "section header block too short",
        ),
        ("SPB before IDB", good + shb(), spb("<", b"x"), "before any interface"),
    ]


@pytest.mark.parametrize(
    ("good", "tail", "message"),
    [case[1:] for case in corrupt_cases()],
    ids=[case[0] for case in corrupt_cases()],
)
def test_pcapng_damage_after_two_packets(good: bytes, tail: bytes, message: str) -> None:
    got, err = read_until_error(good + tail)
    assert [p.number for p in got] == [1, 2]
    assert [p.data for p in got] == [FRAME_A, FRAME_B]
    assert message in str(err)
    assert err.packet_number == 3
    assert err.offset == len(good)
    assert f"(packet 3, file offset {len(good)})" in str(err)


def test_pcapng_bad_first_section_magic() -> None:
    data = b"\x0a\x0d\x0d\x0a" + struct.pack("<I", 28) + b"XXXX" + b"\0" * 16
    got, err = read_until_error(data)
    assert got == []
    assert (err.packet_number, err.offset) == (1, 0)


# --- streaming --------------------------------------------------------------


class Trickle(io.RawIOBase):
    """A non-seekable stream that returns at most ``step`` bytes per read, like a pipe."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = data
        self._pos = 0
        self._step = step
        self.largest_request = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.largest_request = max(self.largest_request, size)
        size = self._step if size < 0 else min(size, self._step)
        chunk = self._data[self._pos : self._pos + size]
        self._pos += len(chunk)
        return chunk


@pytest.mark.parametrize("step", [1, 3, 64, 100_000])
@pytest.mark.parametrize("chunk", [1, 5, 37, 4096])
def test_chunk_boundaries_and_short_reads(
    monkeypatch: pytest.MonkeyPatch, step: int, chunk: int
) -> None:
    monkeypatch.setattr(pcap, "READ_CHUNK", chunk)
    for data in (two_interface_capture(), pcap_file(THREE_RECORDS * 3, nanos=True)):
        expected = read_all(data)
        stream = Trickle(data, step)
        assert list(iter_packets(stream)) == expected  # type: ignore[arg-type]
        assert stream.largest_request <= max(chunk, len(FRAME_C) + 64)


def test_reads_block_by_block_not_the_whole_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pcap, "READ_CHUNK", 256)
    data = pcap_file([(i, 0, FRAME_C) for i in range(200)])
    stream = Trickle(data, 10**9)
    packets = iter_packets(stream)  # type: ignore[arg-type]
    first = next(packets)
    assert first.number == 1
    assert stream.largest_request <= 16 + len(FRAME_C) + 256
    assert stream._pos < 1024  # only the first chunks were read
    assert sum(1 for _ in packets) == 199


def test_read_error_becomes_capture_error() -> None:
    class Failing(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            raise OSError(5, "Input/output error")

    with pytest.raises(CaptureError, match="read error") as info:
        list(iter_packets(Failing()))  # type: ignore[arg-type]
    assert isinstance(info.value.__cause__, OSError)


def test_reader_closes_owned_file_when_done_or_failed() -> None:
    done = io.BytesIO(pcap_file(THREE_RECORDS))
    assert len(list(CaptureReader(done, close=True))) == 3
    assert done.closed

    failed = io.BytesIO(pcap_file(THREE_RECORDS)[:-3])
    with pytest.raises(CaptureError):
        list(CaptureReader(failed, close=True))
    assert failed.closed

    borrowed = io.BytesIO(pcap_file(THREE_RECORDS))
    assert len(list(iter_packets(borrowed))) == 3
    assert not borrowed.closed


def test_context_manager_stops_early_and_closes(tmp_path: Path) -> None:
    path = tmp_path / "three.cap"  # any name: the format comes from the bytes
    path.write_bytes(two_interface_capture())
    with open_capture(path) as reader:
        first = next(iter(reader))
    assert first.number == 1
    assert list(reader) == []  # closed readers yield nothing more


def test_open_capture_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="cannot open capture"):
        open_capture(tmp_path / "nope.pcap")


# --- property tests ---------------------------------------------------------


def read_catching(data: bytes) -> list[CapturedPacket]:
    """Read everything; CaptureError is allowed, anything else fails the test."""
    got: list[CapturedPacket] = []
    error: CaptureError | None = None
    try:
        got.extend(iter_packets(io.BytesIO(data)))
    except CaptureError as exc:
        error = exc
    if error is not None:
        assert error.packet_number == len(got) + 1
        assert error.offset is not None
        assert 0 <= error.offset <= len(data)
    return got


PREFIXES = [b"", pcap_file([]), shb(), shb() + idb("<", 1), shb(">") + idb(">", 1, tsresol=0x85)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(PREFIXES), tail=st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_capture_error(prefix: bytes, tail: bytes) -> None:
    read_catching(prefix + tail)


VALID_FILES = [two_interface_capture("<"), two_interface_capture(">"), pcap_file(THREE_RECORDS)]


@settings(max_examples=300, deadline=None)
@given(
    base=st.sampled_from(VALID_FILES),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
    cut=st.integers(0, 10**6),
)
def test_mutated_files_raise_only_capture_error(
    base: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(base)
    for where, value in edits:
        data[where % len(data)] = value
    damaged = bytes(data[: cut % (len(data) + 1)])
    got = read_catching(damaged)
    if not edits:
        # Truncation only: whatever was read is a prefix of the good packets.
        assert got == read_all(base)[: len(got)]


# --- the shared real captures ----------------------------------------------

EXPECTED = {
    # file: (packets, first packet's timestamp in ns, as capinfos/tshark print it)
    "svmap.pcap": (2, 1_795_537_855_481_156_268),
    "svwar.pcap": (24, 1_795_537_883_553_605_848),
    "svcrack.pcap": (52, 1_795_537_922_503_753_999),
    "sipp-invite-flood.pcap": (261, 1_795_537_944_474_142_453),
}


def capture_path(name: str) -> Path:
    path = CAPTURES / name
    if not path.is_file():
        pytest.fail(
            f"shared capture missing: ../shared/testdata/captures/{name}"
            " (lay shared/ beside the repository)"
        )
    return path


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shared_captures(name: str) -> None:
    count, first_ts = EXPECTED[name]
    with open_capture(capture_path(name)) as reader:
        packets = list(reader)
    assert reader.format == "pcapng"  # despite the .pcap name
    assert len(packets) == count
    assert [p.number for p in packets] == list(range(1, count + 1))
    assert packets[0].ts_ns == first_ts
    assert all(p.linktype == 1 for p in packets)
    assert all(a.ts_ns <= b.ts_ns for a, b in itertools.pairwise(packets))
    for packet in packets:
        segment = decode(packet.linktype, packet.data)
        assert segment is not None, packet.number
        assert segment.proto == "udp"
        assert segment.src == segment.dst == "127.0.0.1"
        assert 15060 in (segment.sport, segment.dport)
        assert segment.payload.startswith(
            (b"SIP/2.0 ", b"OPTIONS ", b"REGISTER ", b"INVITE ", b"ACK ")
        )


def tshark_fields(path: Path) -> list[list[str]]:
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.fail(
            "tshark is missing: apt-get install tshark (or run scripts/install-system-deps)"
        )
    fields = [
        "frame.number",
        "frame.time_epoch",
        "frame.cap_len",
        "frame.len",
        "udp.srcport",
        "udp.dstport",
    ]
    command = [tshark, "-n", "-r", str(path), "-T", "fields"]
    for field in fields:
        command += ["-e", field]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    return [line.split("\t") for line in done.stdout.splitlines()]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shared_captures_agree_with_tshark(name: str) -> None:
    path = capture_path(name)
    rows = tshark_fields(path)
    with open_capture(path) as reader:
        packets = list(reader)
    assert len(packets) == len(rows)
    for packet, (number, epoch, cap_len, length, sport, dport) in zip(packets, rows, strict=True):
        segment = decode(packet.linktype, packet.data)
        assert segment is not None
        assert packet.number == int(number)
        assert packet.ts_ns == int(Decimal(epoch) * 10**9)
        assert (len(packet.data), packet.orig_len) == (int(cap_len), int(length))
        assert (segment.sport, segment.dport) == (int(sport), int(dport))
