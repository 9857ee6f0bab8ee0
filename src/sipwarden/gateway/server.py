"""The gateway's asyncio adapter: listeners that only move bytes between sockets and the core.

UDP datagrams go to :meth:`GatewayCore.receive`; TCP and TLS streams are
framed by the SIP core's :class:`~sipwarden.sip.parser.StreamParser` and go to
:meth:`GatewayCore.receive_message`. What the core returns is sent: over UDP
from the listener socket (so the PBX and the phones see the port the Via
names), over a stream on the connection the peer opened, or on a new one.
A one-second timer drives the health probes and the ban manager's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Coroutine, Iterable
from typing import Final, cast

from sipwarden.errors import RemoteProtocolError
from sipwarden.sip.parser import KeepAlive, StreamParser, parse_message

from .core import GatewayCore
from .datagrams import DatagramSocket, peer_endpoint
from .model import Endpoint, MediaStep, Send, Side
from .rtpengine import Leg, MediaError, RtpengineClient

__all__ = ["GatewayServer"]

log = logging.getLogger("sipwarden.gateway")

TICK: Final = 1.0
MAX_CONNECTIONS: Final = 10_000  # streams open at once; more are refused (bounded state)
IDLE_TIMEOUT: Final = 600.0  # a stream silent this long is closed


class _Stream(asyncio.Protocol):
    def __init__(self, server: GatewayServer, transport_name: str) -> None:
        self.server = server
        self.name = transport_name
        self.parser = StreamParser(strict=True, limits=server.core.limits)
        self._recent = bytearray()  # the last bytes received, to answer a broken message
        self.transport: asyncio.Transport | None = None
        self.peer: Endpoint | None = None
        self.peercert: dict[str, object] | None = None
        self.last_seen = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)
        self.peer = peer_endpoint(self.name, self.transport.get_extra_info("peername"))
        # The verified client certificate (mutual TLS), or None.
        self.peercert = self.transport.get_extra_info("peercert")
        if not self.server.register(self.peer, self):
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None
        self.last_seen = time.monotonic()
        now = time.time()
        self._recent += data
        del self._recent[: -self.server.core.limits.max_message_size]  # bounded
        try:
            self.parser.feed(data)
            while (event := self.parser.next_event()) is not None:
                if isinstance(event, KeepAlive):
                    if event.kind == "ping" and self.transport is not None:
                        self.transport.write(b"\r\n")  # RFC 5626 4.4.1 pong
                    continue
                self.server.dispatch(
                    self.server.core.receive_message(event, self.peer, now, peercert=self.peercert)
                )
        except RemoteProtocolError as error:
            # RFC 3261 18.3: the framing is lost; the connection cannot go on.
            # The bytes the parser still held are the message that broke it.
            broken = bytes(self._recent[-self.parser.buffered :]) if self.parser.buffered else b""
            self.server.dispatch(self.server.core.stream_error(error, self.peer, now, broken))
            if self.transport is not None:
                self.transport.close()  # after the answer: close() flushes the buffer first

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.server.unregister(self.peer, self)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class GatewayServer:
    """The listeners of one gateway process."""

    def __init__(
        self,
        core: GatewayCore,
        listeners: Iterable[Endpoint],
        *,
        server_tls: ssl.SSLContext | None = None,
        client_tls: ssl.SSLContext | None = None,
        media: RtpengineClient | None = None,
        workers: int = 1,
    ) -> None:
        self.core = core
        self.workers = workers  # processes sharing the listeners
        self.media = media
        self.listeners = list(listeners)
        self.server_tls = server_tls
        self.client_tls = client_tls
        self._udp: dict[int, DatagramSocket] = {}  # by address family
        self._inside_udp: DatagramSocket | None = None  # this worker's own socket towards the PBX
        self._streams: dict[Endpoint, _Stream] = {}
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self.media is not None:
            await self.media.start()
        for listener in self.listeners:
            if listener.transport == "udp":
                udp = DatagramSocket(
                    listener.host, listener.port, self._datagram, workers=self.workers
                )
                self._udp[6 if ":" in listener.host else 4] = udp
            else:
                await self._listen_stream(listener)
            log.info("listening on %s:%s", listener.transport, listener.hostport)
        await self._open_inside_socket()

    async def _open_inside_socket(self) -> None:
        """A socket of its own at the inside face, unless a listener is that address:
        the PBX answers to the Via we write there and sends in-dialog requests and
        calls for the phones to the Record-Route and Contacts we write there. A
        TLS-only gateway needs one for a UDP PBX, and so does each of several
        workers, whose inside ports differ so that the PBX's answers and requests
        come back to the worker that has the call (the kernel would spread them by
        the PBX's address alone, all to one worker). A TCP or TLS PBX opens its own
        connections to that port for what it sends first."""
        inside = self.core.settings.inside
        for listener in self.listeners:
            if (listener.transport, listener.host, listener.port) == (
                inside.transport,
                inside.host,
                inside.port,
            ):
                return
        if inside.transport == "udp":
            udp = DatagramSocket(inside.host, inside.port, self._datagram)
            self._inside_udp = udp
            self._udp.setdefault(6 if ":" in inside.host else 4, udp)
        elif inside.transport == "tls" and self.server_tls is None:
            log.warning(
                "the PBX cannot open TLS connections to %s: no [gateway.tls] certificate",
                inside.hostport,
            )
            return
        else:
            await self._listen_stream(inside)
        log.info("talking to the PBX from %s:%s", inside.transport, inside.hostport)

    async def _listen_stream(self, listener: Endpoint) -> None:
        context = self.server_tls if listener.transport == "tls" else None
        name = listener.transport
        server = await asyncio.get_running_loop().create_server(
            lambda: _Stream(self, name),
            listener.host,
            listener.port,
            ssl=context,
            reuse_port=True,
        )
        self._servers.append(server)

    async def serve(self, stop: asyncio.Event) -> None:
        """Tick until ``stop`` is set, then close every listener and connection."""
        while not stop.is_set():
            self.dispatch(self.core.tick(time.time()))
            self._close_idle()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK)
        await self.close()

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for stream in list(self._streams.values()):
            if stream.transport is not None:
                stream.transport.close()
        for udp in {*self._udp.values(), self._inside_udp}:
            if udp is not None:
                udp.close()
        for task in list(self._tasks):
            task.cancel()
        if self.media is not None:
            await self.media.close()

    # ---------------------------------------------------------------- connections

    def register(self, peer: Endpoint, stream: _Stream) -> bool:
        if len(self._streams) >= MAX_CONNECTIONS:
            log.warning(
                "refused a %s connection from %s: too many open", peer.transport, peer.hostport
            )
            return False
        self._streams[peer] = stream
        return True

    def unregister(self, peer: Endpoint, stream: _Stream) -> None:
        if self._streams.get(peer) is stream:
            del self._streams[peer]

    def _close_idle(self) -> None:
        cutoff = time.monotonic() - IDLE_TIMEOUT
        for stream in list(self._streams.values()):
            if stream.last_seen < cutoff and stream.transport is not None:
                stream.transport.close()

    # ---------------------------------------------------------------- sending

    def _datagram(self, data: bytes, source: Endpoint, now: float) -> None:
        self.dispatch(self.core.receive(data, source, now))

    def dispatch(self, sends: list[Send]) -> None:
        for send in sends:
            if send.media is not None and self.media is not None:
                self._spawn(self._anchored(send, send.media, self.media))
            else:
                self._send(send)

    def _send(self, send: Send) -> None:
        if send.to.transport == "udp":
            self._send_datagram(send)
        else:
            self._send_stream(send)

    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _anchored(self, send: Send, step: MediaStep, media: RtpengineClient) -> None:
        """Let rtpengine rewrite the SDP, then send; on failure nothing is sent (the
        original SDP would reveal the PBX's media address) and the sender retransmits."""
        try:
            if step.kind == "delete":
                self._send(send)
                await media.delete(call_id=step.call_id, from_tag=step.from_tag, to_tag=step.to_tag)
                return
            message = parse_message(send.data)
            leg = Leg.PBX if step.toward is Side.INSIDE else Leg.OUTSIDE
            if step.kind == "offer":
                sdp = await media.offer(
                    call_id=step.call_id,
                    from_tag=step.from_tag,
                    to_tag=step.to_tag,
                    sdp=message.body,
                    toward=leg,
                )
            else:
                sdp = await media.answer(
                    call_id=step.call_id,
                    from_tag=step.from_tag,
                    to_tag=step.to_tag or "",
                    sdp=message.body,
                )
        except (MediaError, RemoteProtocolError) as error:
            log.error("media anchoring failed, %s not sent: %s", step.kind, error)  # noqa: TRY400
            return
        message.set_body(sdp)
        self._send(send._replace(data=message.to_bytes(), media=None))

    def _send_datagram(self, send: Send) -> None:
        inside = self._inside_udp
        if inside is not None and self.core.upstreams.index_of(send.to) >= 0:
            udp: DatagramSocket | None = inside  # from the port our inside Via names
        else:
            udp = self._udp.get(6 if ":" in send.to.host else 4)
        if udp is None:
            log.warning("no UDP listener for %s", send.to.hostport)
            return
        udp.send(send.data, send.to)

    def _send_stream(self, send: Send) -> None:
        stream = self._streams.get(send.to)
        if stream is not None:
            stream.send(send.data)
            return
        if self.core.upstreams.index_of(send.to) < 0:
            # Connections go out only to the PBX: an answer for a phone whose
            # connection is gone is dropped (a phone behind NAT could not accept
            # one anyway, RFC 5626), and no outsider can make the gateway connect
            # to an address of its choosing.
            log.debug("no connection to %s:%s; dropped", send.to.transport, send.to.hostport)
            return
        self._spawn(self._connect_and_send(send))

    async def _connect_and_send(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        name = send.to.transport
        context = self.client_tls if name == "tls" else None
        if name == "tls" and context is None:
            context = ssl.create_default_context()
        try:
            _, stream = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Stream(self, name), send.to.host, send.to.port, ssl=context
                ),
                timeout=5.0,
            )
        except (OSError, TimeoutError) as error:
            log.warning("cannot reach %s:%s: %s", name, send.to.hostport, error)
            return
        # Registered under the address it connected to, so later sends reuse it.
        self._streams[send.to] = stream
        stream.send(send.data)
