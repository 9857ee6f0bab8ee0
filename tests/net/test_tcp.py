"""Tests of TCP stream reassembly and SIP framing over it (``sipwarden.net.tcp``).

Segments are built by hand (``seg``) so every sequence number is visible in
the test; one test captures real SIP over TCP between two SIPp instances on
loopback and checks that every message is recovered.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwarden.errors import RemoteProtocolError
from sipwarden.net.packet import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, PacketDecoder, Segment
from sipwarden.net.pcap import open_capture
from sipwarden.net.tcp import (
    CLOSED,
    DATA,
    GAP,
    OPENED,
    FlowKey,
    SipStreamDemux,
    SipStreamItem,
    StreamChunk,
    TcpReassembler,
)
from sipwarden.sip.message import Message, Request, Response
from sipwarden.sip.parser import KeepAlive

# --- builders ---------------------------------------------------------------

CLIENT = ("192.0.2.1", 40000)
SERVER = ("192.0.2.2", 5060)
FWD = FlowKey(CLIENT[0], CLIENT[1], SERVER[0], SERVER[1])
REV = FWD.reverse()
MS = 1_000_000
SEC = 1_000_000_000


def seg(
    seq: int,
    payload: bytes = b"",
    flags: int = TCP_ACK | TCP_PSH,
    *,
    src: tuple[str, int] = CLIENT,
    dst: tuple[str, int] = SERVER,
) -> Segment:
    return Segment(src[0], dst[0], src[1], dst[1], "tcp", payload, seq & 0xFFFFFFFF, flags)


def rseg(seq: int, payload: bytes = b"", flags: int = TCP_ACK | TCP_PSH) -> Segment:
    """A segment from the server to the client."""
    return seg(seq, payload, flags, src=SERVER, dst=CLIENT)


def feed(
    reassembler: TcpReassembler, segments: list[Segment], *, ts: int = 0, step: int = MS
) -> list[StreamChunk]:
    chunks: list[StreamChunk] = []
    for index, segment in enumerate(segments):
        chunks += reassembler.add(ts + index * step, segment)
    return chunks


def stream(chunks: list[StreamChunk], flow: FlowKey = FWD) -> bytes:
    return b"".join(chunk.data for chunk in chunks if chunk.flow == flow and chunk.kind == DATA)


def kinds(chunks: list[StreamChunk], flow: FlowKey = FWD) -> list[str]:
    return [chunk.kind for chunk in chunks if chunk.flow == flow]


def sip_request(method: str, cseq: int, body: bytes = b"") -> bytes:
    head = (
        f"{method} sip:100@192.0.2.2:5060;transport=tcp SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 192.0.2.1:40000;branch=z9hG4bK-{method.lower()}{cseq}\r\n"
        f"From: <sip:alice@192.0.2.1>;tag=a{cseq}\r\n"
        f"To: <sip:100@192.0.2.2>\r\n"
        f"Call-ID: call-{cseq}@192.0.2.1\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Max-Forwards: 70\r\n"
    )
    if body:
        head += "Content-Type: application/sdp\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def sip_response(code: int, reason: str, cseq: int, method: str) -> bytes:
    return (
        f"SIP/2.0 {code} {reason}\r\n"
        f"Via: SIP/2.0/TCP 192.0.2.1:40000;branch=z9hG4bK-{method.lower()}{cseq}\r\n"
        f"From: <sip:alice@192.0.2.1>;tag=a{cseq}\r\n"
        f"To: <sip:100@192.0.2.2>;tag=b{cseq}\r\n"
        f"Call-ID: call-{cseq}@192.0.2.1\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


SDP = (
    b"v=0\r\no=alice 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\n"
    b"t=0 0\r\nm=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
INVITE = sip_request("INVITE", 1, SDP)
OPTIONS = sip_request("OPTIONS", 2)
REGISTER = sip_request("REGISTER", 3)


def describe(event: Message | KeepAlive | RemoteProtocolError) -> str:
    """A short name for a demux event: the method, ``200/INVITE``, ``ping`` or the error rule."""
    if isinstance(event, Request):
        return event.method
    if isinstance(event, Response):
        cseq = event.cseq
        return f"{event.status}/{cseq.method if cseq else '?'}"
    if isinstance(event, KeepAlive):
        return event.kind
    assert isinstance(event, RemoteProtocolError)
    return f"error:{event.rule}"


def events(items: list[SipStreamItem], flow: FlowKey | None = FWD) -> list[str]:
    return [describe(item.event) for item in items if flow is None or item.flow == flow]


def run(segments: list[Segment], **limits: int) -> tuple[list[StreamChunk], list[SipStreamItem]]:
    """Reassemble and frame: the chunks and the demux items."""
    reassembler = TcpReassembler(**limits)
    demux = SipStreamDemux()
    chunks = feed(reassembler, segments)
    return chunks, demux.feed_all(chunks)


# --- in order, handshake ----------------------------------------------------

ISN = 1000
SERVER_ISN = 777_000


def handshake() -> list[Segment]:
    return [
        seg(ISN, flags=TCP_SYN),
        rseg(SERVER_ISN, flags=TCP_SYN | TCP_ACK),
        seg(ISN + 1, flags=TCP_ACK),
    ]


def test_in_order_stream_after_handshake() -> None:
    reassembler = TcpReassembler()
    segments = [*handshake(), seg(ISN + 1, b"hello "), seg(ISN + 7, b"world")]
    chunks = feed(reassembler, segments)
    assert kinds(chunks) == [OPENED, DATA, DATA]
    assert kinds(chunks, REV) == [OPENED]
    assert chunks[0] == StreamChunk(FWD, 0, OPENED, reason="syn")
    assert stream(chunks) == b"hello world"
    # Each data chunk carries the time of the segment that completed it.
    assert [c.ts_ns for c in chunks if c.kind == DATA] == [3 * MS, 4 * MS]
    assert reassembler.flows == 2
    assert reassembler.stats["segments"] == 5
    assert reassembler.stats["bytes"] == 11


def test_syn_consumes_one_sequence_number_and_may_carry_data() -> None:
    # TCP Fast Open (RFC 7413): data on the SYN starts at ISN + 1.
    chunks = feed(TcpReassembler(), [seg(ISN, b"abc", TCP_SYN), seg(ISN + 4, b"def")])
    assert stream(chunks) == b"abcdef"


def test_retransmitted_syn_is_ignored() -> None:
    reassembler = TcpReassembler()
    chunks = feed(
        reassembler, [seg(ISN, flags=TCP_SYN), seg(ISN, flags=TCP_SYN), seg(ISN + 1, b"x")]
    )
    assert kinds(chunks) == [OPENED, DATA]
    assert reassembler.stats["retransmitted"] == 1


def test_non_tcp_segment_is_refused() -> None:
    udp = Segment("192.0.2.1", "192.0.2.2", 5060, 5060, "udp", b"x")
    with pytest.raises(ValueError, match="TCP segments"):
        TcpReassembler().add(0, udp)


def test_pure_acks_of_unknown_flows_create_no_state() -> None:
    reassembler = TcpReassembler()
    assert reassembler.add(0, seg(5, flags=TCP_ACK)) == []
    assert reassembler.add(0, seg(5, flags=TCP_ACK | TCP_FIN)) == []
    assert reassembler.flows == 0
    assert reassembler.stats["untracked"] == 2


# --- out of order, duplicates, overlaps -------------------------------------


def test_out_of_order_segments_wait_for_the_hole() -> None:
    reassembler = TcpReassembler()
    base = [*handshake()]
    chunks = feed(
        reassembler,
        [*base, seg(ISN + 7, b"CCC"), seg(ISN + 4, b"BBB"), seg(ISN + 1, b"AAA")],
    )
    data = [c for c in chunks if c.flow == FWD and c.kind == DATA]
    # Nothing until the first bytes arrive, then all of it at once.
    assert [c.data for c in data] == [b"AAABBBCCC"]
    assert data[0].ts_ns == 5 * MS
    assert reassembler.stats["out_of_order"] == 2
    assert reassembler.buffered_bytes == 0


def test_duplicates_are_delivered_once() -> None:
    reassembler = TcpReassembler()
    chunks = feed(
        reassembler,
        [
            *handshake(),
            seg(ISN + 1, b"AAA"),
            seg(ISN + 1, b"AAA"),  # retransmission of delivered data
            seg(ISN + 7, b"CCC"),
            seg(ISN + 7, b"CCC"),  # duplicate of held data
            seg(ISN + 4, b"BBB"),
            seg(ISN + 4, b"BBB"),
        ],
    )
    assert stream(chunks) == b"AAABBBCCC"
    assert reassembler.stats["retransmitted"] == 3
    assert reassembler.stats["conflicts"] == 0


def test_partial_overlap_with_the_same_bytes_is_trimmed() -> None:
    text = b"0123456789abcdefghij"
    reassembler = TcpReassembler()
    chunks = feed(
        reassembler,
        [*handshake(), seg(ISN + 1, text[:10]), seg(ISN + 6, text[5:15]), seg(ISN + 16, text[15:])],
    )
    assert stream(chunks) == text
    assert reassembler.stats["overlaps"] == 1
    assert reassembler.stats["conflicts"] == 0


def test_conflicting_overlap_of_delivered_bytes_first_copy_wins() -> None:
    reassembler = TcpReassembler()
    chunks = feed(
        reassembler,
        [*handshake(), seg(ISN + 1, b"INVITE sip"), seg(ISN + 6, b"X:evil-tail")],
    )
    # Bytes 5-9 were already delivered as "E sip": the new copy is ignored there.
    assert stream(chunks) == b"INVITE sip" + b"l-tail"
    assert reassembler.stats["conflicts"] == 1
    assert reassembler.stats["overlaps"] == 1


def test_conflicting_retransmission_is_counted() -> None:
    # The in-order evasion: junk the host drops (bad checksum, low TTL) first,
    # the real bytes second. The monitor keeps the first and says so.
    reassembler = TcpReassembler()
    chunks = feed(reassembler, [*handshake(), seg(ISN + 1, b"REGISTER"), seg(ISN + 1, b"INVITE!!")])
    assert stream(chunks) == b"REGISTER"
    assert reassembler.stats["retransmitted"] == 1
    assert reassembler.stats["conflicts"] == 1


def test_conflicting_overlap_of_held_bytes_first_copy_wins() -> None:
    reassembler = TcpReassembler()
    chunks = feed(
        reassembler,
        [
            *handshake(),
            seg(ISN + 11, b"KLMNO"),  # held: offsets 10-14
            seg(ISN + 6, b"fghijXYZ"),  # offsets 5-12: 10-12 conflict with "KLM"
            seg(ISN + 1, b"abcde"),
        ],
    )
    assert stream(chunks) == b"abcdefghijKLMNO"
    assert reassembler.stats["conflicts"] == 1


def test_segment_covering_several_held_pieces_fills_only_the_holes() -> None:
    reassembler = TcpReassembler()
    chunks = feed(
        reassembler,
        [
            *handshake(),
            seg(ISN + 3, b"c"),
            seg(ISN + 6, b"fg"),
            seg(ISN + 10, b"j"),
            seg(ISN + 2, b"bcdefghijkl"),  # spans all three held pieces
            seg(ISN + 1, b"a"),
        ],
    )
    assert stream(chunks) == b"abcdefghijkl"
    assert reassembler.stats["conflicts"] == 0
    assert reassembler.buffered_bytes == 0


# --- sequence number wrap-around ---------------------------------------------


def test_sequence_numbers_wrap_at_2_32() -> None:
    isn = 2**32 - 4  # the first data byte is at 2**32 - 3
    reassembler = TcpReassembler()
    chunks = feed(
        reassembler,
        [
            seg(isn, flags=TCP_SYN),
            seg(isn + 1, b"abcdef"),  # crosses the wrap
            seg(isn + 11, b"klm"),  # after the wrap, out of order
            seg(isn + 7, b"ghij"),
            seg(isn + 7, b"ghij"),  # retransmission across the wrap
        ],
    )
    assert stream(chunks) == b"abcdefghijklm"
    assert reassembler.stats["retransmitted"] == 1
    assert reassembler.stats["gaps"] == 0


def test_syn_at_the_last_sequence_number_wraps() -> None:
    chunks = feed(TcpReassembler(), [seg(2**32 - 1, flags=TCP_SYN), seg(0, b"data")])
    assert stream(chunks) == b"data"


# --- a stream picked up mid-connection --------------------------------------


def test_stream_without_syn_starts_at_first_data() -> None:
    reassembler = TcpReassembler()
    chunks = feed(
        reassembler,
        [seg(50_000, b"middle "), seg(49_990, b"0123456789"), seg(50_007, b"end")],
    )
    assert chunks[0] == StreamChunk(FWD, 0, OPENED, reason="midstream")
    # The earlier segment came too late: the stream starts where it was picked up.
    assert stream(chunks) == b"middle end"
    assert reassembler.stats["retransmitted"] == 1


# --- FIN and RST ---------------------------------------------------------------


def test_fin_closes_the_direction_after_its_data() -> None:
    reassembler = TcpReassembler()
    chunks = feed(
        reassembler,
        [*handshake(), seg(ISN + 1, b"bye", TCP_ACK | TCP_FIN), rseg(SERVER_ISN + 1, b"ok")],
    )
    assert kinds(chunks) == [OPENED, DATA, CLOSED]
    assert chunks[-2].reason == "fin"
    assert kinds(chunks, REV) == [OPENED, DATA]  # half-close: the other way stays open


def test_fin_out_of_order_waits_for_the_data_before_it() -> None:
    reassembler = TcpReassembler()
    chunks = feed(
        reassembler,
        [*handshake(), seg(ISN + 4, b"def", TCP_ACK | TCP_FIN), seg(ISN + 1, b"abc")],
    )
    assert kinds(chunks) == [OPENED, DATA, CLOSED]
    assert stream(chunks) == b"abcdef"


def test_nothing_after_fin_is_delivered_and_late_retransmissions_are_dropped() -> None:
    reassembler = TcpReassembler()
    chunks = feed(
        reassembler,
        [
            *handshake(),
            seg(ISN + 1, b"abc"),
            seg(ISN + 7, b"ZZZ"),  # held, but lies after the FIN
            seg(ISN + 4, b"def", TCP_ACK | TCP_FIN),
            seg(ISN + 4, b"def", TCP_ACK | TCP_FIN),  # FIN retransmitted after close
            seg(ISN + 1, b"abc"),
        ],
    )
    assert stream(chunks) == b"abcdef"
    assert kinds(chunks).count(CLOSED) == 1
    assert reassembler.stats["after_close"] == 2
    assert reassembler.buffered_bytes == 0


def test_fin_without_data_closes_a_handshake_only_direction() -> None:
    chunks = feed(TcpReassembler(), [*handshake(), seg(ISN + 1, flags=TCP_ACK | TCP_FIN)])
    assert kinds(chunks) == [OPENED, CLOSED]


def test_rst_mid_stream_closes_both_directions() -> None:
    reassembler = TcpReassembler()
    chunks = feed(
        reassembler,
        [
            *handshake(),
            seg(ISN + 1, b"abc"),
            rseg(SERVER_ISN + 1, b"xyz"),
            seg(ISN + 4, flags=TCP_RST),
            seg(ISN + 4, b"late"),  # in flight when the RST was sent
            rseg(SERVER_ISN + 4, b"late"),
        ],
    )
    assert kinds(chunks) == [OPENED, DATA, CLOSED]
    assert kinds(chunks, REV) == [OPENED, DATA, CLOSED]
    assert {c.reason for c in chunks if c.kind == CLOSED} == {"rst"}
    assert reassembler.stats["after_close"] == 2


def test_rst_flushes_held_data_after_a_gap() -> None:
    chunks = feed(
        TcpReassembler(),
        [*handshake(), seg(ISN + 1, b"abc"), seg(ISN + 10, b"held"), seg(ISN + 4, flags=TCP_RST)],
    )
    assert kinds(chunks) == [OPENED, DATA, GAP, DATA, CLOSED]
    gap = next(c for c in chunks if c.kind == GAP)
    assert (gap.lost, gap.reason) == (6, "closing")


def test_rst_outside_the_window_is_ignored() -> None:
    reassembler = TcpReassembler()
    chunks = feed(
        reassembler,
        [*handshake(), seg(ISN + 1, b"abc"), seg(ISN + 2**30, flags=TCP_RST), seg(ISN + 4, b"def")],
    )
    assert kinds(chunks) == [OPENED, DATA, DATA]
    assert reassembler.stats["bad_rst"] == 1


def test_rst_answering_a_syn_closes_the_attempt() -> None:
    chunks = feed(TcpReassembler(), [seg(ISN, flags=TCP_SYN), rseg(0, flags=TCP_RST | TCP_ACK)])
    assert kinds(chunks) == [OPENED, CLOSED]


def test_new_syn_on_the_same_ports_starts_a_new_stream() -> None:
    reassembler = TcpReassembler()
    chunks = feed(
        reassembler,
        [
            *handshake(),
            seg(ISN + 1, b"first"),
            seg(90_000, flags=TCP_SYN),
            seg(90_001, b"second"),
        ],
    )
    assert kinds(chunks) == [OPENED, DATA, CLOSED, OPENED, DATA]
    assert next(c for c in chunks if c.kind == CLOSED).reason == "reopened"
    assert stream(chunks) == b"firstsecond"


# --- keep-alives and zero-window probes --------------------------------------


def test_keepalive_byte_at_seq_minus_one_is_not_data_nor_a_conflict() -> None:
    reassembler = TcpReassembler()
    chunks = feed(
        reassembler,
        [
            *handshake(),
            seg(ISN + 1, b"REGISTER"),
            seg(ISN + 8, b"\x00"),  # keep-alive: a garbage byte at SND.NXT-1
            seg(ISN + 8, flags=TCP_ACK),  # a zero-length keep-alive
            seg(ISN + 9, b" more"),
        ],
    )
    assert stream(chunks) == b"REGISTER more"
    assert reassembler.stats["keepalives"] == 1
    assert reassembler.stats["conflicts"] == 0


def test_zero_window_probe_byte_is_delivered_once() -> None:
    reassembler = TcpReassembler()
    chunks = feed(
        reassembler,
        [
            *handshake(),
            seg(ISN + 1, b"abc"),
            seg(ISN + 4, b"d"),  # zero-window probe: the next real byte
            seg(ISN + 4, b"d"),  # probed again
            seg(ISN + 4, b"defgh"),  # window opened: sent again with what follows
        ],
    )
    assert stream(chunks) == b"abcdefgh"
    assert reassembler.stats["conflicts"] == 0


# --- gaps ------------------------------------------------------------------------


def test_hole_timeout_delivers_a_gap_then_the_held_data() -> None:
    reassembler = TcpReassembler(hole_timeout_ns=2 * SEC)
    chunks = feed(reassembler, [*handshake(), seg(ISN + 1, b"abc"), seg(ISN + 10, b"jkl")])
    assert stream(chunks) == b"abc"
    # The next segment of the flow, after the timeout, resolves the hole.
    later = reassembler.add(3 * SEC, seg(ISN + 13, b"mno"))
    assert [(c.kind, c.lost, c.reason) for c in later] == [
        (GAP, 6, "hole-timeout"),
        (DATA, 0, ""),
        (DATA, 0, ""),
    ]
    assert stream(later) == b"jklmno"
    assert reassembler.stats["gaps"] == 1
    assert reassembler.stats["lost_bytes"] == 6
    # The missing bytes arriving now are too late.
    assert reassembler.add(3 * SEC, seg(ISN + 4, b"defghi")) == []


def test_hole_timeout_by_expire_with_passed_in_time() -> None:
    reassembler = TcpReassembler(hole_timeout_ns=2 * SEC)
    feed(reassembler, [*handshake(), seg(ISN + 1, b"abc"), seg(ISN + 10, b"jkl")])
    assert reassembler.expire(1 * SEC) == []
    expired = reassembler.expire(2 * SEC + 5 * MS)
    assert [c.kind for c in expired] == [GAP, DATA]
    assert expired[0].ts_ns == 2 * SEC + 5 * MS
    assert reassembler.buffered_bytes == 0


def test_progress_restarts_the_hole_timer() -> None:
    reassembler = TcpReassembler(hole_timeout_ns=2 * SEC)
    feed(reassembler, [*handshake(), seg(ISN + 4, b"d"), seg(ISN + 8, b"h")])
    assert [c.data for c in reassembler.add(SEC, seg(ISN + 1, b"abc"))] == [b"abcd"]
    assert reassembler.expire(2 * SEC + 100 * MS) == []  # "h" waits a full timeout again
    assert [c.kind for c in reassembler.expire(3 * SEC + 1)] == [GAP, DATA]


def test_per_flow_byte_bound_forces_a_gap() -> None:
    reassembler = TcpReassembler(max_buffered_bytes_per_flow=100)
    segments = [*handshake()] + [seg(ISN + 11 + 40 * i, b"x" * 40) for i in range(4)]
    chunks = feed(reassembler, segments)
    gaps = [c for c in chunks if c.kind == GAP]
    assert [(g.lost, g.reason) for g in gaps] == [(10, "flow-bytes")]
    assert stream(chunks) == b"x" * 160
    assert reassembler.buffered_bytes == 0


def test_per_flow_segment_bound_forces_a_gap() -> None:
    reassembler = TcpReassembler(max_held_segments=3)
    # Every other byte: four held pieces with holes between them.
    chunks = feed(reassembler, [*handshake()] + [seg(ISN + 3 + 2 * i, b"x") for i in range(4)])
    assert [(c.reason, c.lost) for c in chunks if c.kind == GAP] == [("flow-segments", 2)]
    assert reassembler.stats["gaps"] == 1


def test_total_byte_bound_resolves_the_oldest_hole_first() -> None:
    reassembler = TcpReassembler(max_buffered_bytes_per_flow=100, max_total_bytes=150)
    other = ("192.0.2.3", 40001)
    chunks = feed(
        reassembler,
        [
            seg(ISN, flags=TCP_SYN),
            seg(5000, flags=TCP_SYN, src=other),
            seg(ISN + 5, b"a" * 80),  # the oldest hole
            seg(5005, b"b" * 80, src=other),  # total 160 > 150
        ],
    )
    gaps = [c for c in chunks if c.kind == GAP]
    assert [(g.flow, g.reason, g.lost) for g in gaps] == [(FWD, "total-bytes", 4)]
    assert stream(chunks) == b"a" * 80
    assert reassembler.buffered_bytes == 80


def test_out_of_window_data_is_dropped_then_resynchronised() -> None:
    reassembler = TcpReassembler(max_window=1000, hole_timeout_ns=SEC)
    chunks = feed(reassembler, [*handshake(), seg(ISN + 1, b"abc")])
    far = ISN + 1_000_000
    # A blind injection far away does not move the stream.
    assert reassembler.add(10 * MS, seg(far, b"INJECTED")) == []
    assert reassembler.add(20 * MS, seg(ISN + 4, b"def")) != []
    # Only far-away data for a whole hole timeout: the capture lost track.
    assert reassembler.add(30 * MS, seg(far, b"first")) == []
    later = reassembler.add(SEC + 30 * MS, seg(far + 5, b"second"))
    assert [(c.kind, c.reason, c.data) for c in later] == [
        (GAP, "resync", b""),
        (DATA, "", b"second"),
    ]
    assert later[0].lost == far + 5 - (ISN + 7)
    chunks = reassembler.add(SEC + 40 * MS, seg(far + 11, b"third"))
    assert stream(chunks) == b"third"
    assert reassembler.stats["out_of_window"] == 3


# --- timeouts and bounds -------------------------------------------------------------


def test_idle_flows_expire_with_passed_in_time() -> None:
    reassembler = TcpReassembler(idle_timeout_ns=60 * SEC, linger_timeout_ns=5 * SEC)
    feed(reassembler, [*handshake(), seg(ISN + 1, b"data")])
    assert reassembler.flows == 2
    # The server direction never sent data: it goes after the linger timeout.
    expired = reassembler.expire(5 * SEC + 3 * MS)
    assert [(c.flow, c.kind, c.reason) for c in expired] == [(REV, CLOSED, "idle")]
    assert reassembler.expire(60 * SEC) == []
    expired = reassembler.expire(60 * SEC + 3 * MS)
    assert [(c.flow, c.kind, c.reason) for c in expired] == [(FWD, CLOSED, "idle")]
    assert reassembler.flows == 0
    assert reassembler.stats["expired"] == 2


def test_closed_direction_lingers_then_goes_quietly() -> None:
    reassembler = TcpReassembler(linger_timeout_ns=5 * SEC)
    chunks = feed(reassembler, [seg(1, b"data", TCP_ACK | TCP_FIN)])
    assert kinds(chunks) == [OPENED, DATA, CLOSED]
    assert reassembler.flows == 1
    # A late retransmission is recognised, not picked up as a new stream.
    assert reassembler.add(SEC, seg(1, b"data")) == []
    assert reassembler.expire(5 * SEC + 1) == []
    assert reassembler.flows == 0


def test_add_sweeps_timeouts_as_capture_time_passes() -> None:
    reassembler = TcpReassembler(idle_timeout_ns=10 * SEC)
    feed(reassembler, [seg(1, b"old stream")])
    other = seg(9, b"x", src=("192.0.2.9", 1))
    chunks = reassembler.add(11 * SEC, other)
    assert [(c.flow, c.kind) for c in chunks][:1] == [(FWD, CLOSED)]


def test_close_all_flushes_and_closes_everything() -> None:
    reassembler = TcpReassembler()
    feed(reassembler, [*handshake(), seg(ISN + 5, b"held")])
    chunks = reassembler.close_all(SEC)
    assert [(c.flow, c.kind) for c in chunks] == [
        (FWD, GAP),
        (FWD, DATA),
        (FWD, CLOSED),
        (REV, CLOSED),
    ]
    assert reassembler.flows == 0
    assert reassembler.buffered_bytes == 0


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="positive"):
        TcpReassembler(max_flows=0)
    with pytest.raises(ValueError, match="max_total_bytes"):
        TcpReassembler(max_buffered_bytes_per_flow=10, max_total_bytes=5)
    with pytest.raises(ValueError, match="2\\*\\*31"):
        TcpReassembler(max_window=2**31)
    with pytest.raises(ValueError, match="positive"):
        SipStreamDemux(max_flows=0)


def test_eviction_prefers_flows_without_data() -> None:
    reassembler = TcpReassembler(max_flows=3)
    live = feed(reassembler, [seg(1, b"live stream ")])
    assert kinds(live) == [OPENED, DATA]
    chunks: list[StreamChunk] = []
    for port in range(1000, 1010):  # a small SYN flood
        chunks += reassembler.add(MS, seg(port, flags=TCP_SYN, src=("198.51.100.7", port)))
    assert reassembler.flows == 3
    assert FWD not in {c.flow for c in chunks}  # the live stream was never evicted
    assert stream(reassembler.add(2 * MS, seg(13, b"continues"))) == b"continues"
    assert reassembler.stats["evicted"] == 8
    # Every opened direction is closed exactly once.
    opened = Counter(c.flow for c in chunks if c.kind == OPENED)
    closed = Counter(c.flow for c in chunks if c.kind == CLOSED)
    assert set(closed) <= set(opened)
    assert all(count == 1 for count in closed.values())


def test_eviction_falls_back_to_the_least_recently_active_live_flow() -> None:
    reassembler = TcpReassembler(max_flows=2)
    a, b, c = (("198.51.100.1", p) for p in (1, 2, 3))
    feed(reassembler, [seg(10, b"a", src=a), seg(10, b"b", src=b), seg(11, b"a", src=a)])
    chunks = reassembler.add(SEC, seg(10, b"c", src=c))
    evicted = [x for x in chunks if x.kind == CLOSED]
    assert [(x.flow.src, x.flow.sport, x.reason) for x in evicted] == [(b[0], b[1], "evicted")]


def test_syn_flood_of_spoofed_sources_costs_fixed_memory() -> None:
    max_flows = 10_000
    reassembler = TcpReassembler(max_flows=max_flows)
    demux = SipStreamDemux(max_flows=max_flows)
    # A live SIP stream the flood must not push out.
    demux.feed_all(feed(reassembler, [*handshake(), seg(ISN + 1, OPTIONS[:40])]))
    # Addresses are built before measuring: the flood's packets are not ours to count.
    sources = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(200_000)]
    tracemalloc.start()
    try:
        measured: list[int] = []
        for index, source in enumerate(sources):
            segment = Segment(
                source, SERVER[0], 1024 + index % 50_000, 5060, "tcp", b"", index, TCP_SYN
            )
            for chunk in reassembler.add(SEC + index, segment):
                demux.feed(chunk)
            if index + 1 in (50_000, 200_000):
                measured.append(tracemalloc.get_traced_memory()[0])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reassembler.flows <= max_flows
    assert demux.flows <= max_flows
    # Full at 50k flows already: 150k more spoofed SYNs cost (next to) nothing.
    assert measured[1] - measured[0] < 256 * 1024
    # And the whole table stays within ~1 KiB per tracked direction.
    assert peak < max_flows * 1024
    assert reassembler.stats["evicted"] >= 200_000 - max_flows
    # The live stream survived: its message completes.
    items = demux.feed_all(reassembler.add(2 * SEC, seg(ISN + 41, OPTIONS[40:])))
    assert events(items) == ["OPTIONS"]


# --- property: any order, any duplication, each byte once --------------------


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(min_size=1, max_size=300),
    isn=st.integers(0, 2**32 - 1),
    cuts=st.lists(st.integers(0, 300), max_size=20),
    extra=st.lists(st.tuples(st.integers(0, 300), st.integers(1, 40)), max_size=10),
    seed=st.integers(0, 2**32),
    with_syn=st.booleans(),
)
def test_any_arrival_order_reconstructs_the_stream(
    data: bytes,
    isn: int,
    cuts: list[int],
    extra: list[tuple[int, int]],
    seed: int,
    with_syn: bool,
) -> None:
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    pieces = [(a, data[a:b]) for a, b in itertools.pairwise(bounds)]
    # Retransmissions and overlapping re-segmentations of the same bytes.
    pieces += [(a, data[a : a + n]) for a, n in extra if a < len(data)]
    rng = random.Random(seed)
    first = pieces[0]
    rest = pieces[1:]
    rng.shuffle(rest)
    # Without a SYN the stream starts at the first segment seen: make it the start.
    order = [first, *rest] if not with_syn else rng.sample(pieces, len(pieces))
    reassembler = TcpReassembler()
    segments = [seg(isn, flags=TCP_SYN)] if with_syn else []
    first_seq = isn + 1 if with_syn else isn
    segments += [seg(first_seq + a, piece) for a, piece in order]
    chunks = feed(reassembler, segments)
    assert stream(chunks) == data
    assert reassembler.stats["conflicts"] == 0
    assert reassembler.stats["gaps"] == 0
    assert reassembler.buffered_bytes == 0


# --- SIP framing over streams -------------------------------------------------------


def test_demux_frames_messages_of_both_directions() -> None:
    trying = sip_response(100, "Trying", 1, "INVITE")
    ok = sip_response(200, "OK", 1, "INVITE")
    _, items = run(
        [
            *handshake(),
            seg(ISN + 1, INVITE),
            rseg(SERVER_ISN + 1, trying + ok),
            seg(ISN + 1 + len(INVITE), b"\r\n\r\n"),
        ]
    )
    assert events(items) == ["INVITE", "ping"]
    assert events(items, REV) == ["100/INVITE", "200/INVITE"]
    message = items[0].event
    assert isinstance(message, Request)
    assert message.body == SDP


PIPELINED = INVITE + OPTIONS


@pytest.mark.parametrize("split", range(1, len(PIPELINED)))
def test_two_pipelined_messages_split_anywhere(split: int) -> None:
    first, second = PIPELINED[:split], PIPELINED[split:]
    in_order = [*handshake(), seg(ISN + 1, first), seg(ISN + 1 + split, second)]
    reverse = [*handshake(), seg(ISN + 1 + split, second), seg(ISN + 1, first)]
    for segments in (in_order, reverse):
        _, items = run(segments)
        assert events(items) == ["INVITE", "OPTIONS"]


def test_pipelined_messages_whole_and_byte_by_byte() -> None:
    data = INVITE + b"\r\n" + OPTIONS + REGISTER
    whole = [*handshake(), seg(ISN + 1, data)]
    bytewise = [*handshake()] + [seg(ISN + 1 + i, data[i : i + 1]) for i in range(len(data))]
    backwards = [*handshake()] + [
        seg(ISN + 1 + i, data[i : i + 1]) for i in reversed(range(len(data)))
    ]
    for segments in (whole, bytewise, backwards):
        _, items = run(segments, max_held_segments=len(data))
        assert events(items) == ["INVITE", "pong", "OPTIONS", "REGISTER"]


def test_gap_is_reported_and_the_stream_resynchronises() -> None:
    data = INVITE + OPTIONS + REGISTER
    lost_from = len(INVITE) + 10  # inside OPTIONS
    lost_to = len(INVITE) + 40
    reassembler = TcpReassembler(hole_timeout_ns=SEC)
    demux = SipStreamDemux()
    items = demux.feed_all(
        feed(
            reassembler,
            [*handshake(), seg(ISN + 1, data[:lost_from]), seg(ISN + 1 + lost_to, data[lost_to:])],
        )
    )
    assert events(items) == ["INVITE"]
    items = demux.feed_all(reassembler.expire(2 * SEC))
    assert events(items) == ["error:tcp-stream-gap", "REGISTER"]
    # The demux keeps going: the next message on the stream parses normally.
    items = demux.feed_all(reassembler.add(3 * SEC, seg(ISN + 1 + len(data), OPTIONS)))
    assert events(items) == ["OPTIONS"]


def test_gap_landing_on_a_message_start_loses_nothing_after_it() -> None:
    data = INVITE + OPTIONS
    reassembler = TcpReassembler(hole_timeout_ns=SEC)
    demux = SipStreamDemux()
    demux.feed_all(feed(reassembler, [*handshake(), seg(ISN + 1 + len(INVITE), OPTIONS)]))
    items = demux.feed_all(reassembler.expire(2 * SEC))
    assert events(items) == ["error:tcp-stream-gap", "OPTIONS"]
    del data


def test_gap_cutting_a_request_line_does_not_invent_a_method() -> None:
    data = INVITE + OPTIONS
    reassembler = TcpReassembler(hole_timeout_ns=SEC)
    demux = SipStreamDemux()
    # "INV" is lost: what follows starts "ITE sip:... SIP/2.0", which is no message.
    demux.feed_all(feed(reassembler, [*handshake(), seg(ISN + 4, data[3:])]))
    items = demux.feed_all(reassembler.expire(2 * SEC))
    assert events(items) == ["error:tcp-stream-gap", "OPTIONS"]


def test_extension_method_after_a_crlf_resynchronises() -> None:
    publish = sip_request("X-CUSTOM", 9)
    _, items = run([*handshake(), seg(ISN + 1, b"HELLO\r\n\r\n" + publish)])
    assert events(items) == ["error:RFC 3261 7.1 start-line", "X-CUSTOM"]


def test_framing_error_resynchronises_on_the_next_start_line() -> None:
    garbage = b"HELLO\r\n\r\n"  # neither a request line nor a status line
    _, items = run([*handshake(), seg(ISN + 1, garbage + OPTIONS + REGISTER)])
    assert events(items) == ["error:RFC 3261 7.1 start-line", "OPTIONS", "REGISTER"]


def test_oversized_content_length_resynchronises() -> None:
    huge = OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 999999")
    _, items = run([*handshake(), seg(ISN + 1, huge + INVITE)])
    assert events(items) == ["error:max_message_size", "INVITE"]


def test_framing_error_split_across_segments() -> None:
    data = b"HELLO\r\n\r\n" + OPTIONS
    segments = [*handshake()] + [seg(ISN + 1 + i, data[i : i + 1]) for i in range(len(data))]
    _, items = run(segments)
    assert events(items) == ["error:RFC 3261 7.1 start-line", "OPTIONS"]


def test_malformed_first_message_of_a_syn_stream_is_reported_not_skipped() -> None:
    # Lenient parsing records defects; the message is still attributed.
    bad = b"INVITE  sip:100@192.0.2.2 SIP/2.0\r\nContent-Length: 0\r\n\r\n"
    _, items = run([*handshake(), seg(ISN + 1, bad)])
    assert events(items) == ["INVITE"]
    message = items[0].event
    assert isinstance(message, Message)
    assert message.defects


def test_stream_picked_up_mid_message_skips_to_the_next_start_line() -> None:
    data = INVITE + OPTIONS
    chunks, items = run([seg(50_000, data[100:])])
    assert chunks[0].reason == "midstream"
    assert events(items) == ["OPTIONS"]


def test_midstream_start_line_split_across_segments() -> None:
    data = b"tail of a body\r\n" + OPTIONS
    cut = len(b"tail of a body\r\n") + 5  # inside "OPTIONS sip:..."
    _, items = run([seg(50_000, data[:cut]), seg(50_000 + cut, data[cut:])])
    assert events(items) == ["OPTIONS"]


def test_stream_closed_inside_a_message_is_reported() -> None:
    _, items = run([*handshake(), seg(ISN + 1, OPTIONS[:30], TCP_ACK | TCP_FIN)])
    assert events(items) == ["error:tcp-stream-closed"]


def test_stream_closed_after_keepalive_crlf_is_quiet() -> None:
    # A lone CRLF could still have become a ping; the end of the stream is no error.
    _, items = run([*handshake(), seg(ISN + 1, OPTIONS + b"\r\n", TCP_ACK | TCP_FIN)])
    assert events(items) == ["OPTIONS"]


PIECES = [INVITE, OPTIONS, REGISTER, b"\r\n", b"\r\n\r\n", b"HELLO\r\n\r\n", b"SIP/2.0 "]


@settings(max_examples=150, deadline=None)
@given(
    parts=st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=40)), max_size=10),
    cuts=st.lists(st.integers(0, 2000), max_size=12),
    lose=st.lists(st.integers(0, 12), max_size=3),
    seed=st.integers(0, 2**32),
)
def test_demux_never_raises_and_ends_empty(
    parts: list[bytes], cuts: list[int], lose: list[int], seed: int
) -> None:
    data = b"".join(parts)
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    pieces = [(a, data[a:b]) for a, b in itertools.pairwise(bounds)]
    pieces = [piece for index, piece in enumerate(pieces) if index not in lose or index == 0]
    rest = pieces[1:]
    random.Random(seed).shuffle(rest)
    pieces = pieces[:1] + rest
    reassembler = TcpReassembler(hole_timeout_ns=SEC)
    demux = SipStreamDemux()
    segments = [*handshake()] + [seg(ISN + 1 + a, piece) for a, piece in pieces]
    items = demux.feed_all(feed(reassembler, segments))
    items += demux.feed_all(reassembler.expire(10 * SEC))
    items += demux.feed_all(reassembler.close_all(20 * SEC))
    for item in items:
        assert isinstance(item.event, Message | KeepAlive | RemoteProtocolError)
    if not lose and b"HELLO" not in data and data.startswith(INVITE):
        assert events(items)[0] == "INVITE"
    assert demux.flows == 0
    assert demux.buffered_bytes == 0
    assert reassembler.flows == 0


def test_demux_bounds_bytes_over_all_directions() -> None:
    reassembler = TcpReassembler()
    demux = SipStreamDemux(max_total_bytes=100)
    first = ("198.51.100.1", 1)
    second = ("198.51.100.2", 2)
    items = demux.feed_all(feed(reassembler, [seg(1, OPTIONS[:70], src=first)]))
    assert items == []
    items = demux.feed_all(feed(reassembler, [seg(1, REGISTER[:70], src=second)]))
    # The direction buffering longest is reset; the newer one keeps its bytes.
    assert events(items, None) == ["error:max_total_bytes"]
    assert items[0].flow.src == first[0]
    assert demux.buffered_bytes == 70


def test_demux_forgets_directions_when_they_close() -> None:
    reassembler = TcpReassembler()
    demux = SipStreamDemux()
    demux.feed_all(feed(reassembler, [*handshake(), seg(ISN + 1, OPTIONS[:10])]))
    assert demux.flows == 1
    demux.feed_all(reassembler.close_all(SEC))
    assert demux.flows == 0
    assert demux.buffered_bytes == 0


# --- real traffic: SIPp over TCP on loopback, captured by dumpcap ----------------

UAS_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="UAS answering with 100, 180, 200 (no trailing pause)">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[

      SIP/2.0 100 Trying
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

  ]]></send>
  <send><![CDATA[

      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

  ]]></send>
  <send><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

  ]]></send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  <send><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

  ]]></send>
</scenario>
"""


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is missing: apt-get install {package}")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def listening(port: int) -> bool:
    """Whether a TCP socket listens on ``port`` (Linux /proc, no connection made)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def wait_for(condition: str, check: object, timeout: float) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {condition}")
        time.sleep(0.05)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Every process a test starts; whatever still runs at teardown is killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_sipp_calls_over_tcp_are_recovered_from_a_capture(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    sipp = need("sipp", "sip-tester")
    dumpcap = shutil.which("dumpcap") or need("tshark", "tshark")
    port = free_port()
    uac_port = free_port()
    capture = tmp_path / "sip-tcp.pcapng"
    scenario = tmp_path / "uas.xml"
    scenario.write_text(UAS_SCENARIO)
    # dumpcap alone, or tshark capturing without dissecting: both take -i -f -w.
    capture_command = [dumpcap, "-i", "lo", "-f", f"tcp port {port}", "-w", str(capture)]
    if not dumpcap.endswith("dumpcap"):
        capture_command.insert(1, "-Q")
    capture_log = tmp_path / "capture.log"
    with capture_log.open("wb") as log:
        capturer = subprocess.Popen(capture_command, stdout=log, stderr=log, cwd=tmp_path)
    processes.append(capturer)
    wait_for(
        "the capture to start",
        lambda: b"Capturing on" in capture_log.read_bytes() or capturer.poll() is not None,
        15,
    )
    assert capturer.poll() is None, capture_log.read_text()
    common = [
        "-t",
        "t1",
        "-i",
        "127.0.0.1",
        "-m",
        "5",
        "-nostdin",
        "-timeout",
        "30s",
        "-timeout_error",
    ]
    uas = subprocess.Popen(
        [sipp, "-sf", str(scenario), "-p", str(port), *common],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    processes.append(uas)
    wait_for("the SIPp UAS to listen", lambda: listening(port) or uas.poll() is not None, 15)
    uac = subprocess.run(
        [sipp, "-sn", "uac", "-p", str(uac_port), "-d", "10", *common, f"127.0.0.1:{port}"],
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert uac.returncode == 0, uac.stdout.decode(errors="replace")[-2000:]
    assert uas.wait(timeout=30) == 0
    time.sleep(0.3)  # the last ACKs and FINs reach the capture
    capturer.send_signal(signal.SIGINT)
    capturer.wait(timeout=15)
    assert capture.exists(), capture_log.read_text()

    reassembler = TcpReassembler()
    demux = SipStreamDemux()
    decoder = PacketDecoder()
    items: list[SipStreamItem] = []
    with open_capture(capture) as packets:
        for packet in packets:
            segment = decoder.decode(packet.linktype, packet.data, packet.ts_ns)
            if segment is not None and segment.proto == "tcp":
                items += demux.feed_all(reassembler.add(packet.ts_ns, segment))
    items += demux.feed_all(reassembler.close_all(0))

    found = Counter(describe(item.event) for item in items)
    assert found == {
        "INVITE": 5,
        "100/INVITE": 5,
        "180/INVITE": 5,
        "200/INVITE": 5,
        "ACK": 5,
        "BYE": 5,
        "200/BYE": 5,
    }
    assert reassembler.stats["gaps"] == 0
    assert reassembler.stats["conflicts"] == 0
    # Requests travel client to server, responses back.
    for item in items:
        assert (item.flow.dport == port) == isinstance(item.event, Request)

    tshark = shutil.which("tshark")
    if tshark is not None:
        assert found == tshark_sip_counts(tshark, capture, port)


def tshark_sip_counts(tshark: str, capture: Path, port: int) -> Counter[str]:
    """The same counts as tshark's SIP dissector sees them in the capture."""
    result = subprocess.run(
        [
            tshark,
            "-n",
            "-r",
            str(capture),
            "-d",
            f"tcp.port=={port},sip",
            "-Y",
            "sip",
            "-T",
            "fields",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=|",
            "-e",
            "sip.Method",
            "-e",
            "sip.Status-Code",
            "-e",
            "sip.CSeq.method",
        ],
        capture_output=True,
        timeout=60,
        check=True,
        env={**os.environ, "LC_ALL": "C"},
    )
    counts: Counter[str] = Counter()
    for line in result.stdout.decode().splitlines():
        methods, codes, cseq_methods = (
            field.split("|") if field else [] for field in line.split("\t")
        )
        # One direction per frame: either requests only or responses only.
        counts.update(methods)
        if not methods:
            counts.update(
                f"{code}/{method}" for code, method in zip(codes, cseq_methods, strict=True)
            )
    return counts
