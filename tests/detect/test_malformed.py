"""Tests for sipwarden.detect.malformed.

Annotated inputs, expected events: every RFC 4475 torture message with the
class (and the RFC rule) it must be reported under, or nothing; crafted
Max-Forwards, header and framing cases; the shared captures; bursts,
re-alerting, bounds; and arbitrary bytes, which must never make the detector
raise.
"""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwarden.detect.malformed import (
    CLASSES,
    MalformedDetector,
    MalformedSettings,
    classify_rule,
)
from sipwarden.detect.out_of_state import OutOfStateDetector
from sipwarden.engine.contract import (
    Action,
    BanDecision,
    Direction,
    EventKind,
    Observation,
    SecurityEvent,
    Severity,
)
from sipwarden.engine.engine import Engine, Findings
from sipwarden.errors import ConfigError, RemoteProtocolError
from sipwarden.monitor.sources import observations_from_pcap
from sipwarden.sip.parser import parse_message
from support import shared_path

SRC = "203.0.113.5"
PBX = "192.0.2.20"
T0 = 1_700_000_000.0


def observation(
    data: bytes, ts: float = T0, *, src: str = SRC, strict: bool = False
) -> Observation:
    """What the monitor's sources build (lenient) or the strict gateway would."""
    try:
        message = parse_message(data, strict=strict)
        if not strict:
            message.collect_defects()
    except RemoteProtocolError as error:
        return Observation(ts, src, 5060, PBX, 5060, "udp", Direction.UNKNOWN, data, None, error)
    return Observation(ts, src, 5060, PBX, 5060, "udp", Direction.UNKNOWN, data, message, None)


def inspect(
    data: bytes,
    detector: MalformedDetector | None = None,
    *,
    ts: float = T0,
    src: str = SRC,
    strict: bool = False,
) -> Findings:
    findings = Findings(None)
    (detector or MalformedDetector()).observe(
        observation(data, ts, src=src, strict=strict), findings
    )
    return findings


def request(
    method: str = "OPTIONS",
    *,
    max_forwards: str | None = "70",
    to_tag: str | None = None,
    extra: tuple[str, ...] = (),
    drop: tuple[str, ...] = (),
    call_id: str = "m1@203.0.113.5",
) -> bytes:
    lines = [
        f"{method} sip:100@{PBX} SIP/2.0",
        "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK-m1",
        *([f"Max-Forwards: {max_forwards}"] if max_forwards is not None else []),
        "From: <sip:probe@203.0.113.5>;tag=p1",
        "To: <sip:100@192.0.2.20>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: 1 {method}",
        *extra,
        "Content-Length: 0",
    ]
    kept = [line for line in lines if line.split(":", 1)[0] not in drop]
    return ("\r\n".join(kept) + "\r\n\r\n").encode()


def rules_of(event: SecurityEvent) -> tuple[str, ...]:
    rules = event.detail["rules"]
    assert isinstance(rules, tuple)
    return rules


# -- RFC 4475, every message annotated ---------------------------------------------------

# 3.1.2 invalid messages: {file: (classes, a broken RFC rule that must be named)}.
INVALID = {
    "badinv01": ({"grammar"}, "RFC 3261 25.1 via-params"),
    "clerr": ({"framing"}, "RFC 3261 18.3 Content-Length"),  # Content-Length > body
    "ncl": ({"framing"}, "RFC 3261 20.14 Content-Length"),  # negative Content-Length
    "scalar02": ({"grammar", "max_forwards"}, "RFC 3261 20.22 Max-Forwards"),  # MF 300
    "scalarlg": ({"grammar"}, "RFC 3261 8.1.1.5 CSeq"),
    "quotbal": ({"grammar"}, "RFC 3261 25.1 quoted-string"),
    "ltgtruri": ({"grammar"}, "RFC 3261 25.1 absoluteURI scheme (RFC 2396 3.1)"),
    "lwsruri": ({"grammar"}, "RFC 3261 25.1 Request-Line"),
    "lwsstart": ({"grammar"}, "RFC 3261 25.1 Request-Line"),
    "trws": ({"grammar"}, "RFC 3261 25.1 Request-Line"),
    "escruri": ({"grammar"}, "RFC 3261 19.1.1 Request-URI headers"),
    "baddate": ({"grammar"}, "RFC 3261 20.17 Date"),
    "regbadct": ({"grammar"}, "RFC 3261 20.10 addr-spec containing ',', '?' or ';' needs <>"),
    "badaspec": ({"grammar"}, "RFC 3261 25.1 absoluteURI scheme (RFC 2396 3.1)"),
    "baddn": ({"grammar"}, "RFC 3261 25.1 display-name"),
    "badvers": ({"version"}, "RFC 3261 8.1.1.8 SIP-Version 2.0"),  # SIP/7.0: 505
    "mismatch01": ({"grammar"}, "RFC 3261 8.1.1.5 CSeq method"),
    "mismatch02": ({"grammar"}, "RFC 3261 8.1.1.5 CSeq method"),
    "bigcode": ({"unparsable"}, "RFC 3261 25.1 Status-Code"),  # no message can be built
}
# 3.1.1 valid messages: nothing at all (intmeth carries Max-Forwards 255 and
# esc01 87: legal, so not flagged by default).
VALID = [
    "wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq", "semiuri",
    "transports", "mpart01", "unreason", "noreason",
]  # fmt: skip
APPLICATION_LAYER = [
    "unkscm", "novelsc", "unksm2", "bext01", "invut", "regaut01", "bcast", "cparam01", "cparam02",
    "regescrt", "sdp01",
]  # fmt: skip
# 3.2-3.4: what this detector makes of them (the README asks other rooms for the rest).
OTHERS = {
    "badbranch": set(),  # a transaction-layer oddity, well formed
    "insuf": {"headers"},  # no Call-ID, From, To (RFC 3261 8.1.1): 400
    "multi01": {"headers"},  # To, From, CSeq, Call-ID, Max-Forwards twice (7.3.1): 400
    "mcl01": {"headers"},  # two Content-Length fields: 400
    "zeromf": {"max_forwards"},  # OPTIONS with Max-Forwards 0 outside a dialog: 483
    "inv2543": set(),  # RFC 2543 request without Max-Forwards: fine
    # Application-layer matters (416, 420, a broadcast, ...), but well formed.
    **{name: set[str]() for name in APPLICATION_LAYER},
}


def test_every_rfc4475_message_is_annotated() -> None:
    files = {path.stem for path in shared_path("testdata", "rfc4475").glob("*.dat")}
    assert files == set(INVALID) | set(VALID) | set(OTHERS)
    assert len(files) == 49


def rfc4475(name: str) -> bytes:
    return shared_path("testdata", "rfc4475", f"{name}.dat").read_bytes()


@pytest.mark.parametrize("name", sorted(INVALID))
def test_rfc4475_invalid_messages_are_reported(name: str) -> None:
    classes, rule = INVALID[name]
    findings = inspect(rfc4475(name))
    assert {event.rule for event in findings.events} == {f"malformed.{cls}" for cls in classes}
    for event in findings.events:
        assert event.kind is EventKind.MALFORMED
        assert event.severity is Severity.LOW  # a single one: real phones send odd things
        assert event.source == SRC
        assert len(event.detail["problems"]) == len(event.detail["offsets"])  # type: ignore[arg-type]
    assert rule in {r for event in findings.events for r in rules_of(event)}
    # The gateway answers a request (505 for the version, else 400) and drops a response.
    if name in ("scalarlg", "bigcode"):
        assert findings.verdict.action is Action.DROP
    else:
        assert findings.verdict.action is Action.REJECT
        assert findings.verdict.status == (505 if name == "badvers" else 400)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_rfc4475_invalid_messages_are_reported_by_a_strict_gateway_too(name: str) -> None:
    # Strict parsing stops at the first broken rule (an unparsable observation)
    # or leaves the grammar to the full check: either way an event and the
    # same answer.
    findings = inspect(rfc4475(name), strict=True)
    assert findings.events
    assert all(event.rule.startswith("malformed.") for event in findings.events)
    if name in ("scalarlg", "bigcode"):
        assert findings.verdict.action is Action.DROP
    else:
        assert findings.verdict.action is Action.REJECT
        assert findings.verdict.status == (505 if name == "badvers" else 400)


def test_rfc4475_offsets_are_reported() -> None:
    # clerr: Content-Length 9999 is found at the start of the body (byte 344).
    (event,) = inspect(rfc4475("clerr")).events
    assert event.detail["offsets"] == (344,)
    problems = event.detail["problems"]
    assert isinstance(problems, tuple)
    assert problems[0]["status"] == 400


@pytest.mark.parametrize("name", VALID)
@pytest.mark.parametrize("strict", [False, True])
def test_rfc4475_valid_messages_raise_nothing(name: str, strict: bool) -> None:
    findings = inspect(rfc4475(name), strict=strict)
    assert findings.events == []
    assert findings.verdict.allowed


@pytest.mark.parametrize("name", sorted(OTHERS))
def test_rfc4475_other_sections(name: str) -> None:
    findings = inspect(rfc4475(name))
    assert {event.rule for event in findings.events} == {f"malformed.{c}" for c in OTHERS[name]}
    if name == "zeromf":
        assert (findings.verdict.action, findings.verdict.status) == (Action.REJECT, 483)


# -- unparsable bytes ----------------------------------------------------------------------


def test_unparsable_request_is_answered_with_the_status_hint() -> None:
    # Too large for any datagram: the parser's bound, 513 Message Too Large (RFC 3261 21.5).
    huge = request(extra=(f"X-Pad: {'a' * 70_000}",))
    findings = inspect(huge)
    (event,) = findings.events
    assert event.rule == "malformed.too_large"
    assert rules_of(event) == ("max_message_size",)
    assert event.detail["message"] == "request"
    assert (findings.verdict.action, findings.verdict.status) == (Action.REJECT, 513)


def test_request_without_end_of_headers_is_a_framing_problem() -> None:
    findings = inspect(request()[:-4], strict=True)
    (event,) = findings.events
    assert event.rule == "malformed.framing"
    assert (findings.verdict.action, findings.verdict.status) == (Action.REJECT, 400)


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(32), id="tls-hello"),
        pytest.param(b"\xff\xfe\xfd garbage\r\n\r\n", id="binary"),
        pytest.param(b"hello\r\n\r\n", id="one-word"),
    ],
)
def test_bytes_that_are_not_sip_are_dropped(garbage: bytes) -> None:
    findings = inspect(garbage)
    (event,) = findings.events
    assert event.rule == "malformed.unparsable"
    assert event.detail["message"] == "not_sip"
    assert findings.verdict.action is Action.DROP  # never answer: the source may be spoofed


def test_unparsable_response_is_dropped() -> None:
    findings = inspect(b"SIP/2.0 999 Nine\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK-1\r\n\r\n")
    (event,) = findings.events
    assert event.rule == "malformed.unparsable"
    assert event.detail["message"] == "response"
    assert findings.verdict.action is Action.DROP


def stun_binding_request() -> bytes:
    # RFC 5389 6: type 0x0001, length 0, magic cookie, 96-bit transaction ID.
    return struct.pack("!HHI", 0x0001, 0, 0x2112A442) + bytes(range(12))


@pytest.mark.parametrize(
    "keepalive",
    [
        pytest.param(stun_binding_request(), id="stun-rfc5626"),
        pytest.param(b"\x00\x00\x00\x00", id="nul"),
        pytest.param(b"\x00", id="one-nul"),
    ],
)
def test_keepalives_are_not_malformed(keepalive: bytes) -> None:
    findings = inspect(keepalive)
    assert findings.events == []
    assert findings.verdict.allowed


# -- Max-Forwards --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_forwards", "to_tag", "method", "flagged", "status"),
    [
        ("0", None, "OPTIONS", True, 483),  # a probe: RFC 3261 16.3 step 3 answers 483
        ("0", None, "INVITE", True, 483),
        ("1", None, "INVITE", True, None),  # a loop or a probe, but legal: reported only
        ("1", None, "REGISTER", True, None),
        ("2", None, "INVITE", False, None),
        ("70", None, "INVITE", False, None),
        ("255", None, "INVITE", False, None),  # legal (RFC 4475 intmeth), not flagged
        ("0", "b1", "BYE", False, None),  # in a dialog: not an out-of-dialog probe
        ("1", "b1", "ACK", False, None),
        (None, None, "INVITE", False, None),  # absent: RFC 2543 peers; a proxy adds it
    ],
)
def test_max_forwards(
    max_forwards: str | None, to_tag: str | None, method: str, flagged: bool, status: int | None
) -> None:
    findings = inspect(request(method, max_forwards=max_forwards, to_tag=to_tag))
    if not flagged:
        assert findings.events == []
        assert findings.verdict.allowed
        return
    (event,) = findings.events
    assert event.rule == "malformed.max_forwards"
    assert event.severity is Severity.LOW
    data = request(method, max_forwards=max_forwards, to_tag=to_tag)
    assert event.detail["offsets"] == (data.index(b"Max-Forwards"),)
    if status is None:
        assert findings.verdict.allowed
    else:
        assert (findings.verdict.action, findings.verdict.status) == (Action.REJECT, status)


def test_max_forwards_ceiling_can_be_set_to_the_rfc_recommendation() -> None:
    detector = MalformedDetector(MalformedSettings(max_forwards_ceiling=70))
    assert inspect(request(max_forwards="70"), detector).events == []
    findings = inspect(request(max_forwards="71"), detector)
    (event,) = findings.events
    assert event.rule == "malformed.max_forwards"
    assert rules_of(event) == ("RFC 3261 8.1.1.6 Max-Forwards SHOULD be 70",)
    assert findings.verdict.allowed  # legal: reported, not refused


def test_max_forwards_out_of_range_is_a_grammar_break_of_its_own_class() -> None:
    (event,) = inspect(request(max_forwards="4294967296")).events
    assert event.rule == "malformed.max_forwards"
    assert rules_of(event) == ("RFC 3261 20.22 Max-Forwards",)


def test_max_forwards_floor_off() -> None:
    detector = MalformedDetector(MalformedSettings(max_forwards_floor=-1))
    assert inspect(request(max_forwards="0"), detector).events == []


# -- header structure ----------------------------------------------------------------------


def test_missing_mandatory_headers() -> None:
    findings = inspect(request(drop=("Call-ID", "From")))
    (event,) = findings.events
    assert event.rule == "malformed.headers"
    problems = event.detail["problems"]
    assert isinstance(problems, tuple)
    assert sorted(problem["reason"] for problem in problems) == [
        "no call-id header field",
        "no from header field",
    ]
    assert (findings.verdict.action, findings.verdict.status) == (Action.REJECT, 400)


def test_repeated_single_instance_header() -> None:
    (event,) = inspect(request(extra=("To: <sip:other@example.com>",))).events
    assert event.rule == "malformed.headers"
    assert rules_of(event) == ("RFC 3261 7.3.1 single-instance header fields",)


def test_repeated_list_headers_are_legal_but_hide_no_repeated_single_instance_one() -> None:
    hops = ("Via: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK-m0", "Route: <sip:a.example;lr>")
    assert inspect(request(extra=(*hops, hops[1]))).events == []
    (event,) = inspect(request(extra=(*hops, "CSeq: 2 OPTIONS"))).events
    problems = event.detail["problems"]
    assert isinstance(problems, tuple)
    assert [problem["reason"] for problem in problems] == ["2 cseq header fields"]


def test_header_checks_can_be_turned_off() -> None:
    detector = MalformedDetector(MalformedSettings(check_headers=False))
    assert inspect(request(drop=("Call-ID",)), detector).events == []


def test_malformed_response_is_dropped_not_answered() -> None:
    data = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK-1\r\nFrom: <sip:a@h>;tag=1\r\n"
        b"To: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: x INVITE\r\n\r\n"
    )
    findings = inspect(data)
    assert [event.rule for event in findings.events] == ["malformed.grammar"]
    assert findings.verdict.action is Action.DROP


# -- classification ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "cls"),
    [
        ("max_message_size", "too_large"),
        ("max_header_count", "too_large"),
        ("sipwarden limit: at most 32 auth-params per header", "too_large"),
        ("RFC 3261 20.22 Max-Forwards", "max_forwards"),
        ("RFC 3261 8.1.1.8 SIP-Version 2.0", "version"),
        ("RFC 3261 25.1 SIP-Version", "version"),
        ("RFC 3261 18.3 Content-Length", "framing"),
        ("RFC 3261 7 CRLF line ends", "framing"),
        ("RFC 3261 7.3.1 folding", "framing"),
        ("RFC 2617 3.2.2 cnonce and nc MUST be sent with qop and MUST NOT without", "credentials"),
        ("RFC 7616 3.4 username, realm, nonce, uri and response are required", "credentials"),
        ("RFC 3261 25.1 SIP-URI host", "grammar"),
        ("RFC 4566 5 session description", "grammar"),
    ],
)
def test_classify_rule(rule: str, cls: str) -> None:
    assert classify_rule(rule) == cls
    assert cls in CLASSES


# -- bursts, re-alerting, per-source counting -------------------------------------------------


def test_single_low_then_burst_medium_then_high_then_realert() -> None:
    detector = MalformedDetector()
    events: list[SecurityEvent] = []
    now = T0
    data = rfc4475("baddate")

    def send(count: int, step: float) -> None:
        nonlocal now
        for _ in range(count):
            now += step
            events.extend(inspect(data, detector, ts=now).events)

    send(1, 0.1)
    assert [event.severity for event in events] == [Severity.LOW]
    send(8, 0.1)
    assert len(events) == 1  # suppressed below the burst threshold
    send(1, 0.1)
    medium = events[-1]
    assert medium.severity is Severity.MEDIUM  # the 10th within the window
    assert medium.evidence.counts == {"in_window": 10, "total": 10}
    send(89, 0.1)
    assert len(events) == 2
    send(1, 0.1)
    high = events[-1]
    assert high.severity is Severity.HIGH
    assert high.evidence.counts["total"] == 100
    send(200, 1.0)  # it goes on, slower, for 200 s: nothing new within realert_after
    assert len(events) == 3
    send(150, 1.0)  # past realert_after: one re-alert with updated counts
    assert len(events) == 4
    again = events[-1]
    assert again.severity is Severity.MEDIUM  # 60 in the last minute
    assert again.time - high.time >= 300.0
    total = again.evidence.counts["total"]
    assert total > 300
    assert again.detail["rules_seen"] == {"RFC 3261 20.17 Date": total}
    assert len(again.evidence.messages) == 8


def test_classes_are_counted_separately() -> None:
    detector = MalformedDetector()
    first = inspect(rfc4475("baddate"), detector)
    second = inspect(rfc4475("badvers"), detector, ts=T0 + 1)
    third = inspect(rfc4475("quotbal"), detector, ts=T0 + 2)
    assert [e.rule for e in first.events] == ["malformed.grammar"]
    assert [e.rule for e in second.events] == ["malformed.version"]
    assert third.events == []  # grammar again, within realert_after
    assert detector.tracked_sources == 2


def test_sources_are_counted_separately_and_ipv6_per_64_too() -> None:
    detector = MalformedDetector()
    events: list[SecurityEvent] = []
    for number in range(12):
        findings = inspect(
            rfc4475("baddate"), detector, ts=T0 + number, src=f"2001:db8::{number + 1}"
        )
        events.extend(findings.events)
    by_source: dict[str, list[Severity]] = {}
    for event in events:
        by_source.setdefault(event.source, []).append(event.severity)
    assert by_source["2001:db8::1"] == [Severity.LOW]  # each address once, LOW...
    # ...and their /64 as a whole: LOW on the first, MEDIUM on the tenth.
    assert by_source["2001:db8::/64"] == [Severity.LOW, Severity.MEDIUM]


def test_enforce_off_reports_without_verdicts() -> None:
    detector = MalformedDetector(MalformedSettings(enforce=False))
    findings = inspect(rfc4475("badvers"), detector)
    assert len(findings.events) == 1
    assert findings.verdict.allowed


def test_full_check_off_reads_only_the_recorded_defects() -> None:
    detector = MalformedDetector(MalformedSettings(full_check=False))
    data = rfc4475("baddate")  # the Date grammar is only checked by the full parse
    message = parse_message(data, strict=False)
    obs = Observation(T0, SRC, 5060, PBX, 5060, "udp", Direction.UNKNOWN, data, message, None)
    findings = Findings(None)
    detector.observe(obs, findings)
    assert findings.events == []
    assert detector.tracked_sources == 0


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"burst_threshold": 0}, "burst_threshold"),
        ({"burst_threshold": 10, "high_threshold": 9}, "high_threshold"),
        ({"window": 0.0}, "window"),
        ({"realert_after": -1.0}, "realert_after"),
        ({"max_sources": 0}, "max_sources"),
        ({"max_forwards_floor": -2}, "max_forwards_floor"),
        ({"max_forwards_ceiling": 256}, "max_forwards_ceiling"),
        ({"max_forwards_floor": 5, "max_forwards_ceiling": 5}, "max_forwards_ceiling"),
    ],
)
def test_settings_are_validated(kwargs: dict[str, float], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        MalformedSettings(**kwargs)  # type: ignore[arg-type]
    assert info.value.key_path == key


# -- through the engine: captures and bans -------------------------------------------------------


@pytest.mark.parametrize("name", ["svmap", "svwar", "sipp-invite-flood"])
def test_clean_captures_raise_nothing(name: str) -> None:
    engine = Engine([MalformedDetector(), OutOfStateDetector()])
    results = [
        engine.inspect(obs)
        for obs in observations_from_pcap(shared_path("testdata", "captures", f"{name}.pcap"))
    ]
    assert results
    assert [event for result in results for event in result.events] == []
    assert all(result.verdict.allowed for result in results)


def test_svcrack_sends_digest_credentials_that_break_rfc_2617() -> None:
    # Not well formed after all: each of svcrack's 25 REGISTERs with
    # credentials carries qop=auth without cnonce and nc (RFC 2617 3.2.2, RFC
    # 7616 3.4). One LOW event for the first, MEDIUM at the tenth (within
    # 0.15 s); the strict gateway would have answered every one 400.
    engine = Engine([MalformedDetector(), OutOfStateDetector()])
    results = [
        engine.inspect(obs)
        for obs in observations_from_pcap(shared_path("testdata", "captures", "svcrack.pcap"))
    ]
    events = [event for result in results for event in result.events]
    assert [(e.rule, e.severity) for e in events] == [
        ("malformed.credentials", Severity.LOW),
        ("malformed.credentials", Severity.MEDIUM),
    ]
    assert events[0].source == "127.0.0.1"
    assert rules_of(events[0]) == (
        "RFC 2617 3.2.2 cnonce and nc MUST be sent with qop and MUST NOT without",
    )
    assert "friendly-scanner" in events[1].evidence.messages[0]
    rejected = [result.verdict for result in results if not result.verdict.allowed]
    assert len(rejected) == 25
    assert {(v.action, v.status, v.rule) for v in rejected} == {
        (Action.REJECT, 400, "malformed.credentials")
    }
    assert all(not result.bans for result in results)  # MEDIUM earns no ban


def test_a_fuzzing_burst_earns_a_short_ban_through_the_engine() -> None:
    engine = Engine([MalformedDetector()])
    bans: list[BanDecision] = []
    for number in range(100):
        result = engine.inspect(observation(b"\xde\xad" + bytes([number]) * 30, T0 + number * 0.01))
        bans.extend(result.bans)
    (ban,) = bans
    assert ban.source == SRC
    assert ban.rule == "malformed.unparsable"
    assert not ban.returnable  # UDP, never answered a challenge: possibly spoofed
    assert ban.duration == 60.0


# -- bounds ------------------------------------------------------------------------------------


def test_fifty_thousand_spoofed_sources_cost_bounded_memory() -> None:
    bound = 1000
    detector = MalformedDetector(MalformedSettings(max_sources=bound))
    data = rfc4475("badvers")
    message = parse_message(data, strict=False)
    message.collect_defects()

    def flood(first: int, last: int) -> None:
        for number in range(first, last):
            src = f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}"
            obs = Observation(
                T0 + number * 0.001, src, 5060, PBX, 5060, "udp", Direction.UNKNOWN,
                data, message, None,
            )  # fmt: skip
            detector.observe(obs, Findings(None))

    tracemalloc.start()
    try:
        flood(0, 5_000)
        at_5k, _ = tracemalloc.get_traced_memory()
        flood(5_000, 50_000)
        at_50k, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert detector.tracked_sources == bound
    assert at_5k < bound * 2048  # ~1 KiB per tally, as documented
    assert at_50k - at_5k < 64 * 1024, (at_5k, at_50k)


def test_expire_forgets_quiet_sources() -> None:
    detector = MalformedDetector()
    inspect(rfc4475("baddate"), detector)
    assert detector.tracked_sources == 1
    detector.expire(T0 + 301.0)
    assert detector.tracked_sources == 0


# -- robustness ----------------------------------------------------------------------------------

_SIPISH = st.builds(
    lambda start, headers, body: (
        (start + "\r\n" + "\r\n".join(headers) + "\r\n\r\n").encode("utf-8", "surrogateescape")
        + body
    ),
    st.sampled_from(
        ["INVITE sip:a@b SIP/2.0", "SIP/2.0 200 OK", "ACK sip:a SIP/2.0", "BYE x SIP/3.0"]
    ),
    st.lists(
        st.sampled_from(
            [
                "Via: SIP/2.0/UDP h;branch=z9hG4bK-1",
                "Via: garbage",
                "Max-Forwards: 0",
                "Max-Forwards: 999",
                "Max-Forwards: -1",
                "To: <sip:b@h>;tag=1",
                "To: <sip:b@h",
                "From: x;tag=",
                "Call-ID: c",
                "CSeq: 1 INVITE",
                "CSeq: nope",
                "Content-Length: 5",
                "Content-Length: -1",
                'Authorization: Digest username="a",qop=auth',
                "Date: yesterday",
            ]
        ),
        max_size=12,
    ),
    st.binary(max_size=20),
)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.binary(max_size=400), _SIPISH), st.booleans())
def test_arbitrary_bytes_never_raise(data: bytes, strict: bool) -> None:
    obs = observation(data, strict=strict)
    for detector in (MalformedDetector(), OutOfStateDetector()):
        findings = Findings(None)
        detector.observe(obs, findings)
        for event in findings.events:
            assert event.kind is EventKind.MALFORMED
            assert event.rule.removeprefix("malformed.") in CLASSES
        verdict = findings.verdict
        if verdict.action is Action.REJECT:
            assert verdict.status is not None
            assert 400 <= verdict.status <= 599
