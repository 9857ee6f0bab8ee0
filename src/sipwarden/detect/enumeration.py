"""Extension enumeration: one source probing many extensions and learning which exist.

A scanner such as SIPVicious ``svwar`` sends a REGISTER (or INVITE, OPTIONS)
for extension after extension and reads the answers: a PBX that says
``404 Not Found`` for a user it does not know but challenges (401/407),
forbids (403) or accepts (200) a user it does know has told the attacker
which accounts to attack next. That is the information Asterisk's
``InvalidAccountID`` security event and fail2ban's ``No matching peer found``
filter line are about.

The detector judges the *answers*, not the probes: for every final response
the engine has correlated with its request (``findings.request``), it notes
the extension probed (``RequestRecord.target``: the To user of a REGISTER,
the Request-URI user otherwise) and whether the answer said "no such user"
(404/484/604) or "this user exists" (anything else that is not a server
failure). It fires when one source (an IPv6 source counted per /64) has had
``threshold`` distinct extensions answered within ``window`` seconds and most
of them did not exist: a sweep guesses, a phone or a PBX knows the numbers it
uses. An office of phones behind one NAT address registers many extensions
too, but every one of them exists; that is why the share of "unknown" answers
is part of the rule.

The event lists the *revealed* extensions (those answered unlike an unknown
user) and says whether the PBX leaks existence through its answers, which the
gateway can stop by equalising them. A PBX that already answers every user
alike (Asterisk ``alwaysauthreject``) leaves nothing to reveal and no unknown
answers to count: the cracking detector's ``cracking.unanswered_challenges``
rule sees that sweep instead.

Sans-IO: time comes from the observations; all state is bounded (sources,
extensions per source) and expires.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

from sipwarden.engine.contract import (
    Direction,
    EventKind,
    Evidence,
    Observation,
    SecurityEvent,
    Severity,
)
from sipwarden.engine.correlation import RequestRecord
from sipwarden.engine.engine import Findings
from sipwarden.engine.state import BoundedTable, prefix64
from sipwarden.errors import ConfigError
from sipwarden.sip.message import Response

from .common import MAX_EVIDENCE_MESSAGES, iso_time, require_durations, require_positive_counts

__all__ = ["EnumerationDetector", "EnumerationSettings"]

RULE_DISTINCT_TARGETS = "enumeration.distinct_targets"

# Extensions and addresses the detector keeps are cut to this length: they are
# written by the attacker, and a key must not cost more than a few dozen bytes.
MAX_TARGET_LENGTH = 64
# How many source addresses of one IPv6 /64 are kept as evidence.
MAX_ADDRESSES_KEPT = 8

_UNKNOWN = 0
_EXISTS = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class EnumerationSettings:
    """Knobs of :class:`EnumerationDetector`, each default explained where it is declared."""

    # svwar sweeps 11 extensions plus one random-user probe in about 60 ms. A
    # phone registers its own one or two lines, a PBX or a trunk calls a few
    # numbers a minute; eight different extensions answered within a minute,
    # most of them unknown, is past all of that and reached by svwar's eighth
    # answer.
    threshold: int = 8
    # Seconds over which distinct extensions are counted. A sweep is fast
    # (svwar: ~200 probes/s); a minute also catches a scanner slowed down to
    # one probe every 7 s, without remembering a whole day of normal calls.
    window: float = 60.0
    # The share of answered extensions that must have been "no such user".
    # A sweep mostly hits numbers that do not exist (svwar's capture: 10 of 12;
    # 6 of 8 when the rule fires); phones behind one NAT address register
    # extensions that all exist (share 0). Half keeps well clear of both.
    min_unknown_share: float = 0.5
    # Answers that mean "no such user": 404 Not Found, 484 Address Incomplete
    # (a dial plan rejecting the number) and 604 Does Not Exist Anywhere.
    unknown_statuses: frozenset[int] = frozenset({404, 484, 604})
    # Answers that say nothing about the user: a malformed or unsupported
    # request, a loop, an unknown dialog, and any server failure (5xx). Every
    # other final answer (401/407 challenges, 403, 2xx, 480, 486, 603, ...)
    # says the user exists.
    inconclusive_statuses: frozenset[int] = frozenset(
        {400, 405, 408, 413, 414, 415, 416, 420, 421, 481, 482, 483, 489, 491, 493}
        | set(range(500, 600))
    )
    # Requests whose target is a user of the PBX. In-dialog and transaction
    # plumbing (ACK, BYE, CANCEL, PRACK, UPDATE, INFO, NOTIFY) targets a
    # contact, not an extension.
    methods: frozenset[str] = frozenset({"REGISTER", "INVITE", "OPTIONS", "SUBSCRIBE", "MESSAGE"})
    # After the first event for a source, at most one more (with updated
    # counts) per five minutes while the sweep goes on: enough to follow it,
    # few enough for a person to read.
    realert_after: float = 300.0
    # Sources tracked at once (least recently seen evicted first). Measured:
    # ~0.8 KB for a source with one probe (a spoofed flood), ~8 KB for one
    # with ``max_targets_per_source`` extensions, so ten thousand simultaneous
    # sweeps cost at most ~80 MB.
    max_sources: int = 10_000
    # Extensions remembered per source, four times the threshold: the revealed
    # ones are kept first (an unknown one makes room for them); past the
    # limit, unknown extensions are only counted.
    max_targets_per_source: int = 32

    def __post_init__(self) -> None:
        require_positive_counts(self, "threshold", "max_sources", "max_targets_per_source")
        require_durations(self, "window", "realert_after")
        if not 0.0 <= self.min_unknown_share <= 1.0:
            raise ConfigError(
                f"must be from 0 to 1, not {self.min_unknown_share!r}", key_path="min_unknown_share"
            )


class _Probe:
    """One extension a source asked about, and the answer it got."""

    __slots__ = ("address", "kind", "method", "sport", "status", "ts")

    def __init__(  # noqa: PLR0917 - a private record, built in one place
        self, ts: float, kind: int, status: int, method: str, address: str, sport: int
    ) -> None:
        self.ts = ts
        self.kind = kind  # _UNKNOWN or _EXISTS
        self.status = status
        self.method = method
        self.address = address
        self.sport = sport


class _Source:
    """What one source (an IPv4 address or an IPv6 /64) probed within the window."""

    __slots__ = (
        "addresses",
        "last_alert",
        "spilled",
        "spilled_at",
        "spilled_unknown",
        "targets",
        "unknown",
    )

    def __init__(self) -> None:
        # Oldest answer first: pruning the window pops from the front.
        self.targets: OrderedDict[str, _Probe] = OrderedDict()
        self.unknown = 0  # how many of ``targets`` were answered as unknown
        # Extensions past ``max_targets_per_source``: counted, not kept.
        self.spilled = 0
        self.spilled_unknown = 0
        self.spilled_at = 0.0
        self.last_alert: float | None = None
        self.addresses: list[str] = []

    def prune(self, oldest: float) -> None:
        targets = self.targets
        while targets:
            probe = next(iter(targets.values()))
            if probe.ts >= oldest:
                break
            targets.popitem(last=False)
            if probe.kind == _UNKNOWN:
                self.unknown -= 1
        if self.spilled and self.spilled_at < oldest:
            self.spilled = self.spilled_unknown = 0

    @property
    def distinct(self) -> int:
        return len(self.targets) + self.spilled

    @property
    def unknown_total(self) -> int:
        return self.unknown + self.spilled_unknown


class EnumerationDetector:
    """Fires ``enumeration.distinct_targets`` when a source sweeps extensions (see module doc)."""

    name = "enumeration"

    def __init__(self, settings: EnumerationSettings | None = None) -> None:
        self.settings = settings or EnumerationSettings()
        # One shared string per method name, so probes do not each keep a copy.
        self._methods = {method: method for method in self.settings.methods}
        self._sources: BoundedTable[str, _Source] = BoundedTable(
            max_entries=self.settings.max_sources,
            ttl=max(self.settings.window, self.settings.realert_after),
        )

    def __len__(self) -> int:
        """How many sources are tracked (for tests and metrics)."""
        return len(self._sources)

    def observe(self, obs: Observation, findings: Findings) -> None:
        message = obs.message
        # Only answers are judged. An answer travelling inbound answers a
        # request our own side sent (the PBX calling out): not a probe.
        if not isinstance(message, Response) or obs.direction is Direction.INBOUND:
            return
        status = message.status
        record = findings.request
        if status < 200 or record is None or not record.target:
            return
        method = self._methods.get(record.method)
        if method is None:
            return
        settings = self.settings
        if status in settings.unknown_statuses:
            kind = _UNKNOWN
        elif status in settings.inconclusive_statuses:
            return
        else:
            kind = _EXISTS
        now = obs.ts
        key = prefix64(record.src) or record.src
        state = self._sources.get_or_create(key, now, _Source)
        state.prune(now - settings.window)
        if key != record.src and record.src not in state.addresses:
            if len(state.addresses) >= MAX_ADDRESSES_KEPT:
                state.addresses.pop(0)
            state.addresses.append(record.src)
        probe = _Probe(now, kind, status, method, record.src, record.sport)
        self._note(state, record.target[:MAX_TARGET_LENGTH], probe)
        event = self._judge(state, key, record, now=now)
        if event is not None:
            findings.report(event)

    def _note(self, state: _Source, target: str, probe: _Probe) -> None:
        targets = state.targets
        known = targets.get(target)
        if known is None:
            if len(targets) >= self.settings.max_targets_per_source:
                # Full: from here on extensions are counted, not kept (one
                # asked again past this point counts again). A revealed one is
                # what the report is for, so it takes the place of the oldest
                # unknown one, which goes on being counted.
                victim = _oldest_unknown(targets) if probe.kind == _EXISTS else None
                state.spilled += 1
                state.spilled_at = probe.ts
                if victim is None:
                    state.spilled_unknown += probe.kind == _UNKNOWN
                    return
                del targets[victim]
                state.unknown -= 1
                state.spilled_unknown += 1
            targets[target] = probe
            state.unknown += probe.kind == _UNKNOWN
            return
        # Asked again (a retry, or another method): refresh it. "Exists" is
        # sticky: once the PBX revealed a user, a later 404 does not unreveal it.
        state.targets.move_to_end(target)
        known.ts = probe.ts
        if probe.kind == _EXISTS and known.kind == _UNKNOWN:
            state.unknown -= 1
            state.targets[target] = probe

    def _judge(
        self, state: _Source, key: str, record: RequestRecord, *, now: float
    ) -> SecurityEvent | None:
        settings = self.settings
        distinct = state.distinct
        if distinct < settings.threshold:
            return None
        unknown = state.unknown_total
        if unknown < settings.min_unknown_share * distinct:
            return None
        if state.last_alert is not None and now - state.last_alert < settings.realert_after:
            return None
        state.last_alert = now
        return self._event(state, key, record, now=now)

    def _event(self, state: _Source, key: str, record: RequestRecord, now: float) -> SecurityEvent:
        settings = self.settings
        probes = state.targets
        distinct = state.distinct
        unknown = state.unknown_total
        revealed = sorted(
            (target for target, probe in probes.items() if probe.kind == _EXISTS),
            key=_extension_order,
        )
        answers = Counter(str(probe.status) for probe in probes.values())
        unknown_answers = Counter(
            probe.status for probe in probes.values() if probe.kind == _UNKNOWN
        )
        unknown_answer = unknown_answers.most_common(1)[0][0] if unknown_answers else None
        # The PBX leaks existence when it answered some users unlike the
        # unknown ones: that difference is the attacker's oracle, and what the
        # gateway removes by answering every user alike.
        leaks = bool(revealed) and unknown > 0
        detail: dict[str, object] = {
            "revealed": revealed,
            "pbx_leaks_existence": leaks,
            "unknown_answer": unknown_answer,
            "answers": dict(answers),
            "methods": sorted({probe.method for probe in probes.values()}),
        }
        if key != record.src:
            detail["prefix"] = key
            detail["addresses"] = list(state.addresses)
        shown = ", ".join(revealed[:16]) if revealed else "none"
        summary = (
            f"{record.src} probed {distinct} extensions within {settings.window:g} s, "
            f"{unknown} answered as unknown; revealed: {shown}"
        )
        return SecurityEvent(
            time=now,
            kind=EventKind.ENUMERATION,
            severity=Severity.HIGH,
            source=record.src,
            source_port=record.sport,
            rule=RULE_DISTINCT_TARGETS,
            summary=summary,
            account=None,  # many accounts: the revealed ones are in ``detail``
            evidence=Evidence(
                messages=_evidence_lines(probes),
                counts={
                    "distinct_targets": distinct,
                    "unknown": unknown,
                    "revealed": len(revealed),
                },
                threshold=settings.threshold,
                window=settings.window,
            ),
            detail=detail,
        )

    def expire(self, now: float) -> None:
        self._sources.expire(now)


def _oldest_unknown(targets: OrderedDict[str, _Probe]) -> str | None:
    for target, probe in targets.items():
        if probe.kind == _UNKNOWN:
            return target
    return None


def _extension_order(target: str) -> tuple[int, int, str]:
    """Numbers in numeric order (99 before 100), then names alphabetically."""
    if target.isdigit() and len(target) < 19:
        return (0, int(target), target)
    return (1, 0, target)


def _evidence_lines(probes: OrderedDict[str, _Probe]) -> tuple[str, ...]:
    """A bounded sample of the probes: the revealed extensions first, then the unknown ones."""
    ordered = sorted(probes.items(), key=lambda item: (item[1].kind != _EXISTS, item[1].ts))
    return tuple(
        f"{iso_time(probe.ts)} {probe.address}:{probe.sport} {probe.method} "
        f"{target!r} -> {probe.status}"
        for target, probe in ordered[:MAX_EVIDENCE_MESSAGES]
    )
