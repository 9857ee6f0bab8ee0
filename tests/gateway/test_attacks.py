"""SIPVicious against the real gateway in front of a real Kamailio: the attack proof.

Attackers (SIPVicious ``svmap``, ``svwar``, ``svcrack``) → gateway (``python -m
sipwarden gateway --json``) → Kamailio (the "PBX": registrar with digest
authentication, users :data:`~peers.BENIGN_USERS`) → a SIPp UAS behind it.
Every test also proves that a legitimate phone (SIPp: registration and an
authenticated call, as user 100, the account under attack) still gets through
afterwards, and that only the attacker was banned.

Keeping the sources apart on loopback
-------------------------------------
Linux routes all of 127.0.0.0/8 to ``lo``, and a socket bound to the wildcard
address that sends to any of it gets the route's preferred source, 127.0.0.1.
svwar and svcrack 0.3.3 bind the wildcard whatever ``-b`` says (svmap honours
it), so the attacker is 127.0.0.1, and every other party gets an address of
its own (:func:`attacker_address` asks the kernel, the same way the tools'
sockets are routed, and the lab checks it differs from all of them):

===============  ===================  ==================================================
role             address              why
===============  ===================  ==================================================
attacker         127.0.0.1            the kernel's choice for the tools' wildcard sockets
gateway          127.0.0.10:G         the address phones and attackers are given
PBX (Kamailio)   127.0.0.2:K          inside; the gateway never screens its answers
legitimate phone 127.0.0.3            SIPp ``-i``: must never be banned with the attacker
SIPp UAS         127.0.0.4            the callee behind Kamailio (prefix 9)
===============  ===================  ==================================================

That is the simplest robust setup: no namespace, no tool patched, every peer
fixture used as it is. (A network namespace would separate the tools too, but
Kamailio, the gateway, dumpcap and SIPp would all need running inside it.) The
gateway keeps bans in its own process only (no kernel backend is configured),
so banning 127.0.0.1 cannot cut anything else off; ``bogon_check`` is off
because loopback is a bogon.

The PBX is made worth attacking: Kamailio runs with ``user_oracle`` (404 at
once for an unknown user, a challenge for a known one, as Asterisk does with
``alwaysauthreject=no``), and the attackers use the PBX's domain (the realm of
its challenges), so that the control test can show svwar and svcrack
succeeding against the PBX alone.

Profiles of the gateway
-----------------------
``fingerprints``: the default configuration. SIPVicious is recognised by its
signatures (User-Agent, From tag) at its first request, which is dropped; the
source is banned at once.

``renamed``: the built-in scanner signatures switched off, standing for a
SIPVicious whose fingerprints sipwarden does not know. What is left are the
behavioural rules (enumeration, cracking) and the uniform answers to unknown
users (``gateway.uniform_auth_answers``).

``no-uniform``: ``renamed`` with the uniform answers off too: only the
enumeration rule stands between svwar and the PBX's oracle.

What reaches the PBX is counted on the inside leg (gateway → Kamailio) of a
capture of both legs: the attacker's requests are recognised by their Call-ID,
which the gateway forwards unchanged (it rewrites Via and Contact). Every
packet the attacker sent is accounted for: forwarded to the PBX, refused by the
pipeline, or dropped by the ban table before parsing (the counters the gateway
logs when it stops: ``gateway stopped: banned N, ...``).

Measured on the development machine (printed by each test, ``pytest -rP``;
"banned after" is the ban's time minus the capture time of the attacker's first
packet, both on the wall clock):

=====================  ==============  ============================  ====================
run                    banned after    attacker requests at the PBX  dropped by ban table
=====================  ==============  ============================  ====================
svmap, fingerprints    at packet 1     0                             1 (a second svmap)
svwar, fingerprints    at packet 1     0                             2 (runs 2 and 3)
svwar, renamed         no ban          7 (2 per method, 1 ACK)       0 (svwar gave up)
svwar, no-uniform      53-69 ms        8 (of 32)                     24
svcrack, fingerprints  at packet 1     0                             0 (svcrack gave up)
svcrack, renamed       143-160 ms      20 (10 guesses)               174-188
=====================  ==============  ============================  ====================

The JSON event reached the gateway's stdout 70-100 ms after svmap was started
and 120-195 ms after svwar (no-uniform) was, the tools' own start-up included.

Tools: Debian's ``sipvicious`` (0.3.3), ``sip-tester`` (SIPp), ``kamailio``,
``tshark`` (dumpcap). A missing tool fails with its install command.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import pytest

from monitor.live_support import Arrival, LiveMonitor, ToolRun
from monitor.test_live import sipvicious
from peers import (
    BENIGN_USERS,
    Capture,
    KamailioRegistrar,
    Sipp,
    SipPacket,
    SippUas,
    capture,
    read_sip,
)
from sipwarden.detect.cracking import CrackingSettings
from sipwarden.detect.enumeration import EnumerationSettings
from sipwarden.enforce.ban import Ban
from sipwarden.engine.bans import BanSettings
from sipwarden.gateway.routing import BRANCH_PREFIX
from sipwarden.sip.message import Request, Response
from sipwarden.store.sqlite import SqliteStore
from support import PeerError, free_port

#: pytest's ``record_property`` fixture (its type is not public in every pytest 8).
RecordProperty = Callable[[str, object], None]

GATEWAY_HOST: Final = "127.0.0.10"
PBX_HOST: Final = "127.0.0.2"
CLIENT_HOST: Final = "127.0.0.3"
UAS_HOST: Final = "127.0.0.4"

#: The PBX's SIP domain (KamailioRegistrar's default), which the attackers use.
DOMAIN: Final = "sipwarden.test"
#: The extensions of the PBX that svwar's sweep (100-130) covers.
REAL_EXTENSIONS: Final = frozenset(user for user in BENIGN_USERS if 100 <= int(user) <= 130)
SWEEP: Final = "-e100-130"
METHODS: Final = ("REGISTER", "INVITE", "OPTIONS")
#: The attacked account, and where its real password sits in svcrack's dictionary.
VICTIM: Final = "100"
PASSWORD_POSITION: Final = 50
#: How long an event may take to show up on the gateway's stdout at all.
EVENT_TIMEOUT: Final = 10.0
#: Requests a fast tool sends while the answer that bans it is on its way: svwar
#: and svcrack send every 5 ms when no answer is waiting, so a request or two can
#: overtake the ban on a busy machine (none did in the measured runs).
IN_FLIGHT: Final = 2


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Profile:
    """How the gateway is configured for a run (see the module docstring)."""

    name: str
    signatures: bool = True
    uniform_answers: bool = True

    def config(self) -> str:
        text = f"uniform_auth_answers = {str(self.uniform_answers).lower()}\n"
        if not self.signatures:
            text += "\n[detect.scanner]\nbuiltin = false\n"
        return text


FINGERPRINTS: Final = Profile("fingerprints")
RENAMED: Final = Profile("renamed", signatures=False)
NO_UNIFORM: Final = Profile("no-uniform", signatures=False, uniform_answers=False)


def attacker_address(port: int) -> str:
    """The source address of a wildcard-bound socket sending to the gateway.

    SIPVicious 0.3.3's svwar and svcrack bind the wildcard address (they ignore
    ``-b``), so the kernel's route picks their source: asked here the same way
    (a UDP ``connect`` sends nothing).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((GATEWAY_HOST, port))
        return str(probe.getsockname()[0])


# --- what the tools said ----------------------------------------------------------------

# A row of SIPVicious' result table: "| 100       | reqauth        |".
_ROW = re.compile(r"^\|\s*(\S+)\s*\|\s*(.+?)\s*\|$")


def reported(tool: ToolRun) -> dict[str, str]:
    """The result table a SIPVicious tool printed: extension -> auth, or user -> password."""
    rows: dict[str, str] = {}
    for line in tool.log_path.read_text(errors="replace").splitlines():
        match = _ROW.match(line.strip())
        if match is not None and match[1] != "Extension":
            rows[match[1]] = match[2]
    return rows


def found_nothing(tool: ToolRun) -> None:
    """The tool ran to its end and reported nothing (no table, its "found nothing")."""
    assert tool.wait() == 0, tool.output()
    assert reported(tool) == {}, tool.output()
    assert "found nothing" in tool.log_path.read_text(errors="replace"), tool.output()


def dictionary(path: Path, password: str, position: int, size: int = 60) -> Path:
    """A password list with ``password`` at ``position`` (1-based) and wrong ones around it."""
    words = [f"wrong-{n:02d}" for n in range(1, size + 1)]
    words[position - 1] = password
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(words) + "\n")
    return path


def svwar(workdir: Path, target: Address, method: str, *, force: bool = True) -> ToolRun:
    # --force: svwar's own sanity check gives up when an unknown user is
    # challenged; an attacker then forces the sweep, so the tests do too.
    argv = ["-p", str(target.port), SWEEP, "-m", method, "--domain", DOMAIN]
    return sipvicious("svwar", workdir, *argv, *(["--force"] if force else []), target.host)


def svcrack(workdir: Path, target: Address, words: Path) -> ToolRun:
    # --maximumtime 1: stop retrying one second after the last answer (default
    # 10); the tool still waits its fixed 10 s socket timeout before it ends.
    argv = ["-p", str(target.port), f"-u{VICTIM}", "-d", str(words), "--domain", DOMAIN]
    tool = sipvicious("svcrack", workdir, *argv, "--maximumtime", "1", target.host)
    tool.timeout = 30.0
    return tool


# --- the lab ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the gateway and the capture say once the lab is shut down."""

    attacker: str
    counters: dict[str, int]  # the gateway's "gateway stopped: ..." line
    events: list[Arrival]  # its JSON lines (security events)
    bans: list[Ban]  # every ban it stored
    sent: list[SipPacket]  # everything the attacker sent to the gateway
    reached: list[SipPacket]  # the attacker's requests the gateway passed to the PBX

    @property
    def guesses(self) -> list[SipPacket]:
        """The attacker's requests that reached the PBX with credentials."""
        return [packet for packet in self.reached if "authorization" in packet.message.headers]

    def attacker_bans(self) -> list[Ban]:
        return [ban for ban in self.bans if ban.source == self.attacker]

    def check_only_the_attacker_was_banned_and_reported(self) -> None:
        assert {ban.source for ban in self.bans} <= {self.attacker}, self.bans
        sources = {str(event.record.get("source")) for event in self.events}
        assert sources <= {self.attacker}, [event.describe() for event in self.events]

    def check_bans_cost_nothing(self) -> None:
        """Every attacker packet was forwarded, refused or answered by the pipeline, or
        dropped by the ban table before parsing: none reached the engine or the PBX after
        the ban."""
        counters = self.counters
        handled = len(self.reached) + sum(
            counters[name] for name in ("refused", "rate_limited", "malformed", "answered")
        )
        assert counters["banned"] == len(self.sent) - handled, (counters, len(self.sent), handled)

    def report(self, name: str, tool: ToolRun, record_property: RecordProperty) -> None:
        """Print and record the measurements of the run (``pytest -rP`` shows them)."""
        first = min((packet.ts_ns for packet in self.sent), default=0) / 1e9
        bans = self.attacker_bans()
        to_ban = (
            f"banned {(bans[0].since - first) * 1000:.1f} ms after the first packet"
            if bans and first
            else "no ban"
        )
        numbers = {
            "sent": len(self.sent),
            "reached_pbx": len(self.reached),
            "guesses_reached_pbx": len(self.guesses),
            "dropped_by_ban_table": self.counters["banned"],
            "refused": self.counters["refused"],
        }
        for key, value in numbers.items():
            record_property(f"{name}_{key}", value)
        if bans and first:
            record_property(f"{name}_time_to_ban_s", round(bans[0].since - first, 3))
        rules = sorted({event.rule for event in self.events})
        print(
            f"attack {name}: {to_ban}, "
            + ", ".join(f"{key} {value}" for key, value in numbers.items())
            + f"; events {rules}; bans {[(b.rule, b.until - b.since) for b in bans]}\n"
            + f"{tool.name} said: {tool.log_path.read_text(errors='replace').strip()[-600:]}"
        )


class AttackLab:
    """Kamailio with a SIPp UAS behind it, the gateway in front, both legs captured.

    Use as a context manager; after the ``with`` block, :meth:`outcome` reads
    what the gateway logged and stored and what the capture holds.
    """

    def __init__(self, workdir: Path, profile: Profile) -> None:
        self.workdir = workdir
        self.profile = profile
        self.port = free_port(GATEWAY_HOST, tcp=False)
        self.entry = Address(GATEWAY_HOST, self.port)
        self.store_path = workdir / "gateway.sqlite3"
        self.client = Sipp(workdir / "client", local_ip=CLIENT_HOST)
        self.attacker = attacker_address(self.port)
        self.calls = 0
        self._stack = ExitStack()
        self.uas: SippUas | None = None
        self.pbx: KamailioRegistrar | None = None
        self.gateway: LiveMonitor | None = None
        self.capture: Capture | None = None

    def __enter__(self) -> Self:
        parties = {GATEWAY_HOST, PBX_HOST, CLIENT_HOST, UAS_HOST}
        if self.attacker in parties:
            raise PeerError(f"the attacker's source {self.attacker} is one of {parties}")
        stack = self._stack
        try:
            self.uas = stack.enter_context(Sipp(self.workdir / "uas", local_ip=UAS_HOST).uas())
            self.pbx = stack.enter_context(
                KamailioRegistrar(
                    self.workdir / "kamailio",
                    BENIGN_USERS,
                    host=PBX_HOST,
                    domain=DOMAIN,
                    downstream=(self.uas.host, self.uas.port),
                    downstream_prefix="9",
                    user_oracle=True,
                )
            )
            self.gateway = stack.enter_context(
                LiveMonitor(
                    self.workdir / "gateway",
                    ports=[self.port],
                    source=(),
                    command="gateway",
                    store=self.store_path,
                    extra_config=(
                        f'\n[gateway]\nlisten = ["udp:{GATEWAY_HOST}:{self.port}"]\n'
                        f'upstreams = ["udp:{self.pbx.host}:{self.pbx.port}"]\n'
                        f'secret_file = "{self.workdir / "gateway.key"}"\n'
                        # Loopback is a bogon: every party of this lab comes from it.
                        "bogon_check = false\n"
                        # One worker: the exact counts below (one event, one refusal,
                        # then only the ban table) assume one engine. Each tool run is
                        # a new socket, which the kernel may give to another worker,
                        # and a ban reaches the other workers within two ticks of
                        # their ban managers (~0.4 s), not at once.
                        "workers = 1\n" + self.profile.config()
                    ),
                )
            )
            self.capture = stack.enter_context(
                capture(
                    self.workdir,
                    bpf=f"udp port {self.port} or udp port {self.pbx.port}",
                    name="legs.pcap",
                )
            )
        except BaseException:
            stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    @property
    def monitor(self) -> LiveMonitor:
        assert self.gateway is not None, "the lab is not started"
        return self.gateway

    def wait_for_event(self, predicate: Callable[[Arrival], bool], what: str) -> Arrival:
        return self.monitor.wait_for(predicate, timeout=EVENT_TIMEOUT, what=what)

    def legitimate_client_works(self) -> None:
        """A phone from another address registers and calls through the gateway, as the
        attacked account (digest challenges answered with the right password)."""
        password = BENIGN_USERS[VICTIM]
        self.client.register(self.entry, VICTIM, password).expect(successful=1)
        self.client.call(self.entry, VICTIM, password, "9001").expect(successful=1)
        self.calls += 1

    def outcome(self) -> Outcome:
        gateway, pbx, cap, uas = self.gateway, self.pbx, self.capture, self.uas
        assert gateway is not None and pbx is not None and cap is not None and uas is not None
        # Stopped as Ctrl-C would: exit 0, nothing on stdout but JSON, no warnings.
        assert gateway.returncode == 0, gateway.output()
        assert gateway.problems() == [], gateway.output()
        assert gateway.junk == [], gateway.output()
        assert uas.result is not None
        assert uas.result.successful == self.calls, uas.result.describe()
        store = SqliteStore(self.store_path)
        try:
            bans = [Ban.from_record(row) for row in store.ban_history()]
        finally:
            store.close()
        packets = read_sip(cap.path)
        sent = [
            packet
            for packet in packets
            if packet.src == self.attacker
            and (packet.dst, packet.dport) == (GATEWAY_HOST, self.port)
        ]
        # What the outside got back carries only the Vias it sent: none of ours
        # (they would show the inside face; the 100 Trying once did).
        leaks = [
            packet.message.start_line()
            for packet in packets
            if (packet.src, packet.sport) == (GATEWAY_HOST, self.port)
            and packet.dst != PBX_HOST
            and isinstance(packet.message, Response)
            and any((via.branch or "").startswith(BRANCH_PREFIX) for via in packet.message.via)
        ]
        assert leaks == []
        call_ids = {packet.message.call_id for packet in sent}
        reached = [
            packet
            for packet in packets
            if (packet.src, packet.dst, packet.dport) == (GATEWAY_HOST, PBX_HOST, pbx.port)
            and isinstance(packet.message, Request)
            and packet.message.call_id in call_ids
        ]
        return Outcome(
            attacker=self.attacker,
            counters=gateway_counters(gateway.stderr_path.read_text()),
            events=gateway.events,
            bans=bans,
            sent=sent,
            reached=reached,
        )


_STOPPED = re.compile(r"gateway stopped: (.*)$", re.MULTILINE)


def gateway_counters(stderr: str) -> dict[str, int]:
    """The gateway's counters: the sum of its "gateway stopped: banned N, bogon N, ..."
    lines, one per worker."""
    lines = _STOPPED.findall(stderr)
    if not lines:
        raise PeerError(f"the gateway did not log its counters:\n{stderr[-2000:]}")
    counters: dict[str, int] = {}
    for line in lines:
        for part in line.split(", "):
            name, _, value = part.rpartition(" ")
            counters[name] = counters.get(name, 0) + int(value)
    return counters


def scanner_ban(outcome: Outcome) -> Ban:
    """The one ban of the fingerprints profile: the scanner signature, unproven UDP source."""
    (ban,) = outcome.attacker_bans()
    assert ban.rule == "scanner.sipvicious-user-agent", ban
    # Banned at the first request, before any answer could prove the source
    # receives them: the short ban of a possibly spoofed source.
    assert not ban.returnable
    assert ban.until - ban.since == BanSettings().unproven_duration
    return ban


def is_attacker_event(lab: AttackLab, kind: str) -> Callable[[Arrival], bool]:
    return lambda arrival: arrival.kind == kind and arrival.record.get("source") == lab.attacker


def by_method(packets: Iterable[SipPacket]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for packet in packets:
        cseq = packet.message.cseq
        method = cseq.method if cseq is not None else "?"
        counts[method] = counts.get(method, 0) + 1
    return counts


# --- the control: the PBX alone falls ------------------------------------------------------


def test_without_the_gateway_svwar_and_svcrack_break_into_the_pbx(tmp_path: Path) -> None:
    """The positive control: the same tools, aimed at Kamailio itself, succeed.

    So "nothing found" through the gateway is the gateway's doing, not a
    broken tool, a wrong domain or a PBX that gives nothing away.
    """
    with KamailioRegistrar(
        tmp_path / "kamailio", BENIGN_USERS, host=PBX_HOST, domain=DOMAIN, user_oracle=True
    ) as pbx:
        target = Address(pbx.host, pbx.port)
        for method in METHODS:
            # Without --force: the PBX answers the random user 404, so svwar's
            # sanity check passes and the sweep runs as an attacker would start it.
            with svwar(tmp_path / f"svwar-{method}", target, method, force=False) as tool:
                assert tool.wait() == 0, tool.output()
            assert set(reported(tool)) == REAL_EXTENSIONS, tool.output()
        words = dictionary(tmp_path / "words.txt", BENIGN_USERS[VICTIM], PASSWORD_POSITION)
        with svcrack(tmp_path / "svcrack", target, words) as tool:
            assert tool.wait() == 0, tool.output()
        assert reported(tool) == {VICTIM: BENIGN_USERS[VICTIM]}, tool.output()


# --- svmap -----------------------------------------------------------------------------


def test_svmap_is_banned_at_its_first_probe_and_the_pbx_sees_none(
    tmp_path: Path, record_property: RecordProperty
) -> None:
    with AttackLab(tmp_path, FINGERPRINTS) as lab:
        with sipvicious("svmap", tmp_path / "svmap", "-p", str(lab.port), GATEWAY_HOST) as tool:
            hit = lab.wait_for_event(is_attacker_event(lab, "scanner"), "scanner event")
            found_nothing(tool)
        # Probing again: the ban table drops it before a byte is parsed.
        again = sipvicious("svmap", tmp_path / "svmap-again", "-p", str(lab.port), GATEWAY_HOST)
        with again:
            found_nothing(again)
        lab.legitimate_client_works()
    outcome = lab.outcome()
    outcome.report("svmap", tool, record_property)
    print(f"svmap: scanner event {(hit.at - tool.started) * 1000:.0f} ms after the tool started")
    assert hit.rule == "scanner.sipvicious-user-agent"
    # svmap's From tag hex-encodes the target it probed: the gateway's address.
    assert hit.record["detail"]["decoded_tag"] == f"{GATEWAY_HOST}:{lab.port}"
    scanner_ban(outcome)
    outcome.check_only_the_attacker_was_banned_and_reported()
    assert [event.rule for event in outcome.events] == ["scanner.sipvicious-user-agent"]
    assert outcome.reached == []
    assert len(outcome.sent) == 2  # one OPTIONS per svmap run
    assert outcome.counters["refused"] == 1  # the first, by the signature
    assert outcome.counters["banned"] == 1  # the second, by the ban table
    outcome.check_bans_cost_nothing()


# --- svwar -----------------------------------------------------------------------------


@pytest.mark.parametrize("profile", [FINGERPRINTS, RENAMED], ids=lambda p: p.name)
def test_svwar_learns_no_extension_through_the_gateway(
    tmp_path: Path, profile: Profile, record_property: RecordProperty
) -> None:
    """REGISTER, INVITE and OPTIONS sweeps of 100-130 (100-102 exist): nothing found.

    fingerprints: the first probe is recognised and dropped, the source banned;
    the later sweeps die in the ban table. renamed: the uniform answers make an
    unknown user look like a known one, so svwar sees no difference (``--force``
    stops at the second answer, identical to the random user's).
    """
    runs: list[ToolRun] = []
    with AttackLab(tmp_path, profile) as lab:
        for method in METHODS:
            with svwar(tmp_path / f"svwar-{method}", lab.entry, method) as tool:
                found_nothing(tool)
            runs.append(tool)
        lab.legitimate_client_works()
    outcome = lab.outcome()
    outcome.report(f"svwar-{profile.name}", runs[0], record_property)
    outcome.check_only_the_attacker_was_banned_and_reported()
    outcome.check_bans_cost_nothing()
    if profile is FINGERPRINTS:
        scanner_ban(outcome)
        assert [event.kind for event in outcome.events] == ["scanner"]
        assert outcome.reached == []
        assert outcome.counters["refused"] == 1  # the first probe of the first sweep
        assert outcome.counters["banned"] == len(outcome.sent) - 1
        # svwar was told nothing at all: its first probe went unanswered, as if no
        # server were there (svwar 0.3.3 on Python 3.10+ words it as a socket error).
        assert "timed out" in runs[0].log_path.read_text(), runs[0].output()
    else:
        # svwar gave up by itself after two probes per method (measured: 2, 2, 2),
        # too few for any rule to call it a sweep; nothing to ban, nothing learned.
        # Its OPTIONS never reach the PBX: the gateway answers them (answer_options).
        assert by_method(outcome.reached) == {"REGISTER": 2, "INVITE": 2, "ACK": 1}
        assert outcome.bans == []


def test_without_uniform_answers_the_enumeration_rule_bans_the_sweep(
    tmp_path: Path, record_property: RecordProperty
) -> None:
    """uniform_auth_answers off, no signatures: the enumeration rule is the only guard.

    It bans the sweep at its threshold of distinct extensions answered, and
    what svwar learned is what the PBX answered before that: here all of
    100-102, which come first in the sweep. That is why the uniform answers
    are on by default.
    """
    threshold = EnumerationSettings().threshold
    with AttackLab(tmp_path, NO_UNIFORM) as lab:
        with svwar(tmp_path / "svwar", lab.entry, "REGISTER", force=False) as tool:
            hit = lab.wait_for_event(is_attacker_event(lab, "enumeration"), "enumeration event")
            assert tool.wait() == 0, tool.output()
        lab.legitimate_client_works()
    outcome = lab.outcome()
    outcome.report("svwar-no-uniform", tool, record_property)
    print(f"svwar: enumeration event {(hit.at - tool.started) * 1000:.0f} ms after its start")
    assert hit.rule == "enumeration.distinct_targets"
    assert set(hit.record["detail"]["revealed"]) == REAL_EXTENSIONS
    outcome.check_only_the_attacker_was_banned_and_reported()
    outcome.check_bans_cost_nothing()
    (ban,) = outcome.attacker_bans()
    assert ban.rule == "enumeration.distinct_targets"
    assert set(reported(tool)) <= REAL_EXTENSIONS
    # The random-user probe, then the threshold of extensions; the rest of the
    # 31 were dropped by the ban table.
    assert len(outcome.reached) <= 1 + threshold + IN_FLIGHT
    assert outcome.counters["banned"] >= 31 - threshold - IN_FLIGHT


# --- svcrack ---------------------------------------------------------------------------


@pytest.mark.parametrize("profile", [FINGERPRINTS, RENAMED], ids=lambda p: p.name)
def test_svcrack_finds_no_password_through_the_gateway(
    tmp_path: Path, profile: Profile, record_property: RecordProperty
) -> None:
    """svcrack against user 100, the real password the 50th of 60 guesses: not found.

    fingerprints: its first REGISTER is dropped and the source banned, so not
    one guess reaches the PBX. renamed: the cracking rule bans the source at
    its threshold of failures; only that many guesses reached the PBX, so only
    a password among the first of them could have been found.
    """
    words = dictionary(tmp_path / "words.txt", BENIGN_USERS[VICTIM], PASSWORD_POSITION)
    failures = CrackingSettings().failures_threshold
    with AttackLab(tmp_path, profile) as lab:
        with svcrack(tmp_path / "svcrack", lab.entry, words) as tool:
            found_nothing(tool)
        lab.legitimate_client_works()
    outcome = lab.outcome()
    outcome.report(f"svcrack-{profile.name}", tool, record_property)
    outcome.check_only_the_attacker_was_banned_and_reported()
    outcome.check_bans_cost_nothing()
    assert "cracking.succeeded" not in {event.rule for event in outcome.events}
    if profile is FINGERPRINTS:
        scanner_ban(outcome)
        assert [event.kind for event in outcome.events] == ["scanner"]
        assert outcome.reached == []
        # svcrack waits for the answer to its first REGISTER before guessing:
        # that one was dropped, and it gave up after its 10 s socket timeout.
        assert len(outcome.sent) == 1
        assert outcome.counters["refused"] == 1
    else:
        # svcrack kept sending for a second after the last answer: the ban table
        # dropped all of it without parsing a byte (measured: ~190 packets).
        assert outcome.counters["banned"] > 100
        (ban,) = outcome.attacker_bans()
        assert ban.rule == "cracking.failures_per_source"
        # svcrack answered the PBX's challenges with their nonces: it receives
        # what is sent to its address, so it earns the long ban.
        assert ban.returnable
        assert ban.until - ban.since == BanSettings().durations[0]
        # Measured: 10 guesses and the 10 REGISTERs that fetched their
        # challenges; the 10th failure banned the source.
        assert len(outcome.guesses) <= failures + IN_FLIGHT
        assert len(outcome.reached) <= 2 * (failures + IN_FLIGHT)
        assert len(outcome.guesses) < PASSWORD_POSITION
