"""`sipwarden monitor --hep`: a real Kamailio mirrors traffic with siptrace; attacks are found.

Kamailio (tests/peers) sends HEPv3 copies of every message it handles to the
monitor's collector; SIPVicious svmap probes Kamailio; the monitor, a real
`sipwarden` process (tests/monitor/live_support.py), reports the scanner
within a second. A replayed capture encoded as HEP checks the feed end to end
without Kamailio too.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from monitor.live_support import LiveMonitor
from peers import DEFAULT_USERS, KamailioRegistrar
from sipwarden.monitor.sources import observations_from_pcap
from sipwarden.net.hep import encode_hep3
from support import free_port, require_tool, shared_path


def hep_monitor(tmp_path: Path, port: int) -> LiveMonitor:
    return LiveMonitor(tmp_path / "monitor", ports=[5060], source=("--hep", f"127.0.0.1:{port}"))


def test_replayed_capture_over_hep_yields_the_capture_events(tmp_path: Path) -> None:
    port = free_port()
    with (
        hep_monitor(tmp_path, port) as monitor,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        for obs in observations_from_pcap(shared_path("testdata", "captures", "svwar.pcap")):
            packet = encode_hep3(
                obs.raw, src=obs.src, sport=obs.sport, dst=obs.dst, dport=obs.dport,
                ts_ns=int(obs.ts * 1e9), transport="udp",
            )  # fmt: skip
            sender.sendto(packet, ("127.0.0.1", port))
        arrival = monitor.wait_for(
            lambda a: a.kind == "enumeration", timeout=5, what="an enumeration event"
        )
    assert arrival.record["source"] == "127.0.0.1"
    assert arrival.record["detail"]["revealed"] == ["100", "101"]


def test_kamailio_siptrace_feed_reveals_a_live_svmap_scan_within_a_second(tmp_path: Path) -> None:
    svmap = require_tool("svmap", "apt-get install sipvicious")
    port = free_port()
    with (
        hep_monitor(tmp_path, port) as monitor,
        KamailioRegistrar(tmp_path / "kamailio", DEFAULT_USERS, hep=("127.0.0.1", port)) as kam,
    ):
        started = time.monotonic()
        subprocess.run(
            [svmap, "-p", str(kam.port), kam.host], capture_output=True, timeout=20, check=False
        )
        arrival = monitor.wait_for(lambda a: a.kind == "scanner", timeout=5, what="a scanner event")
    assert arrival.record["source"] == "127.0.0.1"
    assert str(arrival.record["rule"]).startswith("scanner.sipvicious")
    assert arrival.at - started < 1.0, f"detected {arrival.at - started:.2f} s after the attack"
