"""Calls through the real gateway to a real Kamailio registrar and a SIPp UAS.

Phones (SIPp) → gateway (``sipwarden gateway``) → Kamailio (the "PBX": digest
authentication, registrar, record-routing proxy) → SIPp UAS. The outside leg
is captured and searched for anything that would reveal the PBX.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from monitor.live_support import LiveMonitor
from peers import BENIGN_USERS, KamailioRegistrar, Sipp
from peers.capture import capture, read_sip
from support import free_port


@dataclass(frozen=True)
class Address:
    host: str
    port: int


TOKEN = re.compile(rb"sw[cr]=([A-Za-z0-9_-]+)")


def revealing(data: bytes, pbx: str) -> bool:
    """The PBX's address or product in the message, in clear or in a routing token."""
    if pbx.encode() in data or b"kamailio" in data.lower():
        return True
    for token in TOKEN.findall(data):
        decoded = base64.urlsafe_b64decode(token + b"=" * (-len(token) % 4))
        if pbx.encode() in decoded or pbx.split(":")[1].encode() in decoded:
            return True
    return False


def gateway_process(
    tmp_path: Path,
    port: int,
    pbx: KamailioRegistrar,
    *,
    workers: int = 1,
    key: Path | None = None,
    extra: str = "",
) -> LiveMonitor:
    """The real gateway in front of ``pbx``; ``extra`` is appended to its configuration."""
    return LiveMonitor(
        tmp_path / "gateway",
        ports=[port],
        source=(),
        command="gateway",
        store=tmp_path / "gateway.sqlite3",
        extra_config=(
            f'\n[gateway]\nlisten = ["udp:127.0.0.1:{port}"]\n'
            f'upstreams = ["udp:{pbx.host}:{pbx.port}"]\n'
            f'secret_file = "{key or tmp_path / "gateway.key"}"\n'
            'identity = "Avaya CM"\n'
            # Loopback is a bogon: the phones of this test come from it.
            "bogon_check = false\n"
            f"workers = {workers}\n" + extra
        ),
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_registrations_and_calls_go_through_and_the_pbx_stays_hidden(
    tmp_path: Path, workers: int
) -> None:
    users = BENIGN_USERS
    runner = Sipp(tmp_path / "sipp")
    port = free_port(tcp=False)
    with (
        runner.uas() as uas,
        KamailioRegistrar(
            tmp_path / "kamailio", users, downstream=(uas.host, uas.port), downstream_prefix="9"
        ) as pbx,
        gateway_process(tmp_path, port, pbx, workers=workers) as gateway,
        capture(
            tmp_path, bpf=f"udp port {port} and not udp port {pbx.port}", name="outside.pcap"
        ) as outside,
        capture(tmp_path, bpf=f"udp dst port {pbx.port}", name="inside.pcap") as inside,
    ):
        entry = Address("127.0.0.1", port)
        runner.register(entry, "100", users["100"]).expect(successful=1)
        runner.options(entry, "100", count=2).expect(successful=2)
        runner.call(entry, "100", users["100"], "9001", count=3).expect(successful=3)
        events = gateway.events
        log = gateway.output(lines=200)
    uas.stop().expect(successful=3)
    assert events == [], [event.describe() for event in events]
    if workers > 1:
        assert f"gateway supervisor: {workers} workers" in log, log
    # Each worker of several talks to the PBX from its own inside port (listen port
    # + 1000 + its index), so the PBX's answers come back to the worker with the call.
    inside_ports = {port} if workers == 1 else {port + 1000 + i for i in range(workers)}
    to_pbx = [packet.message for packet in read_sip(inside.path) if packet.message.is_request]
    assert to_pbx, "nothing reached the PBX"
    for request in to_pbx:
        top = request.via[0]
        assert top.host == "127.0.0.1" and top.port in inside_ports, request.start_line()
    packets = read_sip(outside.path)
    assert len(packets) > 20
    leaks = [
        packet.message.start_line()
        for packet in packets
        if revealing(packet.message.to_bytes(), f"{pbx.host}:{pbx.port}")
    ]
    assert leaks == []
    servers = {
        packet.message.headers.get("server") for packet in packets if not packet.message.is_request
    }
    assert servers <= {"Avaya CM", None}
