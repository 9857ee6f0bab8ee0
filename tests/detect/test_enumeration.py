"""Extension enumeration: annotated request/answer sequences in, the expected events out.

Every scenario sends real SIP bytes through ``parse_message`` and the engine
(which pairs answers with their requests), as a tap would see them: the
prober's request, then the PBX's answer.
"""

from __future__ import annotations

import itertools
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipwarden.detect.enumeration import (
    RULE_DISTINCT_TARGETS,
    EnumerationDetector,
    EnumerationSettings,
)
from sipwarden.engine.contract import Direction, EventKind, Observation, SecurityEvent, Severity
from sipwarden.engine.correlation import RequestRecord
from sipwarden.engine.engine import Engine, Findings
from sipwarden.errors import ConfigError, RemoteProtocolError
from sipwarden.monitor.sources import observations_from_pcap
from sipwarden.sip.parser import parse_message
from support import shared_path

PBX = "192.0.2.10"
T0 = 1_800_000_000.0
_counter = itertools.count()


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def request_bytes(method: str, user: str, src: str, *, branch: str, call_id: str) -> bytes:
    # REGISTER names the extension in To (svwar's way); other methods in the Request-URI.
    uri = "sip:pbx.example.com" if method == "REGISTER" else f"sip:{user}@pbx.example.com"
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {_host(src)}:5060;branch=z9hG4bK{branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@pbx.example.com>;tag=f{branch}\r\n"
        f"To: <sip:{user}@pbx.example.com>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\n"
        "User-Agent: test-prober\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def response_bytes(
    status: int, method: str, user: str, src: str, *, branch: str, call_id: str
) -> bytes:
    reason = {200: "OK", 401: "Unauthorized", 404: "Not Found"}.get(status, "Whatever")
    challenge = (
        f'WWW-Authenticate: Digest realm="pbx", nonce="n{branch}", algorithm=MD5\r\n'
        if status == 401
        else ""
    )
    return (
        f"SIP/2.0 {status} {reason}\r\n"
        f"Via: SIP/2.0/UDP {_host(src)}:5060;branch=z9hG4bK{branch}\r\n"
        f"From: <sip:{user}@pbx.example.com>;tag=f{branch}\r\n"
        f"To: <sip:{user}@pbx.example.com>;tag=pbx{branch}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"{challenge}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def observation(
    raw: bytes, *, ts: float, src: str, dst: str, direction: Direction = Direction.UNKNOWN
) -> Observation:
    sport = 5060
    return Observation(ts, src, sport, dst, 5060, "udp", direction, raw, parse_message(raw), None)


class Lab:
    """An engine with the detector under test, fed request/answer pairs."""

    def __init__(self, detector: EnumerationDetector | None = None) -> None:
        self.detector = detector if detector is not None else EnumerationDetector()
        self.engine = Engine([self.detector])

    def probe(
        self,
        src: str,
        user: str,
        status: int,
        *,
        ts: float,
        method: str = "REGISTER",
        outbound: bool = False,
    ) -> list[SecurityEvent]:
        """``src`` asks about ``user``; the PBX answers ``status``. The events of both."""
        n = next(_counter)
        branch, call_id = f"b{n}", f"call-{n}"
        out, back = (
            (Direction.OUTBOUND, Direction.INBOUND) if outbound else (Direction.UNKNOWN,) * 2
        )
        events = list(
            self.engine.inspect(
                observation(
                    request_bytes(method, user, src, branch=branch, call_id=call_id),
                    ts=ts,
                    src=src,
                    dst=PBX,
                    direction=out,
                )
            ).events
        )
        events += self.engine.inspect(
            observation(
                response_bytes(status, method, user, src, branch=branch, call_id=call_id),
                ts=ts + 0.0005,
                src=PBX,
                dst=src,
                direction=back,
            )
        ).events
        return events

    def sweep(
        self, src: str, answers: list[tuple[str, int]], *, start: float = T0, step: float = 0.005
    ) -> list[SecurityEvent]:
        events: list[SecurityEvent] = []
        for index, (user, status) in enumerate(answers):
            events += self.probe(src, user, status, ts=start + index * step)
        return events


def unknown_users(count: int, first: int = 1000) -> list[tuple[str, int]]:
    return [(str(first + i), 404) for i in range(count)]


# -- thresholds -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probes", "expected"),
    [
        (7, 0),  # one below the threshold: a PBX calling a few numbers
        (8, 1),  # exactly at the threshold: the event
        (12, 1),  # above it: still one event (re-alert suppression)
    ],
)
def test_distinct_unknown_extensions_fire_at_the_threshold(probes: int, expected: int) -> None:
    lab = Lab()
    events = lab.sweep("203.0.113.5", unknown_users(probes))
    assert len(events) == expected
    if expected:
        (event,) = events
        assert event.rule == RULE_DISTINCT_TARGETS
        assert event.kind is EventKind.ENUMERATION
        assert event.severity is Severity.HIGH
        assert event.source == "203.0.113.5"
        assert event.account is None
        assert event.evidence.counts["distinct_targets"] == 8
        assert event.evidence.threshold == 8
        assert event.detail["revealed"] == []
        # Every user answered alike: no oracle (yet).
        assert event.detail["pbx_leaks_existence"] is False


def test_the_event_lists_the_revealed_extensions_and_the_oracle() -> None:
    # A sweep where 100 and 101 are challenged and 102 is busy: all three exist.
    answers = [("99", 404), ("100", 401), ("101", 401), ("102", 486)]
    answers += unknown_users(4)
    lab = Lab()
    (event,) = lab.sweep("203.0.113.5", answers)
    assert event.detail["revealed"] == ["100", "101", "102"]
    assert event.detail["pbx_leaks_existence"] is True
    assert event.detail["unknown_answer"] == 404
    assert event.detail["answers"] == {"404": 5, "401": 2, "486": 1}
    assert event.evidence.counts == {"distinct_targets": 8, "unknown": 5, "revealed": 3}
    # Evidence: the revealing answers first, each with the prober's address.
    assert "'100' -> 401" in event.evidence.messages[0]
    assert all("203.0.113.5:5060" in line for line in event.evidence.messages)
    assert "100, 101, 102" in event.summary


@pytest.mark.parametrize(
    ("unknown", "expected"),
    [
        (0, 0),  # eight phones behind one NAT register: every extension exists
        (3, 0),  # 3 of 8 unknown: below half
        (4, 1),  # 4 of 8: exactly the default share of one half
        (8, 1),
    ],
)
def test_the_share_answered_unknown_decides(unknown: int, expected: int) -> None:
    answers = [(str(200 + i), 401) for i in range(8 - unknown)] + unknown_users(unknown)
    assert len(Lab().sweep("198.51.100.7", answers)) == expected


def test_inconclusive_answers_and_repeats_do_not_count() -> None:
    lab = Lab()
    # Server trouble says nothing about the user; asking twice is one extension.
    answers = [(str(300 + i), 503) for i in range(10)]
    answers += [("1000", 404)] * 5 + unknown_users(6, first=1001)
    assert lab.sweep("198.51.100.7", answers) == []  # 7 distinct unknown
    assert len(lab.probe("198.51.100.7", "1007", 404, ts=T0 + 1)) == 1  # the 8th


def test_probes_older_than_the_window_are_forgotten() -> None:
    lab = Lab()
    assert lab.sweep("198.51.100.7", unknown_users(7)) == []
    # 61 s later the first seven have left the 60 s window.
    assert lab.sweep("198.51.100.7", unknown_users(7, first=2000), start=T0 + 61) == []
    assert len(lab.probe("198.51.100.7", "2007", 404, ts=T0 + 62)) == 1


def test_invite_and_options_targets_are_the_request_uri_user() -> None:
    lab = Lab()
    events: list[SecurityEvent] = []
    for i in range(8):
        method = "INVITE" if i % 2 else "OPTIONS"
        events += lab.probe("198.51.100.8", str(5000 + i), 404, ts=T0 + i * 0.01, method=method)
    (event,) = events
    assert event.detail["methods"] == ["INVITE", "OPTIONS"]


def test_in_dialog_methods_and_our_own_outbound_requests_are_not_probes() -> None:
    lab = Lab()
    events: list[SecurityEvent] = []
    for i in range(10):
        events += lab.probe("198.51.100.9", str(6000 + i), 404, ts=T0 + i, method="BYE")
        # The PBX itself calling out through a trunk that answers 404.
        events += lab.probe(PBX, str(7000 + i), 404, ts=T0 + i, method="INVITE", outbound=True)
    assert events == []


# -- re-alert suppression -------------------------------------------------------------


def test_one_event_per_realert_period_with_updated_counts() -> None:
    lab = Lab()
    first = lab.sweep("203.0.113.9", unknown_users(8))
    assert len(first) == 1
    # The sweep goes on, one extension every 5 s for 300 s: no further event.
    later: list[SecurityEvent] = []
    for i in range(60):
        later += lab.probe("203.0.113.9", str(3000 + i), 404, ts=T0 + 5 * (i + 1))
    assert later == []
    # Past realert_after (300 s after the first event) the next answer re-alerts,
    # counting what is in the 60 s window now: 3048..3059 (t=245..300) and 3999.
    (again,) = lab.probe("203.0.113.9", "3999", 404, ts=T0 + 301)
    assert again.evidence.counts["distinct_targets"] == 13
    assert again.time == pytest.approx(T0 + 301.0005)


def test_sources_are_counted_apart() -> None:
    lab = Lab()
    events: list[SecurityEvent] = []
    for i in range(7):
        events += lab.sweep(f"203.0.113.{i + 1}", unknown_users(7, first=1000 + 10 * i))
    assert events == []


# -- IPv6 --------------------------------------------------------------------------------


def test_ipv6_sources_rotating_inside_one_64_are_counted_together() -> None:
    lab = Lab()
    events: list[SecurityEvent] = []
    for i in range(8):
        events += lab.probe(f"2001:db8:5:7::{i + 1:x}", str(1000 + i), 404, ts=T0 + i * 0.01)
    (event,) = events
    assert event.source == "2001:db8:5:7::8"  # the transport address, never a prefix
    assert event.detail["prefix"] == "2001:db8:5:7::/64"
    assert event.detail["addresses"] == [f"2001:db8:5:7::{i + 1:x}" for i in range(8)]


def test_ipv6_sources_in_different_64s_are_apart() -> None:
    lab = Lab()
    events: list[SecurityEvent] = []
    for i in range(8):
        events += lab.probe(f"2001:db8:5:{i}::1", str(1000 + i), 404, ts=T0 + i * 0.01)
    assert events == []


# -- bounds ------------------------------------------------------------------------------


def test_extensions_past_the_per_source_limit_are_still_counted() -> None:
    lab = Lab(EnumerationDetector(EnumerationSettings(threshold=100, max_targets_per_source=16)))
    events = lab.sweep("203.0.113.77", unknown_users(120), step=0.001)
    (event,) = events
    assert event.evidence.counts["distinct_targets"] == 100
    assert event.detail["answers"] == {"404": 16}  # only 16 kept in detail


def test_revealed_extensions_are_kept_past_the_per_source_limit() -> None:
    lab = Lab(EnumerationDetector(EnumerationSettings(threshold=21, max_targets_per_source=4)))
    # Twenty unknown extensions fill the four places; the one that exists comes last.
    events = lab.sweep("203.0.113.78", [*unknown_users(20), ("100", 401)], step=0.001)
    (event,) = events
    assert event.detail["revealed"] == ["100"]
    assert event.detail["pbx_leaks_existence"] is True
    assert event.evidence.counts == {"distinct_targets": 21, "unknown": 20, "revealed": 1}


def _record(src: str, target: str) -> RequestRecord:
    return RequestRecord(
        ts=T0,
        src=src,
        sport=5060,
        transport="udp",
        method="REGISTER",
        account=target,
        target=target,
        has_credentials=False,
        credentials_nonce=None,
    )


def test_state_is_bounded_under_a_flood_of_distinct_sources() -> None:
    detector = EnumerationDetector(EnumerationSettings(max_sources=1000))
    raw = response_bytes(404, "REGISTER", "1", "10.0.0.1", branch="x", call_id="c")
    answer = observation(raw, ts=T0, src=PBX, dst="10.0.0.1")

    def flood(first: int, count: int) -> None:
        for n in range(first, first + count):
            src = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
            obs = answer._replace(ts=T0 + n * 1e-4, dst=src)
            detector.observe(obs, Findings(_record(src, str(n % 97))))

    tracemalloc.start()
    try:
        flood(0, 5_000)
        at_5k = tracemalloc.get_traced_memory()[0]
        flood(5_000, 45_000)
        at_50k = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(detector) == 1000
    # Ten times the sources, the same memory: the table is full at 1000 entries.
    assert at_50k < at_5k * 1.2
    assert at_50k < 2_000_000  # ~1 KB per tracked source


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="min_unknown_share: must be from 0 to 1"):
        EnumerationSettings(min_unknown_share=1.5)
    with pytest.raises(ConfigError, match="threshold: must be at least 1"):
        EnumerationSettings(threshold=0)


# -- the shared captures of real tools --------------------------------------------------


def replay(name: str) -> list[SecurityEvent]:
    path: Path = shared_path("testdata", "captures", name)
    engine = Engine([EnumerationDetector()])
    return [event for obs in observations_from_pcap(path) for event in engine.inspect(obs).events]


def test_svwar_capture_is_one_enumeration_revealing_100_and_101() -> None:
    (event,) = replay("svwar.pcap")
    assert event.rule == RULE_DISTINCT_TARGETS
    assert event.source == "127.0.0.1"
    assert event.detail["revealed"] == ["100", "101"]
    assert event.detail["pbx_leaks_existence"] is True
    assert event.detail["unknown_answer"] == 404
    # Fired at svwar's eighth answer (101's challenge): 6 unknown, 2 revealed.
    assert event.evidence.counts == {"distinct_targets": 8, "unknown": 6, "revealed": 2}


@pytest.mark.parametrize("name", ["svmap.pcap", "svcrack.pcap", "sipp-invite-flood.pcap"])
def test_other_captures_raise_no_enumeration(name: str) -> None:
    assert replay(name) == []


# -- robustness ----------------------------------------------------------------------------

_users = st.sampled_from(["100", "101", "200", "x", "", "9" * 80, "a b", "%00"])
_sources = st.sampled_from(["192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2", "fe80::1"])
_statuses = st.sampled_from([100, 180, 200, 202, 401, 403, 404, 407, 408, 484, 486, 503, 604, 699])
_methods = st.sampled_from(["REGISTER", "INVITE", "OPTIONS", "BYE", "ACK", "FOO"])


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.lists(
        st.tuples(_sources, _users, _statuses, _methods, st.floats(0, 400), st.booleans()),
        max_size=40,
    ),
    st.integers(1, 4),
)
def test_arbitrary_sequences_never_raise(
    steps: list[tuple[str, str, int, str, float, bool]], threshold: int
) -> None:
    lab = Lab(
        EnumerationDetector(
            EnumerationSettings(threshold=threshold, max_sources=2, max_targets_per_source=2)
        )
    )
    for src, user, status, method, delta, answered in steps:
        n = next(_counter)
        raw_request = request_bytes(method, user, src, branch=f"h{n}", call_id=f"h{n}")
        raw_answer = response_bytes(status, method, user, src, branch=f"h{n}", call_id=f"h{n}")
        for raw, origin, ts in ((raw_request, src, T0 + delta), (raw_answer, PBX, T0 + delta)):
            if raw is raw_answer and not answered:
                continue
            try:
                message = parse_message(raw, strict=False)
            except RemoteProtocolError as error:
                obs = Observation(
                    ts, origin, 5060, PBX, 5060, "udp", Direction.UNKNOWN, raw, None, error
                )
            else:
                obs = Observation(
                    ts, origin, 5060, PBX, 5060, "udp", Direction.UNKNOWN, raw, message, None
                )
            for event in lab.engine.inspect(obs).events:
                assert event.rule == RULE_DISTINCT_TARGETS
    lab.engine.expire(T0 + 10_000)
    assert len(lab.detector) == 0
