"""CanaryDetector: any request naming a honeypot extension is proof of an attacker."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipwarden.detect.canary import RULE_CANARY, CanaryDetector, CanarySettings
from sipwarden.engine.contract import (
    Action,
    Direction,
    EventKind,
    Inspection,
    Observation,
    SecurityEvent,
    Severity,
)
from sipwarden.engine.engine import Engine, Findings
from sipwarden.errors import ConfigError, RemoteProtocolError
from sipwarden.monitor.sources import observations_from_pcap
from sipwarden.sip.parser import parse_message
from support import shared_path

T0 = 1_800_000_000.0
ATTACKER = "203.0.113.66"
CANARIES = CanarySettings(extensions=frozenset({"7999", "admin"}))


def observe(
    data: bytes, *, ts: float = T0, src: str = ATTACKER, direction: Direction = Direction.UNKNOWN
) -> Observation:
    try:
        message = parse_message(data, strict=False)
    except RemoteProtocolError as error:
        return Observation(ts, src, 5070, "198.51.100.1", 5060, "udp", direction, data, None, error)
    return Observation(ts, src, 5070, "198.51.100.1", 5060, "udp", direction, data, message, None)


def request(
    method: str = "INVITE",
    *,
    uri: str = "sip:200@pbx.example",
    to: str = "sip:200@pbx.example",
    from_: str = "sip:201@pbx.example",
    username: str | None = None,
    ts: float = T0,
    src: str = ATTACKER,
    direction: Direction = Direction.UNKNOWN,
) -> Observation:
    auth = (
        f'Authorization: Digest username="{username}", realm="pbx", nonce="n", '
        f'uri="{uri}", response="0123"\r\n'
        if username is not None
        else ""
    )
    data = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {src}:5070;branch=z9hG4bK-1\r\n"
        f"From: <{from_}>;tag=a\r\n"
        f"To: <{to}>\r\n"
        "Call-ID: canary-test\r\n"
        f"CSeq: 1 {method}\r\n"
        f"{auth}"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    return observe(data, ts=ts, src=src, direction=direction)


def events_of(results: list[Inspection]) -> list[SecurityEvent]:
    return [event for result in results for event in result.events]


# -- each field -----------------------------------------------------------------------------

FIELD_CASES = {
    # A call to the canary: Request-URI and To.
    "request_uri": (
        request(uri="sip:7999@pbx.example", to="sip:7999@pbx.example"),
        ["request_uri", "to"],
    ),
    # A REGISTER for it: its address of record is the To user (the URI has no user).
    "register_to": (request("REGISTER", uri="sip:pbx.example", to="sip:7999@pbx.example"), ["to"]),
    # A call placed as the canary.
    "from": (request(from_="sip:7999@pbx.example"), ["from"]),
    # A password guess for it, whatever the headers say.
    "credentials": (request("REGISTER", uri="sip:pbx.example", username="7999"), ["credentials"]),
    # Only the Request-URI (a proxy kept To as the caller wrote it).
    "request_uri_only": (request(uri="sip:7999@pbx.example"), ["request_uri"]),
    # A tel: URI names the number.
    "tel": (request(uri="tel:7999"), ["request_uri"]),
}


@pytest.mark.parametrize("case", sorted(FIELD_CASES))
def test_a_canary_in_any_field_is_reported_critical_and_dropped(case: str) -> None:
    obs, fields = FIELD_CASES[case]
    result = Engine([CanaryDetector(CANARIES)]).inspect(obs)
    assert [(e.kind, e.rule, e.source, e.account, e.severity) for e in result.events] == [
        (EventKind.CANARY, RULE_CANARY, ATTACKER, "7999", Severity.CRITICAL)
    ]
    event = result.events[0]
    assert event.detail["fields"] == fields
    assert event.detail["extension"] == "7999"
    assert event.source_port == 5070
    assert (result.verdict.action, result.verdict.rule) == (Action.DROP, RULE_CANARY)
    # CRITICAL: the engine bans the source.
    assert [ban.source for ban in result.bans] == [ATTACKER]


def test_ordinary_requests_are_untouched() -> None:
    result = Engine([CanaryDetector(CANARIES)]).inspect(request(username="200"))
    assert result.events == ()
    assert result.verdict.action is Action.ALLOW


@pytest.mark.parametrize(
    ("uri", "hit"),
    [
        ("sip:%37%39%39%39@pbx.example", True),  # escapes decoded
        ("sip:Admin@pbx.example", True),  # any case
        ("sip:ADMIN@pbx.example", True),
        ("sip:7999;isub=1@pbx.example", True),  # user parameters dropped
        ("sip:79990@pbx.example", False),  # a longer number is another number
        ("sip:799@pbx.example", False),
        ("sip:admin.x@pbx.example", False),
    ],
)
def test_spellings_of_a_canary(uri: str, hit: bool) -> None:
    result = Engine([CanaryDetector(CANARIES)]).inspect(request(uri=uri))
    assert bool(result.events) is hit


def test_case_can_be_made_significant() -> None:
    detector = CanaryDetector(CanarySettings(extensions=frozenset({"admin"}), ignore_case=False))
    engine = Engine([detector])
    assert engine.inspect(request(uri="sip:Admin@pbx.example")).events == ()
    assert len(engine.inspect(request(uri="sip:admin@pbx.example", ts=T0 + 1)).events) == 1


def test_two_canaries_in_one_request_are_two_events() -> None:
    obs = request(uri="sip:7999@pbx.example", from_="sip:admin@pbx.example")
    result = Engine([CanaryDetector(CANARIES)]).inspect(obs)
    assert sorted((e.account, tuple(e.detail["fields"])) for e in result.events) == [  # type: ignore[arg-type]
        ("7999", ("request_uri",)),
        ("admin", ("from",)),
    ]


# -- what is not an attempt -----------------------------------------------------------------


def test_responses_and_the_pbx_own_requests_are_ignored() -> None:
    engine = Engine([CanaryDetector(CANARIES)])
    answer = observe(
        b"SIP/2.0 404 Not Found\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK-1\r\n"
        b"From: <sip:7999@pbx.example>;tag=a\r\nTo: <sip:7999@pbx.example>;tag=b\r\n"
        b"Call-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    outbound = request(uri="sip:7999@pbx.example", direction=Direction.OUTBOUND)
    assert engine.inspect(answer).events == engine.inspect(outbound).events == ()


def test_without_configured_canaries_nothing_fires() -> None:
    engine = Engine([CanaryDetector()])
    assert engine.inspect(request(uri="sip:7999@pbx.example")).events == ()


# -- re-alert suppression ------------------------------------------------------------------


def test_one_event_per_source_and_canary_per_realert_after() -> None:
    engine = Engine([CanaryDetector(CANARIES)])  # realert_after = 60 s
    attempts = [
        engine.inspect(request(uri="sip:7999@pbx.example", ts=T0 + n * 5.0)) for n in range(30)
    ]
    events = events_of(attempts)
    assert [round(e.time - T0) for e in events] == [0, 60, 120]
    assert events[1].evidence.counts == {"attempts_since_last_event": 11}
    # The verdict is never suppressed.
    assert all(result.verdict.action is Action.DROP for result in attempts)
    # Another canary, or another source, is another event at once.
    other_canary = engine.inspect(request(uri="sip:admin@pbx.example", ts=T0 + 146))
    other_source = engine.inspect(request(uri="sip:7999@pbx.example", ts=T0 + 146, src="192.0.2.5"))
    assert len(other_canary.events) == len(other_source.events) == 1


# -- captures ---------------------------------------------------------------------------------

# With extension 100 as the canary (the one SIPVicious aims at), each tool is
# caught by the first request that names it; nothing in SIPp's flood names it.
CAPTURE_EXPECTATIONS = {
    "svmap.pcap": [("100", ["request_uri", "to", "from"])],  # OPTIONS sip:100@...
    "svwar.pcap": [("100", ["to", "from"])],  # the REGISTER for extension 100
    "svcrack.pcap": [("100", ["to", "from"])],  # its first REGISTER, before credentials
    "sipp-invite-flood.pcap": [],
}


@pytest.mark.parametrize("name", sorted(CAPTURE_EXPECTATIONS))
def test_captures_with_canary_100(name: str) -> None:
    engine = Engine([CanaryDetector(CanarySettings(extensions=frozenset({"100"})))])
    path = shared_path("testdata", "captures", name)
    events = [e for obs in observations_from_pcap(path) for e in engine.inspect(obs).events]
    assert [(e.account, e.detail["fields"]) for e in events] == CAPTURE_EXPECTATIONS[name]
    assert all(e.source == "127.0.0.1" for e in events)


@pytest.mark.parametrize("name", sorted(CAPTURE_EXPECTATIONS))
def test_captures_with_default_settings_produce_nothing(name: str) -> None:
    engine = Engine([CanaryDetector()])
    path = shared_path("testdata", "captures", name)
    assert [e for obs in observations_from_pcap(path) for e in engine.inspect(obs).events] == []


# -- bounds ---------------------------------------------------------------------------------


def test_remembered_pairs_are_bounded_and_expire() -> None:
    detector = CanaryDetector(CanarySettings(extensions=frozenset({"7999"}), max_tracked=1000))
    template = request(uri="sip:7999@pbx.example")
    for n in range(100_000):
        src = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        detector.observe(template._replace(src=src, ts=T0 + n * 1e-4), Findings(None))
    assert len(detector) == 1000
    detector.expire(T0 + 10 + 61)
    assert len(detector) == 0


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="extensions: a canary extension cannot be empty"):
        CanarySettings(extensions=frozenset({""}))
    with pytest.raises(ConfigError, match="realert_after: must be a number of seconds > 0"):
        CanarySettings(realert_after=0)


# -- arbitrary input ----------------------------------------------------------------------


@given(st.binary(max_size=300), st.sampled_from(["7999", "%37999", "admin", "x"]))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_bytes_never_raise(junk: bytes, user: str) -> None:
    detector = CanaryDetector(CANARIES)
    # Arbitrary bytes, and a valid request with arbitrary bytes spliced into it.
    valid = request(uri=f"sip:{user}@pbx.example").raw
    for data in (junk, valid[:40] + junk + valid[40:], valid.replace(b"7999", junk[:8])):
        detector.observe(observe(data), Findings(None))
