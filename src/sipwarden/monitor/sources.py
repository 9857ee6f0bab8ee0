"""Turn capture sources into engine Observations (the monitor's edge).

pcap/pcapng files are replayed with their own timestamps; SIP is recognised
on the configured ports, and on any port when sniffing is on. UDP datagrams
become one observation each; TCP streams are reassembled and framed first.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sipwarden.engine.contract import Direction, Observation
from sipwarden.engine.state import BoundedTable
from sipwarden.errors import RemoteProtocolError
from sipwarden.net.packet import PacketDecoder, Segment
from sipwarden.net.pcap import CapturedPacket, open_capture
from sipwarden.net.tcp import FlowKey, SipStreamDemux, StreamChunk, TcpReassembler
from sipwarden.sip.limits import DEFAULT_LIMITS, ParserLimits
from sipwarden.sip.message import Message
from sipwarden.sip.parser import KeepAlive, looks_like_sip, parse_message

__all__ = [
    "CaptureObserver",
    "SourceOptions",
    "observation_of_datagram",
    "observations_from_pcap",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceOptions:
    """Which traffic is SIP, and how strictly to parse it."""

    ports: frozenset[int] = frozenset({5060, 5061})
    sniff_any_port: bool = True
    limits: ParserLimits = DEFAULT_LIMITS
    strict: bool = False  # the monitor recovers what it can and records defects

    def is_sip(self, segment: Segment) -> bool:
        if segment.sport in self.ports or segment.dport in self.ports:
            return True
        return self.sniff_any_port and looks_like_sip(segment.payload)


def observation_of_datagram(
    ts: float,
    segment: Segment,
    options: SourceOptions,
    *,
    transport: str = "udp",
    direction: Direction = Direction.UNKNOWN,
) -> Observation | None:
    """Parse one datagram into an observation; ``None`` for a CRLF keep-alive."""
    payload = segment.payload
    # A keep-alive (RFC 5626 4.4.1) is CRLF CRLF; checking the length first
    # spares stripping (copying) every real message.
    if len(payload) <= 16 and not payload.strip(b"\r\n"):
        return None
    try:
        # The full grammar check (collect_defects) is the malformed detector's
        # to run, so that [detect.malformed] full_check = false really saves it.
        message = parse_message(payload, strict=options.strict, limits=options.limits)
    except RemoteProtocolError as error:
        return Observation(
            ts, segment.src, segment.sport, segment.dst, segment.dport,
            transport, direction, payload, None, error,
        )  # fmt: skip
    return Observation(
        ts, segment.src, segment.sport, segment.dst, segment.dport,
        transport, direction, payload, message, None,
    )  # fmt: skip


class CaptureObserver:
    """Turns captured packets into observations: UDP datagrams, and TCP streams reassembled.

    One per capture source; all its state (fragments, TCP flows, stream
    parsers, the set of flows recognised as SIP) is bounded.
    """

    def __init__(self, options: SourceOptions) -> None:
        self.options = options
        self._decoder = PacketDecoder()
        self._tcp = TcpReassembler()
        self._streams = SipStreamDemux(limits=options.limits)
        # TCP flows recognised as SIP by their first payload on a port not
        # configured as SIP (bounded like every other table).
        self._sniffed: BoundedTable[tuple[str, int, str, int], bool] = BoundedTable(
            max_entries=65536, ttl=3600.0
        )

    def observe(self, packet: CapturedPacket) -> list[Observation]:
        segment = self._decoder.decode(packet.linktype, packet.data, packet.ts_ns)
        if segment is None:
            return []
        if segment.proto == "udp":
            if not segment.payload or not self.options.is_sip(segment):
                return []
            observation = observation_of_datagram(packet.ts_ns / 1e9, segment, self.options)
            return [] if observation is None else [observation]
        if not self._is_sip_flow(segment, packet.ts_ns / 1e9):
            return []
        return self._stream_observations(self._tcp.add(packet.ts_ns, segment))

    def finish(self, now_ns: int) -> list[Observation]:
        """Flush what the TCP reassembler still holds (end of the capture)."""
        return self._stream_observations(self._tcp.close_all(now_ns))

    def _is_sip_flow(self, segment: Segment, now: float) -> bool:
        # Mid-stream segments of a sniffed flow do not look like SIP, so a flow
        # recognised once (by its first payload) is remembered both ways.
        key = (segment.src, segment.sport, segment.dst, segment.dport)
        if key in self._sniffed:
            return True
        if not self.options.is_sip(segment):
            return False
        if segment.sport not in self.options.ports and segment.dport not in self.options.ports:
            self._sniffed.put(key, True, now)
            self._sniffed.put((segment.dst, segment.dport, segment.src, segment.sport), True, now)
        return True

    def _stream_observations(self, chunks: list[StreamChunk]) -> list[Observation]:
        out: list[Observation] = []
        for flow, ts_ns, event in self._streams.feed_all(chunks):
            if isinstance(event, KeepAlive):
                continue
            if isinstance(event, RemoteProtocolError):
                out.append(_tcp_observation(ts_ns, flow, b"", None, event))
                continue
            out.append(_tcp_observation(ts_ns, flow, event.to_bytes(), event, None))
        return out


def _tcp_observation(
    ts_ns: int,
    flow: FlowKey,
    raw: bytes,
    message: Message | None,
    error: RemoteProtocolError | None,
) -> Observation:
    return Observation(
        ts_ns / 1e9, flow.src, flow.sport, flow.dst, flow.dport,
        "tcp", Direction.UNKNOWN, raw, message, error,
    )  # fmt: skip


def observations_from_pcap(
    path: str | Path, options: SourceOptions | None = None
) -> Iterator[Observation]:
    """Every SIP message in a capture (UDP, and TCP reassembled), in capture order.

    A damaged capture raises :class:`~sipwarden.errors.CaptureError` after
    everything before the damage was yielded.
    """
    observer = CaptureObserver(options or SourceOptions())
    last_ns = 0
    with open_capture(path) as capture:
        for packet in capture:
            last_ns = packet.ts_ns
            yield from observer.observe(packet)
    yield from observer.finish(last_ns)
