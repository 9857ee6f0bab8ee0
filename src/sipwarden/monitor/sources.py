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
from sipwarden.errors import RemoteProtocolError
from sipwarden.net.packet import PacketDecoder, Segment
from sipwarden.net.pcap import open_capture
from sipwarden.sip.limits import DEFAULT_LIMITS, ParserLimits
from sipwarden.sip.parser import looks_like_sip, parse_message

__all__ = ["SourceOptions", "observation_of_datagram", "observations_from_pcap"]


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
    if not payload.strip(b"\r\n"):
        return None  # a keep-alive (RFC 5626 4.4.1), not a message
    try:
        message = parse_message(payload, strict=options.strict, limits=options.limits)
        if not options.strict:
            message.collect_defects()
    except RemoteProtocolError as error:
        return Observation(
            ts, segment.src, segment.sport, segment.dst, segment.dport,
            transport, direction, payload, None, error,
        )  # fmt: skip
    return Observation(
        ts, segment.src, segment.sport, segment.dst, segment.dport,
        transport, direction, payload, message, None,
    )  # fmt: skip


def observations_from_pcap(
    path: str | Path, options: SourceOptions | None = None
) -> Iterator[Observation]:
    """Every SIP-over-UDP message in a capture, in capture order, as observations.

    A damaged capture raises :class:`~sipwarden.errors.CaptureError` after
    everything before the damage was yielded.
    """
    options = options or SourceOptions()
    decoder = PacketDecoder()
    with open_capture(path) as capture:
        for packet in capture:
            segment = decoder.decode(packet.linktype, packet.data, packet.ts_ns)
            if segment is None or segment.proto != "udp" or not segment.payload:
                continue
            if not options.is_sip(segment):
                continue
            observation = observation_of_datagram(packet.ts_ns / 1e9, segment, options)
            if observation is not None:
                yield observation
