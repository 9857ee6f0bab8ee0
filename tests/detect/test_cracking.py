"""Credential cracking: annotated digest exchanges in, the expected events out.

Each scenario is real SIP bytes (``parse_message``) through the engine, which
pairs every answer with its request: a REGISTER (with or without digest
credentials), then the PBX's 401 challenge, 403, or 200.
"""

from __future__ import annotations

import itertools
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipwarden.detect.cracking import (
    RULE_DISTRIBUTED,
    RULE_FAILURES,
    RULE_NONCE_NOT_ISSUED,
    RULE_NONCE_REUSE,
    RULE_SUCCEEDED,
    RULE_UNANSWERED,
    CrackingDetector,
    CrackingSettings,
)
from sipwarden.detect.enumeration import EnumerationDetector
from sipwarden.engine.contract import Direction, EventKind, Observation, SecurityEvent, Severity
from sipwarden.engine.correlation import RequestRecord
from sipwarden.engine.engine import Detector, Engine, Findings
from sipwarden.errors import ConfigError, RemoteProtocolError
from sipwarden.monitor.sources import observations_from_pcap
from sipwarden.sip.parser import parse_message
from support import shared_path

PBX = "192.0.2.10"
T0 = 1_800_000_000.0
_counter = itertools.count()


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


@dataclass(frozen=True, slots=True)
class Creds:
    """Digest credentials to put in a request (``response`` is any 32-hex guess)."""

    user: str
    nonce: str
    response: str
    uri: str = "sip:pbx.example.com"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None

    def header(self) -> str:
        value = (
            f'Digest username="{self.user}", realm="pbx", nonce="{self.nonce}", '
            f'uri="{self.uri}", response="{self.response}", algorithm=MD5'
        )
        if self.qop:
            value += f', qop={self.qop}, nc={self.nc}, cnonce="{self.cnonce}"'
        return value


def guess(n: int) -> str:
    return f"{n:032x}"


def request_bytes(
    user: str, src: str, *, branch: str, call_id: str, cseq: int, creds: Creds | None
) -> bytes:
    auth = f"Authorization: {creds.header()}\r\n" if creds else ""
    return (
        "REGISTER sip:pbx.example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {_host(src)}:5060;branch=z9hG4bK{branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@pbx.example.com>;tag=f{call_id}\r\n"
        f"To: <sip:{user}@pbx.example.com>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:{user}@{_host(src)}:5060>\r\n"
        f"{auth}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def response_bytes(
    status: int,
    user: str,
    src: str,
    *,
    branch: str,
    call_id: str,
    cseq: int,
    nonce: str | None,
    stale: bool,
) -> bytes:
    reason = {200: "OK", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}[status]
    challenge = ""
    if nonce is not None:
        challenge = f'WWW-Authenticate: Digest realm="pbx", nonce="{nonce}", algorithm=MD5'
        challenge += ", stale=true\r\n" if stale else "\r\n"
    return (
        f"SIP/2.0 {status} {reason}\r\n"
        f"Via: SIP/2.0/UDP {_host(src)}:5060;branch=z9hG4bK{branch}\r\n"
        f"From: <sip:{user}@pbx.example.com>;tag=f{call_id}\r\n"
        f"To: <sip:{user}@pbx.example.com>;tag=pbx\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"{challenge}"
        "Server: test-pbx\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def observation(raw: bytes, *, ts: float, src: str, dst: str, direction: Direction) -> Observation:
    return Observation(ts, src, 5060, dst, 5060, "udp", direction, raw, parse_message(raw), None)


class Lab:
    """An engine with the cracking detector, and a PBX that issues fresh nonces."""

    def __init__(self, *detectors: Detector, cracking: CrackingDetector | None = None) -> None:
        self.detector = cracking if cracking is not None else CrackingDetector()
        self.engine = Engine([self.detector, *detectors])
        self.events: list[SecurityEvent] = []

    def register(
        self,
        src: str,
        user: str,
        answer: int,
        *,
        ts: float,
        creds: Creds | None = None,
        stale: bool = False,
        outbound: bool = False,
        branch: str | None = None,
        cseq: int | None = None,
        answered: bool = True,
    ) -> str | None:
        """One REGISTER and its answer; returns the nonce a 401 issued (``n<k>``)."""
        n = next(_counter)
        branch = branch or f"b{n}"
        call_id, cseq = f"call-{src}-{user}", cseq or n
        nonce = f"n{n}" if answer == 401 else None
        out, back = (
            (Direction.OUTBOUND, Direction.INBOUND) if outbound else (Direction.UNKNOWN,) * 2
        )
        raw = request_bytes(user, src, branch=branch, call_id=call_id, cseq=cseq, creds=creds)
        self._inspect(observation(raw, ts=ts, src=src, dst=PBX, direction=out))
        if answered:
            raw = response_bytes(
                answer, user, src, branch=branch, call_id=call_id, cseq=cseq, nonce=nonce,
                stale=stale,
            )  # fmt: skip
            self._inspect(observation(raw, ts=ts + 0.0005, src=PBX, dst=src, direction=back))
        return nonce

    def _inspect(self, obs: Observation) -> None:
        self.events += self.engine.inspect(obs).events

    def crack(
        self, src: str, user: str, *, failures: int, succeed: bool, start: float = T0,
        step: float = 0.006, first_guess: int = 0,
    ) -> None:  # fmt: skip
        """svcrack's way: a challenge, then one guess per fresh nonce."""
        nonce = self.register(src, user, 401, ts=start)
        assert nonce is not None
        for i in range(failures):
            creds = Creds(user, nonce, guess(first_guess + i))
            nonce = self.register(src, user, 401, ts=start + (i + 1) * step, creds=creds)
            assert nonce is not None
        if succeed:
            creds = Creds(user, nonce, "f" * 32)
            self.register(src, user, 200, ts=start + (failures + 1) * step, creds=creds)

    def rules(self) -> list[str]:
        return [event.rule for event in self.events]


# -- failures per source -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "expected"), [(9, []), (10, [RULE_FAILURES]), (25, [RULE_FAILURES])]
)
def test_failures_per_source_fire_once_at_the_threshold(failures: int, expected: list[str]) -> None:
    lab = Lab()
    lab.crack("203.0.113.5", "100", failures=failures, succeed=False)
    assert lab.rules() == expected
    if expected:
        (event,) = lab.events
        assert event.kind is EventKind.CRACKING
        assert event.severity is Severity.HIGH
        assert event.source == "203.0.113.5"
        assert event.account == "100"
        assert event.evidence.counts == {"failures": 10, "accounts": 1}
        assert event.evidence.threshold == 10
        assert event.evidence.window == 60
        assert len(event.evidence.messages) == 8
        assert "203.0.113.5:5060 REGISTER user='100' -> 401" in event.evidence.messages[-1]


def test_failures_on_several_accounts_name_no_single_account() -> None:
    lab = Lab()
    for i in range(10):
        nonce = lab.register("203.0.113.6", str(200 + i), 401, ts=T0 + i)
        assert nonce is not None
        lab.register(
            "203.0.113.6",
            str(200 + i),
            403,
            ts=T0 + i + 0.1,
            creds=Creds(str(200 + i), nonce, guess(i)),
        )
    (event,) = lab.events
    assert event.rule == RULE_FAILURES
    assert event.account is None
    assert event.detail["accounts"] == {str(200 + i): 1 for i in range(10)}


def test_realert_after_the_quiet_period_with_updated_counts() -> None:
    lab = Lab()
    lab.crack("203.0.113.7", "100", failures=30, succeed=False)
    assert lab.rules() == [RULE_FAILURES]
    # 200 s later, still within realert_after (300 s): silence.
    lab.crack("203.0.113.7", "100", failures=30, succeed=False, start=T0 + 200)
    assert lab.rules() == [RULE_FAILURES]
    # Past it: one more event, counting the failures in the window now.
    lab.crack("203.0.113.7", "100", failures=12, succeed=False, start=T0 + 320)
    assert lab.rules() == [RULE_FAILURES, RULE_FAILURES]
    assert lab.events[-1].evidence.counts["failures"] == 10


def test_failures_outside_the_window_do_not_add_up() -> None:
    lab = Lab()
    # A phone with a wrong password retrying every 20 s for an hour: three a minute.
    nonce = lab.register("198.51.100.20", "300", 401, ts=T0)
    for i in range(180):
        assert nonce is not None
        nonce = lab.register(
            "198.51.100.20", "300", 401, ts=T0 + 20 * (i + 1), creds=Creds("300", nonce, guess(1))
        )
    assert lab.rules() == []


def test_stale_nonce_answers_are_not_failures() -> None:
    lab = Lab()
    nonce = lab.register("198.51.100.21", "300", 401, ts=T0)
    for i in range(15):
        assert nonce is not None
        # RFC 7616 3.3: stale=true means the password was right, the nonce old.
        nonce = lab.register(
            "198.51.100.21", "300", 401, ts=T0 + i, creds=Creds("300", nonce, guess(7)), stale=True
        )
    assert lab.rules() == []


def test_a_retransmitted_answer_is_one_failure() -> None:
    lab = Lab()
    nonce = lab.register("203.0.113.8", "100", 401, ts=T0)
    for i in range(8):
        assert nonce is not None
        nonce = lab.register(
            "203.0.113.8", "100", 401, ts=T0 + 0.01 * (i + 1), creds=Creds("100", nonce, guess(i))
        )
    assert nonce is not None
    # The 9th guess is lost on the way back, resent (same branch and CSeq) and
    # answered again: one attempt, still nine failures.
    again = Creds("100", nonce, guess(99))
    for resend in range(3):
        lab.register(
            "203.0.113.8",
            "100",
            401,
            ts=T0 + 0.5 * (resend + 1),
            creds=again,
            branch="again",
            cseq=9999,
        )
    assert lab.rules() == []
    lab.register("203.0.113.8", "100", 401, ts=T0 + 2, creds=Creds("100", "n1", guess(100)))
    assert lab.rules() == [RULE_FAILURES]  # the tenth


def test_our_own_outbound_registration_failing_at_a_provider_is_not_cracking() -> None:
    lab = Lab()
    for i in range(30):
        lab.register(
            PBX, "trunk", 401, ts=T0 + i, creds=Creds("trunk", f"p{i}", guess(i)), outbound=True
        )
    assert lab.rules() == []


# -- success after failures ---------------------------------------------------------------


def test_one_mistyped_password_then_success_raises_nothing() -> None:
    lab = Lab(EnumerationDetector())
    nonce = lab.register("198.51.100.30", "100", 401, ts=T0)  # REGISTER -> 401
    assert nonce is not None
    nonce = lab.register(
        "198.51.100.30", "100", 401, ts=T0 + 3, creds=Creds("100", nonce, guess(1))
    )
    assert nonce is not None  # a typo -> 401 again
    lab.register("198.51.100.30", "100", 200, ts=T0 + 9, creds=Creds("100", nonce, guess(2)))
    assert lab.events == []


@pytest.mark.parametrize(("failures", "expected"), [(4, []), (5, [RULE_SUCCEEDED])])
def test_success_after_repeated_failures_is_critical(failures: int, expected: list[str]) -> None:
    lab = Lab()
    lab.crack("203.0.113.40", "101", failures=failures, succeed=True, step=2.0)
    assert lab.rules() == expected
    if expected:
        (event,) = lab.events
        assert event.severity is Severity.CRITICAL
        assert event.kind is EventKind.CRACKING
        assert event.account == "101"
        assert event.detail["account"] == "101"
        assert event.detail["failures_before_success"] == 5
        assert "200 OK" in event.evidence.messages[-1]


def test_failures_forgotten_after_failure_memory_do_not_make_a_success_suspect() -> None:
    lab = Lab()
    lab.crack("203.0.113.41", "101", failures=6, succeed=False, step=2.0)
    nonce = lab.register("203.0.113.41", "101", 401, ts=T0 + 3700)
    assert nonce is not None
    lab.register("203.0.113.41", "101", 200, ts=T0 + 3701, creds=Creds("101", nonce, "f" * 32))
    assert lab.rules() == []


def test_success_on_another_account_is_not_the_cracked_one() -> None:
    lab = Lab()
    lab.crack("203.0.113.42", "101", failures=6, succeed=False, step=2.0)
    nonce = lab.register("203.0.113.42", "102", 401, ts=T0 + 20)
    assert nonce is not None
    lab.register("203.0.113.42", "102", 200, ts=T0 + 21, creds=Creds("102", nonce, "f" * 32))
    assert lab.rules() == []


# -- distributed cracking -----------------------------------------------------------------


def test_distributed_cracking_from_20_sources_against_one_account() -> None:
    lab = Lab()
    for i in range(20):
        # Each bot: one challenge, two guesses, far below the per-source limit.
        lab.crack(
            f"198.18.{i}.1", "200", failures=2, succeed=False, start=T0 + 10 * i, first_guess=10 * i
        )
    assert lab.rules() == [RULE_DISTRIBUTED]
    (event,) = lab.events
    assert event.account == "200"
    assert event.source == "198.18.4.1"  # the fifth source crossed the threshold
    assert event.evidence.counts == {"distinct_sources": 5}
    assert event.detail["sources"] == [f"198.18.{i}.1" for i in range(5)]
    # Still going 10 minutes later: one more event, all 20 in the window.
    lab.crack("198.18.99.1", "200", failures=1, succeed=False, start=T0 + 700)
    assert lab.rules() == [RULE_DISTRIBUTED, RULE_DISTRIBUTED]
    assert lab.events[-1].evidence.counts["distinct_sources"] == 21


def test_a_users_own_devices_failing_after_a_password_change_are_not_a_botnet() -> None:
    lab = Lab()
    for i, src in enumerate(["198.51.100.50", "203.0.113.50", "2001:db8:50::1", "2001:db8:50::2"]):
        lab.crack(src, "300", failures=3, succeed=False, start=T0 + 60 * i, step=20)
    assert lab.rules() == []  # three /64s and addresses: 3 sources, below 5


# -- nonces --------------------------------------------------------------------------------


def test_one_challenge_answered_with_many_passwords_is_nonce_reuse() -> None:
    lab = Lab()
    nonce = lab.register("203.0.113.60", "100", 401, ts=T0)
    assert nonce is not None
    for i in range(5):
        # The same nonce, URI and method every time: only the password changes.
        lab.register(
            "203.0.113.60", "100", 401, ts=T0 + 0.01 * (i + 1), creds=Creds("100", nonce, guess(i))
        )
    assert lab.rules() == [RULE_NONCE_REUSE]
    (event,) = lab.events
    assert event.account == "100"
    assert event.detail == {"nonce": nonce, "responses": 3}
    assert event.evidence.counts == {"responses": 3}
    assert "REGISTER sip:pbx.example.com" in event.evidence.messages[0]


def test_legitimate_nonce_reuse_with_qop_counting_up_is_fine() -> None:
    lab = Lab()
    nonce = lab.register("198.51.100.61", "100", 401, ts=T0)
    assert nonce is not None
    for i in range(30):
        # A phone re-using its nonce for thirty requests, nc counting up: each
        # response differs because nc does.
        creds = Creds("100", nonce, guess(i), qop="auth", nc=f"{i + 1:08x}", cnonce="c0ffee")
        lab.register("198.51.100.61", "100", 200, ts=T0 + i, creds=creds)
    assert lab.rules() == []


def test_failures_with_nonces_never_issued_to_the_source() -> None:
    lab = Lab()
    for i in range(3):
        # Nonces harvested elsewhere: this source was never challenged.
        lab.register(
            "203.0.113.62", "100", 401, ts=T0 + i, creds=Creds("100", f"stolen{i}", guess(i))
        )
    assert lab.rules() == [RULE_NONCE_NOT_ISSUED]
    (event,) = lab.events
    assert event.evidence.counts == {"failures": 3}
    assert event.detail["nonce"] == "stolen2"


def test_a_nonce_issued_before_the_sensor_started_is_forgiven_once() -> None:
    lab = Lab()
    # A phone re-registers with a nonce from before we listened: 401, then fine.
    nonce = lab.register("198.51.100.63", "100", 401, ts=T0, creds=Creds("100", "old", guess(1)))
    assert nonce is not None
    lab.register("198.51.100.63", "100", 200, ts=T0 + 0.1, creds=Creds("100", nonce, guess(2)))
    assert lab.rules() == []


# -- unanswered challenges -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("challenges", "expected"), [(9, []), (10, [RULE_UNANSWERED]), (40, [RULE_UNANSWERED])]
)
def test_challenges_never_answered(challenges: int, expected: list[str]) -> None:
    # A sweep against a PBX that challenges every user alike (alwaysauthreject).
    lab = Lab(EnumerationDetector())
    for i in range(challenges):
        lab.register("203.0.113.70", str(100 + i), 401, ts=T0 + 0.005 * i)
    assert lab.rules() == expected
    if expected:
        (event,) = lab.events
        assert event.evidence.counts == {"challenges": 10}
        assert event.account is None


def test_an_office_of_phones_behind_one_nat_answers_its_challenges() -> None:
    lab = Lab()
    for i in range(30):
        nonce = lab.register("198.51.100.80", str(100 + i), 401, ts=T0 + 0.01 * i)
        assert nonce is not None
        lab.register(
            "198.51.100.80",
            str(100 + i),
            200,
            ts=T0 + 0.01 * i + 0.002,
            creds=Creds(str(100 + i), nonce, guess(i)),
        )
    assert lab.rules() == []


# -- IPv6 ----------------------------------------------------------------------------------


def test_ipv6_sources_rotating_inside_one_64_are_counted_together() -> None:
    lab = Lab()
    nonce = lab.register("2001:db8:7::1", "100", 401, ts=T0)
    for i in range(10):
        assert nonce is not None
        src = f"2001:db8:7::{i + 2:x}"
        # Each guess from a fresh address of the same /64, with the nonce the
        # previous address was given: the /64 is one source.
        nonce = lab.register(
            src, "100", 401, ts=T0 + 0.01 * (i + 1), creds=Creds("100", nonce, guess(i))
        )
    assert lab.rules() == [RULE_FAILURES]
    (event,) = lab.events
    assert event.source == "2001:db8:7::b"
    assert event.detail["prefix"] == "2001:db8:7::/64"
    addresses = event.detail["addresses"]
    assert isinstance(addresses, list)
    assert len(addresses) == 8  # the most recent eight of ten: a bounded sample


# -- bounds ----------------------------------------------------------------------------------


def _record(src: str, account: str, *, credentials: bool) -> RequestRecord:
    return RequestRecord(
        ts=T0, src=src, sport=5060, transport="udp", method="REGISTER", account=account,
        target=account, has_credentials=credentials, credentials_nonce="x" if credentials else None,
    )  # fmt: skip


def test_state_is_bounded_under_a_flood_of_distinct_sources() -> None:
    detector = CrackingDetector(CrackingSettings(max_sources=1000, max_accounts=1000))
    raw = response_bytes(
        401, "1", "10.0.0.1", branch="x", call_id="c", cseq=1, nonce="n", stale=False
    )
    answer = observation(raw, ts=T0, src=PBX, dst="10.0.0.1", direction=Direction.UNKNOWN)

    def flood(first: int, count: int) -> None:
        for n in range(first, first + count):
            src = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
            # Half challenges to fresh sources, half failures on fresh accounts.
            record = _record(src, f"user{n}", credentials=bool(n & 1))
            detector.observe(answer._replace(ts=T0 + n * 1e-4), Findings(record))

    tracemalloc.start()
    try:
        flood(0, 5_000)
        at_5k = tracemalloc.get_traced_memory()[0]
        flood(5_000, 45_000)
        at_50k = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(detector) == 1000
    assert detector.accounts_tracked == 1000
    assert at_50k < at_5k * 1.2  # ten times the sources, the same memory
    assert at_50k < 4_000_000


def test_expire_forgets_idle_sources_and_accounts() -> None:
    lab = Lab()
    lab.crack("203.0.113.90", "100", failures=3, succeed=False)
    assert len(lab.detector) == 1
    assert lab.detector.accounts_tracked == 1
    lab.engine.expire(T0 + 4000)
    assert len(lab.detector) == 0
    assert lab.detector.accounts_tracked == 0


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="failures_threshold: must be at least 1"):
        CrackingSettings(failures_threshold=0)
    with pytest.raises(ConfigError, match="nonce_window: must be a number of seconds > 0"):
        CrackingSettings(nonce_window=0)


# -- the shared captures of real tools ---------------------------------------------------


def replay(name: str) -> list[SecurityEvent]:
    path: Path = shared_path("testdata", "captures", name)
    engine = Engine([CrackingDetector()])
    return [event for obs in observations_from_pcap(path) for event in engine.inspect(obs).events]


def test_svcrack_capture_is_cracking_of_account_100_that_succeeded() -> None:
    events = replay("svcrack.pcap")
    assert [event.rule for event in events] == [RULE_FAILURES, RULE_SUCCEEDED]
    assert all(event.account == "100" and event.source == "127.0.0.1" for event in events)
    failures, succeeded = events
    assert failures.evidence.counts["failures"] == 10
    assert succeeded.severity is Severity.CRITICAL
    # svcrack tried the user name first, then 100..122 wrong, then 123: 24 failures.
    assert succeeded.detail["failures_before_success"] == 24
    assert succeeded.detail["account"] == "100"


@pytest.mark.parametrize("name", ["svwar.pcap", "svmap.pcap", "sipp-invite-flood.pcap"])
def test_other_captures_raise_no_cracking(name: str) -> None:
    assert replay(name) == []


# -- robustness ------------------------------------------------------------------------------

_users = st.sampled_from(["100", "101", "", "9" * 80])
_sources = st.sampled_from(["192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2"])
_answers = st.sampled_from([100, 200, 401, 403, 404, 407, 486, 503])
_auth = st.one_of(
    st.none(),
    st.builds(
        lambda n, r: (
            f'Digest username="100", realm="pbx", nonce="n{n}", uri="sip:x", response="{r}"'
        ),
        st.integers(0, 3),
        st.sampled_from(["a", "b", "c"]),
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
)
_challenge = st.one_of(
    st.none(),
    st.builds(
        lambda n, stale: f'Digest realm="pbx", nonce="n{n}"' + (", stale=true" if stale else ""),
        st.integers(0, 3),
        st.booleans(),
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
)


def _raw_request(src: str, user: str, branch: str, auth: str | None) -> bytes:
    header = f"Authorization: {auth}\r\n" if auth is not None else ""
    return (
        f"REGISTER sip:pbx SIP/2.0\r\nVia: SIP/2.0/UDP {_host(src)};branch=z9hG4bK{branch}\r\n"
        f"From: <sip:{user}@pbx>;tag=1\r\nTo: <sip:{user}@pbx>\r\nCall-ID: {branch}\r\n"
        f"CSeq: 1 REGISTER\r\n{header}Content-Length: 0\r\n\r\n"
    ).encode()


def _raw_answer(src: str, user: str, branch: str, status: int, challenge: str | None) -> bytes:
    header = f"WWW-Authenticate: {challenge}\r\n" if challenge is not None else ""
    return (
        f"SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP {_host(src)};branch=z9hG4bK{branch}\r\n"
        f"From: <sip:{user}@pbx>;tag=1\r\nTo: <sip:{user}@pbx>;tag=2\r\nCall-ID: {branch}\r\n"
        f"CSeq: 1 REGISTER\r\n{header}Content-Length: 0\r\n\r\n"
    ).encode()


def _obs(raw: bytes, ts: float, src: str, direction: Direction) -> Observation:
    try:
        message = parse_message(raw, strict=False)
    except RemoteProtocolError as error:
        return Observation(ts, src, 5060, PBX, 5060, "udp", direction, raw, None, error)
    return Observation(ts, src, 5060, PBX, 5060, "udp", direction, raw, message, None)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.lists(
        st.tuples(
            _sources, _users, _answers, _auth, _challenge, st.floats(0, 500),
            st.sampled_from(list(Direction)), st.integers(0, 5),
        ),
        max_size=40,
    )
)  # fmt: skip
def test_arbitrary_sequences_never_raise(
    steps: list[tuple[str, str, int, str | None, str | None, float, Direction, int]],
) -> None:
    detector = CrackingDetector(
        CrackingSettings(
            failures_threshold=2, distributed_sources=2, nonce_reuse_threshold=2,
            nonce_not_issued_threshold=1, unanswered_threshold=2, success_min_failures=1,
            max_sources=2, max_accounts=2, max_sources_per_account=1,
            max_accounts_per_source=1, max_nonces_per_source=1,
        )
    )  # fmt: skip
    engine = Engine([detector, EnumerationDetector()])
    for src, user, status, auth, challenge, ts, direction, branch in steps:
        engine.inspect(_obs(_raw_request(src, user, str(branch), auth), T0 + ts, src, direction))
        answer = _raw_answer(src, user, str(branch), status, challenge)
        engine.inspect(_obs(answer, T0 + ts, PBX, direction))
    engine.expire(T0 + 100_000)
    assert len(detector) == 0
