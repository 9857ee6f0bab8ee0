"""A UDP socket that drains every waiting datagram per wake-up of the event loop.

asyncio's datagram transport reads one datagram per turn of the loop: each
costs a ``select``, a handle run and the transport's bookkeeping, which was
about a tenth of the gateway's time per message under load. Here the loop
wakes us when the socket is readable and we read until it is empty (at most
:data:`BATCH`, so timers and streams still get their turn during a flood).
Sends go straight to ``sendto``; only when the kernel's send buffer is full
do they queue until the socket is writable again.

The buffers are large on purpose: a pause of the worker (a garbage collection,
a burst of work) must be absorbed by the kernel's queue, not turned into lost
datagrams that the phones retransmit half a second later (RFC 3261 T1).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import time
from collections.abc import Callable
from typing import Final

from sipwarden.net.live import BpfInstruction, attach_program

from .model import Endpoint

__all__ = ["BUFFER_BYTES", "DatagramSocket", "peer_endpoint", "steering_program"]

log = logging.getLogger("sipwarden.gateway")

BATCH: Final = 256  # datagrams read per wake-up before yielding to the loop
MAX_DATAGRAM: Final = 65_535
# Kernel queue per socket, each way: about 4,000 typical SIP messages. Raised
# past net.core.rmem_max with the *FORCE options when the process may (root or
# CAP_NET_ADMIN); otherwise the kernel caps it at rmem_max/wmem_max.
BUFFER_BYTES: Final = 4 * 1024 * 1024
MAX_QUEUED: Final = 10_000  # sends waiting for a full send buffer; more are dropped
# Linux's asm-generic/socket.h; the socket module does not name them.
SO_SNDBUFFORCE: Final = 32
SO_RCVBUFFORCE: Final = 33

Receiver = Callable[[bytes, Endpoint, float], None]

# Linux's asm-generic/socket.h and filter.h.
SO_ATTACH_REUSEPORT_CBPF: Final = 51
_SKF_NET_OFF: Final = 0x100000  # subtracted from an offset: from the network header


def _at_network_header(offset: int) -> int:
    return (offset - _SKF_NET_OFF) & 0xFFFFFFFF


def steering_program(workers: int) -> list[BpfInstruction]:
    """Classic BPF for SO_ATTACH_REUSEPORT_CBPF: the socket of the group (one per
    worker) is the source address modulo the number of workers.

    The kernel's own choice hashes the source port too, so a flood that varies
    its ports was spread over the workers, each counting a share of it against
    the per-source limits. Chosen by address, one source's traffic all meets
    one worker's counters. IPv4 sources by their address, IPv6 ones by its
    last 32 bits; both kinds reach a dual-stack socket.
    """
    return [
        BpfInstruction(0x30, 0, 0, _at_network_header(0)),  # ldb [net + 0]: version, IHL
        BpfInstruction(0x74, 0, 0, 4),  # rsh #4: the IP version
        BpfInstruction(0x15, 0, 2, 4),  # jeq #4 ? next : +2
        BpfInstruction(0x20, 0, 0, _at_network_header(12)),  # ld [net + 12]: IPv4 source
        BpfInstruction(0x05, 0, 0, 1),  # ja +1
        BpfInstruction(0x20, 0, 0, _at_network_header(20)),  # ld [net + 20]: IPv6 source, low
        BpfInstruction(0x94, 0, 0, workers),  # mod #workers
        BpfInstruction(0x16, 0, 0, 0),  # ret a: the socket's index in the group
    ]


def _steer_by_source(sock: socket.socket, workers: int) -> None:
    """One worker per source address (see :func:`steering_program`); where the kernel
    refuses, it keeps its own choice, which is still correct, only less exact."""
    try:
        attach_program(sock, SO_ATTACH_REUSEPORT_CBPF, steering_program(workers))
    except OSError as error:
        log.warning("sources not steered to one worker each: %s", error)


def peer_endpoint(transport: str, address: tuple[str, int] | tuple[str, int, int, int]) -> Endpoint:
    """The peer of a socket address; an IPv4 peer of a dual-stack socket by its IPv4 address."""
    return Endpoint(transport, address[0].removeprefix("::ffff:"), address[1])


def _grow_buffer(sock: socket.socket, forced: int, plain: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, forced, BUFFER_BYTES)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, plain, BUFFER_BYTES)


def _bound_socket(host: str, port: int, workers: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        # Every worker binds the same listener (the kernel spreads the phones).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        _grow_buffer(sock, SO_RCVBUFFORCE, socket.SO_RCVBUF)
        _grow_buffer(sock, SO_SNDBUFFORCE, socket.SO_SNDBUF)
        sock.setblocking(False)
        sock.bind(address)
        if workers > 1:
            _steer_by_source(sock, workers)
    except BaseException:
        sock.close()
        raise
    return sock


class DatagramSocket:
    """One bound UDP socket on the running loop; ``receive`` gets each datagram.

    ``workers``: how many processes share the address (SO_REUSEPORT); with more
    than one, each source address is given to one of them.
    """

    def __init__(self, host: str, port: int, receive: Receiver, *, workers: int = 1) -> None:
        self._sock = _bound_socket(host, port, workers)
        self._receive = receive
        self._queue: collections.deque[tuple[bytes, tuple[str, int]]] = collections.deque()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._drain)
        self._dropping = False  # the queue overflowed and has not drained since

    def _drain(self) -> None:
        recvfrom = self._sock.recvfrom
        receive = self._receive
        for _ in range(BATCH):
            try:
                data, address = recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                # ICMP port unreachable for an earlier send and the like: the
                # peer is gone; the next datagram is still there to read.
                log.debug("UDP error: %s", error)
                continue
            try:
                receive(data, peer_endpoint("udp", address), time.time())
            except Exception:
                # A bug must cost one datagram, not the rest of the batch (and the
                # traceback is what a report needs). Zero-cost when nothing raises.
                log.exception("a datagram from %s:%s could not be handled", *address[:2])

    def send(self, data: bytes, to: Endpoint) -> None:
        address = (to.host, to.port)
        if self._queue:
            self._enqueue(data, address)
            return
        try:
            self._sock.sendto(data, address)
        except (BlockingIOError, InterruptedError):
            self._enqueue(data, address)
            self._loop.add_writer(self._sock.fileno(), self._flush)
        except OSError as error:
            log.debug("UDP send to %s failed: %s", to.hostport, error)

    def _enqueue(self, data: bytes, address: tuple[str, int]) -> None:
        if len(self._queue) >= MAX_QUEUED:
            # UDP is lossy by contract: the sender retransmits. Said once per overflow.
            if not self._dropping:
                self._dropping = True
                log.warning("UDP send queue full (%d): dropping sends until it drains", MAX_QUEUED)
            return
        self._queue.append((data, address))

    def _flush(self) -> None:
        queue = self._queue
        while queue:
            data, address = queue[0]
            try:
                self._sock.sendto(data, address)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                log.debug("UDP send to %s:%s failed: %s", *address, error)
            queue.popleft()
        self._dropping = False
        self._loop.remove_writer(self._sock.fileno())

    def close(self) -> None:
        if self._sock.fileno() < 0:
            return
        self._loop.remove_reader(self._sock.fileno())
        if self._queue:
            self._loop.remove_writer(self._sock.fileno())
        self._sock.close()
