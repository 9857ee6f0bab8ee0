"""The HEP collector: receive a HEP feed over UDP (and TCP) and hand out packets.

``sipwarden monitor --hep ADDR:PORT`` listens here for what Kamailio
``siptrace``, OpenSIPS ``proto_hep``, Asterisk ``res_hep``, FreeSWITCH,
captagent or heplify mirror to a capture server. This module only moves
bytes: :mod:`sipwarden.net.hep` decodes, the callback analyses.

* UDP: one HEPv1/v2/v3 packet per datagram (:class:`HepCollector` is the
  asyncio :class:`~asyncio.DatagramProtocol`).
* TCP (optional): a stream of HEPv3 packets framed by their total-length
  field, cut by a :class:`~sipwarden.net.hep.HepStreamBuffer` per connection
  (fewer than 64 KiB held per connection) with at most ``max_connections``
  connections at a time; a connection whose framing breaks is dropped.
* A malformed packet is counted (``stats["malformed"]``, ``last_error``) and
  dropped; the collector never dies of its input.
* With an ``auth_key`` configured, packets without that key in HEPv3 chunk 14
  (HEPv1/v2 cannot carry one) are counted (``stats["auth_failed"]``) and
  dropped. The comparison is constant-time.
* Timestamps come from the packets; nothing here reads a clock.

Exceptions raised by ``on_packet`` are not caught: a bug in the consumer is
not a malformed packet, and asyncio reports it through the loop's exception
handler while the socket keeps receiving.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import hmac
from collections.abc import Callable
from types import TracebackType
from typing import Final, cast

from sipwarden.errors import RemoteProtocolError
from sipwarden.net.hep import DEFAULT_MAX_PAYLOAD, HepPacket, HepStreamBuffer, decode_hep

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "HepCollector",
    "HepServer",
    "serve_hep",
]

#: TCP connections served at once; more are closed as they arrive. Each holds
#: at most one incomplete HEP packet (< 64 KiB), so this bounds the memory too.
DEFAULT_MAX_CONNECTIONS: Final = 256

# How often serve_hep(port=0, tcp=True) tries for a port free for both UDP and TCP.
_PORT_ATTEMPTS: Final = 16

_STAT_KEYS: Final = (
    "datagrams",  # UDP datagrams received
    "frames",  # HEP packets cut out of TCP streams
    "delivered",  # packets handed to on_packet
    "malformed",  # packets that did not decode (and broken TCP framing)
    "auth_failed",  # packets without the configured authentication key
    "socket_errors",  # errors the UDP socket reported (ICMP unreachable, …)
    "connections",  # TCP connections accepted
    "connections_rejected",  # TCP connections closed at once: too many
    "connections_dropped",  # TCP connections closed for broken framing
)


class HepCollector(asyncio.DatagramProtocol):
    """Decode HEP packets, check their key, count the bad ones, pass the good ones on.

    ``on_packet`` is called with every :class:`~sipwarden.net.hep.HepPacket`
    that decodes and, when ``auth_key`` is set, carries that key.
    :meth:`handle_packet` is the socket-free entry (used for each UDP
    datagram and each framed TCP packet); ``stats`` counts what happened
    (keys: ``datagrams``, ``frames``, ``delivered``, ``malformed``,
    ``auth_failed``, ``socket_errors``, ``connections``,
    ``connections_rejected``, ``connections_dropped``) and ``last_error``
    keeps the most recent decoding error for diagnostics.
    """

    def __init__(
        self,
        on_packet: Callable[[HepPacket], None],
        *,
        auth_key: str | None = None,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        if max_payload < 1:
            raise ValueError("max_payload must be positive")
        self._on_packet = on_packet
        self._auth_key = None if auth_key is None else auth_key.encode()
        self._max_payload = max_payload
        self.stats: dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)
        self.last_error: RemoteProtocolError | None = None

    def handle_packet(self, data: bytes) -> HepPacket | None:
        """Decode one HEP packet and deliver it; return it, or ``None`` if dropped."""
        try:
            packet = decode_hep(data, max_payload=self._max_payload)
        except RemoteProtocolError as exc:
            self.stats["malformed"] += 1
            self.last_error = exc
            return None
        key = self._auth_key
        if key is not None and (
            packet.auth_key is None or not hmac.compare_digest(packet.auth_key.encode(), key)
        ):
            self.stats["auth_failed"] += 1
            return None
        self.stats["delivered"] += 1
        self._on_packet(packet)
        return packet

    # asyncio.DatagramProtocol (the HepServer owns and closes the transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        """One UDP datagram: one HEP packet. The sender's address plays no role."""
        self.stats["datagrams"] += 1
        self.handle_packet(data)

    def error_received(self, exc: Exception) -> None:
        """An error the socket reported (e.g. ICMP port unreachable): counted."""
        self.stats["socket_errors"] += 1


class _HepStreamProtocol(asyncio.Protocol):
    """One TCP connection carrying HEPv3 packets."""

    def __init__(self, collector: HepCollector, server: HepServer) -> None:
        self._collector = collector
        self._server = server
        self._buffer = HepStreamBuffer()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast("asyncio.Transport", transport)
        stats = self._collector.stats
        if len(self._server._connections) >= self._server.max_connections:
            stats["connections_rejected"] += 1
            transport.abort()
            return
        stats["connections"] += 1
        self._transport = transport
        self._server._connections.add(transport)

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            return  # rejected or already dropped
        collector = self._collector
        buffer = self._buffer
        frames = buffer.feed(data)
        collector.stats["frames"] += len(frames)
        for frame in frames:
            collector.handle_packet(frame)
        if buffer.error is not None:
            # The stream cannot be resynchronised: drop the connection.
            collector.stats["malformed"] += 1
            collector.stats["connections_dropped"] += 1
            collector.last_error = buffer.error
            self._close()

    def eof_received(self) -> bool | None:
        return None  # close our side too; an incomplete tail is simply discarded

    def connection_lost(self, exc: Exception | None) -> None:
        self._close()

    def _close(self) -> None:
        transport = self._transport
        if transport is not None:
            self._transport = None
            self._server._connections.discard(transport)
            transport.abort()


class HepServer:
    """A running HEP listener, returned by :func:`serve_hep`.

    ``collector`` holds the counters; ``udp_address`` and ``tcp_address`` are
    the bound ``(host, port)`` (the latter ``None`` without TCP). Close it with
    :meth:`aclose` (or ``async with``): the UDP socket, the TCP listener and
    every open TCP connection are closed.
    """

    def __init__(
        self,
        collector: HepCollector,
        udp: asyncio.DatagramTransport,
        *,
        max_connections: int,
    ) -> None:
        self.collector = collector
        self.max_connections = max_connections
        self._udp: asyncio.DatagramTransport | None = udp
        self._tcp: asyncio.Server | None = None
        self._connections: set[asyncio.Transport] = set()
        self.udp_address: tuple[str, int] = udp.get_extra_info("sockname")[:2]
        self.tcp_address: tuple[str, int] | None = None

    @property
    def connection_count(self) -> int:
        """TCP connections open now."""
        return len(self._connections)

    def close(self) -> None:
        """Stop receiving; idempotent. Await :meth:`wait_closed` (or use :meth:`aclose`)."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
        for transport in list(self._connections):
            transport.abort()
        self._connections.clear()

    async def wait_closed(self) -> None:
        """Wait until the TCP listener is closed and the sockets are released."""
        if self._tcp is not None:
            await self._tcp.wait_closed()
            self._tcp = None
        # Transports close on the next loop iteration.
        await asyncio.sleep(0)

    async def aclose(self) -> None:
        """Close and wait."""
        self.close()
        await self.wait_closed()

    async def __aenter__(self) -> HepServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def serve_hep(
    host: str,
    port: int,
    on_packet: Callable[[HepPacket], None],
    *,
    auth_key: str | None = None,
    tcp: bool = False,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
) -> HepServer:
    """Listen for HEP on UDP ``host:port`` (and TCP on the same port if ``tcp``).

    ``port`` 0 picks a free port (the same number for UDP and TCP). Packets
    go to ``on_packet`` as described for :class:`HepCollector`. Binding
    errors propagate as :class:`OSError`.
    """
    if max_connections < 1:
        raise ValueError("max_connections must be positive")
    loop = asyncio.get_running_loop()
    collector = HepCollector(on_packet, auth_key=auth_key, max_payload=max_payload)
    attempts = _PORT_ATTEMPTS if port == 0 and tcp else 1
    attempt = 0
    while True:
        attempt += 1
        udp, _ = await loop.create_datagram_endpoint(lambda: collector, local_addr=(host, port))
        server = HepServer(collector, udp, max_connections=max_connections)
        if not tcp:
            return server
        try:
            server._tcp = await loop.create_server(
                functools.partial(_HepStreamProtocol, collector, server),
                host,
                server.udp_address[1],
            )
        except OSError as exc:
            await server.aclose()
            if exc.errno != errno.EADDRINUSE or attempt >= attempts:
                raise
            continue  # the ephemeral UDP port is taken for TCP: try another one
        server.tcp_address = server._tcp.sockets[0].getsockname()[:2]
        return server
