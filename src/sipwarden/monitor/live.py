"""Live sources for the monitor: a network interface (AF_PACKET) and a HEP feed.

Both feed the same :class:`~.run.MonitorRun` as the capture files, with the
packets' own timestamps (the kernel's receive time, or the time the HEP agent
stamped). Events are written as soon as the engine reports them. A run stops
after ``duration`` seconds when one is given, or on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from sipwarden.engine.contract import Direction
from sipwarden.errors import SipwardenError
from sipwarden.net.hep import PROTO_TYPE_SIP, HepPacket
from sipwarden.net.hep_collector import serve_hep
from sipwarden.net.live import LiveCapture
from sipwarden.net.packet import Segment

from .run import MonitorRun
from .sources import CaptureObserver, SourceOptions, observation_of_datagram

__all__ = ["analyse_hep", "analyse_interface", "parse_hep_address"]

log = logging.getLogger("sipwarden.monitor")


def analyse_interface(
    interface: str, run: MonitorRun, options: SourceOptions, *, duration: float | None
) -> None:
    """Capture on ``interface`` and analyse until ``duration`` elapses or a signal arrives."""
    observer = CaptureObserver(options)
    with LiveCapture(
        interface, ports=sorted(options.ports), sniff_any_port=options.sniff_any_port
    ) as capture:
        stop = _stop_on_signal_or_timer(capture.close, duration)
        log.info(
            "capturing on %s, SIP ports %s (%s backend)",
            interface,
            ",".join(map(str, sorted(options.ports))),
            capture.backend,
        )
        try:
            for packet in capture:
                for observation in observer.observe(packet):
                    run.handle(observation)
        finally:
            stop()
        stats = capture.stats()
        log.info("capture ended: %d packets, %d dropped by the kernel", stats.packets, stats.drops)


def _stop_on_signal_or_timer(
    close: Callable[[], None], duration: float | None
) -> Callable[[], None]:
    """Arrange for ``close()`` on SIGINT/SIGTERM and after ``duration``; returns the undo."""
    timer = threading.Timer(duration, close) if duration is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        close()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def undo() -> None:
        if timer is not None:
            timer.cancel()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return undo


def parse_hep_address(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` or ``[v6]:PORT`` to a (host, port) pair."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise SipwardenError(f"--hep {text!r}: expected ADDR:PORT, e.g. 0.0.0.0:9060")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - a collector listens


def analyse_hep(
    address: str, run: MonitorRun, options: SourceOptions, *, duration: float | None
) -> None:
    """Receive a HEP v1/v2/v3 feed (UDP and TCP) and analyse the SIP it carries."""
    host, port = parse_hep_address(address)

    def on_packet(packet: HepPacket) -> None:
        if packet.proto_type != PROTO_TYPE_SIP:
            return
        # The agent already framed each message (siptrace sends whole messages,
        # TCP included), so each HEP packet is one datagram-like message.
        segment = Segment(packet.src, packet.dst, packet.sport, packet.dport, "udp", packet.payload)
        observation = observation_of_datagram(
            packet.ts_ns / 1e9, segment, options, transport=packet.transport,
            direction=Direction.UNKNOWN,
        )  # fmt: skip
        if observation is not None:
            run.handle(observation)

    async def serve() -> None:
        server = await serve_hep(host, port, on_packet, tcp=True)
        log.info("receiving HEP on %s:%d (UDP and TCP)", host, port)
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopped.set)
        try:
            if duration is None:
                await stopped.wait()
            else:
                await asyncio.wait_for(stopped.wait(), timeout=duration)
        except TimeoutError:
            pass
        finally:
            await server.aclose()
            log.info(
                "HEP feed ended: %d packets delivered, %d malformed",
                server.collector.stats["delivered"],
                server.collector.stats["malformed"],
            )

    asyncio.run(serve())
