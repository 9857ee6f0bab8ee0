"""The contract between the rooms: observations in; verdicts, security events and bans out.

The gateway (in-line) and the monitor (tap) build the same :class:`Observation`
for every SIP message they see and hand it to the same engine, so whatever
the monitor finds in a capture the gateway would have found in-line.

Per-message records (:class:`Observation`) are NamedTuples: one is built for
every datagram at flood rates, and a NamedTuple costs a fraction of a frozen
dataclass. Everything that leaves the engine (verdicts, events, bans) is a
frozen, slotted, keyword-only dataclass (DESIGN convention 4).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from sipwarden.errors import RemoteProtocolError
    from sipwarden.sip.message import Message

__all__ = [
    "ALLOW",
    "Action",
    "BanDecision",
    "Direction",
    "EventKind",
    "Evidence",
    "Inspection",
    "Observation",
    "SecurityEvent",
    "Severity",
    "Verdict",
    "iso_time",
]


class Direction(enum.Enum):
    """Which way a message travels relative to the protected PBX."""

    INBOUND = "inbound"  # from the untrusted side towards the PBX
    OUTBOUND = "outbound"  # from the PBX (or its trunks) towards the outside
    UNKNOWN = "unknown"  # a tap that cannot tell: requests are attributed to their source


class Observation(NamedTuple):
    """One SIP message as seen on the wire, parsed or not.

    ``ts`` is in seconds (the capture's clock when replaying, the wall clock
    in-line): the engine never reads a clock of its own. Exactly one of
    ``message`` and ``error`` is set.
    """

    ts: float
    src: str
    sport: int
    dst: str
    dport: int
    transport: str  # "udp", "tcp", "tls", "ws", "wss", "sctp"
    direction: Direction
    raw: bytes
    message: Message | None
    error: RemoteProtocolError | None


class Action(enum.Enum):
    ALLOW = "allow"
    DROP = "drop"  # silently: nothing goes back to a probable spoofer
    REJECT = "reject"  # answer with ``status``
    TARPIT = "tarpit"  # hold the answer back to slow a scanner down


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What to do with the message that was inspected."""

    action: Action
    status: int | None = None  # for REJECT
    reason: str = ""
    rule: str = ""

    @property
    def allowed(self) -> bool:
        return self.action is Action.ALLOW


ALLOW = Verdict(action=Action.ALLOW)
"""The verdict for the common case, shared so the hot path allocates nothing."""


class EventKind(enum.Enum):
    """The documented kinds of security events (the JSON ``kind`` field)."""

    SCANNER = "scanner"
    ENUMERATION = "enumeration"
    CRACKING = "cracking"
    FLOOD = "flood"
    OUT_OF_STATE = "out_of_state"
    MALFORMED = "malformed"
    CANARY = "canary"
    SESSION_LIMIT = "session_limit"


class Severity(enum.IntEnum):
    INFO = 10
    LOW = 20
    MEDIUM = 30
    HIGH = 40
    CRITICAL = 50

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """Why an event fired: the messages that triggered it and the counts against the rule.

    ``messages`` are one-line summaries of the triggering messages (time,
    source, start line, the fields that matched), a bounded sample.
    ``counts`` are the measured values (e.g. ``{"failures": 31}``),
    ``threshold`` and ``window`` the rule's limit and window in seconds.
    """

    messages: tuple[str, ...] = ()
    counts: Mapping[str, int | float] = field(default_factory=dict)
    threshold: float | None = None
    window: float | None = None

    def lines(self) -> tuple[str, ...]:
        """The evidence as text: the counts against the rule, then the messages."""
        measured = ", ".join(f"{name}={value}" for name, value in self.counts.items())
        limit = []
        if self.threshold is not None:
            limit.append(f"threshold {self.threshold:g}")
        if self.window is not None:
            limit.append(f"in {self.window:g} s")
        head = "; ".join(part for part in (measured, " ".join(limit)) if part)
        return ((head,) if head else ()) + self.messages


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityEvent:
    """Something an administrator must know: who did what, by which rule, and the proof."""

    time: float
    kind: EventKind
    severity: Severity
    source: str  # the transport source address: never a header the attacker wrote
    rule: str  # e.g. "cracking.failures_per_source"
    summary: str
    account: str | None = None
    source_port: int | None = None
    evidence: Evidence = field(default_factory=Evidence)
    detail: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class BanDecision:
    """A request to stop hearing from ``source`` for ``duration`` seconds.

    ``returnable`` says whether the source proved it receives our replies
    (answered a challenge, echoed our tag, or spoke TCP/TLS): without that, a
    source may be spoofed, and only a short ban is decided.
    """

    time: float
    source: str  # an address, or a prefix such as "2001:db8::/64"
    duration: float
    rule: str
    reason: str
    returnable: bool
    offence: int = 1  # how many bans this source has earned so far (escalation)
    # The proof, as text: the triggering messages and the counts against the rule
    # (see Evidence.lines), kept with the ban so `sipwarden bans show` can explain it.
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Inspection:
    """Everything the engine decided about one observation."""

    verdict: Verdict = ALLOW
    events: tuple[SecurityEvent, ...] = ()
    bans: tuple[BanDecision, ...] = ()


def iso_time(ts: float) -> str:
    """A contract timestamp as ISO 8601 UTC with milliseconds and ``Z``.

    The one spelling of time in events, bans, evidence lines and reports.
    """
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
