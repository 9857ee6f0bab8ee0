"""The engine pipeline: correlation, verdicts, ban policy, protection, bounds."""

from __future__ import annotations

import pytest

from sipwarden.detect.cracking import CrackingDetector
from sipwarden.engine.bans import BanSettings
from sipwarden.engine.contract import (
    Action,
    Direction,
    EventKind,
    Observation,
    SecurityEvent,
    Severity,
    Verdict,
)
from sipwarden.engine.correlation import Correlator, credentials_of
from sipwarden.engine.engine import NOTHING, Engine, Findings
from sipwarden.sip.parser import parse_message

PBX = ("192.0.2.10", 5060)


def register(
    src: str, seq: int, *, password_try: str | None = None, transport: str = "udp"
) -> Observation:
    auth = (
        f'Authorization: Digest username="100", realm="pbx", nonce="n{seq}", '
        f'uri="sip:pbx", response="{"0" * 32}"\r\n'
        if password_try is not None
        else ""
    )
    data = (
        f"REGISTER sip:pbx SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5060;branch=z9hG4bK{seq}\r\n"
        f"From: <sip:100@pbx>;tag=t{seq}\r\nTo: <sip:100@pbx>\r\nCall-ID: c1@{src}\r\n"
        f"CSeq: {seq} REGISTER\r\n{auth}Content-Length: 0\r\n\r\n"
    ).encode()
    return Observation(
        float(seq), src, 5060, *PBX, transport, Direction.INBOUND, data, parse_message(data), None
    )


def answer(request: Observation, status: int, reason: str) -> Observation:
    assert request.message is not None
    headers = "".join(
        f"{f.name}: {f.value}\r\n" for f in request.message.headers if f.key != "content-length"
    )
    data = f"SIP/2.0 {status} {reason}\r\n{headers}Content-Length: 0\r\n\r\n".encode()
    return Observation(
        request.ts + 0.01, *PBX, request.src, request.sport, request.transport,
        Direction.OUTBOUND, data, parse_message(data), None,
    )  # fmt: skip


def run(engine: Engine, observations: list[Observation]) -> list[object]:
    out: list[object] = []
    for observation in observations:
        inspection = engine.inspect(observation)
        out.extend(inspection.events)
        out.extend(inspection.bans)
    return out


def test_nothing_happening_returns_the_shared_empty_result() -> None:
    engine = Engine([])
    assert engine.inspect(register("198.51.100.7", 1)) is NOTHING


def test_a_source_that_registers_with_valid_credentials_is_protected_from_bans() -> None:
    engine = Engine([CrackingDetector()])
    request = register("198.51.100.7", 1, password_try="right")
    run(engine, [request, answer(request, 200, "OK")])
    assert engine.ban_policy.is_allowlisted("198.51.100.7")


def test_a_cracker_whose_guess_succeeds_is_banned_not_protected() -> None:
    engine = Engine([CrackingDetector()])
    flow: list[Observation] = []
    for seq in range(1, 13):
        request = register("203.0.113.9", seq, password_try=f"guess{seq}")
        flow += [request, answer(request, 401, "Unauthorized")]
    winner = register("203.0.113.9", 13, password_try="123")
    flow += [winner, answer(winner, 200, "OK")]
    results = run(engine, flow)
    rules = {r.rule for r in results if isinstance(r, SecurityEvent)}
    assert "cracking.succeeded" in rules
    assert not engine.ban_policy.is_allowlisted("203.0.113.9")
    assert engine.is_banned("203.0.113.9", 13.5)


class _Always:
    """A detector that reports one HIGH event for every request (for the policy tests)."""

    name = "always"

    def observe(self, obs: Observation, findings: Findings) -> None:
        if self.fires(obs):
            findings.report(
                SecurityEvent(
                    time=obs.ts,
                    kind=EventKind.FLOOD,
                    severity=Severity.HIGH,
                    source=obs.src,
                    rule="test.always",
                    summary="always",
                )
            )
            findings.propose(Verdict(action=Action.DROP, rule="test.always"))

    def fires(self, obs: Observation) -> bool:
        return obs.message is not None and obs.message.is_request

    def expire(self, now: float) -> None:
        pass


class _First(_Always):
    """Reports the first request only: what follows shows the ban at work."""

    name = "first"

    def __init__(self) -> None:
        self.fired = False

    def fires(self, obs: Observation) -> bool:
        fired, self.fired = self.fired, True
        return not fired and super().fires(obs)


def test_a_banned_source_is_dropped_until_its_ban_ends() -> None:
    settings = BanSettings(durations=(10.0, 100.0), unproven_duration=5.0)
    engine = Engine([_First()], bans=settings)
    assert engine.inspect(register("198.51.100.9", 1)).bans
    banned = engine.inspect(register("198.51.100.9", 2))
    assert (banned.verdict.action, banned.verdict.rule) == (Action.DROP, "ban.active")
    assert banned is engine.inspect(register("198.51.100.9", 3))  # one shared result
    assert engine.inspect(register("198.51.100.9", 7)) is NOTHING  # 1 + 5 s later


@pytest.mark.parametrize(
    ("proposed", "kept"),
    [
        ((Action.TARPIT, Action.ALLOW), "1"),
        ((Action.TARPIT, Action.REJECT, Action.TARPIT), "2"),
        ((Action.DROP, Action.REJECT), "1"),
        ((Action.REJECT, Action.REJECT), "1"),  # the first of equals stays
        ((Action.ALLOW,), ""),
    ],
)
def test_findings_keep_the_strictest_verdict_proposed(
    proposed: tuple[Action, ...], kept: str
) -> None:
    findings = Findings(None)
    for number, action in enumerate(proposed, start=1):
        findings.propose(Verdict(action=action, rule=str(number)))
    assert findings.verdict.rule == kept


def test_credentials_of_reads_digest_credentials_only() -> None:
    plain = register("198.51.100.7", 1).message
    assert plain is not None
    assert credentials_of(plain) == ()
    digest = 'Digest username="100", realm="pbx", nonce="n", uri="sip:pbx", response="{}"'
    added = (
        f"Proxy-Authorization: {digest.format('1' * 32)}\r\n"
        "Authorization: Basic YTpi\r\n"
        f"Authorization: {digest.format('2' * 32)}\r\n"
    )
    message = parse_message(plain.to_bytes().replace(b"\r\n\r\n", f"\r\n{added}\r\n".encode()))
    # Authorization before Proxy-Authorization; the Basic one is not ours to read.
    assert [credentials.response for credentials in credentials_of(message)] == [
        "2" * 32,
        "1" * 32,
    ]


def test_unproven_udp_sources_get_a_short_ban_and_returnable_ones_escalate() -> None:
    settings = BanSettings(durations=(10.0, 100.0), unproven_duration=1.0)
    engine = Engine([_Always()], bans=settings)
    (ban,) = engine.inspect(register("198.51.100.1", 1)).bans
    assert (ban.duration, ban.returnable) == (1.0, False)
    # TCP proves return routability (a completed handshake).
    first = engine.inspect(register("198.51.100.2", 1, transport="tcp")).bans
    assert [(b.duration, b.offence) for b in first] == [(10.0, 1)]
    # While banned: no second ban, and the in-line verdict is DROP.
    assert engine.inspect(register("198.51.100.2", 5, transport="tcp")).bans == ()
    again = engine.inspect(register("198.51.100.2", 20, transport="tcp")).bans
    assert [(b.duration, b.offence) for b in again] == [(100.0, 2)]


def test_allowlisted_networks_are_never_banned() -> None:
    engine = Engine([_Always()], bans=BanSettings(allowlist=("198.51.100.0/24",)))
    inspection = engine.inspect(register("198.51.100.77", 1))
    assert inspection.events
    assert inspection.bans == ()


def test_an_empty_custom_correlator_is_used_not_replaced() -> None:
    correlator = Correlator(max_requests=10)
    assert Engine([], correlator=correlator).correlator is correlator


def test_the_correlator_is_bounded() -> None:
    engine = Engine([], correlator=Correlator(max_requests=100))
    for seq in range(1, 5000):
        engine.inspect(register(f"10.{seq // 250}.{seq % 250}.1", seq))
    assert len(engine.correlator) <= 100


def test_allowlisted_trunks_are_reported_on_but_never_dropped_in_line() -> None:
    engine = Engine([_Always()], bans=BanSettings(allowlist=("198.51.100.0/24",)))
    inspection = engine.inspect(register("198.51.100.77", 1))
    assert inspection.events
    assert inspection.verdict.allowed
    assert not engine.inspect(register("203.0.113.1", 2)).verdict.allowed
