"""The engine: one inspection pipeline for the gateway and the monitor.

``Engine.inspect(observation)`` correlates the message with what came
before, lets every detector look at it, turns the worst verdict proposed into
the :class:`~.contract.Verdict`, and turns ban-worthy events into
:class:`~.contract.BanDecision`\\ s through the :class:`~.bans.BanPolicy`.
Sans-IO: time comes from the observation; nothing here opens a socket, a
file or a database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sipwarden.sip.message import Request, Response

from .bans import BanPolicy, BanSettings
from .contract import (
    ALLOW,
    Action,
    BanDecision,
    Inspection,
    Observation,
    SecurityEvent,
    Verdict,
)
from .correlation import Correlator, RequestRecord
from .state import BoundedTable

__all__ = ["Detector", "Engine", "Findings"]

NOTHING = Inspection()
# The result for a message from a source the engine banned: shared, like
# NOTHING, because a banned flood repeats it for every message it sends.
BANNED = Inspection(verdict=Verdict(action=Action.DROP, rule="ban.active"))
# The actions from the mildest to the strictest, ranked by position: looking an
# Enum member up in a dict runs Enum.__hash__ in Python, a tuple search compares
# identities (this is hot under attack, when every request gets a verdict).
_ACTIONS_BY_STRICTNESS = (Action.ALLOW, Action.TARPIT, Action.REJECT, Action.DROP)
# How often (in observation time) the engine sweeps expired state.
EXPIRE_EVERY = 1.0


class Findings:
    """What detectors report about one observation (filled in, then read by the engine)."""

    __slots__ = ("events", "request", "verdict")

    def __init__(self, request: RequestRecord | None) -> None:
        # For a response: the request it answers, when the engine saw it.
        self.request = request
        self.events: list[SecurityEvent] = []
        self.verdict: Verdict = ALLOW

    def report(self, event: SecurityEvent) -> None:
        self.events.append(event)

    def propose(self, verdict: Verdict) -> None:
        """Keep the strictest verdict proposed (drop > reject > tarpit > allow)."""
        rank = _ACTIONS_BY_STRICTNESS.index
        if rank(verdict.action) > rank(self.verdict.action):
            self.verdict = verdict


class Detector(Protocol):
    """A detector: sees every observation, reports events, proposes verdicts."""

    name: str

    def observe(self, obs: Observation, findings: Findings) -> None: ...

    def expire(self, now: float) -> None:
        """Drop state older than the detector's windows."""
        ...


class Engine:
    """Runs the detectors over each observation and decides verdicts and bans."""

    def __init__(
        self,
        detectors: Sequence[Detector],
        *,
        bans: BanSettings | None = None,
        correlator: Correlator | None = None,
        max_banned: int = 100_000,
    ) -> None:
        self.detectors = tuple(detectors)
        # "is not None": an empty Correlator is falsy (it has __len__).
        self.correlator = correlator if correlator is not None else Correlator()
        self.ban_policy = BanPolicy(bans or BanSettings())
        # Sources the engine itself has banned, until when: in-line, their
        # messages are dropped before any detector runs.
        self._banned: BoundedTable[str, float] = BoundedTable(
            max_entries=max_banned, ttl=max((bans or BanSettings()).durations)
        )
        self._next_expiry = 0.0

    def inspect(self, obs: Observation) -> Inspection:
        """Inspect one observation; returns the shared empty result when nothing happened."""
        if obs.ts >= self._next_expiry:
            self.expire(obs.ts)
        request = self._correlate(obs)
        findings = Findings(request)
        for detector in self.detectors:
            detector.observe(obs, findings)
        if request is not None and not findings.events:
            self._protect_registered(request, obs)
        if findings.verdict is not ALLOW and self.ban_policy.is_trusted(obs.src):
            # Allowlisted trunks are reported on but never dropped or rejected
            # in-line: a busy trunk over a rate limit must keep working.
            findings.verdict = ALLOW
        if not findings.events:
            banned_until = self._banned.get(obs.src)
            if banned_until is not None and obs.ts < banned_until:
                return BANNED
            if findings.verdict is ALLOW:
                return NOTHING
            return Inspection(verdict=findings.verdict)
        return Inspection(
            verdict=findings.verdict,
            events=tuple(findings.events),
            bans=self._decide_bans(findings.events, obs.ts),
        )

    def _correlate(self, obs: Observation) -> RequestRecord | None:
        message = obs.message
        if isinstance(message, Request):
            self.correlator.remember(obs, message)
            return None
        if isinstance(message, Response):
            return self.correlator.answer(message)
        return None

    def _protect_registered(self, request: RequestRecord, obs: Observation) -> None:
        """A source that registers with valid credentials is a customer: never banned.

        Called only when the detectors reported nothing about this answer, so
        a cracker whose guess finally succeeded (cracking.succeeded fires on
        that very 200) is not rewarded with protection.
        """
        message = obs.message
        if (
            isinstance(message, Response)
            and request.method == "REGISTER"
            and request.has_credentials
            and 200 <= message.status < 300
        ):
            self.ban_policy.protect(request.src, obs.ts)

    def _decide_bans(self, events: list[SecurityEvent], now: float) -> tuple[BanDecision, ...]:
        by_source: dict[str, list[SecurityEvent]] = {}
        for event in events:
            by_source.setdefault(event.source, []).append(event)
        decisions: list[BanDecision] = []
        for source, source_events in by_source.items():
            banned_until = self._banned.get(source)
            if banned_until is not None and now < banned_until:
                continue  # already banned: more evidence, not another ban
            decision = self.ban_policy.decide(
                source_events, returnable=self.correlator.is_returnable(source), now=now
            )
            if decision is not None:
                self._banned.put(source, now + decision.duration, now)
                decisions.append(decision)
        return tuple(decisions)

    def is_banned(self, source: str, now: float) -> bool:
        until = self._banned.get(source)
        return until is not None and now < until

    def expire(self, now: float) -> None:
        """Sweep every bounded table (the engine calls this itself once a second)."""
        self._next_expiry = now + EXPIRE_EVERY
        self.correlator.expire(now)
        self.ban_policy.expire(now)
        self._banned.expire(now)
        for detector in self.detectors:
            detector.expire(now)
