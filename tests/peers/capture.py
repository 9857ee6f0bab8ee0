"""Record real traffic with ``dumpcap`` (Debian ``tshark``) and read the SIP in it back.

``with capture(tmp_path, ports=[kamailio.port]) as cap: ...`` runs dumpcap on
an interface (``lo`` by default) with a BPF filter on the given ports,
returns once dumpcap has opened the interface and the file, and on exit stops
it only after everything sent inside the block is in the file.

Why the flush dance: dumpcap reads the kernel's packet ring in blocks that
are handed over after a 250 ms timeout and flushes its file every 500 ms;
stopping it earlier silently loses the tail of the traffic (measured: a
SIGINT 0.2 s after the last packet loses it). So on loopback the exit sends
one marker datagram from a socket of our own (its port is part of the
filter), waits until the marker is in the file, stops dumpcap, and rewrites
the file without the marker. On other interfaces, where our marker would not
pass, the exit waits a fixed ``settle`` time instead.

The file is classic pcap (``dumpcap -P``), microsecond timestamps.
:func:`read_sip` decodes it with sipwarden's own reader
(:func:`sipwarden.net.pcap.open_capture`, :class:`sipwarden.net.packet.PacketDecoder`,
:func:`sipwarden.sip.parser.parse_message`).
"""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Final, NamedTuple

from sipwarden.errors import CaptureError, RemoteProtocolError
from sipwarden.net.packet import PacketDecoder, decode
from sipwarden.net.pcap import open_capture
from sipwarden.sip.message import Message, Request, Response
from sipwarden.sip.parser import KeepAlive, StreamParser, parse_message
from support import PeerError, require_tool, stop_process, tail

__all__ = [
    "INSTALL_DUMPCAP",
    "Capture",
    "SipPacket",
    "capture",
    "dumpcap_binary",
    "label",
    "read_sip",
    "sip_summary",
]

INSTALL_DUMPCAP: Final = "apt-get install tshark"  # dumpcap comes with it (wireshark-common)

_LOOPBACK: Final = "127.0.0.1"
_PCAP_HEADER: Final = 24
_PCAP_RECORD: Final = 16
_MAGIC_ORDER: Final = {
    b"\xd4\xc3\xb2\xa1": "<",
    b"\xa1\xb2\xc3\xd4": ">",
    b"\x4d\x3c\xb2\xa1": "<",
    b"\xa1\xb2\x3c\x4d": ">",
}


def dumpcap_binary() -> str:
    """The path of ``dumpcap``; fails the test with the install command when missing."""
    return require_tool("dumpcap", INSTALL_DUMPCAP)


class Capture:
    """A running (then finished) dumpcap; see :func:`capture`.

    ``path`` is the pcap file; after the ``with`` block ``packets`` is the
    number of packets in it (the flush marker removed).
    """

    def __init__(
        self,
        path: Path,
        *,
        interface: str = "lo",
        ports: Sequence[int] = (),
        bpf: str | None = None,
        settle: float = 0.6,
    ) -> None:
        self.path = path
        self.interface = interface
        self.ports = tuple(int(p) for p in ports)
        self.bpf = bpf
        self.settle = settle
        self.packets = 0
        self.log_path = path.with_suffix(".dumpcap.log")
        self._proc: subprocess.Popen[bytes] | None = None
        self._marker_sock: socket.socket | None = None
        self._marker = b""

    @property
    def filter(self) -> str:
        """The BPF filter dumpcap runs with ('' captures everything)."""
        parts = [f"(udp port {p} or tcp port {p})" for p in self.ports]
        if self.bpf:
            parts.append(f"({self.bpf})")
        if parts and self._marker_sock is not None:
            parts.append(f"(udp port {self._marker_sock.getsockname()[1]})")
        return " or ".join(parts)

    def start(self, ready_timeout: float = 10.0) -> None:
        """Start dumpcap; return once it reports the capture file open."""
        binary = dumpcap_binary()
        if self.interface == "lo":
            self._marker_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._marker_sock.bind((_LOOPBACK, 0))
            self._marker = b"sipwarden-capture-flush-" + uuid.uuid4().hex.encode()
        argv = [binary, "-i", self.interface, "-P", "-w", str(self.path), "-q"]
        if self.filter:
            argv += ["-f", self.filter]
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # dumpcap prints "Capturing on '<if>'" once the interface is open and
        # the filter set, then "File: <path>" once the output file is open.
        deadline = time.monotonic() + ready_timeout
        while "File: " not in tail(self.log_path):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self._abort()
                raise PeerError(
                    f"dumpcap did not start capturing on {self.interface} "
                    f"(filter {self.filter!r}):\n{tail(self.log_path)}"
                )
            time.sleep(0.01)

    def stop(self, flush_timeout: float = 5.0) -> None:
        """Wait until everything sent so far is in the file, then stop dumpcap."""
        proc = self._proc
        if proc is None:
            return
        try:
            flushed = self._flush(flush_timeout) if proc.poll() is None else False
            if not flushed and proc.poll() is None:
                time.sleep(self.settle)
            self._proc = None
            code = stop_process(proc, first=signal.SIGINT, grace=5.0)
            if code not in (0, -signal.SIGINT):
                raise PeerError(f"dumpcap exited with {code}:\n{tail(self.log_path)}")
            self.packets = self._rewrite_without_marker()
        finally:
            self._abort()

    def _flush(self, timeout: float) -> bool:
        sock = self._marker_sock
        if sock is None:
            return False
        sock.sendto(self._marker, sock.getsockname())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(self._is_marker(lt, data) for _, lt, data in _records(self.path)):
                return True
            time.sleep(0.05)
        return False

    def _is_marker(self, linktype: int, data: bytes) -> bool:
        if self._marker_sock is None:
            return False
        segment = decode(linktype, data)
        return (
            segment is not None
            and segment.proto == "udp"
            and segment.dport == self._marker_sock.getsockname()[1]
            and segment.payload == self._marker
        )

    def _rewrite_without_marker(self) -> int:
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise PeerError(f"dumpcap wrote no file {self.path}: {exc}") from exc
        kept = [raw[:_PCAP_HEADER]]
        count = 0
        for record, linktype, data in _records(self.path, raw):
            if self._is_marker(linktype, data):
                continue
            kept.append(record)
            count += 1
        self.path.write_bytes(b"".join(kept))
        return count

    def _abort(self) -> None:
        if self._proc is not None:
            proc, self._proc = self._proc, None
            stop_process(proc, first=signal.SIGINT, grace=5.0)
        if self._marker_sock is not None:
            self._marker_sock.close()
            self._marker_sock = None


def _records(path: Path, raw: bytes | None = None) -> Iterator[tuple[bytes, int, bytes]]:
    """(whole record, link type, frame) of each complete record of a classic pcap file.

    Tolerates a file that is still being written: a partial record ends it.
    """
    if raw is None:
        try:
            raw = path.read_bytes()
        except OSError:
            return
    order = _MAGIC_ORDER.get(raw[:4])
    if order is None or len(raw) < _PCAP_HEADER:
        return
    (linktype,) = struct.unpack_from(order + "I", raw, 20)
    record = struct.Struct(order + "IIII")
    pos = _PCAP_HEADER
    while pos + _PCAP_RECORD <= len(raw):
        _, _, incl_len, _ = record.unpack_from(raw, pos)
        end = pos + _PCAP_RECORD + incl_len
        if end > len(raw):
            return
        yield raw[pos:end], linktype, raw[pos + _PCAP_RECORD : end]
        pos = end


@contextmanager
def capture(
    where: Path,
    *,
    interface: str = "lo",
    ports: Sequence[int] = (),
    bpf: str | None = None,
    name: str = "capture.pcap",
) -> Iterator[Capture]:
    """Capture on ``interface`` into ``where`` (a directory, or a file path).

    The file is always classic pcap and named ``*.pcap`` (``cap.path``).

    ``ports`` become ``udp port P or tcp port P`` filters, ``bpf`` is or-ed
    in; neither captures everything on the interface. Only loopback and
    interfaces of namespaces the tests create are ever captured on.
    """
    path = where if where.suffix in (".pcap", ".pcapng") else where / name
    path.parent.mkdir(parents=True, exist_ok=True)
    cap = Capture(path.with_suffix(".pcap"), interface=interface, ports=ports, bpf=bpf)
    cap.start()
    try:
        yield cap
    finally:
        cap.stop()


# --- reading SIP back ---------------------------------------------------------


class SipPacket(NamedTuple):
    """One SIP message found in a capture."""

    ts_ns: int
    src: str
    sport: int
    dst: str
    dport: int
    transport: str
    message: Message
    raw: bytes


def read_sip(path: Path, *, strict: bool = False) -> list[SipPacket]:
    """Every SIP message in the capture at ``path``, in capture order.

    UDP payloads are parsed as one message each; TCP payloads are reassembled
    per flow in arrival order (enough for loopback captures) with
    :class:`StreamParser`. Payloads that are not SIP are skipped; CRLF
    keep-alives are not messages. ``strict=False`` is the monitor's lenient mode.
    """
    decoder = PacketDecoder()
    streams: dict[tuple[str, int, str, int], StreamParser] = {}
    found: list[SipPacket] = []
    try:
        with open_capture(path) as packets:
            for packet in packets:
                seg = decoder.decode(packet.linktype, packet.data, packet.ts_ns)
                if seg is None or not seg.payload:
                    continue
                flow = (seg.src, seg.sport, seg.dst, seg.dport)
                if seg.proto == "udp":
                    if seg.payload.strip(b"\r\n") == b"":
                        continue
                    try:
                        message = parse_message(seg.payload, strict=strict)
                    except RemoteProtocolError:
                        continue
                    found.append(SipPacket(packet.ts_ns, *flow, "udp", message, seg.payload))
                    continue
                parser = streams.setdefault(flow, StreamParser(strict=strict))
                try:
                    parser.feed(seg.payload)
                    while (event := parser.next_event()) is not None:
                        if isinstance(event, KeepAlive):
                            continue
                        found.append(SipPacket(packet.ts_ns, *flow, "tcp", event, b""))
                except RemoteProtocolError:
                    streams.pop(flow, None)
    except CaptureError as exc:
        raise PeerError(f"capture {path} is damaged: {exc}") from exc
    return found


def label(message: Message) -> str:
    """``"INVITE"`` for a request, ``"407 INVITE"`` for a response (status and CSeq method)."""
    if isinstance(message, Request):
        return message.method
    assert isinstance(message, Response)
    cseq = message.cseq
    return f"{message.status} {cseq.method if cseq is not None else '?'}"


def sip_summary(packets: Iterable[SipPacket], *, unique: bool = True) -> Counter[str]:
    """How many messages of each :func:`label`; retransmissions count once when ``unique``.

    A retransmission is the same bytes between the same addresses again.
    """
    seen: set[tuple[str, int, str, int, bytes]] = set()
    counts: Counter[str] = Counter()
    for pkt in packets:
        if unique:
            key = (pkt.src, pkt.sport, pkt.dst, pkt.dport, pkt.raw or pkt.message.to_bytes())
            if key in seen:
                continue
            seen.add(key)
        counts[label(pkt.message)] += 1
    return counts
