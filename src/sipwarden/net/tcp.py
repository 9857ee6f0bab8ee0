"""TCP stream reassembly for the passive monitor, and SIP framing on top of it.

:class:`TcpReassembler` takes decoded TCP :class:`~sipwarden.net.packet.Segment`
records with their capture time and returns, per *direction* of each
connection (a :class:`FlowKey`), the in-order byte stream as
:class:`StreamChunk` records: ``opened``, ``data``, ``gap`` and ``closed``.
:class:`SipStreamDemux` runs one lenient
:class:`~sipwarden.sip.parser.StreamParser` per direction over those chunks and
returns the SIP messages, keep-alives and framing errors it finds, so SIP over
TCP reaches the same detection engine as SIP over UDP.

Time comes from the segments (``ts_ns``) and from :meth:`TcpReassembler.expire`;
no clock is read, so a capture replays at full speed and tests are deterministic.

TCP rules followed (a monitor sees what was sent, not what the host accepted):

* Sequence numbers are compared with serial-number arithmetic modulo 2**32
  (RFC 1982, RFC 9293 section 3.4); each direction keeps an unwrapped stream
  offset internally, so a stream may run through any number of wraps.
* SYN consumes one sequence number (RFC 9293 section 3.4); data on a SYN (TCP
  Fast Open, RFC 7413) starts after it. A direction first seen without its SYN
  (the capture started late, or the SYN was lost) starts at the first data
  segment seen; an earlier segment arriving after it counts as old.
* Each byte is delivered once. Retransmissions and partial overlaps are
  trimmed; the **first copy wins**, and an overlap whose bytes differ from the
  copy already seen is counted in ``stats["conflicts"]``: it is the classic
  IDS-evasion technique (Ptacek & Newsham 1998; RFC 9293 section 3.10.7.4 lets
  hosts keep either copy). Delivered bytes are compared against the last
  delivered chunk (at most its last ``history_bytes``: what a retransmission
  repeats); held (out-of-order) bytes in full.
* Out-of-order data is held until the hole fills, bounded per direction (bytes
  and segments) and in total. When a bound is hit, or a hole stays open longer
  than ``hole_timeout_ns``, the stream skips over the hole: a ``gap`` chunk
  (with the number of bytes lost) precedes the data after it. The monitor keeps
  going; the caller resets its framing (:class:`SipStreamDemux` does).
* Data more than ``max_window`` bytes away from the next expected byte is
  dropped (``out_of_window``): a blind injection with a random sequence number
  must not move the stream. If only out-of-window data arrives for
  ``hole_timeout_ns`` (the capture lost a lot), the direction resynchronises on
  it with a ``gap``.
* TCP keep-alives (RFC 9293 section 3.8.4: zero or one garbage byte at
  SND.NXT-1) are recognised and never counted as conflicts. A zero-window probe
  (section 3.8.6.1) carries the next real byte: it is delivered once, its
  retransmission trimmed.
* FIN closes one direction once every byte before it was delivered. An RST
  within the window (RFC 5961 section 3 is stricter; a monitor cannot see the
  challenge ACK) closes both directions; one far outside it is counted in
  ``bad_rst`` and ignored. A SYN with a new initial sequence number on a known
  direction starts a new connection (the old one is closed, ``reopened``).
* A closed direction lingers for ``linger_timeout_ns`` so that late
  retransmissions after FIN or RST are recognised and dropped instead of being
  picked up as a new stream.

Bounds (DESIGN: a flood of spoofed sources costs a fixed amount of memory):
at most ``max_flows`` directions are tracked. Directions that never carried
data (a SYN flood) and closed ones are evicted first, least recently active
first; then directions with data, least recently active first. Every eviction
is counted and reported as a ``closed`` chunk. Held out-of-order bytes are at
most ``max_buffered_bytes_per_flow`` per direction (plus the one segment being
added) and ``max_total_bytes`` over all directions; the retransmission history
is at most ``history_bytes`` per direction. Worst-case memory is therefore
``max_total_bytes + max_flows * (history_bytes + ~500 bytes of bookkeeping)``.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable
from operator import itemgetter
from typing import Final, Literal, NamedTuple

from sipwarden.errors import RemoteProtocolError
from sipwarden.sip.limits import DEFAULT_LIMITS, ParserLimits
from sipwarden.sip.message import Message
from sipwarden.sip.parser import KeepAlive, StreamParser

from .packet import TCP_FIN, TCP_RST, TCP_SYN, Segment

__all__ = [
    "CLOSED",
    "DATA",
    "DEFAULT_DEMUX_MAX_TOTAL_BYTES",
    "DEFAULT_HISTORY_BYTES",
    "DEFAULT_HOLE_TIMEOUT_NS",
    "DEFAULT_IDLE_TIMEOUT_NS",
    "DEFAULT_LINGER_TIMEOUT_NS",
    "DEFAULT_MAX_BUFFERED_BYTES_PER_FLOW",
    "DEFAULT_MAX_FLOWS",
    "DEFAULT_MAX_HELD_SEGMENTS",
    "DEFAULT_MAX_TOTAL_BYTES",
    "DEFAULT_MAX_WINDOW",
    "GAP",
    "OPENED",
    "STAT_NAMES",
    "SWEEP_INTERVAL_NS",
    "ChunkKind",
    "FlowKey",
    "SipStreamDemux",
    "SipStreamItem",
    "StreamChunk",
    "TcpReassembler",
]

_NS: Final = 1_000_000_000

#: Directions (one per side of a connection) tracked at once.
DEFAULT_MAX_FLOWS: Final = 65536
#: Out-of-order bytes held for one direction while a hole is open.
DEFAULT_MAX_BUFFERED_BYTES_PER_FLOW: Final = 256 * 1024
#: Out-of-order bytes held over all directions.
DEFAULT_MAX_TOTAL_BYTES: Final = 32 * 1024 * 1024
#: Out-of-order segments held for one direction (bounds the cost of inserting one).
DEFAULT_MAX_HELD_SEGMENTS: Final = 512
#: How far (bytes) from the next expected byte data is still accepted. Real
#: windows reach 1 GiB with scaling (RFC 7323), SIP signalling never needs more
#: than a few hundred KiB in flight; a small window keeps blind injection out.
DEFAULT_MAX_WINDOW: Final = 1024 * 1024
#: Delivered bytes remembered per direction (the end of the last delivered
#: chunk) to check retransmissions for conflicts.
DEFAULT_HISTORY_BYTES: Final = 512
#: A direction with data and no segment for this long is closed (``idle``).
#: SIP over TCP stays connected between registrations; RFC 5626 keep-alives
#: come every 95-120 s, so ten minutes of silence means the capture lost it.
DEFAULT_IDLE_TIMEOUT_NS: Final = 600 * _NS
#: A direction that never carried data (handshake only) or is closed is
#: dropped after this long. Dropping a handshake-only direction loses nothing:
#: its data is picked up at the first segment anyway.
DEFAULT_LINGER_TIMEOUT_NS: Final = 30 * _NS
#: A hole in the stream is skipped when it stays open this long. A lost
#: segment is retransmitted after one RTO (at least 1 s, RFC 6298; Linux 200 ms).
DEFAULT_HOLE_TIMEOUT_NS: Final = 3 * _NS
#: How often (in capture time) :meth:`TcpReassembler.add` runs :meth:`~TcpReassembler.expire`.
SWEEP_INTERVAL_NS: Final = 1 * _NS
#: Bytes of partial messages held by a :class:`SipStreamDemux` over all directions.
DEFAULT_DEMUX_MAX_TOTAL_BYTES: Final = 32 * 1024 * 1024

ChunkKind = Literal["opened", "data", "gap", "closed"]
OPENED: Final = "opened"
DATA: Final = "data"
GAP: Final = "gap"
CLOSED: Final = "closed"

_MASK: Final = 0xFFFFFFFF
_HALF: Final = 0x80000000

# Direction states.
_SYN_SEEN: Final = 0  # handshake seen, no data yet
_OPEN: Final = 1  # carried data
_CLOSED: Final = 2  # FIN delivered or RST seen; lingers to drop late retransmissions

_CONTROL_FLAGS: Final = TCP_SYN | TCP_FIN | TCP_RST
_first: Final = itemgetter(0)
_new_tuple: Final = tuple.__new__


class FlowKey(NamedTuple):
    """One direction of a TCP connection: bytes flow from ``src:sport`` to ``dst:dport``."""

    src: str
    sport: int
    dst: str
    dport: int

    def reverse(self) -> FlowKey:
        """The other direction of the same connection."""
        return _new_tuple(FlowKey, (self.dst, self.dport, self.src, self.sport))


class StreamChunk(NamedTuple):
    """What :class:`TcpReassembler` reports for one direction (a hot-path record).

    ``kind`` is one of:

    * ``"opened"``: the direction starts; ``reason`` is ``syn`` (its SYN was
      seen: the first data byte starts the stream) or ``midstream`` (the
      capture started late or missed the SYN: data starts somewhere inside it);
    * ``"data"``: ``data`` holds the next bytes of the stream, in order, each
      byte delivered once;
    * ``"gap"``: ``lost`` bytes of the stream were never seen (or could not be
      waited for); the next ``data`` chunk continues after them. ``reason``:
      ``hole-timeout``, ``flow-bytes``, ``flow-segments``, ``total-bytes``,
      ``resync`` (out-of-window data took over) or ``closing`` (held data is
      flushed when the direction ends without the hole filling);
    * ``"closed"``: the direction ended; ``reason`` is ``fin``, ``rst``,
      ``idle``, ``evicted``, ``reopened`` (a new SYN on the same ports) or
      ``end`` (:meth:`TcpReassembler.close_all`).

    ``ts_ns`` is the capture time of the segment that completed the data (or
    caused the event), or the ``now`` of :meth:`TcpReassembler.expire`.
    """

    flow: FlowKey
    ts_ns: int
    kind: ChunkKind
    data: bytes = b""
    lost: int = 0
    reason: str = ""


class _Half:
    """The state of one direction."""

    __slots__ = (
        "base",
        "fin_off",
        "held",
        "held_bytes",
        "isn",
        "key",
        "last_ts",
        "next_off",
        "oow_ts",
        "state",
        "tail",
    )

    def __init__(self, key: FlowKey, base: int, isn: int, state: int, ts_ns: int) -> None:
        self.key = key
        self.base = base  # the sequence number of stream offset 0
        self.isn = isn  # the SYN's sequence number, -1 when the SYN was not seen
        self.state = state
        self.next_off = 0  # stream offset of the next byte to deliver
        # Out-of-order data: (stream offset, bytes), sorted, disjoint, all after next_off.
        self.held: list[tuple[int, bytes]] | None = None
        self.held_bytes = 0
        self.tail = b""  # the last delivered bytes, for the conflict check
        self.fin_off = -1  # stream offset of the FIN, -1 until one is seen
        self.oow_ts = -1  # when out-of-window data began arriving, -1 if not
        self.last_ts = ts_ns


#: The keys of :attr:`TcpReassembler.stats`.
STAT_NAMES: Final = (
    "segments",  # TCP segments added
    "bytes",  # bytes delivered in data chunks
    "opened",  # directions opened
    "closed",  # directions closed, for any reason
    "out_of_order",  # segments that arrived ahead of a hole
    "retransmitted",  # segments carrying only bytes already seen
    "overlaps",  # segments partly overlapping bytes already seen (trimmed)
    "conflicts",  # overlaps whose bytes differ from the first copy (evasion)
    "keepalives",  # TCP keep-alive probes (one byte at SND.NXT-1)
    "gaps",  # holes skipped
    "lost_bytes",  # bytes skipped over in gaps
    "out_of_window",  # segments too far from the next expected byte
    "bad_rst",  # RSTs outside the window, ignored
    "after_close",  # segments for a closed direction, dropped
    "untracked",  # segments without data for an unknown direction (pure ACKs, FINs)
    "reopened",  # directions restarted by a SYN with a new sequence number
    "evicted",  # directions dropped to stay within max_flows
    "expired",  # directions dropped after idle_timeout_ns / linger_timeout_ns
)


class TcpReassembler:
    """Bounded TCP stream reassembly for captured segments; see the module docstring.

    ``add(ts_ns, segment)`` feeds one TCP segment captured at ``ts_ns`` and
    returns the :class:`StreamChunk` records it produced, possibly for other
    directions too (evictions, memory pressure, and every
    :data:`SWEEP_INTERVAL_NS` of capture time the timeouts of :meth:`expire`).
    Every ``opened`` direction is reported ``closed`` exactly once, whatever
    ends it, so a caller keeping per-direction state stays bounded as well.
    ``stats`` counts what happened; its keys are :data:`STAT_NAMES` (each
    explained where it is declared).
    """

    __slots__ = (
        "_held_total",
        "_holes",
        "_live",
        "_next_sweep",
        "_young",
        "history_bytes",
        "hole_timeout_ns",
        "idle_timeout_ns",
        "linger_timeout_ns",
        "max_buffered_bytes_per_flow",
        "max_flows",
        "max_held_segments",
        "max_total_bytes",
        "max_window",
        "stats",
    )

    def __init__(
        self,
        *,
        max_flows: int = DEFAULT_MAX_FLOWS,
        max_buffered_bytes_per_flow: int = DEFAULT_MAX_BUFFERED_BYTES_PER_FLOW,
        max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
        max_held_segments: int = DEFAULT_MAX_HELD_SEGMENTS,
        max_window: int = DEFAULT_MAX_WINDOW,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        idle_timeout_ns: int = DEFAULT_IDLE_TIMEOUT_NS,
        linger_timeout_ns: int = DEFAULT_LINGER_TIMEOUT_NS,
        hole_timeout_ns: int = DEFAULT_HOLE_TIMEOUT_NS,
    ) -> None:
        if (
            min(
                max_flows,
                max_buffered_bytes_per_flow,
                max_held_segments,
                max_window,
                idle_timeout_ns,
                linger_timeout_ns,
                hole_timeout_ns,
            )
            < 1
            or history_bytes < 0
        ):
            raise ValueError("TCP reassembly limits must be positive")
        if max_total_bytes < max_buffered_bytes_per_flow:
            raise ValueError("max_total_bytes must be at least max_buffered_bytes_per_flow")
        if max_window >= _HALF:
            raise ValueError("max_window must be below 2**31 (serial-number arithmetic)")
        self.max_flows = max_flows
        self.max_buffered_bytes_per_flow = max_buffered_bytes_per_flow
        self.max_total_bytes = max_total_bytes
        self.max_held_segments = max_held_segments
        self.max_window = max_window
        self.history_bytes = history_bytes
        self.idle_timeout_ns = idle_timeout_ns
        self.linger_timeout_ns = linger_timeout_ns
        self.hole_timeout_ns = hole_timeout_ns
        # Two pools, each in least-recently-active-first order: directions
        # that carried data, and the others (handshake only, or closed), which
        # are evicted first so a SYN flood cannot push out live SIP streams.
        self._live: dict[FlowKey, _Half] = {}
        self._young: dict[FlowKey, _Half] = {}
        # Directions holding out-of-order data -> when their hole opened (oldest first).
        self._holes: dict[FlowKey, int] = {}
        self._held_total = 0
        self._next_sweep = -(1 << 63)
        #: Counters keyed by :data:`STAT_NAMES`.
        self.stats: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)

    @property
    def flows(self) -> int:
        """Directions tracked now (closed ones still lingering included)."""
        return len(self._live) + len(self._young)

    @property
    def buffered_bytes(self) -> int:
        """Out-of-order bytes held over all directions."""
        return self._held_total

    # --- feeding ------------------------------------------------------------

    def add(self, ts_ns: int, segment: Segment) -> list[StreamChunk]:
        """Feed one TCP segment captured at ``ts_ns``; return the chunks it produced."""
        out: list[StreamChunk] = []
        if ts_ns >= self._next_sweep:
            self._sweep(ts_ns, out)
        src, dst, sport, dport, proto, payload, seq, flags = segment
        if proto != "tcp":
            raise ValueError(f"TcpReassembler.add() takes TCP segments, not {proto}")
        stats = self.stats
        stats["segments"] += 1
        key: FlowKey = _new_tuple(FlowKey, (src, sport, dst, dport))
        live = self._live
        half = live.get(key)
        if (
            half is not None
            and payload
            and not flags & _CONTROL_FLAGS
            and half.held is None
            and half.fin_off < 0
            and not (seq - half.base - half.next_off) & _MASK
        ):
            # Fast path: the next bytes of an open stream with nothing held.
            half.last_ts = ts_ns
            half.oow_ts = -1
            del live[key]
            live[key] = half  # most recently active last
            self._deliver(half, ts_ns, payload, out)
            return out
        if half is None:
            half = self._young.get(key)
        if flags & TCP_RST:
            self._rst(key, half, ts_ns, seq, out)
            return out
        if flags & TCP_SYN:
            if half is not None and half.isn == seq:
                # A retransmitted SYN or SYN-ACK: nothing new, unless it carries data.
                if not payload:
                    stats["retransmitted"] += 1
                    return out
            else:
                if half is not None:
                    if half.state != _CLOSED:
                        stats["reopened"] += 1
                    self._remove(half, ts_ns, "reopened", out)
                half = self._new_half(key, (seq + 1) & _MASK, seq, _SYN_SEEN, ts_ns, out)
            seq = (seq + 1) & _MASK  # SYN consumes one sequence number (RFC 9293 3.4)
        elif half is None:
            if not payload:
                stats["untracked"] += 1
                return out
            # Picked up mid-connection: the stream starts at this segment.
            half = self._new_half(key, seq, -1, _OPEN, ts_ns, out)
        state = half.state
        if state == _CLOSED:
            stats["after_close"] += 1
            return out
        half.last_ts = ts_ns
        if payload and state == _SYN_SEEN:
            half.state = _OPEN
            del self._young[key]
            self._live[key] = half
        else:
            pool = self._live if state == _OPEN else self._young
            del pool[key]
            pool[key] = half  # most recently active last
        if flags & TCP_FIN and half.fin_off < 0:
            # Before the data: nothing after the FIN may be delivered, held or not.
            rel = ((seq - half.base - half.next_off + _HALF) & _MASK) - _HALF
            if 0 <= rel + len(payload) <= self.max_window:
                self._set_fin(half, half.next_off + rel + len(payload))
        if payload:
            self._data(half, ts_ns, seq, payload, out)
        if half.state != _CLOSED:
            if half.held is not None and ts_ns - self._holes[key] >= self.hole_timeout_ns:
                self._flush(half, ts_ns, "hole-timeout", out)
            self._check_fin(half, ts_ns, out)
        return out

    def expire(self, now_ns: int) -> list[StreamChunk]:
        """Apply the timeouts at ``now_ns``: skip stale holes, close idle directions.

        Directions with data and no segment for ``idle_timeout_ns`` are closed
        (``idle``); handshake-only and closed ones are dropped after
        ``linger_timeout_ns``; held data whose hole is older than
        ``hole_timeout_ns`` is delivered after a ``gap``. The scans stop at the
        first entry still in time, so the cost is proportional to what expires.
        :meth:`add` calls this every :data:`SWEEP_INTERVAL_NS` of capture time.
        """
        out: list[StreamChunk] = []
        self._sweep(now_ns, out)
        return out

    def close_all(self, now_ns: int) -> list[StreamChunk]:
        """End of capture: flush held data (after a ``gap``) and close every direction."""
        out: list[StreamChunk] = []
        for pool in (self._live, self._young):
            for half in list(pool.values()):
                self._remove(half, now_ns, "end", out)
        return out

    # --- internals ------------------------------------------------------------

    def _sweep(self, now: int, out: list[StreamChunk]) -> None:
        self._next_sweep = now + SWEEP_INTERVAL_NS
        holes = self._holes
        limit = now - self.hole_timeout_ns
        while holes:
            key = next(iter(holes))
            if holes[key] > limit:
                break
            half = self._live.get(key) or self._young[key]
            self._flush(half, now, "hole-timeout", out)
            self._check_fin(half, now, out)
        for pool, timeout in (
            (self._live, self.idle_timeout_ns),
            (self._young, self.linger_timeout_ns),
        ):
            limit = now - timeout
            while pool:
                half = pool[next(iter(pool))]
                if half.last_ts > limit:
                    break
                self.stats["expired"] += 1
                self._remove(half, now, "idle", out)

    def _new_half(  # noqa: PLR0917 - internal, called from two places
        self, key: FlowKey, base: int, isn: int, state: int, ts_ns: int, out: list[StreamChunk]
    ) -> _Half:
        if len(self._live) + len(self._young) >= self.max_flows:
            pool = self._young or self._live
            victim = pool[next(iter(pool))]
            self.stats["evicted"] += 1
            self._remove(victim, ts_ns, "evicted", out)
        half = _Half(key, base, isn, state, ts_ns)
        (self._live if state == _OPEN else self._young)[key] = half
        self.stats["opened"] += 1
        reason = "midstream" if isn < 0 else "syn"
        out.append(_new_tuple(StreamChunk, (key, ts_ns, OPENED, b"", 0, reason)))
        return half

    def _remove(self, half: _Half, ts_ns: int, reason: str, out: list[StreamChunk]) -> None:
        """Forget a direction, closing it first if it is still open."""
        if half.state != _CLOSED:
            self._close(half, ts_ns, reason, out)
        del self._young[half.key]

    def _close(self, half: _Half, ts_ns: int, reason: str, out: list[StreamChunk]) -> None:
        """Close a direction; it lingers in the young pool to absorb late segments."""
        if half.held is not None:
            if reason == "fin":
                self._drop_held(half)  # bytes after the FIN: no host delivers them
            else:
                self._flush(half, ts_ns, "closing", out)
        key = half.key
        if half.state == _OPEN:
            del self._live[key]
        else:
            del self._young[key]
        self._young[key] = half
        half.state = _CLOSED
        half.tail = b""
        half.last_ts = ts_ns
        self.stats["closed"] += 1
        out.append(_new_tuple(StreamChunk, (key, ts_ns, CLOSED, b"", 0, reason)))

    def _rst(
        self, key: FlowKey, half: _Half | None, ts_ns: int, seq: int, out: list[StreamChunk]
    ) -> None:
        if half is not None and half.state != _CLOSED:
            rel = ((seq - half.base - half.next_off + _HALF) & _MASK) - _HALF
            if not -self.max_window <= rel <= self.max_window:
                self.stats["bad_rst"] += 1
                return
            self._close(half, ts_ns, "rst", out)
        # An RST aborts the whole connection (RFC 9293 3.10.7.4).
        other = key.reverse()
        peer = self._live.get(other) or self._young.get(other)
        if peer is not None and peer.state != _CLOSED:
            self._close(peer, ts_ns, "rst", out)
        elif half is None and peer is None:
            self.stats["untracked"] += 1

    def _data(
        self, half: _Half, ts_ns: int, seq: int, payload: bytes, out: list[StreamChunk]
    ) -> None:
        next_off = half.next_off
        rel = ((seq - half.base - next_off + _HALF) & _MASK) - _HALF
        if rel == 0 and half.held is None:
            half.oow_ts = -1
            if half.fin_off >= 0 and next_off + len(payload) > half.fin_off:
                payload = payload[: half.fin_off - next_off]  # nothing is sent after a FIN
            self._deliver(half, ts_ns, payload, out)
            return
        size = len(payload)
        window = self.max_window
        stats = self.stats
        if rel > window or rel + size < -window:
            self._out_of_window(half, ts_ns, seq, rel, payload, out)
            return
        half.oow_ts = -1
        start = next_off + rel
        if rel < 0:
            if rel == -1 and size == 1:
                # Keep-alive: one garbage byte at SND.NXT-1 (RFC 9293 3.8.4).
                stats["keepalives"] += 1
                return
            old = payload[: min(size, -rel)]
            if self._conflicts_with_history(half, start, old):
                stats["conflicts"] += 1
            if size <= -rel:
                stats["retransmitted"] += 1
                return
            stats["overlaps"] += 1
            payload = payload[-rel:]
            start = next_off
        elif rel > 0:
            stats["out_of_order"] += 1
        if half.fin_off >= 0 and start + len(payload) > half.fin_off:
            payload = payload[: max(0, half.fin_off - start)]
            if not payload:
                return
        self._hold(half, ts_ns, start, payload)
        self._drain(half, ts_ns, out)
        if half.held is not None:
            self._enforce_bounds(half, ts_ns, out)

    def _deliver(self, half: _Half, ts_ns: int, data: bytes, out: list[StreamChunk]) -> None:
        if not data:
            return
        size = len(data)
        half.next_off += size
        self.stats["bytes"] += size
        # History for the conflict check: the end of the last delivered chunk
        # (what a retransmission repeats), kept by reference when it is small.
        keep = self.history_bytes
        half.tail = data if size <= keep else data[size - keep :] if keep else b""
        out.append(_new_tuple(StreamChunk, (half.key, ts_ns, DATA, data, 0, "")))

    def _conflicts_with_history(self, half: _Half, start: int, old: bytes) -> bool:
        """Whether ``old`` (at stream offset ``start``) differs from the bytes delivered there."""
        tail = half.tail
        tail_start = half.next_off - len(tail)
        lo = max(start, tail_start)
        hi = start + len(old)
        if lo >= hi:
            return False
        return tail[lo - tail_start : hi - tail_start] != old[lo - start : hi - start]

    def _hold(self, half: _Half, ts_ns: int, start: int, payload: bytes) -> None:
        """Insert data into the held list; bytes already held win (first copy)."""
        held = half.held
        if held is None:
            held = half.held = []
            self._holes[half.key] = ts_ns
        end = start + len(payload)
        i = bisect_right(held, start, key=_first)
        if i and held[i - 1][0] + len(held[i - 1][1]) > start:
            i -= 1
        j = i
        cur = start
        pieces: list[tuple[int, bytes]] = []
        conflict = False
        count = len(held)
        while j < count and held[j][0] < end:
            h_start, h_data = held[j]
            h_end = h_start + len(h_data)
            if cur < h_start:
                pieces.append((cur, payload[cur - start : h_start - start]))
            lo = max(h_start, start)
            hi = min(h_end, end)
            if payload[lo - start : hi - start] != h_data[lo - h_start : hi - h_start]:
                conflict = True
            cur = max(cur, h_end)
            j += 1
        if cur < end:
            pieces.append((cur, payload[cur - start :] if cur > start else payload))
        stats = self.stats
        if conflict:
            stats["conflicts"] += 1
        if j > i:
            if not pieces:
                stats["retransmitted"] += 1
                return
            stats["overlaps"] += 1
            held[i:j] = sorted(held[i:j] + pieces, key=_first)
        else:
            held.insert(i, pieces[0])
        added = sum(len(piece) for _, piece in pieces)
        half.held_bytes += added
        self._held_total += added

    def _drain(self, half: _Half, ts_ns: int, out: list[StreamChunk]) -> None:
        """Deliver the held data that now continues the stream."""
        held = half.held
        if held is None:
            return
        next_off = half.next_off
        count = 0
        for start, _ in held:
            if start != next_off:
                break
            next_off += len(held[count][1])
            count += 1
        if count:
            parts = [data for _, data in held[:count]]
            del held[:count]
            data = parts[0] if count == 1 else b"".join(parts)
            half.held_bytes -= len(data)
            self._held_total -= len(data)
            self._deliver(half, ts_ns, data, out)
        key = half.key
        if not held:
            half.held = None
            del self._holes[key]
        elif count:
            # Progress: the hole that remains gets its own full timeout.
            del self._holes[key]
            self._holes[key] = ts_ns

    def _skip(self, half: _Half, ts_ns: int, reason: str, out: list[StreamChunk]) -> None:
        """Give up on the first hole: report a gap, deliver what follows it."""
        assert half.held is not None
        start = half.held[0][0]
        lost = start - half.next_off
        self.stats["gaps"] += 1
        self.stats["lost_bytes"] += lost
        half.next_off = start
        half.tail = b""
        out.append(_new_tuple(StreamChunk, (half.key, ts_ns, GAP, b"", lost, reason)))
        self._drain(half, ts_ns, out)

    def _flush(self, half: _Half, ts_ns: int, reason: str, out: list[StreamChunk]) -> None:
        """Deliver everything held, a gap before each hole."""
        while half.held is not None:
            self._skip(half, ts_ns, reason, out)

    def _drop_held(self, half: _Half) -> None:
        if half.held is not None:
            self._held_total -= half.held_bytes
            half.held_bytes = 0
            half.held = None
            del self._holes[half.key]

    def _enforce_bounds(self, half: _Half, ts_ns: int, out: list[StreamChunk]) -> None:
        while half.held is not None:
            if half.held_bytes > self.max_buffered_bytes_per_flow:
                self._skip(half, ts_ns, "flow-bytes", out)
            elif len(half.held) > self.max_held_segments:
                self._skip(half, ts_ns, "flow-segments", out)
            else:
                break
        holes = self._holes
        while self._held_total > self.max_total_bytes:
            # The oldest hole is the least likely to fill.
            victim_key = next(iter(holes))
            victim = self._live.get(victim_key) or self._young[victim_key]
            self._skip(victim, ts_ns, "total-bytes", out)
            if victim is not half:
                self._check_fin(victim, ts_ns, out)

    def _out_of_window(  # noqa: PLR0917 - internal
        self, half: _Half, ts_ns: int, seq: int, rel: int, payload: bytes, out: list[StreamChunk]
    ) -> None:
        self.stats["out_of_window"] += 1
        if half.oow_ts < 0:
            half.oow_ts = ts_ns
            return
        if ts_ns - half.oow_ts < self.hole_timeout_ns:
            return
        # Nothing but far-away data for a whole hole timeout: the capture lost
        # track of this stream. Deliver what is held, then resynchronise here.
        self._flush(half, ts_ns, "resync", out)
        lost = max(rel, 0)
        self.stats["gaps"] += 1
        self.stats["lost_bytes"] += lost
        half.base = (seq - half.next_off) & _MASK
        half.tail = b""
        half.fin_off = -1
        half.oow_ts = -1
        out.append(_new_tuple(StreamChunk, (half.key, ts_ns, GAP, b"", lost, "resync")))
        self._deliver(half, ts_ns, payload, out)

    def _set_fin(self, half: _Half, fin_off: int) -> None:
        """Record where the FIN is; held bytes after it are dropped (no host delivers them)."""
        half.fin_off = fin_off
        held = half.held
        if held is None:
            return
        keep = bisect_right(held, fin_off - 1, key=_first)
        dropped = sum(len(data) for _, data in held[keep:])
        del held[keep:]
        if held:
            start, data = held[-1]
            if start + len(data) > fin_off:
                dropped += start + len(data) - fin_off
                held[-1] = (start, data[: fin_off - start])
        half.held_bytes -= dropped
        self._held_total -= dropped
        if not held:
            half.held = None
            del self._holes[half.key]

    def _check_fin(self, half: _Half, ts_ns: int, out: list[StreamChunk]) -> None:
        if half.state != _CLOSED and 0 <= half.fin_off <= half.next_off:
            self._close(half, ts_ns, "fin", out)


# --- SIP framing over the reassembled streams --------------------------------


class SipStreamItem(NamedTuple):
    """One result of :class:`SipStreamDemux`: a message, a keep-alive or a framing error.

    ``flow`` is the direction it travelled, ``ts_ns`` the capture time of the
    chunk that completed it.
    """

    flow: FlowKey
    ts_ns: int
    event: Message | KeepAlive | RemoteProtocolError


# A start line good enough to resynchronise on: a request line ending in
# SIP/2.0 or a status line (RFC 3261 7.1, 7.2). SIP has no framing marker,
# so after lost bytes this is the best guess where the next message starts.
# After a CRLF any method token will do (no header or SDP line looks like
# "token SP URI SP SIP/2.0"); at the first byte after a gap, where the gap may
# have cut a line in two ("ITE sip:... SIP/2.0"), only the RFC 3261 and
# extension methods in common use are believed.
_STATUS_LINE: Final = rb"SIP/2\.0 [1-6][0-9][0-9] [^\r\n]{0,1024}\r\n"
_REQUEST_TAIL: Final = rb" [^ \r\n]{1,8192} SIP/2\.0\r\n"
_START_AT: Final = re.compile(
    rb"(?:(?:INVITE|ACK|BYE|CANCEL|OPTIONS|REGISTER|PRACK|SUBSCRIBE|NOTIFY|PUBLISH|INFO"
    rb"|REFER|MESSAGE|UPDATE)" + _REQUEST_TAIL + rb"|" + _STATUS_LINE + rb")"
)
_START_AFTER_CRLF: Final = re.compile(
    rb"\r\n(?=[A-Za-z][-A-Za-z0-9.!%*_+`'~]{0,31}" + _REQUEST_TAIL + rb"|" + _STATUS_LINE + rb")"
)
# Bytes kept while a start line may still be arriving: a request line may be a
# full header line long.
_MAX_RESYNC_TAIL: Final = 8192 + 64


class _Direction:
    """Framing state of one direction."""

    __slots__ = ("at_start", "buf", "parser")

    def __init__(self, parser: StreamParser | None) -> None:
        # While parsing: a copy of the parser's unconsumed bytes (to rescan after
        # a framing error). While resynchronising (parser None): bytes being
        # scanned for a start line.
        self.buf = bytearray()
        self.parser = parser
        # Resynchronising right after a gap: the first byte may start a message.
        self.at_start = True


class SipStreamDemux:
    """SIP messages from :class:`StreamChunk` records, one lenient parser per direction.

    ``feed(chunk)`` returns :class:`SipStreamItem` records: every
    :class:`~sipwarden.sip.message.Message` and
    :class:`~sipwarden.sip.parser.KeepAlive` framed on the chunk's direction,
    and a :class:`~sipwarden.errors.RemoteProtocolError` for each framing
    failure, lost stretch of stream (rule ``tcp-stream-gap``) or message cut
    off by the end of its stream (rule ``tcp-stream-closed``).

    A direction whose SYN was seen (``opened`` with reason ``syn``) is parsed
    from its first byte, so a malformed first message is reported, not
    skipped. A direction picked up mid-stream (``midstream``, or fed data
    without an ``opened`` chunk) starts resynchronising, as after a gap.

    After an error the direction resynchronises: the bytes are scanned for
    the next start line (a request line ending in ``SIP/2.0`` or a
    ``SIP/2.0 NNN`` status line) at the start of the stream after a gap or
    after a CRLF, and parsing restarts there; bytes before it are dropped.
    SIP has no framing marker, so a start line quoted in a body (``message/sipfrag``)
    can mislead it once; the next error resynchronises again.

    Bounded: at most ``max_flows`` directions (least recently fed dropped
    first; directions announced by a SYN but not fed yet are remembered in a
    separate table of the same bound, so a SYN flood cannot push out live
    directions) and ``max_total_bytes`` of partial messages over all of them (the
    direction that has been buffering longest is reset first, with an error
    item); each direction's parser is bounded by ``limits``.
    """

    __slots__ = (
        "_buffering",
        "_directions",
        "_fresh",
        "_total",
        "limits",
        "max_flows",
        "max_total_bytes",
    )

    def __init__(
        self,
        *,
        limits: ParserLimits = DEFAULT_LIMITS,
        max_flows: int = DEFAULT_MAX_FLOWS,
        max_total_bytes: int = DEFAULT_DEMUX_MAX_TOTAL_BYTES,
    ) -> None:
        if max_flows < 1 or max_total_bytes < 1:
            raise ValueError("demultiplexer limits must be positive")
        self.limits = limits
        self.max_flows = max_flows
        self.max_total_bytes = max_total_bytes
        self._directions: dict[FlowKey, _Direction] = {}  # least recently fed first
        self._buffering: dict[FlowKey, None] = {}  # directions with bytes held, oldest first
        self._fresh: dict[FlowKey, None] = {}  # opened by a SYN, no data yet, oldest first
        self._total = 0

    @property
    def flows(self) -> int:
        """Directions with framing state."""
        return len(self._directions)

    @property
    def buffered_bytes(self) -> int:
        """Bytes of partial messages held over all directions."""
        return self._total

    def feed_all(self, chunks: Iterable[StreamChunk]) -> list[SipStreamItem]:
        """Feed several chunks; return the items of all of them, in order."""
        items: list[SipStreamItem] = []
        for chunk in chunks:
            items += self.feed(chunk)
        return items

    def feed(self, chunk: StreamChunk) -> list[SipStreamItem]:
        """Feed one chunk from a :class:`TcpReassembler`; return what it completed."""
        flow, ts_ns, kind, data, lost, reason = chunk
        items: list[SipStreamItem] = []
        if kind == DATA:
            direction = self._directions.pop(flow, None)
            if direction is None:
                if len(self._directions) >= self.max_flows:
                    self._forget(next(iter(self._directions)))
                from_syn = self._fresh.pop(flow, 0) is None
                direction = _Direction(
                    StreamParser(strict=False, limits=self.limits) if from_syn else None
                )
            self._directions[flow] = direction
            self._data(flow, direction, ts_ns, data, items)
            if self._total > self.max_total_bytes:
                self._shed(ts_ns, items)
        elif kind == OPENED:
            if reason == "syn":
                fresh = self._fresh
                if len(fresh) >= self.max_flows:
                    del fresh[next(iter(fresh))]
                fresh[flow] = None
        elif kind == GAP:
            self._fresh.pop(flow, None)
            direction = self._directions.get(flow)
            if direction is not None:
                self._set_buf(flow, direction, b"")
                direction.parser = None
                direction.at_start = True
            error = RemoteProtocolError(
                f"{lost} bytes of the TCP stream were lost; resynchronising",
                rule="tcp-stream-gap",
            )
            items.append(_new_tuple(SipStreamItem, (flow, ts_ns, error)))
        elif kind == CLOSED:
            self._fresh.pop(flow, None)
            direction = self._directions.get(flow)
            if direction is not None:
                if direction.parser is not None and direction.buf.strip(b"\r\n"):
                    error = RemoteProtocolError(
                        f"the stream ended inside a message ({len(direction.buf)} bytes)",
                        rule="tcp-stream-closed",
                        offset=len(direction.buf),
                    )
                    items.append(_new_tuple(SipStreamItem, (flow, ts_ns, error)))
                self._forget(flow)
        return items

    def _forget(self, flow: FlowKey) -> None:
        direction = self._directions.pop(flow)
        self._set_buf(flow, direction, b"")

    def _set_buf(self, flow: FlowKey, direction: _Direction, data: bytes | bytearray) -> None:
        """Replace a direction's buffer, keeping the byte accounting right."""
        self._total += len(data) - len(direction.buf)
        direction.buf = bytearray(data)
        if data:
            self._buffering.setdefault(flow, None)
        else:
            self._buffering.pop(flow, None)

    def _data(
        self,
        flow: FlowKey,
        direction: _Direction,
        ts_ns: int,
        data: bytes,
        items: list[SipStreamItem],
    ) -> None:
        parser = direction.parser
        if parser is None:
            data = self._resync(flow, direction, data, after_error=False)
            if not data:
                return
            parser = direction.parser = StreamParser(strict=False, limits=self.limits)
        parser.feed(data)
        buf = direction.buf
        buf += data
        self._total += len(data)
        append = items.append
        while True:
            try:
                event = parser.next_event()
            except RemoteProtocolError as error:
                append(_new_tuple(SipStreamItem, (flow, ts_ns, error)))
                # Rescan what the failed parser still held, past the failed start.
                rest = self._resync(flow, direction, bytes(buf), after_error=True)
                if not rest:
                    return
                buf = direction.buf  # the resync replaced it
                parser = direction.parser = StreamParser(strict=False, limits=self.limits)
                parser.feed(rest)
                buf += rest
                self._total += len(rest)
                self._buffering.setdefault(flow, None)
                continue
            if event is None:
                break
            append(_new_tuple(SipStreamItem, (flow, ts_ns, event)))
            consumed = len(buf) - parser.buffered
            if consumed:
                del buf[:consumed]
                self._total -= consumed
        if buf:
            self._buffering.setdefault(flow, None)
        else:
            self._buffering.pop(flow, None)

    def _resync(
        self, flow: FlowKey, direction: _Direction, data: bytes, *, after_error: bool
    ) -> bytes:
        """Scan for a start line; return the bytes from it on, or ``b""`` to wait for more.

        Leaves the direction without a parser, its buffer holding only what a
        start line could still grow from.
        """
        direction.parser = None
        if after_error:
            scan = data
            at_start = False
        else:
            scan = bytes(direction.buf) + data if direction.buf else data
            at_start = direction.at_start
        if at_start:
            if _START_AT.match(scan) is not None:
                self._set_buf(flow, direction, b"")
                return scan
            if b"\r\n" not in scan and len(scan) <= _MAX_RESYNC_TAIL:
                self._set_buf(flow, direction, scan)  # the start line may still be arriving
                return b""
        direction.at_start = False
        match = _START_AFTER_CRLF.search(scan)
        if match is not None:
            self._set_buf(flow, direction, b"")
            return scan[match.end() :]
        # Keep what may still become "CRLF start-line": from the last CRLF on,
        # or a lone trailing CR.
        last = scan.rfind(b"\r\n")
        if last >= 0 and len(scan) - last <= _MAX_RESYNC_TAIL:
            keep = scan[last:]
        else:
            keep = scan[-1:] if scan.endswith(b"\r") else b""
        self._set_buf(flow, direction, keep)
        return b""

    def _shed(self, ts_ns: int, items: list[SipStreamItem]) -> None:
        """Over the byte budget: reset the directions buffering longest."""
        while self._total > self.max_total_bytes and self._buffering:
            flow = next(iter(self._buffering))
            direction = self._directions[flow]
            error = RemoteProtocolError(
                f"{len(direction.buf)} buffered bytes dropped to stay within "
                f"{self.max_total_bytes} bytes over all streams",
                rule="max_total_bytes",
                status_hint=513,
            )
            items.append(_new_tuple(SipStreamItem, (flow, ts_ns, error)))
            self._set_buf(flow, direction, b"")
            direction.parser = None
            direction.at_start = False
