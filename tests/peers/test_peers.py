"""The real-peer helpers work: Kamailio, SIPp and dumpcap on loopback.

Each test starts its own peers on free ports and stops them; every
subprocess runs under a timeout. Counts of SIP messages are read back from
real captures with sipwarden's own pcap reader, decoder and parser.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from peers import (
    BENIGN_MISTYPED_PASSWORD,
    BENIGN_MIX,
    KamailioRegistrar,
    Sipp,
    capture,
    read_sip,
    record_benign_traffic,
    sip_summary,
)
from sipwarden.net.pcap import open_capture
from sipwarden.sip.message import Request, Response
from sipwarden.sip.parser import parse_message
from support import PeerError, require_tool, tail

# 102's password holds the two characters db_text escapes.
USERS = {"100": "s3cret-100", "101": "s3cret-101", "102": "pa:ss\\w0rd", "200": "s3cret-200"}


def test_missing_tool_fails_with_the_install_command() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"apt-get install no-such-package"):
        require_tool("sipwarden-no-such-tool", "apt-get install no-such-package")


def test_rendered_config_passes_kamailio_check(tmp_path: Path) -> None:
    plain = KamailioRegistrar(tmp_path / "plain", USERS)
    assert "config file ok" in plain.check_config()
    full = KamailioRegistrar(
        tmp_path / "full", USERS, downstream=("127.0.0.1", 5999), hep=("127.0.0.1", 9060)
    )
    output = full.check_config()
    assert "config file ok" in output
    text = full.config_path.read_text()
    assert "#!define WITH_DOWNSTREAM" in text
    assert "#!define WITH_HEP" in text


def test_kamailio_answers_options_and_stops(kamailio_registrar: KamailioRegistrar) -> None:
    kamailio = kamailio_registrar
    udp = parse_message(kamailio.options())
    assert isinstance(udp, Response)
    assert udp.status == 200
    tcp = parse_message(kamailio.options(transport="tcp"))
    assert isinstance(tcp, Response)
    assert tcp.status == 200

    kamailio.stop()
    assert not kamailio.running
    with pytest.raises(TimeoutError):  # nothing answers any more
        kamailio.options(timeout=0.3)


def test_register_with_digest_auth(tmp_path: Path) -> None:
    sipp = Sipp(tmp_path / "sipp")
    with (
        KamailioRegistrar(tmp_path / "kamailio", USERS) as kam,
        capture(tmp_path, ports=[kam.port]) as cap,
    ):
        sipp.register(kam, "100", USERS["100"]).expect(successful=1)
        wrong = sipp.register(kam, "101", "not-" + USERS["101"])
        wrong.expect(successful=0, failed=1)
        sipp.register(kam, "102", USERS["102"]).expect(successful=1)

    assert wrong.returncode == 1
    assert "403 Forbidden" in wrong.messages_log.read_text()
    packets = read_sip(cap.path)
    assert sip_summary(packets) == Counter(
        {"REGISTER": 6, "401 REGISTER": 3, "200 REGISTER": 2, "403 REGISTER": 1}
    )
    # The capture holds nothing but this SIP (the flush marker was removed).
    assert cap.packets == len(packets) == 12
    # The second REGISTER of each flow carries digest credentials for the realm.
    creds = [p.message.authorization for p in packets if isinstance(p.message, Request)]
    realms = {c.realm for found in creds for c in found}
    assert realms == {kam.domain}


def test_reregister_and_options_keepalive(
    kamailio_registrar: KamailioRegistrar, sipp_runner: Sipp, tmp_path: Path
) -> None:
    kamailio, sipp = kamailio_registrar, sipp_runner
    with capture(tmp_path, ports=[kamailio.port]) as cap:
        sipp.reregister(kamailio, "100", "s3cret-100", pause_ms=100).expect(successful=1)
        sipp.options(kamailio, "100", count=3).expect(successful=3)

    packets = read_sip(cap.path)
    assert sip_summary(packets) == Counter(
        {"REGISTER": 4, "401 REGISTER": 2, "200 REGISTER": 2, "OPTIONS": 3, "200 OPTIONS": 3}
    )
    registers = [p.message for p in packets if isinstance(p.message, Request)][:4]
    assert len({m.call_id for m in registers}) == 1  # a refresh, not a new registration
    assert [m.cseq.seq for m in registers if m.cseq is not None] == [1, 2, 3, 4]


def test_call_through_kamailio_to_a_registered_uas_and_downstream(tmp_path: Path) -> None:
    sipp = Sipp(tmp_path / "sipp")
    with (
        sipp.uas() as uas,
        KamailioRegistrar(tmp_path / "kamailio", USERS, downstream=(uas.host, uas.port)) as kam,
    ):
        # The UAS takes calls for 200: its registration points there.
        sipp.register(kam, "200", USERS["200"], contact_port=uas.port).expect(successful=1)
        with capture(tmp_path, ports=[kam.port]) as cap:
            sipp.call(kam, "100", USERS["100"], "200").expect(successful=1)  # location
            sipp.call(kam, "101", USERS["101"], "9123").expect(successful=1)  # prefix 9
            unknown = sipp.call(kam, "100", USERS["100"], "555")
        uas.stop().expect(successful=2)

    unknown.expect(successful=0, failed=1)
    assert "404 Not Found" in unknown.messages_log.read_text()
    packets = read_sip(cap.path)
    # Two good calls: INVITE, 407, ACK, INVITE, 100, then 180, 200, ACK, BYE, 200
    # both phone<->proxy and proxy<->UAS. The call to nobody: INVITE, 407, ACK,
    # INVITE, 404 (no 100: the proxy never relays it), and SIPp's ACK of it.
    assert sip_summary(packets) == Counter(
        {
            "INVITE": 2 * 3 + 2,
            "407 INVITE": 2 + 1,
            "100 INVITE": 2,
            "180 INVITE": 2 * 2,
            "200 INVITE": 2 * 2,
            "ACK": 2 * 3 + 2,
            "BYE": 2 * 2,
            "200 BYE": 2 * 2,
            "404 INVITE": 1,
        }
    )
    # In-dialog requests went through the proxy and out to the UAS.
    byes = [p for p in packets if isinstance(p.message, Request) and p.message.method == "BYE"]
    assert {(p.dst, p.dport) for p in byes} == {(kam.host, kam.port), (uas.host, uas.port)}


def test_kamailio_mirrors_traffic_as_hep(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:
        collector.bind(("127.0.0.1", 0))
        collector.settimeout(5.0)
        with KamailioRegistrar(tmp_path, USERS, hep=collector.getsockname()) as kam:
            kam.options()
            deadline = time.monotonic() + 5.0
            copies: list[bytes] = []
            while time.monotonic() < deadline and len(copies) < 2:
                data = collector.recv(65535)
                if b"OPTIONS sip:" in data or b"SIP/2.0 200 Keepalive" in data:
                    copies.append(data)
    assert all(copy.startswith(b"HEP3") for copy in copies)
    assert any(b"OPTIONS sip:" in copy for copy in copies)
    assert any(b"200 Keepalive" in copy for copy in copies)


def test_capture_holds_all_packets_sent_just_before_exit(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))
        port = sink.getsockname()[1]
        with capture(tmp_path / "c.pcap", ports=[port]) as cap:
            for n in range(3):
                sink.sendto(b"datagram %d" % n, ("127.0.0.1", port))
    assert cap.packets == 3
    with open_capture(cap.path) as packets:
        assert len(list(packets)) == 3
    assert "Capturing on" in tail(cap.log_path)


def test_failed_peer_reports_its_log(tmp_path: Path) -> None:
    # Someone else listens on the TCP port: Kamailio cannot bind it and says so.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        registrar = KamailioRegistrar(tmp_path, USERS, port=port, ready_timeout=5.0)
        try:
            with pytest.raises(PeerError, match=r"(?s)did not answer OPTIONS.*log tail"):
                registrar.start()
        finally:
            registrar.stop()
    assert not registrar.running
    assert "Address already in use" in registrar.log_tail()


def test_benign_capture_has_the_intended_mix(tmp_path: Path) -> None:
    path = record_benign_traffic(tmp_path)

    assert path.is_file()
    assert path.suffix == ".pcap"
    packets = read_sip(path)
    assert sip_summary(packets) == Counter(BENIGN_MIX)
    # Every message the real peers exchanged passes the strict parser too.
    for packet in packets:
        parse_message(packet.raw, strict=True)
    # Exactly one mistyped password: one 403, and it follows 102's credentials.
    forbidden = [p for p in packets if isinstance(p.message, Response) and p.message.status == 403]
    assert len(forbidden) == 1
    assert forbidden[0].message.to is not None
    assert "102@" in str(forbidden[0].message.to)
    assert BENIGN_MISTYPED_PASSWORD not in path.read_bytes().decode("latin-1")  # digest only

    # tshark, the reference dissector, sees the same messages.
    tshark = require_tool("tshark", "apt-get install tshark")
    columns = ["-e", "sip.Method", "-e", "sip.Status-Code", "-e", "sip.CSeq.method"]
    fields = subprocess.run(
        [tshark, "-r", str(path), "-Y", "sip", "-T", "fields", *columns],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    rows = [line.split("\t") for line in fields.splitlines()]
    assert Counter(method or f"{status} {cseq}" for method, status, cseq in rows) == Counter(
        BENIGN_MIX
    )
