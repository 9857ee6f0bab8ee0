"""Benchmark the gateway: clean call rate and messages per second, and calls under a flood.

Run: ``.venv/bin/python bench/gateway.py`` (a few minutes; ``--quick`` for a
shorter, coarser run; ``--help`` lists the knobs). Needs ``sipp`` (Debian
``sip-tester``) and ``kamailio``. Traffic stays on loopback.

What is measured, in one run (the machines are shared and noisy, so the three
paths are measured side by side and their searches interleaved, step by step):

* **direct**: SIPp UAC -> SIPp UAS, no relay: the ceiling of SIPp itself;
* **kamailio**: UAC -> Kamailio -> UAS, Kamailio doing comparable work
  (``bench/kamailio/relay.cfg``: stateful relay with tm, sanity checks, pike,
  a User-Agent filter, header removal, record-routing), one UDP worker per core;
* **gateway**: UAC -> ``sipwarden gateway`` -> UAS with its full default
  policy (every detector, per-source rate limit, strict parsing, topology
  hiding, header rules); only the addresses (loopback), ``bogon_check =
  false`` (loopback is a bogon) and file locations are set.

For each path the **maximum clean call rate**: SIPp places ``rate x
--step-seconds`` calls at ``-r rate`` (INVITE, [100], 180, 200, ACK, BYE, 200;
``bench/sipp/call_uac.xml`` against ``bench/sipp/call_uas.xml``); a step is
clean when every call succeeded and SIPp kept the rate (the calls took at most
1/0.95 of the time the rate asks: a relay that falls behind makes SIPp late
before it makes calls fail). The rate doubles from ``--start-rate`` until a
step is not clean, then a geometric bisection narrows it to ``--resolution``.
Every step starts a fresh UAS and relay, so a step that overloaded a relay
(its queues, its bans) cannot spoil the next one. **Messages per second**: the
SIP messages the relay carried (what the UAC and the UAS sent, retransmissions
included, from SIPp's ``-trace_counts``) over the step's time, at the highest
clean step; the relay's own 100 Trying is not counted. Also the relay's CPU
time per relayed message (all its processes, from ``/proc``).

The calls come from ``--phones`` addresses (127.0.1.1, 127.0.1.2, ...; four
extensions each), one SIPp with ``-t ui`` (a socket per address). One source
address would not be a fair test of the *default* policy: the gateway limits
every source to ``rules.sip_rate`` packets per second (50, burst 100) and its
flood detector flags a source sending more than 70 INVITEs per second, because
that is what one phone sending so much is. Allowlisting the load generator
(``bans.allowlist``) would bypass those limits, i.e. measure another policy.
Many phones behind the gateway, each well under the limits, is the real load;
250 addresses keep each under a third of ``sip_rate`` up to 1,300 calls/s (and
under it up to 4,000 calls/s). Kamailio's pike gets the same per-source limit.

**Flood test**: while a legitimate UAC places ``--legit-rate`` calls/s for
``--flood-seconds`` from the phones' addresses, another SIPp floods the gateway
from ``--flood-sources`` other addresses (127.0.3.x) at the highest rate SIPp
manages (``bench/sipp/flood_invite.xml``, or ``flood_options.xml`` with
``--flood-method OPTIONS``: a new request per message, nothing awaited,
inviteflood-like). The phones keep a phone's patience (RFC 3261 Timers B and F,
32 s) and the UAS a PBX's (it answers a retransmitted BYE for 32 s, Timer J).
Legit success = successful / attempted legitimate calls; the share answered
within 5 s and setup-time percentiles too. The same is run against Kamailio for
comparison. The gateway's counters (banned, rate limited, ...) come from its
"gateway stopped: ..." lines (one per worker), its events from ``--json``.

**Where the time goes**: whole calls through ``GatewayCore.receive`` in this
process (no sockets, the PBX played in Python): microseconds per message.
``--profile`` adds cProfile of that loop and of one gateway step (one worker,
at its highest clean rate or ``--profile-rate``).

The gateway runs with its default worker count (``gateway.workers = 0``: one
per core) unless ``--gateway-workers`` says otherwise; Kamailio with one UDP
worker per core (``--kamailio-children``).

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import cProfile
import csv
import json
import math
import os
import pstats
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final, Protocol

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

BENCH_DIR: Final = Path(__file__).resolve().parent
SCENARIOS: Final = BENCH_DIR / "sipp"
KAMAILIO_TEMPLATE: Final = BENCH_DIR / "kamailio" / "relay.cfg"

HOST: Final = "127.0.0.1"  # the relays and the UAS (the "PBX")
PHONE_NET: Final = "127.0.1."  # legitimate phones: 127.0.1.1 ...
FLOOD_NET: Final = "127.0.3."  # attackers: 127.0.3.1 ...
EXTENSIONS_PER_PHONE: Final = 4
CALLEE: Final = "100"
TARGETS: Final = ("direct", "kamailio", "gateway")

TARGET_RATIO: Final = 0.5  # gateway clean cps over Kamailio's
TARGET_LEGIT_SUCCESS: Final = 0.999  # legit calls under flood
KEEP_UP: Final = 0.95  # a step is clean only if SIPp achieved this share of its rate
RECV_TIMEOUT_MS: Final = 5000  # a call whose answer never comes fails after this
# SIPp's default behaviours without "bye" (no phone sends a BYE for a call that failed)
# and without "abortunexp": a phone ignores a stray message, such as the 180 that
# Kamailio's second worker relays just after the 200 its first worker relayed (RFC 3261
# 13.2.2.4: a provisional answer after the final one means nothing). A call that really
# goes wrong still fails: its expected answer never comes (RECV_TIMEOUT_MS).
BEHAVIOURS: Final = "all,-bye,-abortunexp"

# What the gateway's default policy allows one source (rules.sip_rate, sip_burst):
# Kamailio's pike gets the same.
SIP_RATE: Final = 50
PIKE_UNIT: Final = 2
KAMAILIO_MEMORY: Final = ("-m", "256", "-M", "16")  # shared, private per process (MB)

# "gateway stopped: banned 0, bogon 0, forwarded 14537, ..." (sipwarden.gateway.command)
STOPPED_LINE: Final = re.compile(r"gateway stopped: (.*)$", re.MULTILINE)
SUPERVISOR_LINE: Final = re.compile(r"gateway supervisor: (\d+) workers")


# --------------------------------------------------------------------------- helpers


def port_free_on_all(hosts: Sequence[str]) -> int:
    """A UDP port that is free on every one of ``hosts`` (SIPp -t ui binds -p on each)."""
    for _ in range(50):
        port = free_udp_port(hosts[0])
        if not any(udp_port_bound(host, port) for host in hosts[1:]):
            return port
    raise SystemExit("no UDP port is free on all the phone addresses")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every live process in process group ``pgid``."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: split after it.
        fields = stat[stat.rfind(")") + 2 :].split()
        # fields[0] is field 3 (state): pgrp is field 5, utime 14, stime 15.
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def udp_receive_drops() -> int:
    """Datagrams the kernel dropped because a socket's receive buffer was full (all
    sockets of the host: /proc/net/snmp Udp RcvbufErrors)."""
    try:
        lines = Path("/proc/net/snmp").read_text().splitlines()
    except OSError:
        return 0
    rows = [line.split() for line in lines if line.startswith("Udp:")]
    if len(rows) < 2 or "RcvbufErrors" not in rows[0]:
        return 0
    return int(rows[1][rows[0].index("RcvbufErrors")])


def load_average() -> float:
    return os.getloadavg()[0]


def tool_version(argv: list[str], pattern: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    match = re.search(pattern, out.stdout + out.stderr)
    return match.group(1) if match else "?"


# --------------------------------------------------------------------------- SIPp


@dataclass(frozen=True, slots=True)
class SippStats:
    """What one SIPp run reported (its -trace_stat and -trace_counts files)."""

    outgoing: int = 0
    successful: int = 0
    failed: int = 0
    retransmissions: int = 0
    elapsed: float = 0.0  # first to last statistics row, seconds
    sent: int = 0  # messages sent, retransmissions included
    received: int = 0  # messages received, retransmissions included

    @property
    def achieved_cps(self) -> float:
        return self.outgoing / self.elapsed if self.elapsed > 0 else 0.0


def _epoch(value: str) -> float:
    # "2026-11-26\t08:42:16.954280\t1795682536.954280": the last field is the epoch.
    return float(value.rsplit("\t", maxsplit=1)[-1])


def read_stats(stats_file: Path, counts_dir: Path) -> SippStats:
    """The last row of SIPp's statistics CSV, and its message counts."""
    try:
        with stats_file.open(newline="", errors="replace") as handle:
            rows = list(csv.reader(handle, delimiter=";"))
    except OSError:
        return SippStats()
    if len(rows) < 2:
        return SippStats()
    values = dict(zip(rows[0], rows[-1], strict=False))
    sent, received = read_counts(counts_dir)
    try:
        return SippStats(
            outgoing=int(values["OutgoingCall(C)"]) + int(values["IncomingCall(C)"]),
            successful=int(values["SuccessfulCall(C)"]),
            failed=int(values["FailedCall(C)"]),
            retransmissions=int(values["Retransmissions(C)"]),
            elapsed=_epoch(values["CurrentTime"]) - _epoch(values["StartTime"]),
            sent=sent,
            received=received,
        )
    except (KeyError, ValueError):
        return SippStats()


def read_counts(rundir: Path) -> tuple[int, int]:
    """(sent, received) messages from the last row of a ``-trace_counts`` CSV.

    Columns are ``<index>_<message>_<what>``: a sent message has ``Sent`` and
    ``Retrans`` (its retransmissions), a received one ``Recv`` and ``Retrans``
    (retransmissions received).
    """
    files = sorted(rundir.glob("*_counts.csv"))
    if not files:
        return (0, 0)
    with files[-1].open(newline="", errors="replace") as handle:
        rows = [row for row in csv.reader(handle, delimiter=";") if row]
    if len(rows) < 2:
        return (0, 0)
    values = dict(zip(rows[0], rows[-1], strict=False))
    kinds: dict[str, str] = {}
    for name in rows[0]:
        prefix, _, what = name.rpartition("_")
        if what in ("Sent", "Recv"):
            kinds[prefix] = what
    sent = received = 0
    for name, value in values.items():
        prefix, _, what = name.rpartition("_")
        if what not in ("Sent", "Recv", "Retrans") or prefix not in kinds:
            continue
        count = int(value or 0)
        if kinds[prefix] == "Sent":
            sent += count
        else:
            received += count
    return (sent, received)


class Sipp:
    """Starts SIPp processes, each in its own directory under ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.binary = require("sipp", "sip-tester")
        self.workdir = workdir
        self.runs = 0

    def rundir(self, name: str) -> Path:
        self.runs += 1
        path = self.workdir / f"{self.runs:03d}-{name}"
        path.mkdir(parents=True)
        return path

    def common(self, rundir: Path, scenario: str) -> list[str]:
        """What every SIPp gets: its own control and media ports (concurrent SIPps
        would collide on the defaults), no terminal, statistics and message counts
        every second, bounded error logs, big socket buffers (SIPp must not be the
        one that drops)."""
        return [
            self.binary,
            *("-sf", str(SCENARIOS / scenario), "-i", HOST, "-nostdin"),
            *("-cp", str(free_udp_port("0.0.0.0")), "-mp", str(free_udp_port(HOST))),
            *("-trace_stat", "-stf", str(rundir / "stats.csv"), "-fd", "1", "-trace_counts"),
            *("-trace_err", "-error_file", str(rundir / "errors.log"), "-max_log_size", "1000000"),
            *("-buff_size", "4194304", "-max_recv_loops", "10000", "-max_sched_loops", "10000"),
        ]


class Uas:
    """The SIPp UAS (the PBX) on HOST, in the background.

    ``linger_ms``: how long a call stays after the 200 to its BYE, answering
    retransmitted BYEs (a PBX's Timer J).
    """

    def __init__(self, sipp: Sipp, linger_ms: int = 500) -> None:
        for _ in range(3):
            self.rundir = sipp.rundir("uas")
            self.port = free_udp_port(HOST)
            argv = [*sipp.common(self.rundir, "call_uas.xml"), "-p", str(self.port)]
            argv += ["-d", str(linger_ms)]
            self.proc = spawn_logged(self.rundir, argv)
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline and self.proc.poll() is None:
                if udp_port_bound(HOST, self.port):
                    return
                time.sleep(0.02)
            stop_process(self.proc, signal.SIGKILL, 1.0)
        raise SystemExit(f"the SIPp UAS did not start:\n{tail(self.rundir / 'stdout.log')}")

    def stop(self) -> SippStats:
        """Soft exit (SIGUSR1: no new calls, the calls under way end first), then SIGKILL
        after 3 s (lingering calls have nothing left to do)."""
        stop_process(self.proc, signal.SIGUSR1, 3.0)
        return read_stats(self.rundir / "stats.csv", self.rundir)


@dataclass(frozen=True, slots=True)
class Population:
    """Injection files: the phones (address;extension per line) and the attackers."""

    phones_file: Path
    phone_hosts: tuple[str, ...]
    phone_port: int
    flood_file: Path
    flood_hosts: tuple[str, ...]
    flood_port: int

    @classmethod
    def make(cls, workdir: Path, phones: int, flooders: int) -> Population:
        phone_hosts = tuple(f"{PHONE_NET}{i}" for i in range(1, phones + 1))
        flood_hosts = tuple(f"{FLOOD_NET}{i}" for i in range(1, flooders + 1))
        # Consecutive calls come from different phones; each phone has a few extensions.
        lines = [
            f"{phone_hosts[k % phones]};{1000 + k}" for k in range(phones * EXTENSIONS_PER_PHONE)
        ]
        phones_file = workdir / "phones.csv"
        phones_file.write_text("SEQUENTIAL\n" + "\n".join(lines) + "\n")
        flood_file = workdir / "flooders.csv"
        flood_file.write_text("SEQUENTIAL\n" + "\n".join(flood_hosts) + "\n")
        return cls(
            phones_file,
            phone_hosts,
            port_free_on_all(phone_hosts),
            flood_file,
            flood_hosts,
            port_free_on_all(flood_hosts),
        )


@dataclass(frozen=True, slots=True)
class PhoneTimers:
    """How long a call waits for an answer before SIPp counts it failed."""

    recv_timeout_ms: int
    invite_retransmissions: int | None = None  # None: SIPp's default (5)
    other_retransmissions: int | None = None  # None: SIPp's default (7)

    def argv(self) -> list[str]:
        argv = ["-recv_timeout", str(self.recv_timeout_ms)]
        if self.invite_retransmissions is not None:
            argv += ["-max_invite_retrans", str(self.invite_retransmissions)]
        if self.other_retransmissions is not None:
            argv += ["-max_non_invite_retrans", str(self.other_retransmissions)]
        return argv


# Rate steps: a call not answered within 5 s is a failure (the relay is overloaded).
STEP_TIMERS: Final = PhoneTimers(RECV_TIMEOUT_MS)
# Under a flood, a phone's own patience: RFC 3261 Timer B and F (64 x T1 = 32 s) with
# T1 = 500 ms, i.e. the INVITE sent 7 times (0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s), a
# BYE 11 times (T2 = 4 s caps the interval).
PHONE_TIMERS: Final = PhoneTimers(32_000, 6, 10)


def run_calls(
    sipp: Sipp,
    population: Population,
    target: tuple[str, int],
    rate: int,
    calls: int,
    *,
    timers: PhoneTimers = STEP_TIMERS,
    setup_times: list[float] | None = None,
) -> SippStats:
    """Place ``calls`` calls at ``rate`` calls/s from the phones to ``target``; wait for the end.

    With ``setup_times``, each successful call's INVITE-to-200 time (ms) is added to it.
    """
    rundir = sipp.rundir(f"uac-{rate}")
    seconds = calls / rate
    patience = timers.recv_timeout_ms / 1000
    argv = [
        *sipp.common(rundir, "call_uac.xml"),
        f"{target[0]}:{target[1]}",
        *("-t", "ui", "-inf", str(population.phones_file), "-ip_field", "0"),
        *("-p", str(population.phone_port), "-key", "phone_port", str(population.phone_port)),
        *("-max_socket", str(len(population.phone_hosts) + 16)),
        *("-s", CALLEE, "-r", str(rate), "-rp", "1000", "-m", str(calls)),
        *("-l", str(min(15000, max(1000, 2 * rate)))),
        *timers.argv(),
        *("-default_behaviors", BEHAVIOURS),
        *("-timeout", f"{math.ceil(2 * seconds + 2 * patience + 30)}s"),
    ]
    if setup_times is not None:
        argv += ["-trace_rtt", "-rtt_freq", "1"]
    proc = spawn_logged(rundir, argv)
    try:
        proc.wait(timeout=2 * seconds + 2 * patience + 45)
    except subprocess.TimeoutExpired:
        stop_process(proc, signal.SIGKILL, 1.0)
    if setup_times is not None:
        setup_times += read_response_times(rundir)
    return read_stats(rundir / "stats.csv", rundir)


def read_response_times(rundir: Path) -> list[float]:
    """Per-call response times (ms) from SIPp's ``-trace_rtt`` file(s)."""
    times: list[float] = []
    for path in rundir.glob("*_rtt.csv"):
        with path.open(newline="", errors="replace") as handle:
            for row in csv.reader(handle, delimiter=";"):
                with contextlib.suppress(IndexError, ValueError):
                    times.append(float(row[1]))
    return times


def percentile(values: Sequence[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


class Flood:
    """A SIPp sending requests as fast as it can from the attackers' addresses."""

    def __init__(
        self, sipp: Sipp, population: Population, target: tuple[str, int], method: str, timeout: int
    ) -> None:
        self.rundir = sipp.rundir(f"flood-{method.lower()}")
        argv = [
            *sipp.common(self.rundir, f"flood_{method.lower()}.xml"),
            f"{target[0]}:{target[1]}",
            *("-t", "ui", "-inf", str(population.flood_file), "-ip_field", "0"),
            *("-p", str(population.flood_port), "-key", "flood_port", str(population.flood_port)),
            *("-max_socket", str(len(population.flood_hosts) + 16)),
            # Far more than SIPp manages: it sends as fast as it can.
            *("-s", CALLEE, "-r", "1000000", "-rp", "1000", "-m", "1000000000", "-l", "1000000"),
            *("-timeout", f"{timeout}s"),
        ]
        self.proc = spawn_logged(self.rundir, argv)

    def stop(self) -> SippStats:
        stop_process(self.proc, signal.SIGUSR1, 5.0)
        return read_stats(self.rundir / "stats.csv", self.rundir)


# --------------------------------------------------------------------------- relays


class Relay(Protocol):
    """What sits between the phones and the PBX."""

    name: str

    def target(self) -> tuple[str, int]: ...

    def stop(self) -> dict[str, object]: ...


class Direct:
    """No relay: the phones call the UAS."""

    name = "direct"

    def __init__(self, uas: Uas) -> None:
        self.uas = uas

    def target(self) -> tuple[str, int]:
        return (HOST, self.uas.port)

    def stop(self) -> dict[str, object]:
        return {}


def _options_probe(port: int, local_port: int, token: str) -> bytes:
    return (
        f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{local_port};branch=z9hG4bK{token};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{HOST}>;tag={token}\r\n"
        f"To: <sip:{HOST}:{port}>\r\n"
        f"Call-ID: {token}@{HOST}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class _ProcessRelay:
    """A relay run as a process of its own (its whole group), on a free UDP port."""

    port: int
    proc: subprocess.Popen[bytes]
    cpu_start: float

    def _spawn(self) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def _start(self, what: str, log: Path) -> None:
        """Spawn on a free port until the relay answers (another process may take the
        port between our probe and its bind); three tries."""
        for _ in range(3):
            self.port = free_udp_port(HOST)
            self.proc = self._spawn()
            if self.ready():
                # Start-up (imports, parsing the configuration) is not the relay's work.
                self.cpu_start = group_cpu_seconds(self.proc.pid)
                return
            stop_process(self.proc, signal.SIGKILL, 1.0)
        raise SystemExit(f"{what} did not start:\n{tail(log)}")

    def target(self) -> tuple[str, int]:
        return (HOST, self.port)


class Kamailio(_ProcessRelay):
    """Kamailio with bench/kamailio/relay.cfg, relaying to the UAS."""

    name = "kamailio"

    def __init__(self, workdir: Path, uas: Uas, children: int) -> None:
        self.binary = require("kamailio", "kamailio")
        self.dir = workdir
        self.dir.mkdir(parents=True)
        self.instance = uuid.uuid4().hex[:12]
        self.log = self.dir / "kamailio.log"
        self.uas = uas
        self.children = children
        self._start("Kamailio", self.log)

    def _spawn(self) -> subprocess.Popen[bytes]:
        config = self.render(self.uas, self.children)
        # -DD: foreground, still forking the workers; -E: log to stderr.
        argv = [self.binary, "-DD", "-E", "-f", str(config), "-Y", str(self.dir), *KAMAILIO_MEMORY]
        with self.log.open("ab") as log:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
            )

    def render(self, uas: Uas, children: int) -> Path:
        params = [
            f'#!substdef "!SW_ADDR!{HOST}!g"',
            f'#!substdef "!SW_PORT!{self.port}!g"',
            f'#!substdef "!SW_UPSTREAM_IP!{HOST}!g"',
            f'#!substdef "!SW_UPSTREAM!{HOST}:{uas.port}!g"',
            f'#!substdef "!SW_CHILDREN!{children}!g"',
            f'#!substdef "!SW_PIKE_UNIT!{PIKE_UNIT}!g"',
            f'#!substdef "!SW_PIKE_DENSITY!{SIP_RATE * PIKE_UNIT}!g"',
            f'#!substdef "!SW_INSTANCE!{self.instance}!g"',
        ]
        first, _, rest = KAMAILIO_TEMPLATE.read_text().partition("\n")
        path = self.dir / "relay.cfg"
        path.write_text("\n".join([first, "# --- rendered by bench/gateway.py ---", *params, rest]))
        return path

    def ready(self) -> bool:
        deadline = time.monotonic() + 10.0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((HOST, 0))
            sock.settimeout(0.2)
            while time.monotonic() < deadline and self.proc.poll() is None:
                token = uuid.uuid4().hex
                sock.sendto(
                    _options_probe(self.port, sock.getsockname()[1], token), (HOST, self.port)
                )
                try:
                    answer = sock.recv(65535)
                except OSError:
                    continue
                if self.instance.encode() in answer:
                    return True
        return False

    def stop(self) -> dict[str, object]:
        cpu = group_cpu_seconds(self.proc.pid) - self.cpu_start
        stop_process(self.proc, signal.SIGTERM, 5.0)
        return {"cpu_seconds": cpu}


def gateway_config(
    directory: Path, port: int, uas_port: int, *, workers: int | None, store: bool = True
) -> str:
    """The full default policy: only where to listen and what to protect, the bogon
    check (loopback is a bogon), the worker count when asked and where files go."""
    return (
        "[gateway]\n"
        f'listen = ["udp:{HOST}:{port}"]\n'
        f'upstreams = ["udp:{HOST}:{uas_port}"]\n'
        "bogon_check = false\n"
        f'secret_file = "{directory / "gateway.key"}"\n'
        + (f"workers = {workers}\n" if workers is not None else "")
        + "\n[store]\n"
        + (f'path = "{directory / "gateway.sqlite3"}"\n' if store else 'path = ""\n')
    )


class Gateway(_ProcessRelay):
    """``python -m sipwarden gateway`` with its default policy, relaying to the UAS.

    ``workers`` None keeps the gateway's default (``gateway.workers = 0``: one
    worker process per core, sharing the listener through SO_REUSEPORT).
    ``profile`` runs it under cProfile (give it one worker: with more, the
    profiled process is the supervisor, which only waits).
    """

    name = "gateway"

    def __init__(
        self, workdir: Path, uas: Uas, *, workers: int | None, profile: Path | None = None
    ) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True)
        self.stdout = self.dir / "events.jsonl"
        self.stderr = self.dir / "gateway.log"
        self.workers = 1
        self.uas_port = uas.port
        self.configured_workers = workers
        self.profile = profile
        self._start("the gateway", self.stderr)

    def _spawn(self) -> subprocess.Popen[bytes]:
        config = self.dir / "sipwarden.toml"
        config.write_text(
            gateway_config(self.dir, self.port, self.uas_port, workers=self.configured_workers)
        )
        python = [sys.executable]
        if self.profile is not None:
            python += ["-m", "cProfile", "-o", str(self.profile)]
        argv = [*python, "-m", "sipwarden", "--config", str(config), "gateway", "--json"]
        self.stdout.write_bytes(b"")
        self.stderr.write_bytes(b"")
        with self.stdout.open("ab") as out, self.stderr.open("ab") as err:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.dir,
                start_new_session=True,
            )

    def ready(self) -> bool:
        """Every worker says "gateway running" (the supervisor names how many there are)."""
        deadline = time.monotonic() + 30.0
        first_running: float | None = None
        while time.monotonic() < deadline and self.proc.poll() is None:
            log = self.stderr.read_text(errors="replace")
            running = log.count("gateway running")
            supervisor = SUPERVISOR_LINE.search(log)
            if supervisor is not None:
                self.workers = int(supervisor.group(1))
                if running >= self.workers:
                    return True
            elif running:
                # One worker and no supervisor, unless its line is still to come.
                first_running = first_running or time.monotonic()
                if time.monotonic() - first_running > 0.5:
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> dict[str, object]:
        cpu = group_cpu_seconds(self.proc.pid) - self.cpu_start
        stop_process(self.proc, signal.SIGINT, 30.0)
        result: dict[str, object] = {"cpu_seconds": round(cpu, 2), "workers": self.workers}
        # One "gateway stopped" line per worker: their counters add up.
        totals: collections.Counter[str] = collections.Counter()
        for line in STOPPED_LINE.findall(self.stderr.read_text(errors="replace")):
            for item in line.split(", "):
                name, _, value = item.rpartition(" ")
                with contextlib.suppress(ValueError):
                    totals[name] += int(value)
        result |= dict(totals)
        rules: collections.Counter[str] = collections.Counter()
        for line in self.stdout.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                rules[str(json.loads(line).get("rule"))] += 1
        result["events"] = dict(rules)
        return result


# --------------------------------------------------------------------------- steps


@dataclass(slots=True)
class Step:
    """One fixed-rate run through one path."""

    target: str
    rate: int
    calls: int
    successful: int
    failed: int
    retransmissions: int
    achieved_cps: float
    elapsed: float
    relayed_messages: int  # what the UAC and the UAS sent
    udp_drops: int  # datagrams dropped by full receive buffers (the whole host) meanwhile
    relay: dict[str, object] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return (
            self.failed == 0
            and self.successful == self.calls
            and self.achieved_cps >= KEEP_UP * self.rate
        )

    @property
    def mps(self) -> float:
        return self.relayed_messages / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def cpu_us_per_message(self) -> float | None:
        cpu = self.relay.get("cpu_seconds")
        if not isinstance(cpu, float) or not self.relayed_messages:
            return None
        return cpu / self.relayed_messages * 1e6

    def describe(self) -> str:
        verdict = "clean" if self.clean else "NOT clean"
        cpu = self.cpu_us_per_message
        extra = f", relay CPU {cpu:.0f} us/msg" if cpu is not None else ""
        counters = {
            key: value
            for key, value in self.relay.items()
            if key in ("banned", "rate_limited", "refused", "malformed") and value
        }
        return (
            f"  {self.target:9s} {self.rate:6d} cps x {self.calls:6d}: {self.successful} ok, "
            f"{self.failed} failed, {self.retransmissions} retrans, {self.udp_drops} UDP drops, "
            f"achieved "
            f"{self.achieved_cps:7.1f} cps, {self.mps:8.0f} msg/s{extra} -> {verdict}"
            + (f" {counters}" if counters else "")
        )


@dataclass(slots=True)
class FloodOutcome:
    """Legitimate calls through one path under a flood."""

    target: str
    legit_attempted: int
    legit_successful: int
    legit_retransmissions: int
    setup_ms: tuple[float, ...]  # INVITE-to-200 of every successful legitimate call
    flood_sent: int  # requests the flooding SIPp sent
    flood_seconds: float
    relay: dict[str, object]

    @property
    def legit_success(self) -> float:
        return self.legit_successful / self.legit_attempted if self.legit_attempted else 0.0

    @property
    def flood_pps_sent(self) -> float:
        return self.flood_sent / self.flood_seconds if self.flood_seconds > 0 else 0.0

    @property
    def legit_within_step_timeout(self) -> float:
        """The stricter reading: successful and answered within RECV_TIMEOUT_MS."""
        quick = sum(1 for ms in self.setup_ms if ms <= RECV_TIMEOUT_MS)
        return quick / self.legit_attempted if self.legit_attempted else 0.0

    def describe(self) -> str:
        return (
            f"  {self.target:9s} legit {self.legit_successful}/{self.legit_attempted} "
            f"({self.legit_success:.4%}, {self.legit_retransmissions} retrans, setup p50 "
            f"{percentile(self.setup_ms, 0.5):.0f} ms p99 {percentile(self.setup_ms, 0.99):.0f} "
            f"ms max {max(self.setup_ms, default=0):.0f} ms); flood sent {self.flood_sent} "
            f"({self.flood_pps_sent:.0f}/s); relay {self.relay}"
        )

    def as_json(self) -> dict[str, object]:
        record = asdict(self)
        del record["setup_ms"]
        return record | {
            "legit_success": round(self.legit_success, 5),
            "legit_success_within_5s": round(self.legit_within_step_timeout, 5),
            "setup_ms_p50": percentile(self.setup_ms, 0.5),
            "setup_ms_p99": percentile(self.setup_ms, 0.99),
            "setup_ms_max": max(self.setup_ms, default=0.0),
            "flood_pps_sent": round(self.flood_pps_sent),
        }


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.sipp = Sipp(workdir / "sipp")
        self.population = Population.make(workdir, args.phones, args.flood_sources)
        self.relays = 0

    def relay(self, name: str, uas: Uas, *, profile: Path | None = None) -> Relay:
        self.relays += 1
        where = self.workdir / f"{name}-{self.relays:03d}"
        if name == "kamailio":
            return Kamailio(where, uas, self.args.kamailio_children)
        if name == "gateway":
            workers = 1 if profile is not None else self.args.gateway_workers
            return Gateway(where, uas, workers=workers, profile=profile)
        return Direct(uas)

    def step(self, name: str, rate: int, *, profile: Path | None = None) -> Step:
        calls = max(self.args.min_calls, round(rate * self.args.step_seconds))
        uas = Uas(self.sipp)
        relay: Relay | None = None
        try:
            relay = self.relay(name, uas, profile=profile)
            drops = udp_receive_drops()
            uac = run_calls(self.sipp, self.population, relay.target(), rate, calls)
            drops = udp_receive_drops() - drops
        finally:
            counters = relay.stop() if relay is not None else {}
            server = uas.stop()
        return Step(
            target=name,
            rate=rate,
            calls=calls,
            successful=uac.successful,
            failed=uac.failed + (calls - uac.outgoing),
            retransmissions=uac.retransmissions + server.retransmissions,
            achieved_cps=uac.achieved_cps,
            elapsed=uac.elapsed,
            relayed_messages=uac.sent + server.sent,
            udp_drops=drops,
            relay=counters,
        )

    def flood(self, name: str) -> FloodOutcome:
        """Legitimate calls through ``name`` while a SIPp floods it from other addresses."""
        args = self.args
        calls = round(args.legit_rate * args.flood_seconds)
        uas = Uas(self.sipp, linger_ms=PHONE_TIMERS.recv_timeout_ms)
        relay: Relay | None = None
        flood: Flood | None = None
        flood_stats = SippStats()
        setup_times: list[float] = []
        try:
            relay = self.relay(name, uas)
            flood = Flood(
                self.sipp,
                self.population,
                relay.target(),
                args.flood_method,
                # Until stopped, after the last legitimate call (the timeout is a backstop).
                round(args.flood_seconds + 2 * PHONE_TIMERS.recv_timeout_ms / 1000 + 60),
            )
            time.sleep(1.0)  # the flood is under way before the first legitimate call
            legit = run_calls(
                self.sipp,
                self.population,
                relay.target(),
                args.legit_rate,
                calls,
                timers=PHONE_TIMERS,
                setup_times=setup_times,
            )
        finally:
            if flood is not None:
                flood_stats = flood.stop()
            counters = relay.stop() if relay is not None else {}
            uas.stop()
        attempted = max(calls, legit.outgoing)
        return FloodOutcome(
            target=name,
            legit_attempted=attempted,
            legit_successful=legit.successful,
            legit_retransmissions=legit.retransmissions,
            setup_ms=tuple(setup_times),
            flood_sent=flood_stats.sent,
            flood_seconds=flood_stats.elapsed,
            relay=counters,
        )


class RateSearch:
    """The highest clean rate: doubling from ``start``, then geometric bisection."""

    def __init__(self, start: int, maximum: int, resolution: float, minimum: int = 10) -> None:
        self.start = start
        self.maximum = maximum
        self.resolution = resolution
        self.minimum = minimum
        self.clean = 0  # the highest clean rate so far
        self.unclean: int | None = None  # the lowest rate that was not clean
        self.steps: list[Step] = []

    def next_rate(self) -> int | None:
        if not self.steps:
            return self.start
        if self.unclean is None:
            if self.clean >= self.maximum:
                return None
            return min(self.maximum, self.clean * 2)
        if self.clean == 0:
            rate = self.unclean // 2
            return rate if rate >= self.minimum else None
        if self.unclean <= self.clean * (1 + self.resolution):
            return None
        rate = round(math.sqrt(self.clean * self.unclean))
        return rate if self.clean < rate < self.unclean else None

    def record(self, step: Step) -> None:
        self.steps.append(step)
        if step.clean:
            self.clean = max(self.clean, step.rate)
        else:
            self.unclean = step.rate if self.unclean is None else min(self.unclean, step.rate)

    def best(self) -> Step | None:
        clean = [step for step in self.steps if step.clean and step.rate == self.clean]
        return clean[-1] if clean else None


# --------------------------------------------------------------------------- profile


PROFILE_ENTRY_POINTS: Final = (
    ("GatewayCore.receive", "gateway/core.py", "receive"),
    ("  parse_message", "sip/parser.py", "parse_message"),
    ("  Engine.inspect", "engine/engine.py", "inspect"),
    ("  check_proxy_request", "sip/checks.py", "check_proxy_request"),
    ("  _forward_inward", "gateway/core.py", "_forward_inward"),
    ("  _response_from_inside", "gateway/core.py", "_response_from_inside"),
    ("  _hide_outward", "gateway/core.py", "_hide_outward"),
    ("  Message.to_bytes", "sip/message.py", "to_bytes"),
    ("GatewayServer.dispatch (sendto)", "gateway/server.py", "dispatch"),
)


def report_profile(path: Path, top: int, title: str) -> dict[str, object]:
    """Print a profile of the gateway: entry points, own time by module, top functions."""
    stats = pstats.Stats(str(path))
    table = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in table.values())  # own time of everything
    print(f"\nprofile of {title} ({total:.2f} s of own time in all):")
    entry_points: dict[str, float] = {}
    for label, file_suffix, function in PROFILE_ENTRY_POINTS:
        cumulative = 0.0
        calls = 0
        for (file, _, name), entry in table.items():
            if name == function and file.endswith(file_suffix):
                cumulative += entry[3]
                calls += entry[1]
        if calls:
            entry_points[label.strip()] = round(cumulative / total, 4)
            print(
                f"  {label:34s} {cumulative:7.2f} s cumulative ({cumulative / total:5.1%}), "
                f"{calls} calls, {cumulative / calls * 1e6:6.1f} us each"
            )
    by_module: collections.Counter[str] = collections.Counter()
    for (file, _, _), entry in table.items():
        by_module[_module_of(file)] += entry[2]
    print("own time by module:")
    shares: dict[str, float] = {}
    for module, seconds in by_module.most_common(18):
        shares[module] = round(seconds / total, 4)
        print(f"  {module:44s} {seconds:7.2f} s {seconds / total:6.1%}")
    print(f"top {top} functions by own time:")
    ranked = sorted(table.items(), key=lambda item: item[1][2], reverse=True)[:top]
    for (file, line, name), entry in ranked:
        print(
            f"  {entry[2]:6.2f} s {entry[2] / total:5.1%} {entry[1]:9d} calls  "
            f"{_module_of(file)}:{line} {name}"
        )
    return {"entry_point_shares": entry_points, "module_shares": shares}


def _module_of(file: str) -> str:
    if "sipwarden" in file:
        return "sipwarden/" + file.rsplit("sipwarden/", 1)[-1]
    if file.startswith(("~", "<")):
        return "builtins"
    parts = Path(file).parts
    return "/".join(parts[-2:]) if len(parts) >= 2 else file


# --------------------------------------------------------------------------- core loop
#
# The gateway's decisions without sockets or an event loop: whole calls fed to
# GatewayCore.receive in this process, the PBX played by a few lines of Python
# that answer like bench/sipp/call_uas.xml. Time per message, by message, with
# nothing else on the clock (the machine's noise aside): the ceiling of one
# worker before any I/O.

_CORE_GATEWAY_PORT: Final = 5070
_CORE_PBX_PORT: Final = 5090
_CORE_SDP: Final = (
    "v=0\r\no=- 53655765 2353687637 IN IP4 {ip}\r\ns={name}\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
    "m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)
CORE_MESSAGES: Final = ("INVITE", "180", "200 INVITE", "ACK", "BYE", "200 BYE")


def _header_values(raw: bytes, name: str) -> list[str]:
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")[1:]
    values = []
    for line in head:
        field_name, _, value = line.partition(":")
        if field_name.strip().lower() == name:
            values.append(value.strip())
    return values


def _core_invite(number: int, ip: str, extension: int) -> bytes:
    sdp = _CORE_SDP.format(ip=ip, name="-")
    gateway = f"{HOST}:{_CORE_GATEWAY_PORT}"
    return (
        f"INVITE sip:{CALLEE}@{gateway} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {ip}:5060;branch=z9hG4bK-1-{number}-0;rport\r\n"
        "Max-Forwards: 70\r\n"
        f'From: "Phone {extension}" <sip:{extension}@{ip}>;tag=1SIPpTag00{number}\r\n'
        f"To: <sip:{CALLEE}@{gateway}>\r\n"
        f"Call-ID: {number}-1@{HOST}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:{extension}@{ip}:5060;transport=UDP>\r\n"
        "User-Agent: Yealink SIP-T46S 66.86.0.15\r\n"
        "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()


def _core_answer(request: bytes, status: str, number: int, *, dialog: bool) -> bytes:
    """The PBX's answer to a request the gateway forwarded (SIPp's [last_*] copies)."""
    lines = [f"SIP/2.0 {status}"]
    lines += [f"Via: {value}" for value in _header_values(request, "via")]
    if dialog:
        lines += [f"Record-Route: {value}" for value in _header_values(request, "record-route")]
    to = _header_values(request, "to")[0]
    if ";tag=" not in to:
        to += f";tag=2SIPpTag01{number}"
    lines += [
        f"From: {_header_values(request, 'from')[0]}",
        f"To: {to}",
        f"Call-ID: {_header_values(request, 'call-id')[0]}",
        f"CSeq: {_header_values(request, 'cseq')[0]}",
        "Server: Asterisk PBX 18.10.0",
    ]
    if not dialog:
        return "\r\n".join([*lines, "Content-Length: 0", "", ""]).encode()
    lines.append(f"Contact: <sip:{HOST}:{_CORE_PBX_PORT};transport=UDP>")
    if not status.startswith("200"):
        return "\r\n".join([*lines, "Content-Length: 0", "", ""]).encode()
    sdp = _CORE_SDP.format(ip=HOST, name="Asterisk PBX 18.10.0")
    lines += [
        "X-Asterisk-Node: pbx-node-1",
        "Content-Type: application/sdp",
        f"Content-Length: {len(sdp)}",
        "",
        sdp,
    ]
    return "\r\n".join(lines).encode()


def _core_in_dialog(answer: bytes, method: str, cseq: int, number: int, ip: str) -> bytes:
    """ACK or BYE along the route set of the 200 the phone got (RFC 3261 12.2)."""
    routes = list(reversed(_header_values(answer, "record-route")))
    target = _header_values(answer, "contact")[0].split(">")[0].lstrip("<")
    lines = [
        f"{method} {target} SIP/2.0",
        f"Via: SIP/2.0/UDP {ip}:5060;branch=z9hG4bK-1-{number}-{cseq}{method};rport",
        *(f"Route: {route}" for route in routes),
        "Max-Forwards: 70",
        f"From: {_header_values(answer, 'from')[0]}",
        f"To: {_header_values(answer, 'to')[0]}",
        f"Call-ID: {_header_values(answer, 'call-id')[0]}",
        f"CSeq: {cseq} {method}",
        "User-Agent: Yealink SIP-T46S 66.86.0.15",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def core_loop(calls: int, workdir: Path, profile: Path | None) -> dict[str, object]:
    """Whole calls through GatewayCore.receive in this process; microseconds per message."""
    # Imported here: the rest of the benchmark runs the gateway as a command only.
    from sipwarden.config import parse_config  # noqa: PLC0415
    from sipwarden.enforce.setup import build_ban_manager  # noqa: PLC0415
    from sipwarden.gateway.command import build_core  # noqa: PLC0415
    from sipwarden.gateway.model import Endpoint  # noqa: PLC0415
    from sipwarden.runtime import tune_garbage_collector  # noqa: PLC0415

    directory = workdir / "core-loop"
    directory.mkdir(parents=True, exist_ok=True)
    config = parse_config(
        gateway_config(directory, _CORE_GATEWAY_PORT, _CORE_PBX_PORT, workers=1, store=False)
    )
    tune_garbage_collector()  # as the gateway command does
    manager = build_ban_manager(config, store=None, enforcing=True)
    manager.start(time.time())
    core = build_core(config, manager, None, None)
    pbx = Endpoint("udp", HOST, _CORE_PBX_PORT)
    seconds: dict[str, float] = dict.fromkeys(CORE_MESSAGES, 0.0)

    def feed(kind: str, data: bytes, source: Endpoint, now: float, *, inward: bool) -> bytes:
        started = time.perf_counter()
        sends = core.receive(data, source, now)
        seconds[kind] += time.perf_counter() - started
        for send in sends:
            to_pbx = (send.to.host, send.to.port) == (pbx.host, pbx.port)
            if to_pbx == inward and not send.data.startswith(b"SIP/2.0 100 "):
                return bytes(send.data)
        raise RuntimeError(f"the gateway did not forward the {kind}: {sends!r:.300}")

    def call(number: int, now: float) -> None:
        slot = number % (250 * EXTENSIONS_PER_PHONE)
        ip, extension = f"{PHONE_NET}{slot % 250 + 1}", 1000 + slot
        phone = Endpoint("udp", ip, 5060)
        invite = feed("INVITE", _core_invite(number, ip, extension), phone, now, inward=True)
        ringing = _core_answer(invite, "180 Ringing", number, dialog=True)
        feed("180", ringing, pbx, now, inward=False)
        ok = _core_answer(invite, "200 OK", number, dialog=True)
        answer = feed("200 INVITE", ok, pbx, now, inward=False)
        ack = _core_in_dialog(answer, "ACK", 1, number, ip)
        feed("ACK", ack, phone, now, inward=True)
        bye = feed("BYE", _core_in_dialog(answer, "BYE", 2, number, ip), phone, now, inward=True)
        feed("200 BYE", _core_answer(bye, "200 OK", number, dialog=False), pbx, now, inward=False)

    # Simulated time at 100 calls/s: 300 requests/s, under the global flood limit.
    start = time.time()
    warm = min(500, calls)
    for number in range(warm):
        call(number, start + number / 100)
    seconds = dict.fromkeys(CORE_MESSAGES, 0.0)
    profiler = cProfile.Profile() if profile is not None else None
    if profiler is not None:
        profiler.enable()
    for number in range(warm, warm + calls):
        call(number, start + number / 100)
    if profiler is not None and profile is not None:
        profiler.disable()
        profiler.dump_stats(str(profile))
    manager.close()
    total = sum(seconds.values())
    per_message = total / (calls * len(CORE_MESSAGES))
    return {
        "calls": calls,
        "us_per_message": round(per_message * 1e6, 1),
        "us_by_message": {kind: round(value / calls * 1e6, 1) for kind, value in seconds.items()},
        "calls_per_second_one_core": round(calls / total),
        "profiled": profiler is not None,
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter steps, coarser search")
    parser.add_argument("--step-seconds", type=float, help="seconds of calls per step (5; 3)")
    parser.add_argument("--min-calls", type=int, default=200, help="calls per step at least")
    parser.add_argument("--start-rate", type=int, default=200, help="first rate tried, calls/s")
    parser.add_argument("--max-rate", type=int, default=20000, help="highest rate tried")
    parser.add_argument(
        "--resolution", type=float, help="stop when the bracket is this narrow (0.1; 0.25)"
    )
    parser.add_argument("--targets", default=",".join(TARGETS), help="paths measured")
    parser.add_argument("--phones", type=int, default=250, help="phone addresses (1-254)")
    parser.add_argument(
        "--kamailio-children", type=int, default=os.cpu_count() or 2, help="UDP workers"
    )
    parser.add_argument(
        "--gateway-workers", type=int, help="gateway.workers (default: the gateway's, per core)"
    )
    parser.add_argument("--legit-rate", type=int, default=50, help="calls/s under the flood")
    parser.add_argument("--flood-seconds", type=float, help="legit calls this long (30; 10)")
    parser.add_argument("--flood-sources", type=int, default=4, help="attacker addresses")
    parser.add_argument("--flood-method", choices=("INVITE", "OPTIONS"), default="INVITE")
    parser.add_argument("--no-flood", action="store_true", help="skip the flood test")
    parser.add_argument(
        "--profile", action="store_true", help="one more gateway step under cProfile"
    )
    parser.add_argument("--profile-rate", type=int, help="its rate (the gateway's best)")
    parser.add_argument(
        "--core-calls",
        type=int,
        help="calls through the in-process core loop (2000; 1000; 0: none)",
    )
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument("--workdir", type=Path, help="logs go here (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.step_seconds is None:
        args.step_seconds = 3.0 if args.quick else 5.0
    if args.resolution is None:
        args.resolution = 0.25 if args.quick else 0.1
    if args.core_calls is None:
        args.core_calls = 1000 if args.quick else 2000
    if args.flood_seconds is None:
        args.flood_seconds = 10.0 if args.quick else 30.0
    args.targets = [name for name in args.targets.split(",") if name]
    unknown = set(args.targets) - set(TARGETS)
    if unknown or not 1 <= args.phones <= 254 or not 1 <= args.flood_sources <= 254:
        parser.error(f"targets from {TARGETS}; 1-254 phones and flood sources")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sipwarden-bench-gateway-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"work directory {workdir}", file=sys.stderr)
    load_start = load_average()
    started = time.monotonic()
    bench = Bench(args, workdir)
    result: dict[str, object] = {}
    try:
        result = measure(bench, args)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    result.update(
        {
            "cpus": os.cpu_count(),
            "load_average": [round(load_start, 2), round(load_average(), 2)],
            "seconds": round(time.monotonic() - started, 1),
            "python": sys.version.split()[0],
            "sipp": tool_version([bench.sipp.binary, "-v"], r"SIPp (v[\w.-]+)"),
            "kamailio": tool_version(
                [require("kamailio", "kamailio"), "-v"], r"version: kamailio ([\w.-]+)"
            ),
            "quick": args.quick,
        }
    )
    print(json.dumps(result, sort_keys=False))
    return 0


def measure(bench: Bench, args: argparse.Namespace) -> dict[str, object]:
    result: dict[str, object] = {}
    if args.core_calls:
        result |= measure_core(bench, args)
    searches = search_rates(bench, args)
    result |= summarize_rates(searches)
    if not args.no_flood:
        result |= flood_test(bench, args)
    if args.profile:
        best = searches["gateway"].best() if "gateway" in searches else None
        rate = args.profile_rate or (best.rate if best is not None else 100)
        path = bench.workdir / "gateway.prof"
        print(
            f"\nprofiling one gateway worker at {rate} calls/s (cProfile slows it down, "
            "so this step is not clean; the shares are what counts):"
        )
        step = bench.step("gateway", rate, profile=path)
        print(step.describe())
        if path.exists():
            title = "the gateway process (one worker; epoll is idle time)"
            result["profile"] = {
                "rate": rate,
                "clean": step.clean,
                **report_profile(path, args.profile_top, title),
            }
    result["config"] = {key: value for key, value in vars(args).items() if key != "workdir"} | {
        "keep_up": KEEP_UP,
        "recv_timeout_ms": RECV_TIMEOUT_MS,
        "sip_rate": SIP_RATE,
    }
    return result


def measure_core(bench: Bench, args: argparse.Namespace) -> dict[str, object]:
    """The in-process core loop (and its profile with --profile)."""
    print(f"GatewayCore.receive in-process, {args.core_calls} whole calls (no sockets, one core):")
    try:
        core = core_loop(args.core_calls, bench.workdir, None)
    except Exception as error:  # the gateway's internals move; the rest of the bench stands
        print(f"  core loop unavailable: {error!r}")
        return {"gateway_core": {"error": repr(error)}}
    by_message = core["us_by_message"]
    assert isinstance(by_message, dict)
    for kind, micros in by_message.items():
        print(f"  {kind:12s} {micros:7.1f} us")
    print(
        f"  {core['us_per_message']} us per message on average: at most "
        f"{core['calls_per_second_one_core']} calls/s per core before any I/O\n"
    )
    result: dict[str, object] = {
        "gateway_core_us_per_message": core["us_per_message"],
        "gateway_core": core,
    }
    if args.profile:
        path = bench.workdir / "core.prof"
        core_loop(min(args.core_calls, 1000), bench.workdir, path)
        title = "GatewayCore.receive in-process"
        result["core_profile"] = report_profile(path, args.profile_top, title)
        print()
    return result


def search_rates(bench: Bench, args: argparse.Namespace) -> dict[str, RateSearch]:
    """Each path's highest clean rate, the searches interleaved one step at a time."""
    searches = {
        name: RateSearch(args.start_rate, args.max_rate, args.resolution) for name in args.targets
    }
    # One step of each path in turn, so a noisy minute hits all of them alike.
    print("maximum clean call rate (every call succeeded, the rate was kept):")
    pending = dict(searches)
    while pending:
        for name, search in list(pending.items()):
            rate = search.next_rate()
            if rate is None:
                del pending[name]
                continue
            step = bench.step(name, rate)
            search.record(step)
            print(step.describe(), flush=True)
            time.sleep(0.5)
    return searches


def summarize_rates(searches: dict[str, RateSearch]) -> dict[str, object]:
    result: dict[str, object] = {}
    cps: dict[str, int] = {}
    print(f"\n{'path':10s} {'clean cps':>10s} {'msg/s':>9s} {'msg/call':>9s} {'CPU us/msg':>11s}")
    for name, search in searches.items():
        best = search.best()
        cps[name] = best.rate if best is not None else 0
        mps = round(best.mps) if best is not None else 0
        per_call = best.relayed_messages / best.calls if best is not None else 0.0
        cpu = best.cpu_us_per_message if best is not None else None
        result[f"{name}_cps"] = cps[name]
        result[f"{name}_mps"] = mps
        result[f"{name}_achieved_cps"] = round(best.achieved_cps, 1) if best is not None else 0.0
        result[f"{name}_messages_per_call"] = round(per_call, 2)
        result[f"{name}_first_unclean_cps"] = search.unclean
        if cpu is not None:
            result[f"{name}_cpu_us_per_message"] = round(cpu, 1)
        cpu_text = f"{cpu:11.1f}" if cpu is not None else f"{'-':>11s}"
        print(f"{name:10s} {cps[name]:10d} {mps:9d} {per_call:9.2f} {cpu_text}")
    for name, over in (
        ("ratio_vs_kamailio", ("gateway", "kamailio")),
        ("gateway_ratio_vs_direct", ("gateway", "direct")),
        ("kamailio_ratio_vs_direct", ("kamailio", "direct")),
    ):
        if cps.get(over[1]) and over[0] in cps:
            result[name] = round(cps[over[0]] / cps[over[1]], 3)
    ratio = result.get("ratio_vs_kamailio")
    if isinstance(ratio, float):
        met = ratio >= TARGET_RATIO
        result["meets_rate_target"] = met
        print(
            f"gateway / kamailio clean call rate: {ratio:.3f} (target >= {TARGET_RATIO}: "
            f"{'met' if met else 'NOT met'})"
        )
    gateway = searches["gateway"].best() if "gateway" in searches else None
    if gateway is not None:
        result["gateway_counters_at_best"] = gateway.relay
    result["steps"] = {
        name: [
            {
                "rate": step.rate,
                "clean": step.clean,
                "failed": step.failed,
                "achieved_cps": round(step.achieved_cps, 1),
                "retransmissions": step.retransmissions,
                "udp_drops": step.udp_drops,
                "mps": round(step.mps),
            }
            for step in search.steps
        ]
        for name, search in searches.items()
    }
    return result


def flood_test(bench: Bench, args: argparse.Namespace) -> dict[str, object]:
    print(
        f"\nflood test: {args.legit_rate} legitimate calls/s for {args.flood_seconds:g} s from "
        f"{args.phones} phones while SIPp floods {args.flood_method} from "
        f"{args.flood_sources} other addresses at its maximum rate:"
    )
    floods: dict[str, FloodOutcome] = {}
    for name in ("gateway", "kamailio"):
        floods[name] = bench.flood(name)
        print(floods[name].describe(), flush=True)
    gateway, kamailio = floods["gateway"], floods["kamailio"]
    result: dict[str, object] = {
        "legit_success_under_flood": round(gateway.legit_success, 5),
        "legit_success_under_flood_within_5s": round(gateway.legit_within_step_timeout, 5),
        "kamailio_legit_success_under_flood": round(kamailio.legit_success, 5),
        "flood_pps_sent": round(gateway.flood_pps_sent),
        "kamailio_flood_pps_sent": round(kamailio.flood_pps_sent),
    }
    for key in ("banned", "rate_limited", "refused", "forwarded", "replied", "malformed"):
        if key in gateway.relay:
            result[f"gateway_flood_{key}"] = gateway.relay[key]
    result["gateway_flood_events"] = gateway.relay.get("events", {})
    met = gateway.legit_success >= TARGET_LEGIT_SUCCESS
    result["meets_flood_target"] = met
    result["flood"] = {
        "method": args.flood_method,
        "sources": args.flood_sources,
        "seconds": args.flood_seconds,
        "legit_rate": args.legit_rate,
        "gateway": gateway.as_json(),
        "kamailio": kamailio.as_json(),
    }
    print(
        f"legitimate call success under flood through the gateway: {gateway.legit_success:.4%} "
        f"(target >= {TARGET_LEGIT_SUCCESS:.1%}: {'met' if met else 'NOT met'})"
    )
    return result


if __name__ == "__main__":
    sys.exit(main())
