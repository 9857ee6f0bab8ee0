"""Malformed messages and Max-Forwards abuse: enforcing the SIP message format.

Three things arrive here:

* observations whose bytes did not parse at all (``obs.error``, a
  :class:`~sipwarden.errors.RemoteProtocolError` naming the rule, the byte
  offset and the answer a server owes);
* messages the lenient monitor parser recovered, carrying
  :class:`~sipwarden.sip.message.Defect`\\ s (each a broken rule, an offset and
  the status a strict server would answer), plus the two structural checks
  a proxy applies before anything else (RFC 3261 16.3 step 1): the mandatory
  header fields (8.1.1) and single-instance fields given twice (7.3.1);
* Max-Forwards abuse: 0 or 1 on a request outside a dialog, which no honest
  request ever shows on arrival (a UAC starts at 70, RFC 3261 8.1.1.6, and a
  proxy takes one off per hop, 16.6 step 3) but a traceroute-style probe
  (``sipsak -T`` counts up from 0) or a request looping between proxies does;
  and values above ``max_forwards_ceiling``.

Every broken rule is sorted into a *class* (:func:`classify_rule`); the event
rule is ``malformed.<class>``, its ``detail`` names the RFC rules broken and
their byte offsets. Real phones send odd things, so one malformed message is
a LOW event; a burst from one source within ``window`` seconds is MEDIUM
(``burst_threshold``) or HIGH (``high_threshold``, which earns a ban). After
the first event for a source and class, further events come at most every
``realert_after`` seconds with updated counts, or at once when the severity
rises.

In-line, a request that broke a rule is answered with the status the parser
hinted (400, 505 for a SIP version other than 2.0, 513 for a message too
large, 483 for Max-Forwards 0: RFC 3261 16.3 step 3); a broken response, and
bytes that are not SIP at all, are dropped: a response is never answered, and
answering garbage would reflect traffic at a spoofed source.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, NamedTuple

from sipwarden.engine.contract import (
    Action,
    EventKind,
    Evidence,
    Observation,
    SecurityEvent,
    Severity,
    Verdict,
)
from sipwarden.engine.engine import Findings
from sipwarden.engine.state import BoundedTable, prefix64
from sipwarden.errors import ConfigError, RemoteProtocolError
from sipwarden.sip.checks import MANDATORY_RULE, SINGLE_INSTANCE_RULE, header_set_problems
from sipwarden.sip.message import Message, Request

from .common import EvidenceTally, describe, require_durations, require_positive_counts, to_tag

__all__ = [
    "CLASSES",
    "MalformedDetector",
    "MalformedSettings",
    "classify_rule",
]

CLASSES: Final = (
    # The parser gave up (no message was built) on a rule of the general
    # grammar (start line, header syntax), or the bytes are not SIP at all.
    "unparsable",
    "too_large",  # a parser bound (size, header count, line length) was exceeded
    "framing",  # Content-Length, line ends, folding: what a desync/smuggling probe breaks
    "version",  # a SIP-Version other than SIP/2.0 (RFC 3261 8.1.1.8: 505)
    "credentials",  # Digest credentials or challenges against RFC 2617/7616
    "headers",  # mandatory header fields missing or single-instance ones repeated
    "max_forwards",  # Max-Forwards 0/1 outside a dialog, too high, or out of range
    "grammar",  # every other rule of the RFC 3261 grammar (URIs, tags, parameters, ...)
)

# At most this many broken rules are listed per event, and this many rule
# names counted per tally: the vocabulary is ours, but bounded all the same.
_MAX_LISTED: Final = 16

_RULE_MANDATORY: Final = MANDATORY_RULE
_RULE_SINGLE: Final = SINGLE_INSTANCE_RULE
_RULE_MF_LOW: Final = "RFC 3261 16.3 step 3 / 8.1.1.6 Max-Forwards on arrival"
_RULE_MF_HIGH: Final = "RFC 3261 8.1.1.6 Max-Forwards SHOULD be 70"


_MAX_FORWARDS_LINE: Final = re.compile(rb"(?im)^max-forwards[ \t]*:")
# A start line that begins with a method token and names a SIP version: a
# request, even when the parser could not make sense of the rest.
_REQUEST_START: Final = re.compile(rb"[A-Za-z][A-Za-z0-9.!%*_+`'~-]{0,31}[ \t]")
# RFC 5389 6: a STUN message starts with two zero bits and carries this magic
# cookie at offset 4; RFC 5626 4.4.2 multiplexes STUN keep-alives on the SIP
# port, so they reach the SIP parser and fail it without being malformed SIP.
_STUN_COOKIE: Final = b"\x21\x12\xa4\x42"


def classify_rule(rule: str) -> str:
    """The class (one of :data:`CLASSES` but ``unparsable``/``headers``) of a broken rule.

    Rules are the strings the parser writes into
    :class:`~sipwarden.errors.RemoteProtocolError` and
    :class:`~sipwarden.sip.message.Defect`; classification goes by the RFC
    section and the rule's name, since a Defect does not say which header it
    came from.
    """
    if rule.startswith(("max_", "sipwarden limit")):
        return "too_large"
    if "Max-Forwards" in rule:
        return "max_forwards"
    if "SIP-Version" in rule:
        return "version"
    if "Content-Length" in rule or rule.startswith("RFC 3261 7 ") or "folding" in rule:
        return "framing"
    if rule.startswith(("RFC 2617", "RFC 7616", "RFC 7235", "RFC 8760")) or any(
        word in rule for word in ("credentials", "challenge", "auth-param", "nc-value")
    ):
        return "credentials"
    return "grammar"


@dataclass(frozen=True, slots=True, kw_only=True)
class MalformedSettings:
    """How malformed messages are judged; every default says why it is what it is."""

    # Malformed messages of one class from one source within ``window`` for a
    # MEDIUM event. A phone with a quirk repeats it on each of its messages,
    # and a phone sends a few a minute (re-REGISTER, OPTIONS keep-alive, a
    # call): ten a minute is more than a quirky phone's whole traffic and
    # what a fuzzer or a cracking tool with a broken stack produces in seconds.
    burst_threshold: int = 10
    # For HIGH (a ban through the engine's policy): a hundred broken messages
    # a minute is tool speed. A trunk carrying a quirk on every message of a
    # busy route can reach it: trunks belong on the ban allowlist.
    high_threshold: int = 100
    window: float = 60.0
    # An ongoing stream of malformed messages is re-reported at most this often.
    realert_after: float = 300.0
    # Max-Forwards at or below this on a request outside a dialog (no To
    # tag) is flagged: a request arrives with 70 minus the hops it took
    # (RFC 3261 8.1.1.6, 16.6 step 3), so 0 or 1 means a probe or a loop. -1
    # turns the check off.
    max_forwards_floor: int = 1
    # Max-Forwards above this is flagged. RFC 3261 20.22 allows 0-255 and
    # recommends starting at 70 (8.1.1.6), but values above 70 are legal and
    # real (RFC 4475's valid intmeth carries 255, esc01 87; carriers ask for
    # their own minimums), so by default only values outside the field's
    # range count -- they arrive as RFC 3261 20.22 defects. Set 70 where every
    # legitimate peer is known to start at 70.
    max_forwards_ceiling: int = 255
    # Check mandatory and single-instance header fields (RFC 3261 8.1.1, 7.3.1).
    check_headers: bool = True
    # Run the full grammar check (Message.collect_defects, cached) rather
    # than reading only the defects the framing parse recorded. The monitor's
    # sources run it already; in-line it is the strict gateway's validation.
    full_check: bool = True
    # Propose verdicts in-line (answer/drop). Off: detect and report only.
    enforce: bool = True
    # Bound on the (source, class) tallies kept (DESIGN: everything bounded):
    # about 1 KiB each (measured with tracemalloc), ~20 MiB at the bound; the
    # other detectors keep the same number of sources.
    max_sources: int = 20_000

    def __post_init__(self) -> None:
        require_positive_counts(self, "burst_threshold", "max_sources")
        if self.high_threshold < self.burst_threshold:
            raise ConfigError(
                f"must not be below burst_threshold ({self.burst_threshold})",
                key_path="high_threshold",
            )
        require_durations(self, "window")
        require_durations(self, "realert_after", zero=True)
        if not -1 <= self.max_forwards_floor <= 255:
            raise ConfigError(
                f"must be from -1 to 255, not {self.max_forwards_floor}",
                key_path="max_forwards_floor",
            )
        if not self.max_forwards_floor < self.max_forwards_ceiling <= 255:
            raise ConfigError(
                f"must be above max_forwards_floor and at most 255, not "
                f"{self.max_forwards_ceiling}",
                key_path="max_forwards_ceiling",
            )


class _Problem(NamedTuple):
    """One broken rule: which, where, what a strict server answers (None: nothing to answer)."""

    rule: str
    offset: int | None
    status: int | None
    reason: str


def _message_kind(raw: bytes) -> str:
    """``request``, ``response`` or ``not_sip`` for bytes the parser gave up on."""
    start = raw.lstrip(b"\r\n")
    line = start[:1024].split(b"\n", 1)[0]
    if line[:4].upper() == b"SIP/":
        return "response"
    if _REQUEST_START.match(line) is not None and b"SIP/" in line.upper():
        return "request"
    return "not_sip"


def _is_keepalive(raw: bytes) -> bool:
    """STUN (RFC 5389 6, RFC 5626 4.4.2) and the NUL/blank NAT keep-alives some UAs send."""
    if len(raw) >= 20 and raw[0] < 0x40 and raw[4:8] == _STUN_COOKIE:
        return True
    return len(raw) <= 4 and not raw.strip(b"\x00\r\n \t")


class MalformedDetector:
    """Reports unparsable and malformed messages and Max-Forwards abuse (see the module docstring).

    :attr:`tracked_sources` is how many (source, class) tallies are held, at
    most ``settings.max_sources``.
    """

    name = "malformed"

    def __init__(self, settings: MalformedSettings | None = None) -> None:
        self.settings = settings = settings or MalformedSettings()
        self._tallies: BoundedTable[tuple[str, str], EvidenceTally] = BoundedTable(
            max_entries=settings.max_sources,
            ttl=max(settings.window, settings.realert_after),
        )

    @property
    def tracked_sources(self) -> int:
        return len(self._tallies)

    # -- the Detector protocol ---------------------------------------------------------

    def observe(self, obs: Observation, findings: Findings) -> None:
        message = obs.message
        if message is None:
            self._unparsable(obs, findings)
            return
        problems = self._problems(message)
        if not problems:
            return
        is_request = isinstance(message, Request)
        kind = "request" if is_request else "response"
        by_class: dict[str, list[_Problem]] = {}
        for problem in problems:
            by_class.setdefault(_class_of(problem), []).append(problem)
        for cls, found in by_class.items():
            self._count(obs, cls, found, kind, findings)
        if self.settings.enforce:
            verdict = _verdict_for_message(is_request, problems, by_class)
            if verdict is not None:
                findings.propose(verdict)

    def expire(self, now: float) -> None:
        self._tallies.expire(now)

    # -- finding the problems ------------------------------------------------------------

    def _unparsable(self, obs: Observation, findings: Findings) -> None:
        error = obs.error
        if error is None or _is_keepalive(obs.raw):
            return
        rule = error.rule
        kind = _message_kind(obs.raw)
        # A strict parser stops at the first broken rule. The classes that name
        # a kind of attack (too large, framing, version, ...) stay what they are
        # in either parse mode; what would be generic grammar, and bytes that
        # are not SIP at all, are "unparsable".
        cls = classify_rule(rule)
        if kind == "not_sip" or cls == "grammar":
            cls = "unparsable"
        problem = _Problem(rule, error.offset, error.status_hint, error.reason)
        self._count(obs, cls, [problem], kind, findings, header=error.header)
        if not self.settings.enforce:
            return
        if kind == "request":
            # The gateway answers what the parser hinted (400, 505, 513).
            findings.propose(
                Verdict(
                    action=Action.REJECT,
                    status=error.status_hint,
                    reason=error.reason[:120],
                    rule=f"malformed.{cls}",
                )
            )
        else:
            findings.propose(_drop(cls, kind))

    def _problems(self, message: Message) -> list[_Problem]:
        settings = self.settings
        defects = message.collect_defects() if settings.full_check else message.defects
        problems = [
            _Problem(defect.rule, defect.offset, defect.status, defect.message)
            for defect in defects
        ]
        if settings.check_headers:
            problems.extend(_header_problems(message))
        if isinstance(message, Request):
            max_forwards = self._max_forwards_problem(message)
            if max_forwards is not None:
                problems.append(max_forwards)
        return problems

    def _max_forwards_problem(self, request: Request) -> _Problem | None:
        settings = self.settings
        try:
            value = request.max_forwards
        except RemoteProtocolError:
            return None  # out of range or not a number: already a RFC 3261 20.22 defect
        if value is None:
            return None  # absent: a proxy adds it (16.6 step 3); RFC 2543 peers omit it
        if value > settings.max_forwards_ceiling:
            return _Problem(
                _RULE_MF_HIGH,
                _max_forwards_offset(request),
                None,
                f"Max-Forwards {value} is above {settings.max_forwards_ceiling}: "
                "not what a UAC starts with (RFC 3261 8.1.1.6)",
            )
        if value > settings.max_forwards_floor:
            return None
        try:
            in_dialog = bool(to_tag(request))
        except RemoteProtocolError:
            return None  # a broken To: whether it is in a dialog is unknown
        if in_dialog:
            return None
        return _Problem(
            _RULE_MF_LOW,
            _max_forwards_offset(request),
            # 16.3 step 3: Max-Forwards 0 is not forwarded but answered 483;
            # 1 is still legal, so nothing is answered for it.
            483 if value == 0 else None,
            f"Max-Forwards {value} on a {request.method[:32]} outside a dialog: "
            "a probe or a loop (a UAC starts at 70, RFC 3261 8.1.1.6)",
        )

    # -- counting and reporting ----------------------------------------------------------

    def _count(
        self,
        obs: Observation,
        cls: str,
        problems: list[_Problem],
        kind: str,
        findings: Findings,
        *,
        header: str | None = None,
    ) -> None:
        settings = self.settings
        now = obs.ts
        rules = [problem.rule for problem in problems]
        sample = describe(obs)
        keys = [(obs.src, cls)]
        prefix = prefix64(obs.src)
        if prefix is not None:
            keys.append((prefix, cls))
        counts = []
        for key in keys:
            tally = self._tallies.get_or_create(key, now, lambda: EvidenceTally(settings.window))
            counts.append(tally.add(now, rules, sample))
        self._maybe_alert(
            obs, keys[0], cls=cls, problems=problems, kind=kind, header=header, findings=findings
        )
        if len(keys) > 1 and counts[0] < settings.burst_threshold:
            # DESIGN: IPv6 sources are counted per /64 too, so rotating
            # addresses inside one allocation does not reset a count; reported
            # when no single address already explains the burst.
            self._maybe_alert(
                obs,
                keys[1],
                cls=cls,
                problems=problems,
                kind=kind,
                header=header,
                findings=findings,
            )

    def _maybe_alert(
        self,
        obs: Observation,
        key: tuple[str, str],
        *,
        cls: str,
        problems: list[_Problem],
        kind: str,
        header: str | None,
        findings: Findings,
    ) -> None:
        settings = self.settings
        now = obs.ts
        tally = self._tallies.get(key)
        if tally is None:  # pragma: no cover - created just before
            return
        count = tally.window.total(now)
        if count >= settings.high_threshold:
            severity = Severity.HIGH
        elif count >= settings.burst_threshold:
            severity = Severity.MEDIUM
        else:
            severity = Severity.LOW
        if not tally.should_alert(severity, now, settings.realert_after):
            return
        source = key[0]
        listed = problems[:_MAX_LISTED]
        first = listed[0]
        status = next((problem.status for problem in listed if problem.status), None)
        detail: dict[str, object] = {
            "class": cls,
            "message": kind,
            "rules": tuple(dict.fromkeys(problem.rule for problem in listed)),
            "offsets": tuple(problem.offset for problem in listed),
            "problems": tuple(
                {
                    "rule": problem.rule,
                    "offset": problem.offset,
                    "status": problem.status,
                    "reason": problem.reason[:200],
                }
                for problem in listed
            ),
            "status_hint": status,
            "rules_seen": dict(tally.by_label),
        }
        if header is not None:
            detail["header"] = header
        noun = "message" if count == 1 else "messages"
        findings.report(
            SecurityEvent(
                time=now,
                kind=EventKind.MALFORMED,
                severity=severity,
                source=source,
                source_port=obs.sport if source == obs.src else None,
                rule=f"malformed.{cls}",
                summary=(
                    f"{count} malformed {noun} ({cls}) from {source} within "
                    f"{settings.window:g} s; latest breaks {first.rule}"
                ),
                evidence=Evidence(
                    messages=tuple(tally.samples),
                    counts={"in_window": count, "total": tally.total},
                    threshold=float(settings.burst_threshold),
                    window=settings.window,
                ),
                detail=detail,
            )
        )


def _class_of(problem: _Problem) -> str:
    if problem.rule in (_RULE_MANDATORY, _RULE_SINGLE):
        return "headers"
    if problem.rule in (_RULE_MF_LOW, _RULE_MF_HIGH):
        return "max_forwards"
    return classify_rule(problem.rule)


def _header_problems(message: Message) -> tuple[_Problem, ...]:
    # RFC 3261 8.1.1 names the fields every request carries, and 8.2.6.2 has
    # the response copy them (From, Call-ID, CSeq, Via; To with its tag):
    # the same five for both. Max-Forwards is not mandatory here: a proxy adds
    # it (16.6 step 3) and RFC 2543 peers omit it (RFC 4475 inv2543).
    missing, repeated = header_set_problems(message.headers.keys())
    if not missing and not repeated:
        return ()
    return tuple(
        _Problem(_RULE_MANDATORY, None, 400, f"no {key} header field") for key in missing
    ) + tuple(
        _Problem(_RULE_SINGLE, None, 400, f"{count} {key} header fields") for key, count in repeated
    )


def _max_forwards_offset(request: Request) -> int | None:
    raw = request.to_bytes()
    match = _MAX_FORWARDS_LINE.search(raw)
    return None if match is None else match.start()


def _drop(cls: str, kind: str) -> Verdict:
    reason = "not SIP" if kind == "not_sip" else "malformed response"
    return Verdict(action=Action.DROP, reason=reason, rule=f"malformed.{cls}")


def _verdict_for_message(
    is_request: bool, problems: list[_Problem], by_class: dict[str, list[_Problem]]
) -> Verdict | None:
    if not is_request:
        return _drop(next(iter(by_class)), "response")
    for problem in problems:
        if problem.status is not None:
            # The first broken rule decides, as it does for a strict parser.
            return Verdict(
                action=Action.REJECT,
                status=problem.status,
                reason=problem.reason[:120],
                rule=f"malformed.{_class_of(problem)}",
            )
    return None  # only Max-Forwards 1 or above the ceiling: legal, reported, passed on
