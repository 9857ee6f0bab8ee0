"""A traffic summary of the SIP messages in pcap/pcapng captures.

What ``sipwarden monitor --pcap`` prints until the detection engine lands:
per source, which requests and responses it sent, with which User-Agent,
how many of its messages were malformed and which rule each broke, first and
last seen. Captures are replayed with their own timestamps; a damaged
capture is reported with the packet number and the packets before the damage
are still counted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from sipwarden.config import Config
from sipwarden.errors import CaptureError, RemoteProtocolError
from sipwarden.net.packet import PacketDecoder, Segment
from sipwarden.net.pcap import open_capture
from sipwarden.sip.limits import ParserLimits
from sipwarden.sip.message import Message, Request, Response
from sipwarden.sip.parser import looks_like_sip, parse_message

__all__ = ["SourceStats", "TrafficSummary", "summarize_pcaps"]

# Bounds: a capture of a spoofed flood must not cost unbounded memory.
MAX_SOURCES = 100_000
MAX_DISTINCT_PER_SOURCE = 32  # methods, statuses, User-Agents, rules kept per source
TOP_SOURCES_SHOWN = 10


def _bump(counter: Counter[Any], key: object) -> None:
    if key in counter or len(counter) < MAX_DISTINCT_PER_SOURCE:
        counter[key] += 1
    else:
        counter["(other)"] += 1


@dataclass(slots=True)
class SourceStats:
    """What one transport source address sent."""

    address: str
    first_ns: int
    last_ns: int
    messages: int = 0
    malformed: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    responses: Counter[int] = field(default_factory=Counter)
    user_agents: Counter[str] = field(default_factory=Counter)
    broken_rules: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, object]:
        return {
            "type": "source",
            "source": self.address,
            "messages": self.messages,
            "malformed": self.malformed,
            "requests": dict(self.requests.most_common()),
            "responses": {str(code): n for code, n in self.responses.most_common()},
            "user_agents": dict(self.user_agents.most_common()),
            "broken_rules": dict(self.broken_rules.most_common()),
            "first_seen": _iso(self.first_ns),
            "last_seen": _iso(self.last_ns),
        }


@dataclass(slots=True)
class TrafficSummary:
    """Aggregates parsed messages per source; bounded to ``max_sources`` sources."""

    max_sources: int = MAX_SOURCES
    sources: dict[str, SourceStats] = field(default_factory=dict)
    messages: int = 0
    malformed: int = 0
    untracked_messages: int = 0
    tcp_segments: int = 0
    damaged_captures: list[str] = field(default_factory=list)

    def _source(self, address: str, ts_ns: int) -> SourceStats | None:
        stats = self.sources.get(address)
        if stats is None:
            if len(self.sources) >= self.max_sources:
                self.untracked_messages += 1
                return None
            stats = self.sources[address] = SourceStats(address, ts_ns, ts_ns)
        stats.first_ns = min(stats.first_ns, ts_ns)
        stats.last_ns = max(stats.last_ns, ts_ns)
        return stats

    def add_message(self, ts_ns: int, source: str, message: Message) -> None:
        self.messages += 1
        stats = self._source(source, ts_ns)
        if stats is None:
            return
        stats.messages += 1
        if isinstance(message, Request):
            _bump(stats.requests, message.method)
        elif isinstance(message, Response):
            _bump(stats.responses, message.status)
        agent = message.user_agent or message.server
        if agent:
            _bump(stats.user_agents, agent[:120])
        if message.defects:
            self.malformed += 1
            stats.malformed += 1
            for defect in message.defects:
                _bump(stats.broken_rules, defect.rule)

    def add_unparsable(self, ts_ns: int, source: str, error: RemoteProtocolError) -> None:
        self.messages += 1
        self.malformed += 1
        stats = self._source(source, ts_ns)
        if stats is None:
            return
        stats.messages += 1
        stats.malformed += 1
        _bump(stats.broken_rules, error.rule)

    def top_sources(self, count: int = TOP_SOURCES_SHOWN) -> list[SourceStats]:
        return sorted(self.sources.values(), key=lambda s: (-s.messages, s.address))[:count]


def _iso(ts_ns: int) -> str:
    moment = datetime.fromtimestamp(ts_ns / 1e9, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _is_sip(segment: Segment, ports: frozenset[int], sniff: bool) -> bool:
    if segment.sport in ports or segment.dport in ports:
        return True
    return sniff and looks_like_sip(segment.payload)


def analyse_segments(
    segments: Iterable[tuple[int, Segment]],
    summary: TrafficSummary,
    *,
    ports: frozenset[int],
    sniff_any_port: bool,
    limits: ParserLimits,
) -> None:
    """Parse the SIP datagrams among ``segments`` leniently and add them to ``summary``."""
    for ts_ns, segment in segments:
        if not segment.payload or not _is_sip(segment, ports, sniff_any_port):
            continue
        if segment.proto == "tcp":
            # Stream reassembly belongs to the monitor issue; counted, not parsed.
            summary.tcp_segments += 1
            continue
        if not segment.payload.strip(b"\r\n"):
            continue  # a CRLF keep-alive (RFC 5626 4.4.1), not a message
        try:
            message = parse_message(segment.payload, strict=False, limits=limits)
            message.collect_defects()
        except RemoteProtocolError as error:
            summary.add_unparsable(ts_ns, segment.src, error)
            continue
        summary.add_message(ts_ns, segment.src, message)


def _segments_of(path: str, summary: TrafficSummary) -> Iterable[tuple[int, Segment]]:
    decoder = PacketDecoder()
    try:
        with open_capture(path) as capture:
            for packet in capture:
                segment = decoder.decode(packet.linktype, packet.data, packet.ts_ns)
                if segment is not None:
                    yield packet.ts_ns, segment
    except CaptureError as error:
        summary.damaged_captures.append(f"{path}: {error}")


def summarize_pcaps(paths: Sequence[str], *, config: Config, json_lines: bool, out: TextIO) -> int:
    """Analyse the captures and print the summary; exit code 1 when a capture was damaged."""
    summary = TrafficSummary()
    ports = frozenset(config.sip.ports)
    for path in paths:
        analyse_segments(
            _segments_of(path, summary),
            summary,
            ports=ports,
            sniff_any_port=config.monitor.sniff_any_port,
            limits=config.parser.limits(),
        )
    if json_lines:
        _print_json(summary, out)
    else:
        _print_text(summary, paths, out)
    return 1 if summary.damaged_captures else 0


def _print_json(summary: TrafficSummary, out: TextIO) -> None:
    totals = {
        "type": "summary",
        "messages": summary.messages,
        "malformed": summary.malformed,
        "sources": len(summary.sources),
        "untracked_messages": summary.untracked_messages,
        "tcp_segments_not_parsed": summary.tcp_segments,
        "damaged_captures": summary.damaged_captures,
    }
    out.write(json.dumps(totals) + "\n")
    for stats in summary.top_sources(len(summary.sources)):
        out.write(json.dumps(stats.to_json(), ensure_ascii=True) + "\n")


def _print_text(summary: TrafficSummary, paths: Sequence[str], out: TextIO) -> None:
    out.write(
        f"{summary.messages} SIP messages from {len(summary.sources)} sources in "
        f"{len(paths)} capture(s); {summary.malformed} malformed\n"
    )
    for damage in summary.damaged_captures:
        out.write(f"damaged capture (analysed up to the damage): {damage}\n")
    if summary.tcp_segments:
        out.write(f"{summary.tcp_segments} SIP-over-TCP segments seen (not parsed yet)\n")
    for stats in summary.top_sources():
        requests = ", ".join(f"{m} x{n}" for m, n in stats.requests.most_common(6)) or "-"
        responses = ", ".join(f"{c} x{n}" for c, n in stats.responses.most_common(6)) or "-"
        agents = "; ".join(agent for agent, _ in stats.user_agents.most_common(2)) or "-"
        out.write(
            f"\n{stats.address}: {stats.messages} messages, {stats.malformed} malformed\n"
            f"  seen        {_iso(stats.first_ns)} .. {_iso(stats.last_ns)}\n"
            f"  requests    {requests}\n"
            f"  responses   {responses}\n"
            f"  user-agent  {agents}\n"
        )
        for rule, count in stats.broken_rules.most_common(3):
            out.write(f"  broke       {rule} x{count}\n")
