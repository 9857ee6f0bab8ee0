"""`sipwarden monitor --hep`: a real Kamailio mirrors traffic with siptrace; attacks are found.

Kamailio (tests/peers) sends HEPv3 copies of every message it handles to the
monitor's collector; SIPVicious svmap probes Kamailio; the monitor, a real
`sipwarden` process, reports the scanner within a second. A replayed capture
encoded as HEP checks the feed end to end without Kamailio too.
"""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from peers import DEFAULT_USERS, KamailioRegistrar
from sipwarden.monitor.sources import observations_from_pcap
from sipwarden.net.hep import encode_hep3
from support import free_port, require_tool, shared_path, stop_process


class MonitorProcess:
    """The real command in a subprocess; its JSON lines arrive on a queue, time-stamped."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        config = tmp_path / "sipwarden.toml"
        config.write_text('[store]\npath = ""\n')
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sipwarden",
                "--config",
                str(config),
                "monitor",
                "--json",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.lines: queue.Queue[tuple[float, dict[str, object]]] = queue.Queue()
        self.ready = threading.Event()
        self.readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self.readers:
            reader.start()
        if not self.ready.wait(15):
            stop_process(self.proc)
            raise AssertionError("the monitor did not start listening")

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.monotonic(), json.loads(line)))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if b"receiving HEP" in line or b"capturing on" in line:
                self.ready.set()

    def first(self, kind: str, timeout: float) -> tuple[float, dict[str, object]]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                arrived, record = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if record["kind"] == kind:
                return arrived, record
        raise AssertionError(f"no {kind} event within {timeout} s")

    def stop(self) -> None:
        stop_process(self.proc)
        for reader in self.readers:
            reader.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def test_replayed_capture_over_hep_yields_the_capture_events(tmp_path: Path) -> None:
    port = free_port()
    monitor = MonitorProcess(tmp_path, "--hep", f"127.0.0.1:{port}", "--duration", "20")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for obs in observations_from_pcap(shared_path("testdata", "captures", "svwar.pcap")):
                packet = encode_hep3(
                    obs.raw, src=obs.src, sport=obs.sport, dst=obs.dst, dport=obs.dport,
                    ts_ns=int(obs.ts * 1e9), transport="udp",
                )  # fmt: skip
                sender.sendto(packet, ("127.0.0.1", port))
        _, record = monitor.first("enumeration", timeout=5)
        assert record["source"] == "127.0.0.1"
        assert record["detail"]["revealed"] == ["100", "101"]  # type: ignore[index]
    finally:
        monitor.stop()


def test_kamailio_siptrace_feed_reveals_a_live_svmap_scan_within_a_second(tmp_path: Path) -> None:
    svmap = require_tool("svmap", "apt-get install sipvicious")
    port = free_port()
    monitor = MonitorProcess(tmp_path, "--hep", f"127.0.0.1:{port}", "--duration", "30")
    try:
        with KamailioRegistrar(
            tmp_path / "kamailio", DEFAULT_USERS, hep=("127.0.0.1", port)
        ) as kam:
            started = time.monotonic()
            subprocess.run(
                [svmap, "-p", str(kam.port), kam.host],
                capture_output=True,
                timeout=20,
                check=False,
            )
            arrived, record = monitor.first("scanner", timeout=5)
        assert record["source"] == "127.0.0.1"
        assert str(record["rule"]).startswith("scanner.sipvicious")
        assert arrived - started < 1.0, f"detected {arrived - started:.2f} s after the attack began"
    finally:
        monitor.stop()
