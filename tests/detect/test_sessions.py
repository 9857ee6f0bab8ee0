"""SessionLimitDetector: simultaneous calls per source and per account.

Annotated call flows in, the exact events and verdicts out.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipwarden.detect.sessions import (
    RULE_PER_ACCOUNT,
    RULE_PER_SOURCE,
    SessionLimitDetector,
    SessionSettings,
)
from sipwarden.engine.contract import (
    Action,
    Direction,
    EventKind,
    Inspection,
    Observation,
    SecurityEvent,
    Severity,
)
from sipwarden.engine.engine import Engine
from sipwarden.errors import ConfigError, RemoteProtocolError
from sipwarden.monitor.sources import observations_from_pcap
from sipwarden.sip.parser import parse_message
from support import shared_path

PBX = "198.51.100.1"
T0 = 1_800_000_000.0
PHONE = "192.0.2.10"


def observe(data: bytes, *, ts: float, src: str, direction: Direction) -> Observation:
    dst = PBX if src != PBX else PHONE
    try:
        message = parse_message(data, strict=False)
    except RemoteProtocolError as error:
        return Observation(ts, src, 5060, dst, 5060, "udp", direction, data, None, error)
    return Observation(ts, src, 5060, dst, 5060, "udp", direction, data, message, None)


class Call:
    """One call's messages: the caller at ``src`` as ``user``, the PBX answering."""

    def __init__(self, call_id: str, *, user: str = "alice", src: str = PHONE) -> None:
        self.call_id = call_id
        self.user = user
        self.src = src

    def _head(self, start: str, *, cseq: str, to_tag: bool, swap: bool = False) -> str:
        caller = f"<sip:{self.user}@pbx.example>;tag=caller-{self.call_id}"
        callee = "<sip:bob@pbx.example>" + (";tag=callee" if to_tag else "")
        from_, to = (callee, caller) if swap else (caller, callee)
        seq = cseq.partition(" ")[0]  # a CANCEL shares its INVITE's branch (RFC 3261 9.1)
        return (
            f"{start}\r\n"
            f"Via: SIP/2.0/UDP {self.src}:5060;branch=z9hG4bK-{self.call_id}-{seq}\r\n"
            f"From: {from_}\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {cseq}\r\n"
            "Content-Length: 0\r\n\r\n"
        )

    def invite(
        self, ts: float, *, reinvite: bool = False, credentials: str | None = None
    ) -> Observation:
        head = self._head("INVITE sip:bob@pbx.example SIP/2.0", cseq="1 INVITE", to_tag=reinvite)
        if credentials is not None:
            auth = (
                f'Proxy-Authorization: Digest username="{credentials}", realm="pbx", '
                'nonce="n", uri="sip:bob@pbx.example", response="00"\r\n'
            )
            head = head.replace("Content-Length", auth + "Content-Length")
        return observe(head.encode(), ts=ts, src=self.src, direction=Direction.INBOUND)

    def answer(self, status: int, ts: float) -> Observation:
        head = self._head(f"SIP/2.0 {status} Whatever", cseq="1 INVITE", to_tag=status > 100)
        return observe(head.encode(), ts=ts, src=PBX, direction=Direction.OUTBOUND)

    def bye(self, ts: float, *, from_callee: bool = False, tag: str | None = None) -> Observation:
        head = self._head(
            "BYE sip:x@pbx.example SIP/2.0", cseq="2 BYE", to_tag=True, swap=from_callee
        )
        if tag is not None:
            head = head.replace(f"tag=caller-{self.call_id}", f"tag={tag}")
        src = PBX if from_callee else self.src
        return observe(head.encode(), ts=ts, src=src, direction=Direction.INBOUND)

    def cancel(self, ts: float) -> Observation:
        head = self._head("CANCEL sip:bob@pbx.example SIP/2.0", cseq="1 CANCEL", to_tag=False)
        return observe(head.encode(), ts=ts, src=self.src, direction=Direction.INBOUND)


def events_of(results: list[Inspection]) -> list[SecurityEvent]:
    return [event for result in results for event in result.events]


def setup(settings_: SessionSettings | None = None) -> tuple[Engine, SessionLimitDetector]:
    detector = SessionLimitDetector(settings_)
    return Engine([detector]), detector


def connect(engine: Engine, calls: list[Call], ts: float) -> list[Inspection]:
    """Set up every call: INVITE, then 200 OK."""
    results: list[Inspection] = []
    for n, call in enumerate(calls):
        results.append(engine.inspect(call.invite(ts + n * 0.1)))
        results.append(engine.inspect(call.answer(200, ts + n * 0.1 + 0.05)))
    return results


# -- per account ---------------------------------------------------------------------------


def test_five_confirmed_calls_per_account_pass_the_sixth_is_rejected() -> None:
    engine, detector = setup()
    results = connect(engine, [Call(f"a{n}") for n in range(5)], T0)
    assert events_of(results) == []
    assert detector.active(account="alice") == 5

    sixth = engine.inspect(Call("a5").invite(T0 + 1.0))
    assert [(e.rule, e.source, e.account, e.severity) for e in sixth.events] == [
        (RULE_PER_ACCOUNT, PHONE, "alice", Severity.MEDIUM)
    ]
    event = sixth.events[0]
    assert event.kind is EventKind.SESSION_LIMIT
    assert event.evidence.counts == {"active_calls": 5}
    assert event.evidence.threshold == 5
    assert (sixth.verdict.action, sixth.verdict.status, sixth.verdict.rule) == (
        Action.REJECT,
        486,
        RULE_PER_ACCOUNT,
    )
    assert sixth.bans == ()  # MEDIUM: a limit, not proof of an attack
    assert detector.active(account="alice") == 5  # the rejected call is not counted


def test_the_account_is_the_credentials_username_when_there_is_one() -> None:
    engine, detector = setup()
    for n in range(5):
        engine.inspect(Call(f"c{n}", user="display").invite(T0 + n, credentials="carol"))
    assert detector.active(account="carol") == 5
    assert detector.active(account="display") == 0
    over = engine.inspect(Call("c5", user="other").invite(T0 + 6, credentials="carol"))
    assert [e.account for e in over.events] == ["carol"]


def test_anonymous_callers_share_no_account_limit() -> None:
    engine, _ = setup()
    results = connect(engine, [Call(f"n{n}", user="anonymous") for n in range(10)], T0)
    assert events_of(results) == []


# -- pending versus confirmed ----------------------------------------------------------------


def test_unanswered_invites_count_so_a_burst_cannot_slip_through() -> None:
    engine, _ = setup()
    results = [engine.inspect(Call(f"b{n}").invite(T0 + n * 0.001)) for n in range(8)]
    assert [e.rule for e in events_of(results)] == [RULE_PER_ACCOUNT]
    assert [r.verdict.action for r in results] == [Action.ALLOW] * 5 + [Action.REJECT] * 3


def test_count_pending_off_counts_confirmed_calls_only() -> None:
    engine, detector = setup(SessionSettings(count_pending=False))
    results = [engine.inspect(Call(f"b{n}").invite(T0 + n * 0.001)) for n in range(8)]
    assert events_of(results) == []
    assert detector.active(account="alice") == 0
    engine.inspect(Call("b0").answer(200, T0 + 1))
    assert detector.active(account="alice") == 1


def test_retransmitted_invites_and_reinvites_are_not_new_calls() -> None:
    engine, detector = setup()
    connect(engine, [Call(f"r{n}") for n in range(5)], T0)
    # The first call retransmits its INVITE and sends a re-INVITE (To tag):
    # neither is a sixth call.
    retransmission = engine.inspect(Call("r0").invite(T0 + 1))
    reinvite = engine.inspect(Call("r0").invite(T0 + 30, reinvite=True))
    assert retransmission.events == reinvite.events == ()
    assert retransmission.verdict.action is reinvite.verdict.action is Action.ALLOW
    # A failed re-INVITE does not end the call either (RFC 3261 14.1).
    engine.inspect(Call("r0").answer(491, T0 + 30.1))
    assert detector.active(account="alice") == 5


# -- calls ending ------------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["bye_from_caller", "bye_from_callee", "failure", "cancel"])
def test_an_ended_call_frees_its_slot(ending: str) -> None:
    engine, detector = setup()
    calls = [Call(f"e{n}") for n in range(5)]
    if ending in ("failure", "cancel"):
        for n, call in enumerate(calls):  # ringing, not answered
            engine.inspect(call.invite(T0 + n * 0.1))
    else:
        connect(engine, calls, T0)
    assert detector.active(account="alice") == 5
    first = calls[0]
    end = {
        "bye_from_caller": first.bye(T0 + 10),
        "bye_from_callee": first.bye(T0 + 10, from_callee=True),
        "failure": first.answer(486, T0 + 10),
        "cancel": first.cancel(T0 + 10),
    }[ending]
    engine.inspect(end)
    assert detector.active(account="alice") == 4
    sixth = engine.inspect(Call("e5").invite(T0 + 11))
    assert sixth.events == ()
    assert sixth.verdict.action is Action.ALLOW


def test_a_bye_without_the_caller_tag_frees_nothing() -> None:
    engine, detector = setup()
    connect(engine, [Call(f"f{n}") for n in range(5)], T0)
    engine.inspect(Call("f0").bye(T0 + 10, tag="forged"))
    assert detector.active(account="alice") == 5


def test_a_digest_challenge_ends_the_attempt_and_the_retry_counts_once() -> None:
    engine, detector = setup()
    call = Call("d0")
    engine.inspect(call.invite(T0))
    engine.inspect(call.answer(407, T0 + 0.01))
    assert detector.active(account="alice") == 0
    engine.inspect(call.invite(T0 + 0.02, credentials="alice"))
    engine.inspect(call.answer(200, T0 + 1))
    assert detector.active(account="alice") == 1


def test_calls_that_never_end_expire_after_max_call_duration() -> None:
    engine, detector = setup(SessionSettings(max_call_duration=600.0))
    connect(engine, [Call(f"x{n}") for n in range(5)], T0)
    assert engine.inspect(Call("x5").invite(T0 + 599)).verdict.action is Action.REJECT
    # The engine sweeps once a second of observation time: past the
    # duration, the five BYE-less calls stop counting.
    later = engine.inspect(Call("x6").invite(T0 + 602))
    assert later.verdict.action is Action.ALLOW
    assert detector.active(account="alice") == 1


def test_unanswered_invites_expire_after_pending_timeout() -> None:
    engine, detector = setup()  # 180 s
    for n in range(5):
        engine.inspect(Call(f"p{n}").invite(T0 + n * 0.1))
    assert engine.inspect(Call("p5").invite(T0 + 100)).verdict.action is Action.REJECT
    assert engine.inspect(Call("p6").invite(T0 + 181)).verdict.action is Action.ALLOW
    assert detector.active(account="alice") == 1


# -- per source ------------------------------------------------------------------------------


def test_twenty_calls_per_source_pass_the_21st_is_rejected() -> None:
    engine, detector = setup()
    # 20 different extensions behind one NAT address.
    results = connect(engine, [Call(f"s{n}", user=f"ext{n}") for n in range(20)], T0)
    assert events_of(results) == []
    over = engine.inspect(Call("s20", user="ext20").invite(T0 + 5))
    assert [(e.rule, e.source, e.account) for e in over.events] == [
        (RULE_PER_SOURCE, PHONE, "ext20")
    ]
    assert over.verdict.rule == RULE_PER_SOURCE
    assert detector.active(source=PHONE) == 20


def test_ipv6_sources_are_counted_per_64() -> None:
    engine, detector = setup(SessionSettings(per_source_limit=3))
    calls = [Call(f"v{n}", user=f"ext{n}", src=f"2001:db8:5:6::{n + 1:x}") for n in range(3)]
    connect(engine, calls, T0)
    assert detector.active(source="2001:db8:5:6::99") == 3
    over = engine.inspect(Call("v3", user="ext3", src="2001:db8:5:6::abc").invite(T0 + 5))
    assert [(e.rule, e.source) for e in over.events] == [(RULE_PER_SOURCE, "2001:db8:5:6::abc")]
    assert over.events[0].detail["prefix"] == "2001:db8:5:6::/64"
    # Another /64 is another office.
    other = engine.inspect(Call("v4", user="ext4", src="2001:db8:5:7::1").invite(T0 + 5))
    assert other.verdict.action is Action.ALLOW


# -- re-alert suppression -------------------------------------------------------------------


def test_one_event_per_realert_after_while_every_attempt_is_rejected() -> None:
    engine, _ = setup()  # realert_after = 300 s
    connect(engine, [Call(f"q{n}") for n in range(5)], T0)
    attempts = [engine.inspect(Call(f"q{5 + n}").invite(T0 + 10 + n * 10)) for n in range(40)]
    assert all(result.verdict.action is Action.REJECT for result in attempts)
    assert [round(e.time - T0) for e in events_of(attempts)] == [10, 310]


# -- monitor mode -----------------------------------------------------------------------------


def test_a_rejected_call_the_pbx_answered_anyway_is_counted_from_its_2xx() -> None:
    engine, detector = setup()
    connect(engine, [Call(f"m{n}") for n in range(5)], T0)
    sixth = Call("m5")
    assert engine.inspect(sixth.invite(T0 + 1)).verdict.action is Action.REJECT
    # A tap cannot reject: the PBX connected the call.
    engine.inspect(sixth.answer(200, T0 + 2))
    assert detector.active(account="alice") == 6
    engine.inspect(sixth.bye(T0 + 3))
    assert detector.active(account="alice") == 5


def test_the_pbx_own_outbound_calls_are_not_limited() -> None:
    engine, detector = setup(SessionSettings(per_source_limit=1))
    for n in range(3):
        raw = Call(f"o{n}", src=PBX).invite(T0 + n)
        outbound = raw._replace(direction=Direction.OUTBOUND)
        assert engine.inspect(outbound).verdict.action is Action.ALLOW
        # Its answer comes back inbound: not counted either.
        answer = Call(f"o{n}", src=PBX).answer(200, T0 + n + 0.5)
        engine.inspect(answer._replace(src="203.0.113.9", direction=Direction.INBOUND))
    assert detector.active(source=PBX) == 0


# -- captures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["sipp-invite-flood.pcap", "svmap.pcap", "svwar.pcap", "svcrack.pcap"]
)
def test_captures_have_no_session_limit_events(name: str) -> None:
    # SIPp's 87 INVITEs are each answered 404 within a millisecond: never more
    # than one call up at a time. The SIPVicious tools make no calls.
    engine, detector = setup()
    path = shared_path("testdata", "captures", name)
    assert [e for obs in observations_from_pcap(path) for e in engine.inspect(obs).events] == []
    assert len(detector) == 0


# -- bounds ---------------------------------------------------------------------------------


def test_a_spoofed_invite_flood_evicts_only_unanswered_calls() -> None:
    engine, detector = setup(SessionSettings(max_pending=100, max_calls=1000))
    connect(engine, [Call(f"k{n}", user=f"u{n}") for n in range(3)], T0)
    for n in range(20_000):
        octets = f"{n >> 8 & 255}.{n & 255}"
        engine.inspect(
            Call(f"spoof{n}", user=f"s{n}", src=f"10.9.{octets}").invite(T0 + 1 + n * 1e-4)
        )
    assert len(detector) == 3 + 100
    assert detector.active(source=PHONE) == 3  # the running calls are still counted
    assert detector.active() == 103  # counters match the tables exactly


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="per_source_limit: must be at least 1"):
        SessionSettings(per_source_limit=0)
    with pytest.raises(ConfigError, match="reject_status: must be a 4xx-6xx failure status"):
        SessionSettings(reject_status=200)


# -- arbitrary input ------------------------------------------------------------------------

actions = st.lists(
    st.tuples(
        st.sampled_from(["invite", "reinvite", "answer", "bye", "bye_callee", "cancel", "junk"]),
        st.integers(0, 6),  # call
        st.sampled_from(["alice", "bob", "anonymous"]),
        st.sampled_from([PHONE, "192.0.2.11", "2001:db8::1", "2001:db8::2"]),
        st.sampled_from([100, 180, 200, 407, 486, 503]),
        st.floats(min_value=-1.0, max_value=200.0, allow_nan=False),
        st.binary(max_size=48),
    ),
    max_size=60,
)


def build(action: str, call: Call, ts: float, status: int, junk: bytes) -> Observation:
    match action:
        case "invite":
            return call.invite(ts)
        case "reinvite":
            return call.invite(ts, reinvite=True)
        case "answer":
            return call.answer(status, ts)
        case "bye":
            return call.bye(ts)
        case "bye_callee":
            return call.bye(ts, from_callee=True)
        case "cancel":
            return call.cancel(ts)
        case _:
            return observe(junk, ts=ts, src=call.src, direction=Direction.INBOUND)


@given(actions)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_call_flows_never_raise_and_keep_counts_consistent(
    flow: list[tuple[str, int, str, str, int, float, bytes]],
) -> None:
    detector = SessionLimitDetector(
        SessionSettings(per_source_limit=2, per_account_limit=1, max_pending=3, max_calls=3)
    )
    engine = Engine([detector])
    ts = T0
    for action, number, user, src, status, step, junk in flow:
        ts += step
        call = Call(f"h{number}", user=user, src=src)
        obs = build(action, call, ts, status, junk)
        engine.inspect(obs)
        assert len(detector) <= 6
        counted = sum(
            call.counted
            for table in (detector._pending, detector._confirmed)
            for call in table.values()
        )
        assert detector.active() == counted
        assert all(count > 0 for count in detector._by_source.values())
        assert all(count > 0 for count in detector._by_account.values())
