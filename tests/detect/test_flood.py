"""FloodDetector: rates per source, per method and global, the call-ratio rule, bounds.

Each test feeds annotated observations through the real engine and states the
exact events expected (fail2ban's "sample input, expected result" pattern).
"""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Iterable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipwarden.detect.flood import (
    GLOBAL_SOURCE,
    RULE_CALL_RATIO,
    RULE_GLOBAL_RATE,
    RULE_SOURCE_RATE,
    FloodDetector,
    FloodSettings,
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
from sipwarden.engine.engine import Engine, Findings
from sipwarden.errors import ConfigError, RemoteProtocolError
from sipwarden.monitor.sources import observations_from_pcap
from sipwarden.sip.parser import parse_message
from support import shared_path

PBX = "198.51.100.1"
T0 = 1_800_000_000.0
INVITE_RATE = "flood.method_rate.INVITE"


# -- building observations ----------------------------------------------------------------


def observe(
    data: bytes, *, ts: float, src: str, sport: int = 5060, direction: Direction = Direction.UNKNOWN
) -> Observation:
    dst = PBX if src != PBX else "192.0.2.200"
    try:
        message = parse_message(data, strict=False)
    except RemoteProtocolError as error:
        return Observation(ts, src, sport, dst, 5060, "udp", direction, data, None, error)
    return Observation(ts, src, sport, dst, 5060, "udp", direction, data, message, None)


def request(
    method: str,
    *,
    ts: float,
    src: str = "192.0.2.10",
    call_id: str = "c1",
    user: str = "alice",
    direction: Direction = Direction.UNKNOWN,
) -> Observation:
    data = (
        f"{method} sip:bob@pbx.example SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {src}:5060;branch=z9hG4bK-{call_id}\r\n"
        f"From: <sip:{user}@pbx.example>;tag=f-{call_id}\r\n"
        "To: <sip:bob@pbx.example>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    return observe(data, ts=ts, src=src, direction=direction)


def response(
    status: int, *, ts: float, src: str = "192.0.2.10", call_id: str = "c1"
) -> Observation:
    """The PBX's answer to ``request("INVITE", src=src, call_id=call_id)``."""
    data = (
        f"SIP/2.0 {status} Whatever\r\n"
        f"Via: SIP/2.0/UDP {src}:5060;branch=z9hG4bK-{call_id}\r\n"
        f"From: <sip:alice@pbx.example>;tag=f-{call_id}\r\n"
        "To: <sip:bob@pbx.example>;tag=pbx\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    return observe(data, ts=ts, src=PBX)


def run(engine: Engine, observations: Iterable[Observation]) -> list[Inspection]:
    return [engine.inspect(obs) for obs in observations]


def events_of(results: Iterable[Inspection]) -> list[SecurityEvent]:
    return [event for result in results for event in result.events]


def rules(results: Iterable[Inspection]) -> list[tuple[str, str]]:
    return [(event.rule, event.source) for event in events_of(results)]


def evenly(count: int, start: float, spacing: float) -> Iterator[float]:
    return (start + index * spacing for index in range(count))


# -- per-source rate -------------------------------------------------------------------------


def test_source_rate_at_the_limit_is_quiet_and_one_over_fires_and_drops() -> None:
    engine = Engine([FloodDetector()])  # default: 400 requests per 2 s
    # INFO has no method limit of its own: only the source rate counts it.
    at_limit = run(
        engine,
        (request("INFO", ts=ts, call_id=f"i{n}") for n, ts in enumerate(evenly(400, T0, 0.0025))),
    )
    assert events_of(at_limit) == []
    assert all(result.verdict.action is Action.ALLOW for result in at_limit)

    over = engine.inspect(request("INFO", ts=T0 + 1.0, call_id="i400"))
    assert [(e.rule, e.source, e.severity) for e in over.events] == [
        (RULE_SOURCE_RATE, "192.0.2.10", Severity.HIGH)
    ]
    event = over.events[0]
    assert event.kind is EventKind.FLOOD
    assert event.source_port == 5060
    assert event.evidence.counts["requests"] == 401
    assert event.evidence.threshold == 400
    assert event.evidence.window == 2.0
    assert over.verdict.action is Action.DROP
    assert over.verdict.rule == RULE_SOURCE_RATE
    # HIGH: the engine bans the source (briefly: plain UDP proves nothing).
    assert [ban.source for ban in over.bans] == ["192.0.2.10"]


def test_unparsable_datagrams_count_towards_the_source_rate() -> None:
    settings_ = FloodSettings(source_limit=5)
    engine = Engine([FloodDetector(settings_)])
    garbage = [
        observe(b"\xff\xfe garbage\r\n\r\n", ts=T0 + n * 0.01, src="192.0.2.66") for n in range(6)
    ]
    assert all(obs.message is None for obs in garbage)
    assert rules(run(engine, garbage)) == [(RULE_SOURCE_RATE, "192.0.2.66")]


def test_a_flood_that_stops_is_let_through_again() -> None:
    detector = FloodDetector(FloodSettings(source_limit=10, source_window=1.0))
    findings = Findings(None)
    for n in range(11):
        findings = Findings(None)
        detector.observe(request("INFO", ts=T0 + n * 0.01, call_id=f"x{n}"), findings)
    assert findings.verdict.action is Action.DROP
    later = Findings(None)
    detector.observe(request("INFO", ts=T0 + 5.0, call_id="late"), later)
    assert later.verdict.action is Action.ALLOW
    assert later.events == []


# -- per-method rates --------------------------------------------------------------------


def test_invite_rate_at_70_per_second_is_quiet_71_fires() -> None:
    engine = Engine([FloodDetector()])
    quiet = run(
        engine,
        (request("INVITE", ts=ts, call_id=f"v{n}") for n, ts in enumerate(evenly(70, T0, 0.01))),
    )
    assert events_of(quiet) == []
    over = engine.inspect(request("INVITE", ts=T0 + 0.7, call_id="v70"))
    assert rules([over]) == [(INVITE_RATE, "192.0.2.10")]
    assert over.events[0].evidence.counts["requests"] == 71
    assert over.events[0].evidence.threshold == 70
    assert over.verdict.action is Action.DROP
    assert over.verdict.rule == INVITE_RATE
    # The method limit drops that method only; the source rate is not exceeded.
    findings = Findings(None)
    engine.detectors[0].observe(request("OPTIONS", ts=T0 + 0.71, call_id="o"), findings)
    assert findings.verdict.action is Action.ALLOW


@pytest.mark.parametrize(
    ("method", "limit"), [("REGISTER", 100), ("OPTIONS", 50), ("SUBSCRIBE", 200), ("MESSAGE", 30)]
)
def test_each_default_method_limit(method: str, limit: int) -> None:
    engine = Engine([FloodDetector()])
    spacing = 0.9 / limit  # all within one second
    results = run(
        engine,
        (
            request(method, ts=ts, call_id=f"m{n}")
            for n, ts in enumerate(evenly(limit + 1, T0, spacing))
        ),
    )
    assert rules(results) == [(f"flood.method_rate.{method}", "192.0.2.10")]
    assert events_of(results)[0] is results[-1].events[0]  # the (limit+1)th request fired


def test_a_busy_trunk_at_30_calls_per_second_never_fires() -> None:
    """30 calls/s with Poisson arrivals for two minutes, half answered: no flood.

    Every call is INVITE, its answer (200 or 486), ACK, and for answered calls
    a BYE and its 200 two seconds later: ~100 requests/s from the trunk.
    """
    rng = random.Random(30)
    trunk = "203.0.113.5"
    events: list[tuple[float, Observation]] = []
    ts = T0
    for n in range(30 * 120):
        ts += rng.expovariate(30.0)
        call = f"t{n}"
        events.append((ts, request("INVITE", ts=ts, src=trunk, call_id=call)))
        answered = n % 2 == 0
        answer_at = ts + 0.2
        events.append(
            (answer_at, response(200 if answered else 486, ts=answer_at, src=trunk, call_id=call))
        )
        events.append(
            (answer_at + 0.01, request("ACK", ts=answer_at + 0.01, src=trunk, call_id=call))
        )
        if answered:
            events.append(
                (answer_at + 2.0, request("BYE", ts=answer_at + 2.0, src=trunk, call_id=call))
            )
    events.sort(key=lambda item: item[0])
    engine = Engine([FloodDetector()])
    assert events_of(run(engine, (obs for _, obs in events))) == []


# -- re-alert suppression ----------------------------------------------------------------


def test_a_sustained_flood_is_reported_once_then_once_per_realert_after() -> None:
    engine = Engine([FloodDetector()])  # realert_after = 60 s
    results = run(
        engine,
        (
            request("INVITE", ts=ts, call_id=f"s{n}")
            for n, ts in enumerate(evenly(100 * 130, T0, 0.01))  # 100/s for 130 s
        ),
    )
    events = events_of(results)
    assert [e.rule for e in events] == [INVITE_RATE] * 3
    assert [round(e.time - T0, 2) for e in events] == [0.7, 60.7, 120.7]
    # The later events carry the updated picture: what went over meanwhile.
    assert events[0].evidence.counts["over_limit_since_last_event"] == 0
    assert events[1].evidence.counts["over_limit_since_last_event"] > 5000
    # Verdicts are never suppressed: every INVITE over the limit was dropped.
    dropped = sum(result.verdict.action is Action.DROP for result in results)
    assert dropped > 12000


def test_rules_and_sources_are_suppressed_independently() -> None:
    engine = Engine([FloodDetector(FloodSettings(source_limit=50))])
    observations = [
        request("INVITE", ts=ts, src=src, call_id=f"{src}-{n}")
        for n, ts in enumerate(evenly(80, T0, 0.005))
        for src in ("192.0.2.1", "192.0.2.2")
    ]
    observations.sort(key=lambda obs: obs.ts)
    assert sorted(rules(run(engine, observations))) == [
        (INVITE_RATE, "192.0.2.1"),
        (INVITE_RATE, "192.0.2.2"),
        (RULE_SOURCE_RATE, "192.0.2.1"),
        (RULE_SOURCE_RATE, "192.0.2.2"),
    ]


# -- IPv6 /64 aggregation ------------------------------------------------------------------


def test_addresses_rotating_inside_one_64_are_counted_together() -> None:
    engine = Engine([FloodDetector()])
    # 20 addresses of one /64, 4 INVITEs each within a second: 80 in total.
    observations = [
        request(
            "INVITE",
            ts=T0 + (n * 20 + k) * 0.01,
            src=f"2001:db8:1:2::{k + 1:x}",
            call_id=f"r{n}-{k}",
        )
        for n in range(4)
        for k in range(20)
    ]
    results = run(engine, observations)
    events = events_of(results)
    assert [(e.rule, e.source) for e in events] == [(INVITE_RATE, "2001:db8:1:2::/64")]
    event = events[0]
    assert event.source_port is None
    assert event.detail == {"prefix": "2001:db8:1:2::/64", "last_address": "2001:db8:1:2::b"}
    assert event.evidence.counts["requests"] == 71
    # The engine bans the /64, not the one rotating address.
    assert [ban.source for result in results for ban in result.bans] == ["2001:db8:1:2::/64"]


def test_one_ipv6_address_flooding_is_reported_once_by_address() -> None:
    engine = Engine([FloodDetector()])
    results = run(
        engine,
        (
            request("INVITE", ts=ts, src="2001:db8::7", call_id=f"a{n}")
            for n, ts in enumerate(evenly(90, T0, 0.01))
        ),
    )
    assert rules(results) == [(INVITE_RATE, "2001:db8::7")]


def test_ipv4_mapped_addresses_are_not_lumped_into_one_64() -> None:
    engine = Engine([FloodDetector()])
    observations = [
        request("INVITE", ts=T0 + n * 0.005, src=f"::ffff:192.0.2.{n + 1}", call_id=f"m{n}")
        for n in range(150)
    ]
    assert rules(run(engine, observations)) == []


def test_aggregation_can_be_turned_off() -> None:
    engine = Engine([FloodDetector(FloodSettings(aggregate_ipv6=False))])
    observations = [
        request("INVITE", ts=T0 + n * 0.005, src=f"2001:db8::{n + 1:x}", call_id=f"o{n}")
        for n in range(150)
    ]
    assert rules(run(engine, observations)) == []


# -- global rate ----------------------------------------------------------------------------


def distributed(count: int, per_source: int) -> list[Observation]:
    """``count`` sources, each sending ``per_source`` OPTIONS within one second."""
    return [
        request(
            "OPTIONS",
            ts=T0 + (round_ * count + n) * (0.9 / (count * per_source)),
            src=f"10.{n // 65536}.{n // 256 % 256}.{n % 256}",
            call_id=f"g{round_}-{n}",
        )
        for round_ in range(per_source)
        for n in range(count)
    ]


def test_a_distributed_flood_of_1000_sources_each_under_its_limit_fires_the_global_rule() -> None:
    engine = Engine([FloodDetector()])  # global: 1000 per 2 s
    results = run(engine, distributed(1000, 2))
    events = events_of(results)
    assert [(e.rule, e.source, e.severity) for e in events] == [
        (RULE_GLOBAL_RATE, GLOBAL_SOURCE, Severity.MEDIUM)
    ]
    assert events[0].evidence.counts["requests"] == 1001
    assert events[0].detail["scope"] == "global"
    # MEDIUM and not attributable: nobody is banned, nothing is dropped by default.
    assert all(not result.bans for result in results)
    assert all(result.verdict.action is Action.ALLOW for result in results)


def test_global_load_can_be_shed_with_503_but_never_for_bye_or_ack() -> None:
    detector = FloodDetector(FloodSettings(global_limit=100, shed_global_load=True))
    for obs in distributed(100, 1):
        detector.observe(obs, Findings(None))
    invite = Findings(None)
    detector.observe(request("INVITE", ts=T0 + 0.95, src="10.9.9.9", call_id="late"), invite)
    assert (invite.verdict.action, invite.verdict.status) == (Action.REJECT, 503)
    for method in ("BYE", "ACK", "CANCEL"):
        ending = Findings(None)
        detector.observe(request(method, ts=T0 + 0.95, src="10.9.9.9", call_id="late"), ending)
        assert ending.verdict.action is Action.ALLOW


# -- call ratio ---------------------------------------------------------------------------


def calls(
    outcomes: list[int], *, src: str = "192.0.2.10", spacing: float = 1.0
) -> list[Observation]:
    """One INVITE per ``spacing`` seconds, each answered 10 ms later with its outcome."""
    observations: list[Observation] = []
    for n, status in enumerate(outcomes):
        ts = T0 + n * spacing
        observations.append(request("INVITE", ts=ts, src=src, call_id=f"k{n}"))
        observations.append(response(status, ts=ts + 0.01, src=src, call_id=f"k{n}"))
    return observations


def test_49_failed_calls_are_quiet_the_50th_fires() -> None:
    engine = Engine([FloodDetector()])
    # 0.5 s apart: 2 INVITEs/s, far under the INVITE rate.
    results = run(engine, calls([404] * 50, spacing=0.5))
    events = events_of(results)
    assert [(e.rule, e.source) for e in events] == [(RULE_CALL_RATIO, "192.0.2.10")]
    assert results[-1].events == (events[0],)  # the 50th failure
    assert events[0].evidence.counts == {
        "invites": 50,
        "answered": 0,
        "failed": 50,
        "over_limit_since_last_event": 0,
    }
    assert "infinite" in events[0].summary
    assert events[0].severity is Severity.HIGH
    assert events[0].source_port == 5060  # the caller's port, not the PBX's


def test_answered_calls_keep_the_ratio_legitimate() -> None:
    # 100 calls in 50 s, 10 answered: INVITE:2xx = 10, not over 10.
    outcomes = [200 if n % 10 == 0 else 404 for n in range(100)]
    assert events_of(run(Engine([FloodDetector()]), calls(outcomes, spacing=0.5))) == []
    # 9 answered: 100 INVITEs > 10 x 9: the rule holds once 50 failed.
    outcomes = [200 if n % 11 == 0 and n < 99 else 404 for n in range(100)]
    assert outcomes.count(200) == 9
    results = run(Engine([FloodDetector()]), calls(outcomes, spacing=0.5))
    assert rules(results) == [(RULE_CALL_RATIO, "192.0.2.10")]


def test_challenges_are_not_failed_calls() -> None:
    # Every INVITE challenged (407), none retried: not a failure pattern by itself.
    results = run(Engine([FloodDetector()]), calls([407] * 80, spacing=0.5))
    assert rules(results) == []


def test_failures_older_than_the_window_are_forgotten() -> None:
    # 40 failures, a pause of two minutes, 40 more: never 50 within a minute.
    early = calls([404] * 40, spacing=0.5)
    late = [obs._replace(ts=obs.ts + 120.0) for obs in calls([404] * 40, spacing=0.5)]
    # Call-IDs repeat across the halves; the correlator has forgotten the first.
    assert rules(run(Engine([FloodDetector()]), [*early, *late])) == []


def test_outbound_requests_are_the_pbx_own_and_not_counted() -> None:
    engine = Engine([FloodDetector()])
    observations = [
        request("OPTIONS", ts=ts, src=PBX, call_id=f"q{n}", direction=Direction.OUTBOUND)
        for n, ts in enumerate(evenly(500, T0, 0.001))
    ]
    assert rules(run(engine, observations)) == []


# -- the captures ---------------------------------------------------------------------------

# Expected flood events per capture (rule, source), in order. The INVITE flood
# is reported twice on purpose, by two different rules: its calls all fail
# (call_ratio, at the 50th 404, 0.49 s in) and it runs faster than 70
# INVITEs a second (method_rate.INVITE, at the 71st INVITE, 0.70 s in). The
# per-source total (174 requests in 0.86 s) stays under 400 per 2 s. The
# SIPVicious captures are no floods: svcrack's 26 REGISTERs in 0.14 s are the
# cracking detector's, svwar's 12 the enumeration detector's.
CAPTURE_EXPECTATIONS = {
    "sipp-invite-flood.pcap": [(RULE_CALL_RATIO, "127.0.0.1"), (INVITE_RATE, "127.0.0.1")],
    "svmap.pcap": [],
    "svwar.pcap": [],
    "svcrack.pcap": [],
}


@pytest.mark.parametrize("name", sorted(CAPTURE_EXPECTATIONS))
def test_captures(name: str) -> None:
    engine = Engine([FloodDetector()])
    results = run(engine, observations_from_pcap(shared_path("testdata", "captures", name)))
    assert rules(results) == CAPTURE_EXPECTATIONS[name]


def test_flood_capture_event_details() -> None:
    engine = Engine([FloodDetector()])
    observations = list(
        observations_from_pcap(shared_path("testdata", "captures", "sipp-invite-flood.pcap"))
    )
    results = run(engine, observations)
    ratio, rate = events_of(results)
    assert ratio.evidence.counts["invites"] == 50
    assert ratio.evidence.counts["answered"] == 0
    assert ratio.source_port == 15070  # SIPp's port
    assert round(ratio.time - observations[0].ts, 2) == 0.49
    assert rate.evidence.counts["requests"] == 71
    assert round(rate.time - observations[0].ts, 2) == 0.70
    assert all(event.severity is Severity.HIGH for event in (ratio, rate))
    # The 71st INVITE and those after it are dropped by the rate limit.
    flood = FloodDetector()
    dropped = 0
    for obs in observations:
        findings = Findings(None)
        flood.observe(obs, findings)
        dropped += findings.verdict.rule == INVITE_RATE
    assert dropped == 87 - 70


# -- bounds -------------------------------------------------------------------------------


def test_100k_spoofed_sources_cost_a_bounded_table_and_bounded_memory() -> None:
    detector = FloodDetector(FloodSettings(max_sources=1000))
    template = request("INVITE", ts=T0, call_id="spoof")

    def feed(start: int, stop: int) -> None:
        for n in range(start, stop):
            obs = template._replace(
                ts=T0 + n * 0.0001, src=f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
            )
            detector.observe(obs, Findings(None))

    feed(0, 80_000)
    assert len(detector) == 1000
    # Traced from here: allocations of the last 20 000 sources. Once the
    # table has turned over (1000 sources), what is traced stays flat.
    tracemalloc.start()
    try:
        feed(80_000, 85_000)
        warm, _ = tracemalloc.get_traced_memory()
        feed(85_000, 100_000)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(detector) <= 1000
    assert detector._keys.evicted == 99_000
    # 15 000 more sources cost nothing more: a fixed table, recycled.
    assert after - warm < 64 * 1024


def test_idle_sources_expire() -> None:
    engine = Engine([FloodDetector()])
    run(engine, (request("OPTIONS", ts=T0, src=f"192.0.2.{n}", call_id=f"e{n}") for n in range(50)))
    detector = engine.detectors[0]
    assert isinstance(detector, FloodDetector)
    assert len(detector) == 50
    engine.inspect(request("OPTIONS", ts=T0 + 120.0, src="192.0.2.200", call_id="late"))
    assert len(detector) == 1


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="source_limit: must be at least 1"):
        FloodSettings(source_limit=0)
    with pytest.raises(ConfigError, match="method_window: must be a number of seconds > 0"):
        FloodSettings(method_window=0)
    with pytest.raises(ConfigError, match="method_limits: INVITE: the limit must be at least 1"):
        FloodSettings(method_limits=(("INVITE", 0),))
    with pytest.raises(ConfigError, match="method_limits: a method name cannot be empty"):
        FloodSettings(method_limits=(("", 5),))


# -- arbitrary input ----------------------------------------------------------------------

METHODS = ["INVITE", "REGISTER", "OPTIONS", "ACK", "BYE", "CANCEL", "INFO", "invite"]
SOURCES = [
    "192.0.2.1",
    "192.0.2.2",
    "2001:db8::1",
    "2001:db8::2",
    "::ffff:192.0.2.9",
    "fe80::1%eth0",
]

steps = st.lists(
    st.tuples(
        st.sampled_from(["request", "response", "bytes"]),
        st.sampled_from(METHODS),
        st.sampled_from(SOURCES),
        st.sampled_from([100, 180, 200, 401, 404, 487, 503, 699]),
        st.floats(min_value=-1.0, max_value=90.0, allow_nan=False),  # reordered captures too
        st.binary(max_size=64),
        st.integers(0, 5),
    ),
    max_size=60,
)


@given(steps)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_sequences_never_raise_and_stay_bounded(
    sequence: list[tuple[str, str, str, int, float, bytes, int]],
) -> None:
    detector = FloodDetector(
        FloodSettings(source_limit=3, global_limit=5, ratio_min_failures=2, max_sources=4)
    )
    engine = Engine([detector])
    ts = T0
    for kind, method, src, status, step, junk, call in sequence:
        ts += step
        if kind == "request":
            obs = request(method, ts=ts, src=src, call_id=f"h{call}")
        elif kind == "response":
            obs = response(status, ts=ts, src=src, call_id=f"h{call}")
        else:
            obs = observe(junk, ts=ts, src=src)
        result = engine.inspect(obs)
        for event in result.events:
            assert event.kind is EventKind.FLOOD
        assert len(detector) <= 4
