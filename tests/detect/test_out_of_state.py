"""Tests for sipwarden.detect.out_of_state.

Annotated call flows in, expected events out (fail2ban's pattern): every flow
is a list of ``(who sends, message)`` steps, ``">"`` from the caller
(192.0.2.10) to the PBX (192.0.2.20), ``"<"`` back. The in-state flows run
through a *sensitive* detector (threshold 1, no warm-up) so that a single
misplaced message would show; the out-of-state cases assert the rule, the
proposed verdict and the evidence.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipwarden.detect.out_of_state import (
    RULE_ACK,
    RULE_CANCEL,
    RULE_IN_DIALOG,
    RULE_RESPONSE,
    OutOfStateDetector,
    OutOfStateSettings,
)
from sipwarden.engine.contract import (
    Action,
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

CALLER = "192.0.2.10"
PBX = "192.0.2.20"
CALL_ID = "call-1@192.0.2.10"
T0 = 1_700_000_000.0  # the first observation's time in every test

# Every finding is an event: for checking that in-state flows produce none.
SENSITIVE = OutOfStateSettings(threshold=1, high_threshold=1000, warmup=0.0)


# -- message builders --------------------------------------------------------------------


def req(
    method: str,
    *,
    branch: str,
    from_tag: str = "a1",
    to_tag: str | None = None,
    seq: int = 1,
    call_id: str = CALL_ID,
    via: str = f"{CALLER}:5060",
    cseq_method: str | None = None,
    from_user: str = "alice",
    to_user: str = "100",
    extra: Sequence[str] = (),
) -> bytes:
    lines = [
        f"{method} sip:{to_user}@{PBX} SIP/2.0",
        f"Via: SIP/2.0/UDP {via};branch={branch}",
        "Max-Forwards: 70",
        f"From: <sip:{from_user}@example.com>;tag={from_tag}",
        f"To: <sip:{to_user}@example.com>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {seq} {cseq_method or method}",
        f"Contact: <sip:{from_user}@{via}>",
        *extra,
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def resp(
    status: int,
    *,
    branch: str,
    method: str = "INVITE",
    from_tag: str = "a1",
    to_tag: str | None = "b1",
    seq: int = 1,
    call_id: str = CALL_ID,
    via: str = f"{CALLER}:5060",
    from_user: str = "alice",
    to_user: str = "100",
) -> bytes:
    lines = [
        f"SIP/2.0 {status} Whatever",
        f"Via: SIP/2.0/UDP {via};branch={branch};received={via.partition(':')[0]}",
        f"From: <sip:{from_user}@example.com>;tag={from_tag}",
        f"To: <sip:{to_user}@example.com>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {seq} {method}",
        f"Contact: <sip:{to_user}@{PBX}:5060>",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def observation(
    data: bytes,
    ts: float,
    *,
    src: str,
    dst: str,
    direction: Direction = Direction.UNKNOWN,
) -> Observation:
    try:
        message = parse_message(data, strict=False)
        message.collect_defects()
    except RemoteProtocolError as error:
        return Observation(ts, src, 5060, dst, 5060, "udp", direction, data, None, error)
    return Observation(ts, src, 5060, dst, 5060, "udp", direction, data, message, None)


Step = tuple[str, bytes]  # (">" caller to PBX, or "<" PBX to caller; the message)


class Wire:
    """Feeds a detector with a clock and records what it found for every step."""

    def __init__(self, detector: OutOfStateDetector, *, start: float = T0) -> None:
        self.detector = detector
        self.now = start
        self.findings: list[Findings] = []

    @property
    def events(self) -> list[SecurityEvent]:
        return [event for findings in self.findings for event in findings.events]

    @property
    def verdicts(self) -> list[tuple[Action, int | None, str]]:
        return [
            (f.verdict.action, f.verdict.status, f.verdict.rule)
            for f in self.findings
            if not f.verdict.allowed
        ]

    def send(
        self,
        data: bytes,
        *,
        src: str = CALLER,
        dst: str = PBX,
        after: float = 0.01,
        direction: Direction = Direction.UNKNOWN,
    ) -> Findings:
        self.now += after
        findings = Findings(None)
        self.detector.observe(
            observation(data, self.now, src=src, dst=dst, direction=direction), findings
        )
        self.findings.append(findings)
        return findings

    def play(self, steps: Iterable[Step], *, after: float = 0.01) -> None:
        for who, data in steps:
            if who == ">":
                self.send(data, src=CALLER, dst=PBX, after=after)
            else:
                self.send(data, src=PBX, dst=CALLER, after=after)

    def wait(self, seconds: float) -> None:
        self.now += seconds
        self.detector.expire(self.now)


# -- annotated flows -----------------------------------------------------------------------

INV = "z9hG4bK-inv1"

# RFC 3665 3.1-style basic call: INVITE / 100 / 180 / 200 / ACK / BYE / 200.
CALL_SETUP: list[Step] = [
    (">", req("INVITE", branch=INV)),  # creates the INVITE server transaction
    ("<", resp(100, branch=INV, to_tag=None)),  # hop-by-hop, no dialog
    ("<", resp(180, branch=INV)),  # tagged 1xx: an early dialog (12.1)
    ("<", resp(200, branch=INV)),  # confirms it
    (">", req("ACK", branch="z9hG4bK-ack1", to_tag="b1")),  # 2xx ACK: new branch, in the dialog
]
CALL_TEARDOWN_BY_CALLER: list[Step] = [
    (">", req("BYE", branch="z9hG4bK-bye1", to_tag="b1", seq=2)),
    ("<", resp(200, branch="z9hG4bK-bye1", method="BYE", seq=2)),
]
FULL_CALL = CALL_SETUP + CALL_TEARDOWN_BY_CALLER

# A ringing call cancelled by the caller (RFC 3261 9.1, 9.2): the CANCEL shares
# the INVITE's branch, the UAS answers it 200 and the INVITE 487, which is ACKed
# on the INVITE's branch (17.1.1.3).
CANCELLED_CALL: list[Step] = [
    (">", req("INVITE", branch=INV)),
    ("<", resp(100, branch=INV, to_tag=None)),
    ("<", resp(180, branch=INV)),
    (">", req("CANCEL", branch=INV)),
    ("<", resp(200, branch=INV, method="CANCEL")),
    ("<", resp(487, branch=INV)),
    (">", req("ACK", branch=INV, to_tag="b1")),
]

# A confirmed call, a session refresh from the callee (re-INVITE with swapped
# tags, 12.2.1.1), UPDATE and INFO from the caller, then the callee hangs up.
REINVITE_CALL: list[Step] = [
    *CALL_SETUP,
    ("<", req("INVITE", branch="z9hG4bK-re1", from_tag="b1", to_tag="a1", via=f"{PBX}:5060")),
    ("<", resp(100, branch="z9hG4bK-re1", via=f"{PBX}:5060", from_tag="b1", to_tag=None)),
    (">", resp(200, branch="z9hG4bK-re1", via=f"{PBX}:5060", from_tag="b1", to_tag="a1")),
    ("<", req("ACK", branch="z9hG4bK-re1ack", from_tag="b1", to_tag="a1", via=f"{PBX}:5060")),
    (">", req("UPDATE", branch="z9hG4bK-up1", to_tag="b1", seq=2)),
    ("<", resp(200, branch="z9hG4bK-up1", method="UPDATE", seq=2)),
    (">", req("INFO", branch="z9hG4bK-info1", to_tag="b1", seq=3)),
    ("<", resp(200, branch="z9hG4bK-info1", method="INFO", seq=3)),
    ("<", req("BYE", branch="z9hG4bK-bye2", from_tag="b1", to_tag="a1", seq=2, via=f"{PBX}:5060")),
    (">", resp(200, branch="z9hG4bK-bye2", method="BYE", from_tag="b1", to_tag="a1", seq=2,
               via=f"{PBX}:5060")),
]  # fmt: skip

# RFC 3262 reliable provisional: PRACK inside the early dialog, before the 200.
PRACK_CALL: list[Step] = [
    (">", req("INVITE", branch=INV)),
    ("<", resp(183, branch=INV)),
    (">", req("PRACK", branch="z9hG4bK-pr1", to_tag="b1", seq=2)),
    ("<", resp(200, branch="z9hG4bK-pr1", method="PRACK", seq=2)),
    ("<", resp(200, branch=INV)),
    (">", req("ACK", branch="z9hG4bK-ack1", to_tag="b1")),
]

# RFC 6665: a SUBSCRIBE whose first NOTIFY overtakes the 200 (4.1.2.4), then a
# refresh NOTIFY in the dialog the 200 created.
SUBSCRIPTION: list[Step] = [
    (">", req("SUBSCRIBE", branch="z9hG4bK-sub1", extra=("Event: presence",))),
    ("<", req("NOTIFY", branch="z9hG4bK-n1", from_tag="b1", to_tag="a1", via=f"{PBX}:5060",
              extra=("Event: presence", "Subscription-State: active"))),
    (">", resp(200, branch="z9hG4bK-n1", method="NOTIFY", from_tag="b1", to_tag="a1",
               via=f"{PBX}:5060")),
    ("<", resp(200, branch="z9hG4bK-sub1", method="SUBSCRIBE")),
    ("<", req("NOTIFY", branch="z9hG4bK-n2", from_tag="b1", to_tag="a1", seq=2, via=f"{PBX}:5060",
              extra=("Event: presence", "Subscription-State: active"))),
    (">", resp(200, branch="z9hG4bK-n2", method="NOTIFY", from_tag="b1", to_tag="a1", seq=2,
               via=f"{PBX}:5060")),
]  # fmt: skip


def retransmitted(steps: list[Step]) -> list[Step]:
    """Every message twice: what UDP retransmission timers (A, E, G, 2xx) produce."""
    return [step for step in steps for _ in range(2)]


# -- in-state flows raise nothing ---------------------------------------------------------


@pytest.mark.parametrize(
    "flow",
    [
        pytest.param(FULL_CALL, id="full-call"),
        pytest.param(CANCELLED_CALL, id="cancel-ringing-487"),
        pytest.param(REINVITE_CALL, id="reinvite-update-info-callee-bye"),
        pytest.param(PRACK_CALL, id="prack-early-dialog"),
        pytest.param(SUBSCRIPTION, id="subscribe-notify-first"),
        pytest.param(retransmitted(FULL_CALL), id="full-call-retransmitted"),
        pytest.param(retransmitted(CANCELLED_CALL), id="cancel-retransmitted"),
        pytest.param(retransmitted(REINVITE_CALL), id="reinvite-retransmitted"),
    ],
)
@pytest.mark.parametrize("direction", [Direction.UNKNOWN, Direction.INBOUND])
def test_in_state_flows_raise_nothing(flow: list[Step], direction: Direction) -> None:
    wire = Wire(OutOfStateDetector(SENSITIVE))
    for who, data in flow:
        src, dst = (CALLER, PBX) if who == ">" else (PBX, CALLER)
        wire.send(data, src=src, dst=dst, direction=direction)
    assert wire.events == []
    assert wire.verdicts == []


def test_full_call_leaves_a_terminated_dialog_and_no_open_request() -> None:
    wire = Wire(OutOfStateDetector(SENSITIVE))
    wire.play(FULL_CALL)
    (dialog,) = wire.detector.dialogs
    assert dialog.terminated
    wire.wait(64.0)  # Timers J/L and the dialog's 64*T1 linger have run out
    assert len(wire.detector.dialogs) == 0
    assert len(wire.detector.transactions) == 0


def test_late_2xx_retransmission_after_the_transaction_ended_is_in_state() -> None:
    # 13.3.1.4: the UAS retransmits its 2xx until the ACK arrives; one that
    # shows up after the transaction's Timer L is still the dialog's.
    wire = Wire(OutOfStateDetector(SENSITIVE))
    wire.play(CALL_SETUP[:4])
    wire.wait(40.0)
    assert len(wire.detector.transactions) == 0
    wire.play([("<", resp(200, branch=INV)), (">", req("ACK", branch="z9hG4bK-a", to_tag="b1"))])
    assert wire.events == []


def test_reordered_180_after_200_is_not_out_of_state() -> None:
    # On UDP a 180 can be overtaken by its 200: the transaction has no arrow
    # for it (Ignored), but it answers an observed request.
    wire = Wire(OutOfStateDetector(SENSITIVE))
    wire.play([CALL_SETUP[0], CALL_SETUP[3], CALL_SETUP[2], CALL_SETUP[4]])
    assert wire.events == []


def test_options_with_a_to_tag_is_tracked_but_not_judged() -> None:
    # OPTIONS/MESSAGE with a To tag are used loosely by UAs (keep-alives):
    # not in in_dialog_methods.
    wire = Wire(OutOfStateDetector(SENSITIVE))
    wire.send(req("OPTIONS", branch="z9hG4bK-o", to_tag="zz"))
    assert wire.events == []


# -- out-of-state cases ---------------------------------------------------------------------


def single_event(wire: Wire) -> SecurityEvent:
    (event,) = wire.events
    assert event.kind is EventKind.OUT_OF_STATE
    assert event.source == CALLER
    return event


@pytest.mark.parametrize("method", ["BYE", "INVITE", "UPDATE", "INFO", "REFER", "NOTIFY", "PRACK"])
def test_in_dialog_request_without_dialog(method: str) -> None:
    # A request with a To tag for a dialog nobody set up: a forged teardown or
    # a probe. The UAS answers 481 (RFC 3261 12.2.2); so does the gateway.
    wire = Wire(OutOfStateDetector(SENSITIVE))
    findings = wire.send(req(method, branch="z9hG4bK-x", to_tag="forged", seq=7))
    event = single_event(wire)
    assert event.rule == RULE_IN_DIALOG
    assert event.severity is Severity.MEDIUM
    assert event.evidence.counts[method] == 1
    assert "no such dialog" in str(event.detail["reason"])
    assert findings.verdict.action is Action.REJECT
    assert findings.verdict.status == 481
    assert findings.verdict.rule == RULE_IN_DIALOG
    assert method in event.evidence.messages[0]


def test_request_in_a_terminated_dialog() -> None:
    # INFO after the BYE: the dialog lingers terminated, the request is out of state.
    wire = Wire(OutOfStateDetector(SENSITIVE))
    wire.play(FULL_CALL)
    findings = wire.send(req("INFO", branch="z9hG4bK-late", to_tag="b1", seq=3))
    event = single_event(wire)
    assert event.rule == RULE_IN_DIALOG
    assert "terminated" in str(event.detail["reason"])
    assert findings.verdict.status == 481


def test_cancel_without_invite() -> None:
    wire = Wire(OutOfStateDetector(SENSITIVE))
    findings = wire.send(req("CANCEL", branch="z9hG4bK-nothing"))
    event = single_event(wire)
    assert event.rule == RULE_CANCEL
    assert (findings.verdict.action, findings.verdict.status) == (Action.REJECT, 481)
    # Its 481 answers the CANCEL's own transaction: not a stray response on top.
    wire.send(resp(481, branch="z9hG4bK-nothing", method="CANCEL"), src=PBX, dst=CALLER)
    assert len(wire.events) == 1


def test_cancel_with_another_branch_than_its_invite() -> None:
    # 9.1: a CANCEL carries its INVITE's branch; one that does not cancels nothing.
    wire = Wire(OutOfStateDetector(SENSITIVE))
    wire.play(CALL_SETUP[:3])
    wire.send(req("CANCEL", branch="z9hG4bK-other"))
    assert single_event(wire).rule == RULE_CANCEL


def test_ack_for_nothing() -> None:
    wire = Wire(OutOfStateDetector(SENSITIVE))
    findings = wire.send(req("ACK", branch="z9hG4bK-ack", to_tag="b9"))
    event = single_event(wire)
    assert event.rule == RULE_ACK
    assert findings.verdict.action is Action.DROP  # an ACK is never answered


def test_ack_without_to_tag_is_for_no_dialog() -> None:
    wire = Wire(OutOfStateDetector(SENSITIVE))
    wire.send(req("ACK", branch="z9hG4bK-ack"))
    assert single_event(wire).rule == RULE_ACK


def test_ack_before_any_final_response() -> None:
    # The INVITE transaction is in Proceeding: nothing to acknowledge (17.2.1).
    wire = Wire(OutOfStateDetector(SENSITIVE))
    wire.play(CALL_SETUP[:3])
    wire.send(req("ACK", branch=INV, to_tag="b1"))
    event = single_event(wire)
    assert event.rule == RULE_ACK
    assert "Proceeding" in str(event.detail["reason"])


@pytest.mark.parametrize("status", [100, 180, 200, 401, 404, 487])
def test_stray_response(status: int) -> None:
    # A response to a request nobody sent here: reflection or spoofing.
    wire = Wire(OutOfStateDetector(SENSITIVE))
    findings = wire.send(resp(status, branch="z9hG4bK-never"), src="198.51.100.7")
    (event,) = wire.events
    assert event.rule == RULE_RESPONSE
    assert event.source == "198.51.100.7"
    assert event.evidence.counts[f"{status // 100}xx"] == 1
    assert findings.verdict.action is Action.DROP
    # A stray 2xx opens no dialog: the ACK and BYE that follow stay out of state.
    assert len(wire.detector.dialogs) == 0


def test_response_after_its_transaction_ended_is_stray() -> None:
    wire = Wire(OutOfStateDetector(SENSITIVE))
    wire.send(req("OPTIONS", branch="z9hG4bK-opt"))
    wire.send(resp(200, branch="z9hG4bK-opt", method="OPTIONS"), src=PBX, dst=CALLER)
    wire.wait(40.0)  # Timer J (64*T1) ended the non-INVITE transaction
    wire.send(resp(200, branch="z9hG4bK-opt", method="OPTIONS"), src=PBX, dst=CALLER)
    assert [event.rule for event in wire.events] == [RULE_RESPONSE]


def test_enforce_off_reports_without_verdicts() -> None:
    wire = Wire(OutOfStateDetector(OutOfStateSettings(threshold=1, warmup=0.0, enforce=False)))
    wire.send(req("BYE", branch="z9hG4bK-x", to_tag="forged"))
    assert len(wire.events) == 1
    assert wire.verdicts == []


# -- thresholds and re-alerting ----------------------------------------------------------------


def forged_bye(number: int) -> bytes:
    return req("BYE", branch=f"z9hG4bK-f{number}", to_tag=f"t{number}", call_id=f"g{number}")


def test_threshold_then_escalation_then_realert() -> None:
    wire = Wire(OutOfStateDetector(OutOfStateSettings(warmup=0.0)))
    for number in range(9):
        wire.send(forged_bye(number), after=0.1)
    assert wire.events == []  # below the threshold: no event...
    assert len(wire.verdicts) == 9  # ...but every one of them is answered 481 in-line
    wire.send(forged_bye(9), after=0.1)
    (first,) = wire.events
    assert first.severity is Severity.MEDIUM
    assert first.evidence.counts["in_window"] == 10
    assert first.evidence.threshold == 10
    for number in range(10, 99):
        wire.send(forged_bye(number), after=0.1)
    assert len(wire.events) == 1  # suppressed within realert_after
    wire.send(forged_bye(99), after=0.1)
    second = wire.events[-1]
    assert second.severity is Severity.HIGH  # escalation is reported at once
    assert second.evidence.counts["total"] == 100
    for number in range(100, 150):
        wire.send(forged_bye(number), after=1.0)
    assert len(wire.events) == 2
    for number in range(150, 175):  # the attack goes on, slower: ~6 a minute
        wire.send(forged_bye(number), after=10.0)
    assert len(wire.events) == 2
    for number in range(175, 185):  # and speeds up again past realert_after
        wire.send(forged_bye(number), after=0.1)
    third = wire.events[-1]
    assert len(wire.events) == 3  # one more after realert_after, with updated counts
    assert third.time - second.time >= 300.0
    assert third.severity is Severity.MEDIUM
    # It fires with the message that brings the window back to the threshold:
    # six of the slow ones are still in the last minute, plus four fast ones.
    assert third.evidence.counts["in_window"] == 10
    assert third.evidence.counts["total"] == 179
    assert third.evidence.counts["BYE"] == 179
    assert len(third.evidence.messages) == 8  # a bounded sample: the latest ones


def test_a_quiet_source_is_forgotten_and_alerted_afresh() -> None:
    # Tallies expire max(window, realert_after) after their last message: a
    # source that comes back after that is a new episode.
    wire = Wire(OutOfStateDetector(OutOfStateSettings(warmup=0.0)))
    for number in range(10):
        wire.send(forged_bye(number))
    wire.wait(301.0)
    assert wire.detector.tracked_sources == 0
    for number in range(10, 20):
        wire.send(forged_bye(number))
    assert [event.evidence.counts["total"] for event in wire.events] == [10, 10]


def test_counts_are_per_source_and_rule() -> None:
    wire = Wire(OutOfStateDetector(OutOfStateSettings(warmup=0.0, threshold=3)))
    for number in range(2):
        wire.send(forged_bye(number))
        wire.send(req("CANCEL", branch=f"z9hG4bK-c{number}"))
        wire.send(forged_bye(number + 10), src="192.0.2.99")
    assert wire.events == []
    wire.send(forged_bye(3))
    assert [(e.source, e.rule) for e in wire.events] == [(CALLER, RULE_IN_DIALOG)]


def test_ipv6_sources_rotating_inside_a_64_are_counted_together() -> None:
    wire = Wire(OutOfStateDetector(OutOfStateSettings(warmup=0.0)))
    for number in range(10):
        wire.send(forged_bye(number), src=f"2001:db8:1:2::{number + 1:x}")
    (event,) = wire.events
    assert event.source == "2001:db8:1:2::/64"
    assert event.source_port is None


# -- blind spots: warm-up, answers that prove a dialog, evictions ------------------------------


def test_warmup_hides_traffic_that_began_before_the_monitor() -> None:
    # The monitor starts in the middle of calls: BYEs, ACKs, answers to
    # requests it never saw. Nothing is counted or rejected for `warmup` s.
    wire = Wire(OutOfStateDetector(OutOfStateSettings(warmup=300.0)))
    for number in range(50):
        wire.send(forged_bye(number), after=1.0)
        wire.send(resp(200, branch=f"z9hG4bK-old{number}", method="BYE"), src=PBX, dst=CALLER)
        wire.send(req("ACK", branch=f"z9hG4bK-oldack{number}", to_tag="b1"))
    first_seen = T0 + 1.0
    assert wire.now < first_seen + 300.0
    assert wire.events == []
    assert wire.verdicts == []
    wire.now = first_seen + 300.0
    for number in range(10):
        wire.send(forged_bye(100 + number))
    assert [event.rule for event in wire.events] == [RULE_IN_DIALOG]


def test_warmup_counts_from_the_first_observation_not_from_zero() -> None:
    wire = Wire(OutOfStateDetector(OutOfStateSettings(warmup=60.0, threshold=1)))
    wire.send(forged_bye(1))
    wire.now += 59.0
    wire.send(forged_bye(2))
    assert wire.events == []
    wire.now += 1.0
    wire.send(forged_bye(3))
    assert len(wire.events) == 1


def test_a_2xx_to_a_dialogless_request_proves_the_dialog_existed() -> None:
    # After warm-up, a long call set up before start-up is hung up: its BYEs
    # match no dialog here, but the PBX accepts each with 200. The count is
    # taken back, so a trunk ending many such calls never crosses the threshold.
    wire = Wire(OutOfStateDetector(OutOfStateSettings(warmup=0.0)))
    for number in range(30):
        wire.send(forged_bye(number), after=0.5)
        wire.send(
            resp(200, branch=f"z9hG4bK-f{number}", method="BYE", to_tag=f"t{number}",
                 call_id=f"g{number}"),
            src=PBX, dst=CALLER, after=0.01,
        )  # fmt: skip
    assert wire.events == []


def test_a_proven_call_leg_is_adopted() -> None:
    # An INFO on a call from before start-up is answered 200: the rest of that
    # call (more INFOs, its ACK-less BYE) is in state.
    wire = Wire(OutOfStateDetector(OutOfStateSettings(warmup=0.0, threshold=1)))
    wire.send(req("INFO", branch="z9hG4bK-i1", to_tag="old", call_id="long"))
    assert len(wire.events) == 1  # alone it is out of state (threshold 1 here)
    wire.send(
        resp(200, branch="z9hG4bK-i1", method="INFO", to_tag="old", call_id="long"),
        src=PBX, dst=CALLER,
    )  # fmt: skip
    wire.send(req("INFO", branch="z9hG4bK-i2", to_tag="old", call_id="long", seq=2))
    wire.send(req("BYE", branch="z9hG4bK-b", from_tag="old", to_tag="a1", call_id="long",
                  via=f"{PBX}:5060"), src=PBX, dst=CALLER)  # fmt: skip
    assert len(wire.events) == 1


def test_a_481_confirms_the_finding() -> None:
    wire = Wire(OutOfStateDetector(OutOfStateSettings(warmup=0.0)))
    for number in range(10):
        wire.send(forged_bye(number))
        wire.send(
            resp(481, branch=f"z9hG4bK-f{number}", method="BYE", to_tag=f"t{number}",
                 call_id=f"g{number}"),
            src=PBX, dst=CALLER,
        )  # fmt: skip
    assert [event.rule for event in wire.events] == [RULE_IN_DIALOG]


def test_only_the_requests_receiver_can_prove_the_dialog() -> None:
    # A 200 "from" somewhere else than where the BYE went proves nothing (it
    # may come from the attacker's own accomplice).
    wire = Wire(OutOfStateDetector(OutOfStateSettings(warmup=0.0)))
    for number in range(10):
        wire.send(forged_bye(number))
        wire.send(
            resp(200, branch=f"z9hG4bK-f{number}", method="BYE", to_tag=f"t{number}",
                 call_id=f"g{number}"),
            src="203.0.113.66", dst=CALLER,
        )  # fmt: skip
    assert [event.rule for event in wire.events] == [RULE_IN_DIALOG]


def test_evicted_transactions_blind_the_stray_response_rule_for_a_window() -> None:
    # A flood of INVITEs pushed the oldest transactions out of a small table:
    # their answers look stray, and must not be blamed on the PBX.
    detector = OutOfStateDetector(OutOfStateSettings(warmup=0.0, threshold=1, max_transactions=8))
    wire = Wire(detector)
    for number in range(20):
        wire.send(req("INVITE", branch=f"z9hG4bK-fl{number}", call_id=f"fl{number}"))
    assert len(detector.transactions) == 8
    assert detector.transactions.evicted == 12
    wire.send(resp(404, branch="z9hG4bK-fl0", call_id="fl0"), src=PBX, dst=CALLER)
    assert wire.events == []
    wire.now += 61.0  # a window later the rule counts again
    wire.send(resp(404, branch="z9hG4bK-fl0", call_id="fl0"), src=PBX, dst=CALLER)
    assert [event.rule for event in wire.events] == [RULE_RESPONSE]


def test_evicted_dialogs_blind_the_in_dialog_rule_for_a_window() -> None:
    detector = OutOfStateDetector(OutOfStateSettings(warmup=0.0, threshold=1, max_dialogs=2))
    wire = Wire(detector)
    for number in range(3):
        branch = f"z9hG4bK-d{number}"
        wire.send(req("INVITE", branch=branch, call_id=f"d{number}"))
        wire.send(resp(200, branch=branch, call_id=f"d{number}"), src=PBX, dst=CALLER)
    assert detector.dialogs.evicted == 1
    wire.send(req("BYE", branch="z9hG4bK-db", to_tag="b1", call_id="d0", seq=2))
    assert wire.events == []


def test_a_flood_of_forged_byes_earns_a_short_ban_through_the_engine() -> None:
    engine = Engine([OutOfStateDetector(OutOfStateSettings(warmup=0.0))])
    results = [
        engine.inspect(observation(forged_bye(number), T0 + number * 0.01, src=CALLER, dst=PBX))
        for number in range(100)
    ]
    assert [e.severity for r in results for e in r.events] == [Severity.MEDIUM, Severity.HIGH]
    (ban,) = [ban for result in results for ban in result.bans]
    assert (ban.source, ban.rule, ban.returnable, ban.duration) == (
        CALLER,
        RULE_IN_DIALOG,
        False,  # bare UDP: possibly spoofed, so only the short ban
        60.0,
    )


def test_a_2xx_without_from_does_not_break_the_detector() -> None:
    # DialogTable.on_response raises LocalProtocolError for a dialog-creating
    # response without From: peer bytes, so the detector must absorb it.
    wire = Wire(OutOfStateDetector(SENSITIVE))
    invite = req("INVITE", branch="z9hG4bK-nf")
    wire.send(invite)
    ok = b"\r\n".join(
        line for line in resp(200, branch="z9hG4bK-nf").split(b"\r\n") if b"From" not in line
    )
    wire.send(ok, src=PBX, dst=CALLER)
    assert wire.events == []
    assert len(wire.detector.dialogs) == 0


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"threshold": 0}, "threshold"),
        ({"threshold": 5, "high_threshold": 4}, "high_threshold"),
        ({"window": 0.0}, "window"),
        ({"warmup": -1.0}, "warmup"),
        ({"realert_after": -1.0}, "realert_after"),
        ({"max_sources": 0}, "max_sources"),
        ({"max_transactions": 0}, "max_transactions"),
        ({"max_dialogs": 0}, "max_dialogs"),
    ],
)
def test_settings_are_validated(kwargs: dict[str, float], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        OutOfStateSettings(**kwargs)  # type: ignore[arg-type]
    assert info.value.key_path == key


def test_settings_are_a_frozen_contract_type() -> None:
    with pytest.raises(AttributeError):
        SENSITIVE.threshold = 3  # type: ignore[misc]


# -- the shared captures ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["svmap", "svwar", "svcrack", "sipp-invite-flood"])
@pytest.mark.parametrize("warmup", [0.0, OutOfStateSettings().warmup])
def test_captures_are_in_state(name: str, warmup: float) -> None:
    # Attack tools, but every message they sent fits a transaction or dialog:
    # scanning, enumeration, cracking and the INVITE flood (404 and its ACK on
    # the INVITE's branch) are other detectors' business. With no warm-up at
    # all this is a real check, not the warm-up hiding everything.
    detector = OutOfStateDetector(OutOfStateSettings(warmup=warmup, threshold=1))
    engine = Engine([detector])
    observations = list(observations_from_pcap(shared_path("testdata", "captures", f"{name}.pcap")))
    assert observations
    results = [engine.inspect(obs) for obs in observations]
    assert [event for result in results for event in result.events] == []
    assert all(result.verdict.allowed for result in results)


# -- bounds ------------------------------------------------------------------------------------


def test_fifty_thousand_spoofed_sources_cost_bounded_memory() -> None:
    # One datagram, a stray 200, "sent" from 50k spoofed addresses (the
    # reflection pattern): each source gets a tally until the bound, then the
    # least recent ones go, and memory stops growing.
    bound = 1000
    detector = OutOfStateDetector(OutOfStateSettings(warmup=0.0, max_sources=bound))
    data = resp(200, branch="z9hG4bK-never")
    message = parse_message(data, strict=False)

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
    assert detector._tallies.evicted == 50_000 - bound
    assert at_5k < bound * 2048  # ~1 KiB per tally (the documented cost)
    assert at_50k - at_5k < 64 * 1024, (at_5k, at_50k)  # full at 5k: no growth after


def test_forged_requests_from_distinct_sources_cost_bounded_memory() -> None:
    # Every forged BYE is a new transaction, tally and suspect: all bounded.
    bound = 200
    detector = OutOfStateDetector(
        OutOfStateSettings(warmup=0.0, max_sources=bound, max_transactions=bound, max_dialogs=bound)
    )

    def flood(first: int, last: int) -> None:
        for number in range(first, last):
            data = forged_bye(number)
            obs = Observation(
                T0 + number * 0.001, f"10.1.{number >> 8 & 255}.{number & 255}", 5060,
                PBX, 5060, "udp", Direction.UNKNOWN, data, parse_message(data, strict=False),
                None,
            )  # fmt: skip
            detector.observe(obs, Findings(None))

    tracemalloc.start()
    try:
        flood(0, 1_000)
        at_1k, _ = tracemalloc.get_traced_memory()
        flood(1_000, 4_000)
        at_4k, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert detector.tracked_sources == bound
    assert len(detector.transactions) == bound
    assert len(detector._suspects) == bound
    # Full at 1k. What still grows is the sip layer's own memo of parsed
    # header values (sipwarden.sip.memo: 4096 entries each, then emptied),
    # filling up with this flood's unique tags: bounded, and well below 1 MiB.
    assert at_4k - at_1k < 1024 * 1024, (at_1k, at_4k)
    assert at_4k < bound * 16 * 1024 + 1024 * 1024, at_4k


# -- robustness ----------------------------------------------------------------------------------

_TAGS = st.sampled_from([None, "a1", "b1", "x"])
_BRANCHES = st.sampled_from(["z9hG4bK-1", "z9hG4bK-2", "z9hG4bK", "old2543", None])
_METHODS = st.sampled_from(
    ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "INFO", "PRACK", "NOTIFY",
     "SUBSCRIBE", "REFER", "REGISTER", "MESSAGE"]
)  # fmt: skip


@st.composite
def sip_message(draw: st.DrawFn) -> bytes:
    """Plausible messages over a tiny vocabulary, so that they collide with each other."""
    branch = draw(_BRANCHES)
    via = f"SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP']))} {draw(st.sampled_from(['h1', 'h2']))}"
    headers = [
        f"Via: {via}" + (f";branch={branch}" if branch else ""),
        f"Call-ID: {draw(st.sampled_from(['c1', 'c2']))}",
    ]
    from_tag, to_tag = draw(_TAGS), draw(_TAGS)
    if draw(st.booleans()):
        headers.append("From: <sip:a@h>" + (f";tag={from_tag}" if from_tag else ""))
    if draw(st.booleans()):
        headers.append("To: <sip:b@h>" + (f";tag={to_tag}" if to_tag else ""))
    method = draw(_METHODS)
    headers.append(f"CSeq: {draw(st.integers(0, 3))} {draw(st.sampled_from([method, 'INVITE']))}")
    if draw(st.booleans()):
        start = f"SIP/2.0 {draw(st.sampled_from([100, 180, 183, 200, 202, 404, 481, 487]))} X"
    else:
        start = f"{method} sip:b@h SIP/2.0"
    return ("\r\n".join([start, *headers]) + "\r\n\r\n").encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.one_of(sip_message(), st.binary(max_size=200)),
            st.floats(0.0, 40.0),
            st.sampled_from(["192.0.2.1", "192.0.2.2", "2001:db8::1"]),
        ),
        max_size=40,
    )
)
def test_arbitrary_sequences_never_raise(steps: list[tuple[bytes, float, str]]) -> None:
    detector = OutOfStateDetector(
        OutOfStateSettings(warmup=0.0, threshold=1, max_transactions=4, max_dialogs=4)
    )
    now = T0
    for data, step, src in steps:
        now += step
        detector.observe(observation(data, now, src=src, dst="192.0.2.9"), Findings(None))
        if step > 30.0:
            detector.expire(now)
    assert len(detector.transactions) <= 4
    assert len(detector.dialogs) <= 4
