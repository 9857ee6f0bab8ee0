"""Helpers every detector shares: evidence lines and safe access to attacker-written fields."""

from __future__ import annotations

import math
from collections.abc import Iterable

from sipwarden.engine.contract import Observation, Severity, iso_time
from sipwarden.engine.state import SlidingWindow
from sipwarden.errors import ConfigError, RemoteProtocolError
from sipwarden.sip.message import Message, Request, Response

__all__ = [
    "MAX_EVIDENCE_MESSAGES",
    "EvidenceTally",
    "describe",
    "iso_time",
    "require_durations",
    "require_positive_counts",
    "safe_user_agent",
    "to_tag",
]

# Evidence keeps a bounded sample of the triggering messages.
MAX_EVIDENCE_MESSAGES = 8


def safe_user_agent(obs: Observation) -> str | None:
    message = obs.message
    if message is None:
        return None
    agent = message.headers.get("user-agent") or message.headers.get("server")
    return agent[:120] if agent else None


def describe(obs: Observation) -> str:
    """One line of evidence: time, transport source, start line, User-Agent.

    Everything the attacker wrote is cut to a bounded length and printed with
    ``repr``-style escaping by the log sinks, never interpreted.
    """
    message = obs.message
    where = f"{iso_time(obs.ts)} {obs.transport} {obs.src}:{obs.sport} -> {obs.dst}:{obs.dport}"
    if message is None:
        rule = obs.error.rule if obs.error is not None else "unparsable"
        return f"{where} unparsable ({rule})"
    if isinstance(message, Request):
        start = f"{message.method[:32]} {message.uri[:120]}"
    elif isinstance(message, Response):
        start = f"{message.status} {message.reason[:40]}"
    else:  # pragma: no cover - a Message is a Request or a Response
        start = "?"
    try:
        cseq = message.cseq
        seq = f" CSeq {cseq}" if cseq is not None else ""
    except RemoteProtocolError:
        seq = ""
    agent = safe_user_agent(obs)
    return f"{where} {start}{seq}" + (f" UA={agent!r}" if agent else "")


# Distinct labels counted per tally; more are counted in the total only, so
# what an attacker writes cannot grow a tally.
MAX_LABELS = 16


class EvidenceTally:
    """What one source did against one rule: a sliding count, totals per label, a sample.

    The label vocabulary (methods, status classes, broken RFC rules) is
    bounded by ``MAX_LABELS``, the sample by ``MAX_EVIDENCE_MESSAGES``; the
    detector keeps ``alerted_at``/``alerted_severity`` for re-alert suppression.
    """

    __slots__ = ("alerted_at", "alerted_severity", "by_label", "samples", "total", "window")

    def __init__(self, window: float) -> None:
        self.window = SlidingWindow(window)
        self.total = 0
        self.by_label: dict[str, int] = {}
        self.samples: list[str] = []
        self.alerted_at: float | None = None
        self.alerted_severity = Severity.INFO

    def add(self, now: float, labels: Iterable[str], sample: str) -> int:
        """Count one message under ``labels``; returns the count in the window."""
        self.total += 1
        by_label = self.by_label
        for label in labels:
            if label in by_label:
                by_label[label] += 1
            elif len(by_label) < MAX_LABELS:
                by_label[label] = 1
        samples = self.samples
        if len(samples) >= MAX_EVIDENCE_MESSAGES:
            del samples[0]
        samples.append(sample)
        return self.window.add(now)

    def take_back(self, now: float) -> None:
        """Undo one count (a message later proved innocent).

        The -1 lands in the current bucket, the +1 it cancels in an older one
        (usually the same: answers come within milliseconds); :meth:`count`
        clamps at zero for the moment the older bucket has left the window first.
        """
        self.window.add(now, -1)

    def count(self, now: float) -> int:
        return max(0, self.window.total(now))

    def should_alert(self, severity: Severity, now: float, realert_after: float) -> bool:
        """Re-alert suppression: report the first crossing, then at most once per
        ``realert_after`` seconds, and at once when the severity rises."""
        last = self.alerted_at
        if last is not None and severity <= self.alerted_severity and now - last < realert_after:
            return False
        self.alerted_at = now
        self.alerted_severity = severity
        return True


# -- settings checks: every detector's errors name the key (the config adds its section) --


def require_positive_counts(settings: object, *names: str) -> None:
    """Counts, thresholds and bounds: integers of at least 1."""
    for name in names:
        value = getattr(settings, name)
        if not value >= 1:
            raise ConfigError(f"must be at least 1, not {value!r}", key_path=name)


def require_durations(settings: object, *names: str, zero: bool = False) -> None:
    """Windows and timeouts in seconds: finite and above 0 (or 0 too, with ``zero``)."""
    for name in names:
        value = getattr(settings, name)
        if not (math.isfinite(value) and (value >= 0 if zero else value > 0)):
            bound = ">= 0" if zero else "> 0"
            raise ConfigError(f"must be a number of seconds {bound}, not {value!r}", key_path=name)


def to_tag(message: Message) -> str | None:
    """The To tag; attacker bytes may make the view raise, which callers handle."""
    to = message.to
    return None if to is None else to.tag
