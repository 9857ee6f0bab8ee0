"""The gateway's UDP socket: every datagram of a burst arrives, errors do not stop it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest

from sipwarden.gateway.datagrams import (
    BATCH,
    BUFFER_BYTES,
    MAX_QUEUED,
    DatagramSocket,
    steering_program,
)
from sipwarden.gateway.model import Endpoint

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


async def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


def test_a_burst_larger_than_a_batch_arrives_whole_and_in_order() -> None:
    async def scenario() -> list[bytes]:
        received: list[tuple[bytes, Endpoint]] = []
        port = _free_port()
        udp = DatagramSocket(HOST, port, lambda data, src, now: received.append((data, src)))
        count = 3 * BATCH + 7
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
            phone.bind((HOST, 0))
            for number in range(count):  # sent before the loop reads any of them
                phone.sendto(b"OPTIONS %d" % number, (HOST, port))
            await _wait_for(lambda: len(received) == count)
            assert {source for _, source in received} == {
                Endpoint("udp", HOST, phone.getsockname()[1])
            }
        udp.close()
        udp.close()  # closing twice is harmless
        return [data for data, _ in received]

    datagrams = asyncio.run(scenario())
    assert datagrams == [b"OPTIONS %d" % number for number in range(3 * BATCH + 7)]


def test_sends_arrive_and_an_unreachable_peer_does_not_stop_receiving() -> None:
    async def scenario() -> None:
        received: list[bytes] = []
        port = _free_port()
        udp = DatagramSocket(HOST, port, lambda data, src, now: received.append(data))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
            phone.bind((HOST, 0))
            phone.settimeout(2.0)
            udp.send(b"SIP/2.0 200 OK", Endpoint("udp", HOST, phone.getsockname()[1]))
            assert phone.recvfrom(100) == (b"SIP/2.0 200 OK", (HOST, port))
            # Nobody listens there: the ICMP port unreachable comes back as an
            # error on our socket, which must not end the reading.
            udp.send(b"SIP/2.0 200 OK", Endpoint("udp", HOST, _free_port()))
            await asyncio.sleep(0.05)
            phone.sendto(b"still here", (HOST, port))
            await _wait_for(lambda: received == [b"still here"])
        udp.close()

    asyncio.run(scenario())


def test_buffers_are_large() -> None:
    """Big kernel queues absorb a worker's pauses (root may exceed rmem_max)."""

    async def scenario() -> tuple[int, int]:
        udp = DatagramSocket(HOST, _free_port(), lambda data, src, now: None)
        sock = udp._sock  # the kernel's view of the socket is the point
        sizes = (
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
        )
        udp.close()
        return sizes

    with open("/proc/sys/net/core/rmem_max") as rmem, open("/proc/sys/net/core/wmem_max") as wmem:
        limits = int(rmem.read()), int(wmem.read())
    for size, limit in zip(asyncio.run(scenario()), limits, strict=True):
        # Linux doubles the value set (for its bookkeeping) and reports that.
        assert size >= 2 * min(BUFFER_BYTES, limit)


def test_a_failing_handler_costs_one_datagram_not_the_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> list[bytes]:
        handled: list[bytes] = []

        def handle(data: bytes, source: Endpoint, now: float) -> None:
            if data == b"poison":
                raise RuntimeError("a bug")
            handled.append(data)

        port = _free_port()
        udp = DatagramSocket(HOST, port, handle)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
            for data in (b"one", b"poison", b"two"):
                phone.sendto(data, (HOST, port))
            await _wait_for(lambda: len(handled) == 2)
        udp.close()
        return handled

    assert asyncio.run(scenario()) == [b"one", b"two"]
    assert "could not be handled" in caplog.text


def _senders_by_socket(workers: int) -> dict[str, set[int]]:
    """Which of two sockets sharing a port got the datagrams of each source address,
    each address sending from 32 source ports."""

    async def scenario() -> dict[str, set[int]]:
        got: dict[str, set[int]] = {}
        port = _free_port()

        def receiver(index: int) -> Callable[[bytes, Endpoint, float], None]:
            return lambda data, src, now: got.setdefault(src.host, set()).add(index)

        sockets = [DatagramSocket(HOST, port, receiver(index), workers=workers) for index in (0, 1)]
        senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(64)]
        try:
            for number, sender in enumerate(senders):
                sender.bind((f"127.0.0.{1 + number % 2}", 0))
                sender.sendto(b"OPTIONS", (HOST, port))
            await _wait_for(lambda: sum(len(s) for s in got.values()) >= 2 and _settled(got))
            await asyncio.sleep(0.1)  # the rest of the 64 datagrams
        finally:
            for sender in senders:
                sender.close()
            for udp in sockets:
                udp.close()
        return got

    return asyncio.run(scenario())


def _settled(got: dict[str, set[int]]) -> bool:
    return set(got) == {"127.0.0.1", "127.0.0.2"}


def test_workers_get_every_datagram_of_a_source_address() -> None:
    """Steered by address: a flood that varies its source ports still meets one worker's
    per-source counters, and two addresses that differ in the low bit meet two."""
    assert steering_program(2)[-2].k == 2
    assert _senders_by_socket(workers=2) == {"127.0.0.1": {1}, "127.0.0.2": {0}}


def test_without_steering_the_kernel_spreads_a_source_over_the_workers() -> None:
    """The control: the kernel's own choice hashes the ports too (2**-31 odds of not)."""
    got = _senders_by_socket(workers=1)
    assert got["127.0.0.1"] == {0, 1} or got["127.0.0.2"] == {0, 1}


def test_a_full_send_queue_drops_and_says_so_once_per_overflow(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Sends wait in a bounded queue while the kernel's buffer is full; past the bound
    they are dropped (UDP: the sender retransmits), with one warning per overflow."""

    async def scenario() -> list[bytes]:
        port = _free_port()
        udp = DatagramSocket(HOST, port, lambda data, src, now: None)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
            phone.bind((HOST, 0))
            phone.settimeout(2.0)
            to = (HOST, phone.getsockname()[1])
            for round_ in range(2):
                # As the kernel refusing sends would leave it: the queue at its bound.
                for number in range(MAX_QUEUED + 5):
                    udp._enqueue(b"%d-%d" % (round_, number), to)  # the overflow path
                udp._flush()  # the socket is writable again: the queue drains
            first = [phone.recv(100) for _ in range(3)]
        udp.close()
        return first

    assert asyncio.run(scenario()) == [b"0-0", b"0-1", b"0-2"]
    warnings = [record for record in caplog.records if "send queue full" in record.message]
    assert len(warnings) == 2  # one per overflow, not one per dropped send
