"""Benchmark the monitor pipeline on a large capture, side by side with tshark.

Run: ``.venv/bin/python bench/monitor.py --generate`` (first run: ~1-2 minutes
to record and scale the capture, then a few minutes of measurement; reruns
reuse the cached capture). ``--capture FILE`` measures a capture of your own
instead; ``--help`` lists the knobs.

What is measured, in one run, on the same file (the machines are shared and
noisy, so every figure is also a ratio against tshark measured in this run):

* tshark: ``tshark -r FILE -Y sip -T fields -e sip.Method -e sip.Call-ID``,
  output to /dev/null, wall time of the process, run first and last, the
  faster run counting (noise then favours tshark) -> ``tshark_pps``.
* sipwarden: :func:`sipwarden.monitor.sources.observations_from_pcap` (pcap
  reading, packet decode, UDP parse, TCP reassembly) feeding
  :meth:`sipwarden.engine.engine.Engine.inspect` with every detector that
  exists at run time (default settings), in its own process, wall time of
  the process (interpreter start and imports included, like tshark's start)
  -> ``sipwarden_pps``. The pipeline is also timed in stages, each in its
  own process, counting only its loop: read+decode, + parse, + engine; the
  time the cyclic garbage collector took in the full pass is reported too.
  Every pass sets the garbage-collector thresholds the ``sipwarden`` command
  sets (:func:`sipwarden.runtime.tune_garbage_collector`).
* memory: the maximum resident set (``ru_maxrss`` of the process) of the
  full pipeline on prefixes of 1/4, 1/2 and all of the capture: flat means
  the state is bounded, growing means something keeps per-message state.
* ``--workers N``: the capture sharded over N processes (see "Sharding").

Both rates divide the same count: the SIP messages sipwarden's full pipeline
produced (``sip_packets``). In the generated capture every packet is one SIP
datagram, so it equals the packet count.

The generated capture (``--generate``)
======================================

1. Real traffic: three SIPp UAC -> SIPp UAS pairs on loopback (UACs on
   127.0.0.2, UASs on 127.0.0.1), recorded with dumpcap: calls
   INVITE/100/180/200/ACK/BYE/200 (SIPp's built-in uac/uas shapes, 100
   calls/s, 2 s each), REGISTER/401/REGISTER with digest credentials/200,
   and OPTIONS/200 keep-alives. ``--base-calls`` calls (3000 by default, plus
   a third as many registrations and as many keep-alives); the request rate
   (~400/s) stays under the flood detector's default global limit (500/s),
   so the capture is benign traffic, not an attack.
2. Scale-up to ``--packets`` (1,000,000): the recorded datagrams are written
   again and again, each copy with its Call-IDs, From/To tags, Via branches
   and digest nonces made unique (a replay token is inserted), its client
   side moved to one of 4096 phones (an address in 198.18.0.0/15, RFC 2544's
   benchmark range, its own source port and its own extension as From user
   and digest username, consistently within a call), the PBX side (all three
   UASs) moved to 198.19.0.10:5060, RTP ports in the SDP taken per call
   (the PBX from 10000-20000 like Asterisk, a phone from a few of its own:
   SIPp answers every call with one media port, which no PBX does and which
   makes tshark's SDP/RTP conversation tracking quadratic: 100k packets took
   it 22.7 s instead of 4.2 s with SDP off), and timestamps running on
   monotonically. Every copy keeps the SIPp message exactly as recorded
   otherwise (header order and shapes, SDP lines, retransmissions, timing
   within the recording);
   Content-Length and the IPv4/UDP lengths are recomputed, the IPv4 header
   checksum is computed and the UDP checksum is zero (legal for IPv4).
   The digest ``response`` values are SIPp's for the recorded user, so they
   do not verify: no detector knows the passwords.

The capture is cached in ``--workdir`` (default: ``sipwarden-bench-monitor``
in the system temp directory), keyed by size and generator version; the raw
SIPp recording is cached too. Nothing is written into the repository.

Sharding (``--workers``)
========================

Each worker reads and decodes the whole file and keeps the datagrams of its
shard: a request belongs to the shard of its source address, a response to
the shard of its destination (the requester), i.e. the non-PBX side of a
phone's traffic; IPv6 addresses are sharded per /64, as the detectors count
them. So every per-source decision is taken with all of that source's
messages. The limits: global rules (``flood.global_rate``) see only their
shard's share, per-account rules across sources (``cracking.distributed``,
``session_limit.per_account``) see only the sources of their shard, and
in-dialog requests the PBX sends (a BYE from the PBX) land in the PBX's shard,
not their dialog's. TCP streams are reassembled and parsed by every worker
and only the messages of its shard inspected (correct, not faster). The run
checks that the per-source events of the shards add up to those of one
process. Reading and decoding is repeated by every worker, so N workers give
less than N times the rate.

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import gc
import importlib
import ipaddress
import itertools
import json
import os
import pstats
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple

from sipwarden.engine.contract import ALLOW, Observation
from sipwarden.engine.engine import Detector, Engine
from sipwarden.monitor.sources import (
    CaptureObserver,
    SourceOptions,
    observation_of_datagram,
    observations_from_pcap,
)
from sipwarden.net.packet import PacketDecoder
from sipwarden.net.pcap import open_capture
from sipwarden.runtime import tune_garbage_collector
from sipwarden.sip.message import Response

if not __package__:  # run as a script (python bench/NAME.py): the root holds the bench package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    free_udp_port,
    require,
    spawn_logged,
    stop_process,
    tail,
    udp_port_bound,
)

# Bump when the scenarios change (the SIPp recording) or the scale-up does (the capture).
RECORDING_VERSION: Final = 1
GENERATOR_VERSION: Final = 2
DEFAULT_PACKETS: Final = 1_000_000
DEFAULT_BASE_CALLS: Final = 3000
TARGET_RATIO: Final = 5.0
TSHARK_FIELDS: Final = ("-Y", "sip", "-T", "fields", "-e", "sip.Method", "-e", "sip.Call-ID")
RSS_SAMPLE_EVERY: Final = 50_000

# Every detector the engine can run, in registry order; those whose module
# does not exist (yet) are left out and named in the output.
DETECTORS: Final = (
    ("scanner", "sipwarden.detect.scanner", "ScannerDetector"),
    ("enumeration", "sipwarden.detect.enumeration", "EnumerationDetector"),
    ("cracking", "sipwarden.detect.cracking", "CrackingDetector"),
    ("flood", "sipwarden.detect.flood", "FloodDetector"),
    ("out_of_state", "sipwarden.detect.out_of_state", "OutOfStateDetector"),
    ("malformed", "sipwarden.detect.malformed", "MalformedDetector"),
    ("canary", "sipwarden.detect.canary", "CanaryDetector"),
    ("session_limit", "sipwarden.detect.sessions", "SessionLimitDetector"),
)

# --- the recording: SIPp on loopback, dumpcap -----------------------------------------

UAS_HOST: Final = "127.0.0.1"
UAC_HOST: Final = "127.0.0.2"
PHONE_USER: Final = "benchphone"
CALLEE_USER: Final = "benchcallee"

_HEAD: Final = (
    '<?xml version="1.0" encoding="ISO-8859-1" ?>\n<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'
)

# SIPp's built-in uac/uas call, with a 100 Trying, a User-Agent/Server and our users.
UAC_INVITE: Final = f"""{_HEAD}<scenario name="sipwarden bench uac">
  <send retrans="500"><![CDATA[

INVITE sip:{CALLEE_USER}@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "Bench Phone" <sip:{PHONE_USER}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:{CALLEE_USER}@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:{PHONE_USER}@[local_ip]:[local_port]>
Max-Forwards: 70
User-Agent: SIPp bench phone
Subject: Performance Test
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000

]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[

ACK sip:{CALLEE_USER}@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "Bench Phone" <sip:{PHONE_USER}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:{CALLEE_USER}@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: <sip:{PHONE_USER}@[local_ip]:[local_port]>
Max-Forwards: 70
User-Agent: SIPp bench phone
Content-Length: 0

]]></send>
  <pause/>
  <send retrans="500"><![CDATA[

BYE sip:{CALLEE_USER}@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "Bench Phone" <sip:{PHONE_USER}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:{CALLEE_USER}@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: <sip:{PHONE_USER}@[local_ip]:[local_port]>
Max-Forwards: 70
User-Agent: SIPp bench phone
Content-Length: 0

]]></send>
  <recv response="200"/>
</scenario>
"""

UAS_INVITE: Final = f"""{_HEAD}<scenario name="sipwarden bench uas">
  <recv request="INVITE"/>
  <send><![CDATA[

SIP/2.0 100 Trying
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Server: SIPp bench pbx
Content-Length: 0

]]></send>
  <send><![CDATA[

SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Server: SIPp bench pbx
Content-Length: 0

]]></send>
  <send retrans="500"><![CDATA[

SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Server: SIPp bench pbx
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000

]]></send>
  <recv request="ACK" optional="true" rtd="true"/>
  <recv request="BYE"/>
  <send><![CDATA[

SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Server: SIPp bench pbx
Content-Length: 0

]]></send>
</scenario>
"""

UAC_REGISTER: Final = f"""{_HEAD}<scenario name="sipwarden bench register">
  <send retrans="500"><![CDATA[

REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{PHONE_USER}@[remote_ip]:[remote_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:{PHONE_USER}@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 REGISTER
Contact: <sip:{PHONE_USER}@[local_ip]:[local_port]>
Max-Forwards: 70
Expires: 300
User-Agent: SIPp bench phone
Content-Length: 0

]]></send>
  <recv response="401" auth="true"/>
  <send retrans="500"><![CDATA[

REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{PHONE_USER}@[remote_ip]:[remote_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:{PHONE_USER}@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 2 REGISTER
Contact: <sip:{PHONE_USER}@[local_ip]:[local_port]>
[authentication username={PHONE_USER} password=bench-secret]
Max-Forwards: 70
Expires: 300
User-Agent: SIPp bench phone
Content-Length: 0

]]></send>
  <recv response="200"/>
</scenario>
"""

UAS_REGISTER: Final = f"""{_HEAD}<scenario name="sipwarden bench registrar">
  <recv request="REGISTER"/>
  <send><![CDATA[

SIP/2.0 401 Unauthorized
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
WWW-Authenticate: Digest realm="[local_ip]", nonce="[pid]n[call_number]", algorithm=MD5
Server: SIPp bench pbx
Content-Length: 0

]]></send>
  <recv request="REGISTER"/>
  <send><![CDATA[

SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
[last_Contact:];expires=300
Server: SIPp bench pbx
Content-Length: 0

]]></send>
</scenario>
"""

UAC_OPTIONS: Final = f"""{_HEAD}<scenario name="sipwarden bench keep-alive">
  <send retrans="500"><![CDATA[

OPTIONS sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{PHONE_USER}@[remote_ip]:[remote_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 OPTIONS
Contact: <sip:{PHONE_USER}@[local_ip]:[local_port]>
Max-Forwards: 70
User-Agent: SIPp bench phone
Accept: application/sdp
Content-Length: 0

]]></send>
  <recv response="200"/>
</scenario>
"""

UAS_OPTIONS: Final = f"""{_HEAD}<scenario name="sipwarden bench options">
  <recv request="OPTIONS"/>
  <send><![CDATA[

SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER
Accept: application/sdp
Server: SIPp bench pbx
Content-Length: 0

]]></send>
</scenario>
"""


@dataclass(frozen=True, slots=True)
class Flow:
    """One SIPp UAC -> UAS pair of the recording."""

    name: str
    uac: str
    uas: str
    calls: int
    rate: int  # calls per second
    duration_ms: int = 0  # call hold time (the UAC's <pause/>)


def flows_for(base_calls: int) -> tuple[Flow, ...]:
    """~400 requests/s in all: 100 calls/s (3 requests each), REGISTERs and OPTIONS."""
    side = max(1, base_calls // 3)
    return (
        Flow("invite", UAC_INVITE, UAS_INVITE, base_calls, 100, 2000),
        Flow("register", UAC_REGISTER, UAS_REGISTER, side, 34),
        Flow("options", UAC_OPTIONS, UAS_OPTIONS, side, 34),
    )


class SippRun:
    """One SIPp process of the recording, its logs in ``rundir``."""

    def __init__(self, rundir: Path, argv: list[str]) -> None:
        self.rundir = rundir
        rundir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn_logged(rundir, argv)

    def describe(self) -> str:
        return f"{self.rundir.name}: exit {self.proc.returncode}\n" + tail(
            self.rundir / "stdout.log"
        )


def sipp_argv(
    sipp: str, scenario: Path, rundir: Path, *, host: str, port: int, calls: int, timeout: int
) -> list[str]:
    """What every SIPp of the recording gets (gotchas as in tests/peers/sipp.py).

    ``-nostdin`` (no terminal), a global ``-timeout``, its own control (-cp)
    and media (-mp) ports so that concurrent SIPps do not collide, and
    ``-m``: the UAS exits once it has served its calls.
    """
    return [
        sipp,
        *("-sf", str(scenario), "-i", host, "-p", str(port), "-m", str(calls)),
        *("-nostdin", "-timeout", f"{timeout}s"),
        *("-cp", str(free_udp_port("0.0.0.0")), "-mp", str(free_udp_port(host))),
        *("-trace_err", "-error_file", str(rundir / "errors.log")),
    ]


def start_uas(sipp: str, workdir: Path, flow: Flow, timeout: int) -> tuple[SippRun, int]:
    """Start a flow's UAS on 127.0.0.1; return once its port is bound."""
    scenario = workdir / f"uas_{flow.name}.xml"
    scenario.write_text(flow.uas)
    for attempt in range(3):
        port = free_udp_port(UAS_HOST)
        rundir = workdir / f"uas-{flow.name}-{attempt}"
        run = SippRun(
            rundir,
            sipp_argv(
                sipp, scenario, rundir, host=UAS_HOST, port=port, calls=flow.calls, timeout=timeout
            ),
        )
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and run.proc.poll() is None:
            if udp_port_bound(UAS_HOST, port):
                return run, port
            time.sleep(0.02)
        stop_process(run.proc, signal.SIGKILL)
    raise SystemExit(f"SIPp UAS {flow.name} did not start:\n{run.describe()}")


def start_uac(
    sipp: str, workdir: Path, flow: Flow, uas_port: int, timeout: int
) -> tuple[SippRun, int]:
    scenario = workdir / f"uac_{flow.name}.xml"
    scenario.write_text(flow.uac)
    for attempt in range(3):
        port = free_udp_port(UAC_HOST)
        rundir = workdir / f"uac-{flow.name}-{attempt}"
        argv = [
            *sipp_argv(
                sipp, scenario, rundir, host=UAC_HOST, port=port, calls=flow.calls, timeout=timeout
            ),
            *(f"{UAS_HOST}:{uas_port}", "-r", str(flow.rate), "-l", "1000"),
            *("-d", str(flow.duration_ms), "-default_behaviors", "all,-bye"),
        ]
        run = SippRun(rundir, argv)
        time.sleep(0.3)
        if run.proc.poll() is None:
            return run, port
    raise SystemExit(f"SIPp UAC {flow.name} did not start:\n{run.describe()}")


class Dumpcap:
    """dumpcap on ``lo`` with a flush marker (see tests/peers/capture.py for why).

    dumpcap hands packets over in blocks (250 ms) and flushes its file every
    500 ms: stopping it right after the traffic loses the tail. So the stop
    sends one marker datagram through the filter, waits until the marker is
    in the file, then stops dumpcap; the reader drops the marker.
    """

    def __init__(self, path: Path, ports: Sequence[int]) -> None:
        self.path = path
        self.log = path.with_suffix(".dumpcap.log")
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((UAS_HOST, 0))
        self.marker = b"sipwarden-bench-flush-" + uuid.uuid4().hex.encode()
        marker_port = self._sock.getsockname()[1]
        bpf = " or ".join(f"udp port {port}" for port in (*ports, marker_port))
        argv = [require("dumpcap", "tshark"), "-i", "lo", "-P", "-q", "-B", "32"]
        argv += ["-w", str(path), "-f", bpf]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10.0
        while "File: " not in tail(self.log):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise SystemExit(f"dumpcap did not start:\n{tail(self.log)}")
            time.sleep(0.01)

    def finish(self) -> None:
        self._sock.sendto(self.marker, self._sock.getsockname())
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if self.marker in self.path.read_bytes():
                break
            time.sleep(0.05)
        self.close()

    def close(self) -> None:
        stop_process(self.proc)
        self._sock.close()


def record_base(workdir: Path, base_calls: int) -> Path:
    """Record the SIPp flows on loopback; returns the pcap (cached in ``workdir``)."""
    path = workdir / f"sipp-v{RECORDING_VERSION}-{base_calls}.pcap"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return path
    sipp = require("sipp", "sip-tester")
    rundir = Path(tempfile.mkdtemp(prefix="sipp-", dir=workdir))
    flows = flows_for(base_calls)
    longest = max(flow.calls / flow.rate + flow.duration_ms / 1000 for flow in flows)
    timeout = int(longest) + 60
    started: list[SippRun] = []
    try:
        servers = [start_uas(sipp, rundir, flow, timeout) for flow in flows]
        started += [run for run, _ in servers]
        partial = path.with_suffix(".part.pcap")
        capture = Dumpcap(partial, [port for _, port in servers])
        try:
            print(f"recording {len(flows)} SIPp flows for ~{longest:.0f} s ...", file=sys.stderr)
            clients = [
                start_uac(sipp, rundir, flow, port, timeout)
                for flow, (_, port) in zip(flows, servers, strict=True)
            ]
            started += [run for run, _ in clients]
            for run in started:
                run.proc.wait(timeout=timeout + 10)
            capture.finish()
        finally:
            capture.close()
        failed = [run for run in started if run.proc.returncode != 0]
        if failed:
            raise SystemExit("SIPp failed:\n" + "\n".join(run.describe() for run in failed))
        partial.replace(path)
        meta.write_text(
            json.dumps(
                {
                    "marker": capture.marker.decode(),
                    "uas_ports": [port for _, port in servers],
                    "uac_ports": [port for _, port in clients],
                    "flows": {flow.name: flow.calls for flow in flows},
                }
            )
        )
    finally:
        for run in started:
            stop_process(run.proc, signal.SIGKILL, grace=1.0)
    shutil.rmtree(rundir, ignore_errors=True)
    return path


# --- the scale-up ----------------------------------------------------------------------

PBX_ADDRESS: Final = "198.19.0.10"
PBX_PORT: Final = 5060
PHONES: Final = 4096
FIRST_EXTENSION: Final = 10000
EPOCH_US: Final = 1_735_689_600 * 1_000_000  # 2025-01-01T00:00:00Z: a deterministic file

# Placeholders in the templates (bytes that never occur in SIP text).
_ADDR: Final = b"\x01"
_HOSTPORT: Final = b"\x02"
_USER: Final = b"\x03"
_CALLEE: Final = b"\x04"
_TOKEN: Final = b"\x05"
_LENGTH: Final = b"\x06"
_MEDIA: Final = b"\x07"
# Where a replay token goes: the start of every value that must be unique per call.
_UNIQUE: Final = re.compile(rb"(Call-ID:[ \t]*|;tag=|branch=z9hG4bK|nonce=\")", re.IGNORECASE)
_CONTENT_LENGTH: Final = re.compile(rb"(\r\nContent-Length:[ \t]*)\d+", re.IGNORECASE)
_MEDIA_PORT: Final = re.compile(rb"(\r\nm=audio )\d+")
_CALL_ID: Final = re.compile(rb"\r\nCall-ID:[ \t]*([^\r\n]+)", re.IGNORECASE)

_PCAP_HEADER: Final = struct.Struct("<IHHiIII")
_RECORD: Final = struct.Struct("<IIII")
_IP_UDP: Final = struct.Struct("!BBHHHBBH4s4sHHHH")
_ETH_TO_PBX: Final = bytes.fromhex("0200000000100200000000010800")
_ETH_TO_PHONE: Final = bytes.fromhex("0200000000010200000000100800")


class Template(NamedTuple):
    offset_us: int  # from the first recorded packet
    to_pbx: bool  # sent by the phone (the UAC side)
    flow: int  # index of its Call-ID in the recording
    head: bytes  # start line and headers with placeholders, CRLF CRLF included
    body: bytes


class Phone(NamedTuple):
    packed: bytes
    word_sum: int  # the address's two 16-bit words, for the IPv4 checksum
    port: int
    address: bytes
    hostport: bytes
    user: bytes


def phone(index: int) -> Phone:
    address = f"198.18.{index // 250}.{index % 250 + 1}"
    packed = socket.inet_aton(address)
    port = 20000 + (index * 37) % 40000
    return Phone(
        packed,
        (packed[0] << 8 | packed[1]) + (packed[2] << 8 | packed[3]),
        port,
        address.encode(),
        f"{address}:{port}".encode(),
        str(FIRST_EXTENSION + index).encode(),
    )


def templates_of(base: Path) -> list[Template]:
    """The recorded datagrams, their per-call values replaced by placeholders."""
    meta = json.loads(base.with_suffix(".json").read_text())
    marker = meta["marker"].encode()
    pbx = PBX_ADDRESS.encode()
    replace: list[tuple[bytes, bytes]] = []
    replace += [(f"{UAS_HOST}:{p}".encode(), b"%s:%d" % (pbx, PBX_PORT)) for p in meta["uas_ports"]]
    replace += [(UAS_HOST.encode(), pbx)]
    replace += [(f"{UAC_HOST}:{p}".encode(), _HOSTPORT) for p in meta["uac_ports"]]
    replace += [(UAC_HOST.encode(), _ADDR), (PHONE_USER.encode(), _USER)]
    replace += [(CALLEE_USER.encode(), _CALLEE)]
    flows: dict[bytes, int] = {}
    out: list[Template] = []
    decoder = PacketDecoder()
    first = None
    with open_capture(base) as packets:
        for packet in packets:
            segment = decoder.decode(packet.linktype, packet.data, packet.ts_ns)
            if segment is None or segment.proto != "udp" or segment.payload == marker:
                continue
            payload = segment.payload
            found = _CALL_ID.search(payload)
            if found is None:
                continue
            flow = flows.setdefault(found.group(1), len(flows))
            for old, new in replace:
                payload = payload.replace(old, new)
            payload = _UNIQUE.sub(rb"\1" + _TOKEN, payload)
            payload = _MEDIA_PORT.sub(rb"\1" + _MEDIA, payload)
            head, sep, body = payload.partition(b"\r\n\r\n")
            head += sep
            if body:
                head = _CONTENT_LENGTH.sub(rb"\1" + _LENGTH, head)
            first = packet.ts_ns if first is None else first
            offset = (packet.ts_ns - first) // 1000
            out.append(Template(offset, segment.src == UAC_HOST, flow, head, body))
    if not out:
        raise SystemExit(f"the SIPp recording {base} holds no SIP")
    return out


def write_capture(base: Path, path: Path, packets: int) -> dict[str, object]:
    """Scale the recording up to ``packets`` datagrams (see the module doc); returns its facts."""
    templates = templates_of(base)
    flows = max(t.flow for t in templates) + 1
    span = templates[-1].offset_us + templates[-1].offset_us // len(templates)
    phones = [phone(index) for index in range(PHONES)]
    pbx_packed = socket.inet_aton(PBX_ADDRESS)
    pbx_sum = (pbx_packed[0] << 8 | pbx_packed[1]) + (pbx_packed[2] << 8 | pbx_packed[3])
    constant = 0x4500 + 0x4000 + 0x4011  # version/IHL, DF, TTL 64/UDP
    pack_ip, pack_record = _IP_UDP.pack, _RECORD.pack
    written = 0
    ident = 0
    last_us = 0
    partial = path.with_suffix(".part")
    with partial.open("wb") as out:
        out.write(_PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for replay in itertools.count():
            token = b"r%d." % replay
            chunk: list[bytes] = []
            for template in templates:
                if written == packets:
                    break
                serial = replay * flows + template.flow  # the call's number in the capture
                number = serial % PHONES
                ph = phones[number]
                callee = str(FIRST_EXTENSION + (number + 1 + template.flow % 97) % PHONES)
                head = (
                    template.head.replace(_HOSTPORT, ph.hostport)
                    .replace(_ADDR, ph.address)
                    .replace(_USER, ph.user)
                    .replace(_CALLEE, callee.encode())
                    .replace(_TOKEN, token)
                )
                if template.body:
                    # RTP ports: the PBX takes the next one of its range for every call
                    # (Asterisk: 10000-20000), a phone cycles through a few of its own.
                    if template.to_pbx:
                        media = b"%d" % (11780 + 2 * (serial // PHONES % 8))
                    else:
                        media = b"%d" % (10000 + 2 * (serial % 5000))
                    body = template.body.replace(_ADDR, ph.address).replace(_MEDIA, media)
                    payload = head.replace(_LENGTH, b"%d" % len(body)) + body
                else:
                    payload = head
                ident = (ident + 1) & 0xFFFF
                total = 28 + len(payload)
                if template.to_pbx:
                    src, dst, sport, dport = ph.packed, pbx_packed, ph.port, PBX_PORT
                    eth = _ETH_TO_PBX
                else:
                    src, dst, sport, dport = pbx_packed, ph.packed, PBX_PORT, ph.port
                    eth = _ETH_TO_PHONE
                folded = constant + total + ident + ph.word_sum + pbx_sum
                folded = (folded & 0xFFFF) + (folded >> 16)
                folded = (folded & 0xFFFF) + (folded >> 16)
                checksum = ~folded & 0xFFFF
                header = pack_ip(
                    0x45, 0, total, ident, 0x4000, 64, 17, checksum, src, dst,
                    sport, dport, total - 20, 0,
                )  # fmt: skip
                ts = max(last_us, EPOCH_US + replay * span + template.offset_us)
                last_us = ts
                size = 14 + total
                chunk.append(pack_record(ts // 1_000_000, ts % 1_000_000, size, size))
                chunk += (eth, header, payload)
                written += 1
            out.write(b"".join(chunk))
            if written == packets:
                break
    partial.replace(path)
    facts: dict[str, object] = {
        "packets": written,
        "recorded_packets": len(templates),
        "recorded_calls": flows,
        "replays": replay + 1,
        "phones": PHONES,
        "capture_seconds": round((last_us - EPOCH_US) / 1e6, 1),
        "generator_version": GENERATOR_VERSION,
    }
    path.with_suffix(".json").write_text(json.dumps(facts))
    return facts


def generated_capture(
    workdir: Path, packets: int, base_calls: int, target: Path | None
) -> tuple[Path, dict[str, object]]:
    """The cached capture of ``packets`` packets, generated when missing."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = target or workdir / f"capture-v{GENERATOR_VERSION}-{base_calls}-{packets}.pcap"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        facts = json.loads(meta.read_text())
        if facts.get("packets") == packets and facts.get("generator_version") == GENERATOR_VERSION:
            print(f"reusing {path}", file=sys.stderr)
            return path, facts
    started = time.perf_counter()
    base = record_base(workdir, base_calls)
    recorded = time.perf_counter()
    facts = write_capture(base, path, packets)
    done = time.perf_counter()
    facts["record_seconds"] = round(recorded - started, 1)
    facts["scale_seconds"] = round(done - recorded, 1)
    meta.write_text(json.dumps(facts))
    print(
        f"generated {path}: {packets:,} packets (recording {recorded - started:.0f} s, "
        f"scale-up {done - recorded:.0f} s)",
        file=sys.stderr,
    )
    return path, facts


# --- the measured passes (each in a child process) --------------------------------------


def load_detectors() -> tuple[list[Detector], list[str], dict[str, str]]:
    """Every detector importable now, with default settings; and why the others are not."""
    detectors: list[Detector] = []
    used: list[str] = []
    missing: dict[str, str] = {}
    for name, module, cls in DETECTORS:
        detector = _load_detector(module, cls)
        if isinstance(detector, str):
            missing[name] = detector
        else:
            detectors.append(detector)
            used.append(name)
    return detectors, used, missing


def _load_detector(module: str, cls: str) -> Detector | str:
    try:
        factory: Callable[[], Detector] = getattr(importlib.import_module(module), cls)
        return factory()
    except Exception as error:  # a detector being written may fail in any way
        return f"{type(error).__name__}: {error}"


def vm_status(field: str) -> int:
    """A ``/proc/self/status`` figure in KiB (VmRSS, VmHWM); 0 where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Tally:
    """What the engine decided over a pass."""

    def __init__(self) -> None:
        self.observations = 0
        self.unparsed = 0
        self.events: collections.Counter[str] = collections.Counter()
        self.by_source: collections.Counter[str] = collections.Counter()
        self.verdicts: collections.Counter[str] = collections.Counter()
        self.bans = 0
        self.rss_samples: list[int] = []

    def count(self, engine: Engine, obs: Observation) -> None:
        self.observations += 1
        if obs.message is None:
            self.unparsed += 1
        inspection = engine.inspect(obs)
        if inspection.verdict is not ALLOW:
            self.verdicts[inspection.verdict.action.value] += 1
        for event in inspection.events:
            self.events[event.rule] += 1
            self.by_source[f"{event.rule} {event.source}"] += 1
        self.bans += len(inspection.bans)
        if self.observations % RSS_SAMPLE_EVERY == 0:
            self.rss_samples.append(vm_status("VmRSS:"))


def shard_key(obs: Observation) -> str:
    """The non-PBX side: a request's source, a response's destination."""
    return obs.dst if isinstance(obs.message, Response) else obs.src


class Sharder:
    """Which shard an address belongs to: CRC-32 of the address (IPv6: of its /64)."""

    def __init__(self, shards: int) -> None:
        self.shards = shards
        self._cache: dict[str, int] = {}

    def __call__(self, address: str) -> int:
        shard = self._cache.get(address)
        if shard is None:
            key = address
            if ":" in address:
                key = str(ipaddress.IPv6Network((address, 64), strict=False).network_address)
            shard = zlib.crc32(key.encode()) % self.shards
            if len(self._cache) >= 65536:
                self._cache.clear()
            self._cache[address] = shard
        return shard


def sharded_pass(path: Path, engine: Engine, tally: Tally, shard: int, shards: int) -> int:
    """The pipeline for one shard (see the module doc); returns the packets read."""
    options = SourceOptions()
    decoder = PacketDecoder()
    observer = CaptureObserver(options)  # TCP, fragments: every worker, filtered after
    shard_of = Sharder(shards)
    packets = 0
    last_ns = 0
    with open_capture(path) as capture:
        for packet in capture:
            packets += 1
            last_ns = packet.ts_ns
            segment = decoder.decode(packet.linktype, packet.data, packet.ts_ns)
            if segment is not None and segment.proto == "udp":
                payload = segment.payload
                if not payload or not options.is_sip(segment):
                    continue
                key = segment.dst if payload.startswith(b"SIP/2.0 ") else segment.src
                if shard_of(key) != shard:
                    continue
                obs = observation_of_datagram(packet.ts_ns / 1e9, segment, options)
                if obs is not None:
                    tally.count(engine, obs)
                continue
            for obs in observer.observe(packet):
                if shard_of(shard_key(obs)) == shard:
                    tally.count(engine, obs)
    for obs in observer.finish(last_ns):
        if shard_of(shard_key(obs)) == shard:
            tally.count(engine, obs)
    return packets


class GcClock:
    """Time spent in the cyclic garbage collector (``gc.callbacks``), and full collections."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full_collections = 0
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self._started
        if info.get("generation") == 2:
            self.full_collections += 1


def child(args: argparse.Namespace) -> None:
    """One measured pass; writes its figures as JSON to ``args.result``."""
    # The collector settings of the `sipwarden` command, so the pass measures what it runs.
    tune_garbage_collector()
    path = Path(args.capture)
    limit: int | None = args.limit or None
    detectors, used, missing = load_detectors()
    engine = Engine(detectors)
    tally = Tally()
    packets = 0
    rss_before = vm_status("VmRSS:")
    collector = GcClock()
    started = time.perf_counter()
    if args.child == "decode":
        decoder = PacketDecoder()
        with open_capture(path) as capture:
            for packet in itertools.islice(capture, limit):
                packets += 1
                if decoder.decode(packet.linktype, packet.data, packet.ts_ns) is not None:
                    tally.observations += 1
    elif args.child == "parse":
        for obs in itertools.islice(observations_from_pcap(path, SourceOptions()), limit):
            tally.observations += 1
            if obs.message is None:
                tally.unparsed += 1
    elif args.child == "engine":
        for obs in itertools.islice(observations_from_pcap(path, SourceOptions()), limit):
            tally.count(engine, obs)
    else:
        packets = sharded_pass(path, engine, tally, args.shard, args.shards)
    seconds = time.perf_counter() - started
    result = {
        "mode": args.child,
        "packets": packets,
        "observations": tally.observations,
        "unparsed": tally.unparsed,
        "seconds": seconds,
        "gc_seconds": collector.seconds,
        "gc_full_collections": collector.full_collections,
        "rss_before_kb": rss_before,
        "hwm_kb": vm_status("VmHWM:"),
        "rss_samples_kb": tally.rss_samples,
        "events": dict(tally.events),
        "events_by_source": dict(tally.by_source),
        "verdicts": dict(tally.verdicts),
        "bans": tally.bans,
        "detectors": used,
        "missing": missing,
    }
    Path(args.result).write_text(json.dumps(result))


# --- the parent: runs the passes, prints the table and the JSON line ---------------------


@dataclass(frozen=True, slots=True)
class PassResult:
    """What a sipwarden child reported about its pass (see :func:`child`)."""

    packets: int
    observations: int
    unparsed: int
    seconds: float  # the loop only
    gc_seconds: float  # of which in the cyclic garbage collector
    gc_full_collections: int
    rss_before_kb: int
    rss_samples_kb: list[int]
    events: dict[str, int]
    events_by_source: dict[str, int]
    verdicts: dict[str, int]
    bans: int

    @classmethod
    def load(cls, path: Path) -> PassResult:
        raw = json.loads(path.read_text())
        return cls(
            packets=int(raw["packets"]),
            observations=int(raw["observations"]),
            unparsed=int(raw["unparsed"]),
            seconds=float(raw["seconds"]),
            gc_seconds=float(raw["gc_seconds"]),
            gc_full_collections=int(raw["gc_full_collections"]),
            rss_before_kb=int(raw["rss_before_kb"]),
            rss_samples_kb=[int(kb) for kb in raw["rss_samples_kb"]],
            events={str(k): int(v) for k, v in raw["events"].items()},
            events_by_source={str(k): int(v) for k, v in raw["events_by_source"].items()},
            verdicts={str(k): int(v) for k, v in raw["verdicts"].items()},
            bans=int(raw["bans"]),
        )


class Measured(NamedTuple):
    wall: float  # seconds, process start to exit
    max_rss_kb: int  # ru_maxrss of the process
    result: PassResult


def run_process(argv: list[str], cpus: set[int] | None, stderr: Path) -> tuple[float, int]:
    """Run ``argv`` to completion; its wall time and its own ``ru_maxrss``."""
    with stderr.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
        if cpus:
            os.sched_setaffinity(proc.pid, cpus)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} exited with {proc.returncode}:\n{tail(stderr)}")
    return wall, usage.ru_maxrss


class Runner:
    def __init__(self, capture: Path, workdir: Path, cpus: list[int]) -> None:
        self.capture = capture
        self.workdir = workdir
        self.cpus = cpus
        self._runs = 0

    def _cpu(self, index: int) -> set[int] | None:
        # The last CPU for single passes (tshark and sipwarden alike); the
        # workers of a sharded pass one CPU each while there are enough.
        if len(self.cpus) < 2:
            return None
        return {self.cpus[-1 - index % len(self.cpus)]}

    def tshark(self) -> tuple[float, int]:
        argv = [require("tshark", "tshark"), "-r", str(self.capture), *TSHARK_FIELDS]
        return run_process(argv, self._cpu(0), self.workdir / "tshark.stderr")

    def _argv(self, mode: str, result: Path, limit: int, shard: int, shards: int) -> list[str]:
        return [
            sys.executable, str(Path(__file__).resolve()), "--child", mode,
            "--capture", str(self.capture), "--result", str(result), "--limit", str(limit),
            "--shard", str(shard), "--shards", str(shards),
        ]  # fmt: skip

    def sipwarden(self, mode: str, limit: int = 0) -> Measured:
        self._runs += 1
        result = self.workdir / f"child-{os.getpid()}-{self._runs}.json"
        wall, rss = run_process(
            self._argv(mode, result, limit, 0, 1), self._cpu(0), result.with_suffix(".err")
        )
        figures = PassResult.load(result)
        result.unlink()
        result.with_suffix(".err").unlink()
        return Measured(wall, rss, figures)

    def sharded(self, workers: int) -> tuple[float, list[Measured]]:
        """All workers started together; the wall time is the slowest one's."""
        procs = []
        started = time.perf_counter()
        for shard in range(workers):
            self._runs += 1
            result = self.workdir / f"child-{os.getpid()}-{self._runs}.json"
            argv = self._argv("shard", result, 0, shard, workers)
            err = result.with_suffix(".err").open("wb")
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )
            cpus = self._cpu(shard)
            if cpus:
                os.sched_setaffinity(proc.pid, cpus)
            procs.append((proc, result, err, time.perf_counter()))
        out: list[Measured] = []
        for proc, result, err, began in procs:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            err.close()
            if proc.returncode != 0:
                raise SystemExit(f"worker exited with {proc.returncode}:\n{tail(Path(err.name))}")
            figures = PassResult.load(result)
            result.unlink()
            Path(err.name).unlink()
            out.append(Measured(time.perf_counter() - began, usage.ru_maxrss, figures))
        return time.perf_counter() - started, out


def warm(path: Path) -> None:
    """Read the file once so that every pass finds it in the page cache."""
    with path.open("rb") as handle:
        while handle.read(8 << 20):
            pass


def tool_version(tool: str) -> str:
    done = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False)
    lines = done.stdout.splitlines()
    return lines[0] if lines else "?"


def mb(kib: float) -> float:
    return round(kib / 1024, 1)


def room_of(filename: str) -> str:
    """The sipwarden module a profiled function belongs to ("sip/fields"), or "other"."""
    path = filename.replace("\\", "/")
    marker = "/sipwarden/"
    if marker not in path:
        return "other"
    module = path.rsplit(marker, 1)[1].removesuffix(".py")
    return module if "/" in module else "sipwarden/" + module


_Func = tuple[str, int, str]
_Entry = tuple[int, int, float, float, dict[_Func, tuple[int, int, float, float]]]


def _rooms_of(func: _Func, table: dict[_Func, _Entry], depth: int = 3) -> dict[str, float]:
    """The share of ``func``'s own time each stage is responsible for.

    A sipwarden function belongs to its module's stage; anything else (C
    functions such as ``bytes.find``, the stdlib) is charged to the stages of
    its callers, in proportion to the time spent on behalf of each.
    """
    room = room_of(func[0])
    callers = table[func][4] if func in table else {}
    if room != "other" or depth == 0 or not callers:
        return {room: 1.0}
    spent = sum(figures[2] for figures in callers.values()) or 1.0
    shares: collections.defaultdict[str, float] = collections.defaultdict(float)
    for caller, figures in callers.items():
        for caller_room, share in _rooms_of(caller, table, depth - 1).items():
            shares[caller_room] += share * figures[2] / spent
    return shares


# (module path suffix, function name) -> what it is, for the profile's entry points.
ENTRY_POINTS: Final = {
    ("sipwarden/monitor/sources.py", "observations_from_pcap"): "observations_from_pcap (all)",
    ("sipwarden/net/pcap.py", "_read_pcap"): "  pcap reading",
    ("sipwarden/net/packet.py", "decode"): "  packet decode",
    ("sipwarden/sip/parser.py", "parse_message"): "  parse_message",
    ("sipwarden/sip/message.py", "collect_defects"): "  collect_defects (lenient mode)",
    ("sipwarden/engine/engine.py", "inspect"): "Engine.inspect (all)",
    ("sipwarden/engine/engine.py", "expire"): "  Engine.expire (once per second)",
    ("sipwarden/engine/correlation.py", "remember"): "  Correlator.remember",
    ("sipwarden/engine/correlation.py", "answer"): "  Correlator.answer",
}


def _entry_point(func: _Func) -> str | None:
    filename, _, name = func
    path = filename.replace("\\", "/")
    for (suffix, function), label in ENTRY_POINTS.items():
        if name == function and path.endswith(suffix):
            return label
    if name == "observe" and "/sipwarden/detect/" in path:
        return "  " + path.rsplit("/", 1)[-1].removesuffix(".py") + ".observe"
    return None


_STAGES: Final = {
    "net": "read+decode",
    "monitor": "read+decode",
    "sip": "sip (parse, lazy header access, state machines)",
    "engine": "engine and detectors",
    "detect": "engine and detectors",
}


def _stage(room: str) -> str:
    return _STAGES.get(room.split("/", 1)[0], "other")


def profile(path: Path, limit: int, top: int) -> dict[str, float]:
    """cProfile the full pipeline on ``limit`` messages; print the top costs per stage."""
    tune_garbage_collector()  # as in the measured passes
    detectors, _, _ = load_detectors()
    engine = Engine(detectors)
    tally = Tally()
    profiler = cProfile.Profile()
    profiler.enable()
    for obs in itertools.islice(observations_from_pcap(path, SourceOptions()), limit):
        tally.count(engine, obs)
    profiler.disable()
    table: dict[_Func, _Entry] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in table.values()) or 1.0
    rooms: collections.defaultdict[str, float] = collections.defaultdict(float)
    by_stage: collections.defaultdict[str, list[tuple[float, _Func]]] = collections.defaultdict(
        list
    )
    for func, entry in table.items():
        shares = _rooms_of(func, table)
        for room, share in shares.items():
            rooms[room] += entry[2] * share
        main_room = max(shares, key=lambda room: shares[room])
        by_stage[_stage(main_room)].append((entry[2], func))
    print(
        f"\nprofile of the full pipeline on {tally.observations:,} messages (cProfile, whose "
        "overhead inflates call-heavy code)"
    )
    print("cumulative time of the pipeline's entry points:")
    points = [(label, table[func][3]) for func in table if (label := _entry_point(func))]
    order = list(ENTRY_POINTS.values())
    points.sort(key=lambda item: (order.index(item[0]) if item[0] in order else 99, -item[1]))
    for label, cumulative in points:
        print(f"  {label:40} {cumulative / total:6.1%}")
    print("own time by module (C and stdlib time charged to the calling sipwarden module):")
    ranked_rooms = sorted(rooms.items(), key=lambda item: item[1], reverse=True)
    for room, seconds in ranked_rooms:
        print(f"  {room:40} {seconds / total:6.1%}")
    for stage in (*dict.fromkeys(_STAGES.values()), "other"):
        ranked = sorted(by_stage.get(stage, []), reverse=True)[:top]
        if not ranked:
            continue
        print(f"\ntop functions of {stage} by own time (share of the whole pipeline):")
        for own, func in ranked:
            calls, _, _, cumulative, _ = table[func]
            filename, line, name = func
            where = "/".join(filename.split("/")[-2:]) + f":{line}" if filename != "~" else "C"
            print(
                f"  {own / total:6.1%} own {cumulative / total:6.1%} cum {calls:>10,} calls  "
                f"{name} ({where})"
            )
    return {room: round(seconds / total, 4) for room, seconds in ranked_rooms}


def prefixes_of(packets: int, given: str | None) -> list[int]:
    if given:
        return sorted({int(size) for size in given.split(",") if size.strip()})
    return [packets // 4, packets // 2, packets]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capture", help="the capture to measure (or to generate into)")
    parser.add_argument("--generate", action="store_true", help="make the SIPp capture")
    parser.add_argument("--packets", type=int, default=DEFAULT_PACKETS)
    parser.add_argument("--base-calls", type=int, default=DEFAULT_BASE_CALLS)
    parser.add_argument("--workdir", help="cache of generated captures")
    parser.add_argument("--prefixes", help="comma-separated prefix sizes for the RSS runs")
    parser.add_argument("--workers", type=int, default=2, help="also measure N sharded workers")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile N messages")
    parser.add_argument(
        "--child", choices=("decode", "parse", "engine", "shard"), help=argparse.SUPPRESS
    )
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--shard", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--shards", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return
    workdir = Path(args.workdir or Path(tempfile.gettempdir()) / "sipwarden-bench-monitor")
    workdir.mkdir(parents=True, exist_ok=True)
    facts: dict[str, object] = {}
    if args.capture and not args.generate:
        capture = Path(args.capture)
        if not capture.is_file():
            raise SystemExit(f"no capture {capture} (add --generate to make one)")
    else:
        target = Path(args.capture) if args.capture else None
        capture, facts = generated_capture(workdir, args.packets, args.base_calls, target)
    measure(capture, workdir, facts, args)


def measure(
    capture: Path, workdir: Path, facts: dict[str, object], args: argparse.Namespace
) -> None:
    """Run every pass over ``capture``, print the table and the JSON line."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    load_before = os.getloadavg()[0]
    runner = Runner(capture, workdir, cpus)
    _, used, missing = load_detectors()
    print(f"capture: {capture} ({capture.stat().st_size / 1e6:,.0f} MB)", file=sys.stderr)
    print(f"detectors used: {', '.join(used)}", file=sys.stderr)
    for name, why in missing.items():
        print(f"detector {name} not available: {why}", file=sys.stderr)
    warm(capture)

    print("tshark ...", file=sys.stderr)
    tshark_first, tshark_rss = runner.tshark()
    print("sipwarden full pipeline ...", file=sys.stderr)
    full = runner.sipwarden("engine")
    sip_packets = full.result.observations
    print("sipwarden stages ...", file=sys.stderr)
    decode = runner.sipwarden("decode")
    parse = runner.sipwarden("parse")
    capture_packets = decode.result.packets

    rss_by_prefix: dict[str, float] = {}
    pps_by_prefix: dict[str, int] = {}
    for size in prefixes_of(capture_packets, args.prefixes):
        if size >= sip_packets:
            run = full
        else:
            print(f"sipwarden prefix {size:,} ...", file=sys.stderr)
            run = runner.sipwarden("engine", size)
        rss_by_prefix[str(run.result.observations)] = mb(run.max_rss_kb)
        pps_by_prefix[str(run.result.observations)] = round(
            run.result.observations / run.result.seconds
        )
    smallest, largest = min(rss_by_prefix, key=int), max(rss_by_prefix, key=int)
    growth = rss_by_prefix[largest] - rss_by_prefix[smallest]

    by_workers: dict[str, float] = {"1": sip_packets / full.wall}
    shards: list[Measured] = []
    shard_events_equal: bool | None = None
    if args.workers > 1:
        print(f"sipwarden {args.workers} workers ...", file=sys.stderr)
        wall, shards = runner.sharded(args.workers)
        by_workers[str(args.workers)] = sip_packets / wall
        merged: collections.Counter[str] = collections.Counter()
        for shard in shards:
            merged.update(shard.result.events_by_source)
        shard_events_equal = _per_source(merged) == _per_source(full.result.events_by_source)

    # tshark again at the end: the faster of its two runs is the baseline
    # (noise on a shared machine then favours tshark, never sipwarden).
    print("tshark again ...", file=sys.stderr)
    tshark_second, tshark_rss_second = runner.tshark()
    tshark_wall = min(tshark_first, tshark_second)
    tshark_rss = max(tshark_rss, tshark_rss_second)
    tshark_pps = sip_packets / tshark_wall
    sipwarden_pps = sip_packets / full.wall
    stage_pps = {
        "read_decode": capture_packets / decode.result.seconds,
        "parse": sip_packets / parse.result.seconds,
        "engine": sip_packets / full.result.seconds,
    }
    stage_us = {
        "read_decode": 1e6 / stage_pps["read_decode"],
        "parse": 1e6 / stage_pps["parse"] - 1e6 / stage_pps["read_decode"],
        "engine": 1e6 / stage_pps["engine"] - 1e6 / stage_pps["parse"],
    }
    ratio = sipwarden_pps / tshark_pps

    print(
        f"\n{capture_packets:,} packets, {sip_packets:,} SIP messages (sipwarden's count, "
        f"used for every rate); detectors: {', '.join(used)}"
    )
    print(f"{'pass':44} {'SIP pkt/s':>11} {'vs tshark':>10} {'seconds':>8} {'max RSS MB':>11}")
    rows = [
        ("tshark -Y sip -T fields (best process wall)", tshark_wall, tshark_rss),
        ("sipwarden read+decode (loop)", decode.result.seconds, decode.max_rss_kb),
        ("sipwarden + parse (loop)", parse.result.seconds, parse.max_rss_kb),
        ("sipwarden + engine (loop)", full.result.seconds, full.max_rss_kb),
        ("sipwarden full pipeline (process wall)", full.wall, full.max_rss_kb),
    ]
    if shards:
        slowest = max(shard.wall for shard in shards)
        most = max(shard.max_rss_kb for shard in shards)
        rows.append((f"sipwarden {args.workers} workers (slowest process)", slowest, most))
    for name, seconds, rss in rows:
        # read+decode counts packets, the others SIP messages (equal for --generate).
        count = capture_packets if "decode" in name else sip_packets
        pps = count / seconds
        print(f"{name:44} {pps:11,.0f} {pps / tshark_pps:9.2f}x {seconds:8.1f} {mb(rss):11.1f}")
    print(
        "\nper SIP packet: "
        + ", ".join(f"{stage} {us:.1f} us" for stage, us in stage_us.items())
        + f" (tshark: {1e6 / tshark_pps:.1f} us for everything)"
    )
    print(
        "max RSS of the full pipeline by prefix: "
        + ", ".join(f"{int(size):,}: {rss} MB" for size, rss in rss_by_prefix.items())
        + f" (growth {growth:+.1f} MB)"
    )
    if full.result.rss_samples_kb:
        samples = [mb(kb) for kb in full.result.rss_samples_kb]
        print(f"RSS every {RSS_SAMPLE_EVERY:,} messages (MB): {samples}")
    gc_share = full.result.gc_seconds / full.result.seconds
    print(
        f"cyclic GC in the full pass: {full.result.gc_seconds:.1f} s ({gc_share:.0%} of the loop, "
        f"{full.result.gc_full_collections} full collections)"
    )
    print(
        f"engine: events {full.result.events}, bans {full.result.bans}, "
        f"verdicts {full.result.verdicts}, unparsable {full.result.unparsed}"
    )
    if shards:
        print(
            f"shards: messages per worker {[shard.result.observations for shard in shards]}, "
            f"loop seconds {[round(shard.result.seconds, 1) for shard in shards]}; "
            f"per-source events equal to one process: {shard_events_equal}"
        )
    load_after = os.getloadavg()[0]
    print(
        f"load average (1 min) {load_before:.2f} at the start, {load_after:.2f} at the end "
        f"on {len(cpus)} CPUs: other work on the machine slows the passes it overlaps"
    )
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    print(f"sipwarden is {ratio:.2f}x tshark: {verdict} the target of {TARGET_RATIO:.0f}x")

    profile_shares = profile(capture, args.profile, 12) if args.profile else {}

    result: dict[str, object] = {
        "sipwarden_pps": round(sipwarden_pps),
        "tshark_pps": round(tshark_pps),
        "ratio_vs_tshark": round(ratio, 3),
        "max_rss_mb": mb(full.max_rss_kb),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "sip_packets": sip_packets,
        "sip_count_from": "sipwarden full-pipeline observations",
        "capture_packets": capture_packets,
        "capture_mb": round(capture.stat().st_size / 1e6),
        "tshark_seconds": round(tshark_wall, 2),
        "tshark_runs_seconds": [round(tshark_first, 2), round(tshark_second, 2)],
        "tshark_max_rss_mb": mb(tshark_rss),
        "sipwarden_seconds": round(full.wall, 2),
        "sipwarden_loop_pps": round(stage_pps["engine"]),
        "stage_pps": {stage: round(pps) for stage, pps in stage_pps.items()},
        "stage_us_per_packet": {stage: round(us, 2) for stage, us in stage_us.items()},
        "gc_seconds": round(full.result.gc_seconds, 2),
        "gc_share": round(gc_share, 3),
        "rss_mb_by_prefix": rss_by_prefix,
        "rss_growth_mb": round(growth, 1),
        "rss_before_loop_mb": mb(full.result.rss_before_kb),
        "rss_samples_mb": [mb(kb) for kb in full.result.rss_samples_kb],
        "loop_pps_by_prefix": pps_by_prefix,
        "workers": max(1, args.workers),
        "sipwarden_pps_by_workers": {n: round(pps) for n, pps in by_workers.items()},
        "ratio_vs_tshark_by_workers": {n: round(p / tshark_pps, 3) for n, p in by_workers.items()},
        "shard_messages": [shard.result.observations for shard in shards],
        "shard_loop_seconds": [round(shard.result.seconds, 2) for shard in shards],
        "shard_events_equal": shard_events_equal,
        "events": full.result.events,
        "bans": full.result.bans,
        "unparsable": full.result.unparsed,
        "detectors": used,
        "detectors_missing": sorted(missing),
        "profile_stage_shares": profile_shares,
        "cpus": len(cpus),
        "load_average": [round(load_before, 2), round(load_after, 2)],
        "python": sys.version.split()[0],
        "tshark": tool_version("tshark"),
        "generated": facts,
    }
    print(json.dumps(result))


def _per_source(counts: dict[str, int]) -> dict[str, int]:
    """Events by rule and source, without the global ones (source ``*``)."""
    return {key: count for key, count in counts.items() if count and not key.endswith(" *")}


if __name__ == "__main__":
    main()
