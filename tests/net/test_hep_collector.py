"""Tests of the HEP collector (``sipwarden.net.hep_collector``) over real sockets.

Everything runs on loopback. The interop tests start a real Kamailio with
``siptrace`` in HEP mode pointed at the collector, send it one OPTIONS with a
plain UDP socket and check what the collector received: the request and the
reply Kamailio mirrors, with their addresses, ports and timestamps.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from sipwarden.net.hep import HepPacket, encode_hep2, encode_hep3
from sipwarden.net.hep_collector import HepCollector, HepServer, serve_hep

T = TypeVar("T")

SIP = b"OPTIONS sip:pbx.example SIP/2.0\r\nCall-ID: c1@example\r\nContent-Length: 0\r\n\r\n"


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def hep3(payload: bytes = SIP, **kwargs: object) -> bytes:
    args: dict[str, object] = {"src": "192.0.2.1", "sport": 5062, "dst": "192.0.2.2", "dport": 5060}
    args.update(kwargs)
    return encode_hep3(payload, **args)  # type: ignore[arg-type]


def udp_sender(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.socket(family, socket.SOCK_DGRAM)


# --- UDP ----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_udp_feed_of_every_version(host: str) -> None:
    feed = [
        hep3(ts_ns=1_700_000_000_000_001_000, capture_id=9),
        hep3(compress=True, src="2001:db8::1", dst="2001:db8::2"),
        encode_hep2(SIP, src="10.0.0.1", sport=1, dst="10.0.0.2", dport=2, capture_id=3),
        encode_hep2(SIP, src="10.0.0.1", sport=1, dst="10.0.0.2", dport=2, version=1),
    ]

    async def scenario() -> list[HepPacket]:
        received: list[HepPacket] = []
        async with await serve_hep(host, 0, received.append) as server:
            assert server.udp_address[0] == host
            assert server.tcp_address is None
            with udp_sender(host) as sock:
                for datagram in feed:
                    sock.sendto(datagram, server.udp_address)
            await wait_until(lambda: len(received) == len(feed))
            assert server.collector.stats["datagrams"] == len(feed)
            assert server.collector.stats["delivered"] == len(feed)
        return received

    received = run(scenario())
    assert [p.version for p in received] == [3, 3, 2, 1]
    assert all(p.payload == SIP for p in received)
    assert received[0].ts_ns == 1_700_000_000_000_001_000
    assert received[0].capture_id == 9
    assert (received[1].src, received[1].dst) == ("2001:db8::1", "2001:db8::2")
    assert received[2].capture_id == 3


def test_malformed_datagrams_are_counted_not_fatal() -> None:
    async def scenario() -> HepCollector:
        received: list[HepPacket] = []
        async with await serve_hep("127.0.0.1", 0, received.append) as server:
            with udp_sender("127.0.0.1") as sock:
                sock.sendto(b"garbage", server.udp_address)
                sock.sendto(hep3()[:-1], server.udp_address)  # truncated
                sock.sendto(b"HEP3\x00\x06", server.udp_address)  # no chunks
                sock.sendto(hep3(), server.udp_address)
            await wait_until(lambda: len(received) == 1)
            return server.collector

    collector = run(scenario())
    assert collector.stats["datagrams"] == 4
    assert collector.stats["malformed"] == 3
    assert collector.stats["delivered"] == 1
    assert collector.last_error is not None
    assert collector.last_error.rule == "HEPv3 chunk 1 (IP protocol family)"


def test_auth_key_filter() -> None:
    feed = [
        hep3(auth_key="s3cret", correlation_id="good"),
        hep3(auth_key="wrong", correlation_id="wrong key"),
        hep3(auth_key="s3cret-longer", correlation_id="longer key"),
        hep3(correlation_id="no key"),
        encode_hep2(SIP, src="10.0.0.1", sport=1, dst="10.0.0.2", dport=2),  # cannot carry one
        hep3(auth_key="s3cret", correlation_id="good again"),
    ]

    async def scenario() -> tuple[list[HepPacket], HepCollector]:
        received: list[HepPacket] = []
        async with await serve_hep("127.0.0.1", 0, received.append, auth_key="s3cret") as server:
            with udp_sender("127.0.0.1") as sock:
                for datagram in feed:
                    sock.sendto(datagram, server.udp_address)
            await wait_until(lambda: server.collector.stats["datagrams"] == len(feed))
            return received, server.collector

    received, collector = run(scenario())
    assert [p.correlation_id for p in received] == ["good", "good again"]
    assert collector.stats["auth_failed"] == 4
    assert collector.stats["malformed"] == 0


def test_handle_packet_without_sockets() -> None:
    received: list[HepPacket] = []
    collector = HepCollector(received.append, max_payload=len(SIP))
    assert collector.handle_packet(hep3()) == received[0]
    assert collector.handle_packet(hep3(SIP + b"x")) is None
    assert collector.stats == {**collector.stats, "delivered": 1, "malformed": 1}
    with pytest.raises(ValueError, match="max_payload"):
        HepCollector(received.append, max_payload=0)


def test_on_packet_errors_are_not_swallowed() -> None:
    def broken(packet: HepPacket) -> None:
        raise RuntimeError("consumer bug")

    collector = HepCollector(broken)
    with pytest.raises(RuntimeError, match="consumer bug"):
        collector.handle_packet(hep3())


# --- TCP ----------------------------------------------------------------------------


def test_tcp_stream_split_anywhere() -> None:
    packets = [hep3(correlation_id=str(i), compress=i % 2 == 1) for i in range(5)]
    stream = b"".join(packets)

    async def scenario() -> tuple[list[HepPacket], HepServer]:
        received: list[HepPacket] = []
        async with await serve_hep("127.0.0.1", 0, received.append, tcp=True) as server:
            assert server.tcp_address is not None
            assert server.tcp_address[1] == server.udp_address[1]
            _, writer = await asyncio.open_connection(*server.tcp_address)
            for start in range(0, len(stream), 7):  # 7-byte writes, flushed one by one
                writer.write(stream[start : start + 7])
                await writer.drain()
                await asyncio.sleep(0)
            await wait_until(lambda: len(received) == len(packets))
            # The same port takes UDP too.
            with udp_sender("127.0.0.1") as sock:
                sock.sendto(hep3(correlation_id="udp"), server.udp_address)
            await wait_until(lambda: len(received) == len(packets) + 1)
            assert server.connection_count == 1
            writer.close()
            await writer.wait_closed()
            await wait_until(lambda: server.connection_count == 0)
        return received, server

    received, server = run(scenario())
    assert [p.correlation_id for p in received] == ["0", "1", "2", "3", "4", "udp"]
    assert server.collector.stats["frames"] == len(packets)
    assert server.collector.stats["connections"] == 1


def test_tcp_broken_framing_drops_the_connection() -> None:
    async def scenario() -> tuple[list[HepPacket], HepServer, bytes]:
        received: list[HepPacket] = []
        async with await serve_hep("127.0.0.1", 0, received.append, tcp=True) as server:
            assert server.tcp_address is not None
            reader, writer = await asyncio.open_connection(*server.tcp_address)
            # A good packet, then a HEPv2 packet, which TCP cannot frame.
            writer.write(hep3() + encode_hep2(SIP, src="::1", sport=1, dst="::1", dport=2))
            await writer.drain()
            rest = await asyncio.wait_for(reader.read(), 5)  # EOF: the server hung up
            writer.close()
            await wait_until(lambda: server.connection_count == 0)
        return received, server, rest

    received, server, rest = run(scenario())
    assert rest == b""
    assert len(received) == 1  # the packet before the damage was delivered
    stats = server.collector.stats
    assert (stats["malformed"], stats["connections_dropped"]) == (1, 1)
    assert server.collector.last_error is not None
    assert server.collector.last_error.rule == "HEPv3 stream framing"


def test_tcp_connection_limit() -> None:
    async def scenario() -> tuple[list[HepPacket], HepServer, bytes]:
        received: list[HepPacket] = []
        async with await serve_hep(
            "127.0.0.1", 0, received.append, tcp=True, max_connections=2
        ) as server:
            assert server.tcp_address is not None
            kept = [await asyncio.open_connection(*server.tcp_address) for _ in range(2)]
            await wait_until(lambda: server.connection_count == 2)
            reader, writer = await asyncio.open_connection(*server.tcp_address)
            try:
                refused = await asyncio.wait_for(reader.read(), 5)
            except ConnectionResetError:
                refused = b""
            writer.close()
            for _, kept_writer in kept:
                kept_writer.write(hep3())
                await kept_writer.drain()
            await wait_until(lambda: len(received) == 2)
            for _, kept_writer in kept:
                kept_writer.close()
        return received, server, refused

    received, server, refused = run(scenario())
    assert refused == b""
    assert server.collector.stats["connections"] == 2
    assert server.collector.stats["connections_rejected"] == 1
    assert len(received) == 2


def test_close_releases_ports_and_connections() -> None:
    async def scenario() -> tuple[tuple[str, int], bytes]:
        server = await serve_hep("127.0.0.1", 0, lambda packet: None, tcp=True)
        assert server.tcp_address is not None
        reader, writer = await asyncio.open_connection(*server.tcp_address)
        await wait_until(lambda: server.connection_count == 1)
        await server.aclose()
        await server.aclose()  # idempotent
        try:
            rest = await asyncio.wait_for(reader.read(), 5)
        except ConnectionResetError:
            rest = b""
        writer.close()
        return server.udp_address, rest

    address, rest = run(scenario())
    assert rest == b""
    # Both the UDP and the TCP port are free again.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(address)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as stream:
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        stream.bind(address)


def test_serve_hep_argument_checks() -> None:
    with pytest.raises(ValueError, match="max_connections"):
        run(serve_hep("127.0.0.1", 0, lambda packet: None, max_connections=0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        with pytest.raises(OSError, match="in use"):
            run(serve_hep("127.0.0.1", taken.getsockname()[1], lambda packet: None))


# --- interop with a real Kamailio ------------------------------------------------------

# A minimal proxy that mirrors every message of the transaction to the collector.
# tm is loaded so that sip_trace() traces the transaction: siptrace only mirrors
# the sl reply when the request carries its FL_SIPTRACE mark, which the
# transaction mode sets (message mode would mirror the OPTIONS alone). The
# correlation id (HEPv3 only) is the Call-ID with a suffix.
KAMAILIO_CFG = """#!KAMAILIO
debug=2
log_stderror=yes
children=1
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{sip_port}

loadmodule "pv.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "siptrace.so"

modparam("siptrace", "duplicate_uri", "sip:127.0.0.1:{hep_port}")
modparam("siptrace", "hep_mode_on", 1)
modparam("siptrace", "hep_version", {version})
modparam("siptrace", "hep_capture_id", {capture_id})
modparam("siptrace", "trace_to_database", 0)
modparam("siptrace", "trace_on", 1)
modparam("siptrace", "trace_flag", 22)
{auth_key_line}

request_route {{
    setflag(22);
    sip_trace("sip:127.0.0.1:{hep_port}", "$ci-sipwarden");
    sl_send_reply("200", "OK");
}}
"""
CAPTURE_ID = 4242
HEP_AUTH_KEY = "sipwarden-hep-key"


def kamailio_binary() -> str:
    path = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail("kamailio is not installed: run `apt-get install kamailio`")
    return path


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@pytest.fixture
def start_kamailio(
    tmp_path: Path,
) -> Iterator[Callable[[str], tuple[subprocess.Popen[bytes], Path]]]:
    """Start Kamailio in the foreground with a config text; killed in teardown."""
    binary = kamailio_binary()
    processes: list[subprocess.Popen[bytes]] = []

    def start(config: str) -> tuple[subprocess.Popen[bytes], Path]:
        cfg = tmp_path / "kamailio.cfg"
        cfg.write_text(config)
        check = subprocess.run(
            [binary, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30, check=False
        )
        if check.returncode != 0:
            pytest.fail(f"kamailio rejected the config:\n{check.stderr[-3000:]}")
        log = tmp_path / "kamailio.log"
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                # -DD: stay in the foreground, -E: log to stderr, -Y: a runtime
                # directory of our own (not /run/kamailio); small memory pools.
                [binary, "-DD", "-E", "-f", str(cfg), "-Y", str(tmp_path), "-m", "32", "-M", "8"],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        processes.append(process)
        return process, log

    yield start
    for process in processes:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def options_request(call_id: str, sip_port: int, client_port: int) -> bytes:
    return (
        f"OPTIONS sip:ping@127.0.0.1:{sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{client_port};branch=z9hG4bK-{call_id.partition('@')[0]}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:sipwarden@127.0.0.1>;tag=hep-test\r\n"
        f"To: <sip:ping@127.0.0.1:{sip_port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("version", [3, 2, 1])
def test_kamailio_siptrace_feed(
    version: int, start_kamailio: Callable[[str], tuple[subprocess.Popen[bytes], Path]]
) -> None:
    # HEPv3 carries the authentication key; HEPv1/v2 cannot, so no key is required.
    auth_key = HEP_AUTH_KEY if version == 3 else None

    async def scenario() -> tuple[str, int, int, list[HepPacket], HepCollector, float]:
        received: list[HepPacket] = []
        async with await serve_hep("127.0.0.1", 0, received.append, auth_key=auth_key) as server:
            sip_port = free_udp_port()
            process, log = start_kamailio(
                KAMAILIO_CFG.format(
                    sip_port=sip_port,
                    hep_port=server.udp_address[1],
                    version=version,
                    capture_id=CAPTURE_ID,
                    auth_key_line=(
                        f'modparam("siptrace", "auth_key", "{auth_key}")' if auth_key else ""
                    ),
                )
            )
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.bind(("127.0.0.1", 0))
                client.setblocking(False)
                client_port = client.getsockname()[1]
                sent_at = time.time()
                # Kamailio takes a moment to start: send until it answers. A request
                # sent early waits in its socket, so match on the answered Call-ID.
                reply = b""
                for attempt in range(100):
                    call_id = f"hep{version}-{attempt}@sipwarden.test"
                    client.sendto(
                        options_request(call_id, sip_port, client_port), ("127.0.0.1", sip_port)
                    )
                    try:
                        reply = await asyncio.wait_for(loop.sock_recv(client, 65535), 0.2)
                        break
                    except TimeoutError:
                        if process.poll() is not None:
                            pytest.fail(f"kamailio exited early:\n{log_tail(log)}")
                else:
                    pytest.fail(f"kamailio did not answer the OPTIONS:\n{log_tail(log)}")
            assert reply.startswith(b"SIP/2.0 200 OK\r\n"), reply
            found = re.search(rb"\r\nCall-ID: ([^\r]+)\r\n", reply)
            assert found is not None, reply
            answered = found.group(1).decode()

            def mirrored() -> list[HepPacket]:
                return [p for p in received if f"Call-ID: {answered}\r\n".encode() in p.payload]

            try:
                await wait_until(lambda: len(mirrored()) >= 2, timeout=5)
            except AssertionError:
                pytest.fail(
                    f"collector got {len(received)} packets, stats {server.collector.stats},"
                    f" last error {server.collector.last_error}:\n{log_tail(log)}"
                )
            return answered, sip_port, client_port, mirrored(), server.collector, sent_at

    call_id, sip_port, client_port, packets, collector, sent_at = run(scenario())

    assert collector.stats["malformed"] == 0, collector.last_error
    assert collector.stats["auth_failed"] == 0
    request, response = packets[0], packets[1]
    assert len(packets) == 2, packets

    # The request as Kamailio received it: from our client to Kamailio's port.
    assert request.payload.startswith(f"OPTIONS sip:ping@127.0.0.1:{sip_port} SIP/2.0\r\n".encode())
    assert (request.src, request.sport) == ("127.0.0.1", client_port)
    assert (request.dst, request.dport) == ("127.0.0.1", sip_port)
    # The reply it sent back: the other way round.
    assert response.payload.startswith(b"SIP/2.0 200 OK\r\n")
    assert b"CSeq: 1 OPTIONS\r\n" in response.payload
    assert (response.src, response.sport) == ("127.0.0.1", sip_port)
    assert (response.dst, response.dport) == ("127.0.0.1", client_port)

    for packet in packets:
        assert packet.version == version
        assert packet.transport == "udp"
        assert packet.proto_type == 1
        assert packet.capture_id == (0 if version == 1 else CAPTURE_ID)
        assert packet.auth_key == auth_key
    if version == 1:
        assert request.ts_ns == response.ts_ns == 0  # HEPv1 carries no time
    else:
        # Kamailio's clock at the moment of tracing: within the test's run.
        for packet in packets:
            assert sent_at - 1 <= packet.ts_ns / 1e9 <= time.time() + 1, packet.ts_ns
        assert request.ts_ns <= response.ts_ns
    # siptrace sends the correlation id with the request only, and only in HEPv3.
    assert request.correlation_id == (f"{call_id}-sipwarden" if version == 3 else None)
    assert response.correlation_id is None
