"""Out-of-state messages: requests, CANCELs, ACKs and responses that match no transaction or dialog.

A SIP element only acts on a message that fits the state it keeps: a BYE, a
re-INVITE or an INFO must belong to a dialog (RFC 3261 12.2.2: otherwise
"481 Call/Transaction Does Not Exist"), a CANCEL to a pending INVITE
transaction (9.2), an ACK to an INVITE's final response (17.2.1, 13.2.2.4), and
a response to a request (17.1.3). Messages that fit nothing are the tell of
call-teardown and injection attempts (forged BYE/CANCEL), of tools probing
with in-dialog requests, and of spoofing: responses arriving for requests
nobody sent are what a reflection or amplification attack against the
protected address looks like.

:class:`OutOfStateDetector` keeps a *passive* view of the signalling
(:mod:`.passive_state`): server transactions (every request starts one, the
responses that travel back go through it) and dialogs, each no more than its
key and its phase, so that the view holds many of them cheaply. Both match by
protocol identity (Via branch and sent-by, CSeq, Call-ID and tags), never by
direction, so the view is the same whether the monitor can tell inbound from
outbound or not, and requests are attributed to their transport source.

A passive monitor has blind spots, and each is handled so that it does not
turn into a flood of false alarms:

* **traffic that began before the monitor did** (a BYE for a call set up
  before start-up, the answer to a request sent before it): nothing is
  counted or rejected during ``warmup`` seconds after the first observation;
  after it, a request the detector counted as out of state and that the
  other side then *accepts* with a 2xx proves the dialog (or the INVITE
  transaction) existed: the count is taken back and the call leg adopted, so
  the rest of a long call set up before start-up is in state;
* **state the bounds pushed out** (a flood of requests evicts transactions,
  a flood of calls evicts dialogs): for ``window`` seconds after an eviction
  the kinds of finding that depend on the lost state are not counted;
* **single glitches** (a lost packet, a UDP reordering, a BYE racing a
  re-INVITE): one source must send ``threshold`` out-of-state messages within
  ``window`` seconds before an event is raised.

Events are :attr:`~sipwarden.engine.contract.EventKind.OUT_OF_STATE`, one per
source and rule when the threshold is crossed, then at most one per
``realert_after`` seconds with updated counts (an escalation to HIGH is
reported at once). In-line, the detector proposes the answer the RFC gives:
481 for an in-dialog request or a CANCEL that matches nothing, and a silent
drop for stray responses and ACKs (neither is ever answered).
"""

from __future__ import annotations

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
from sipwarden.errors import ConfigError, ProtocolError
from sipwarden.sip.dialog import DIALOG_IDLE_TIMEOUT, DialogState
from sipwarden.sip.message import Request, Response
from sipwarden.sip.timers import DEFAULT_TIMERS
from sipwarden.sip.transaction import (
    TransactionKey,
    cancel_key,
    server_key,
    server_key_of_response,
)

from .common import EvidenceTally, describe, require_durations, require_positive_counts, to_tag
from .passive_state import DialogKey, PassiveDialogs, PassiveTransactions, dialog_key

__all__ = [
    "RULE_ACK",
    "RULE_CANCEL",
    "RULE_IN_DIALOG",
    "RULE_RESPONSE",
    "OutOfStateDetector",
    "OutOfStateSettings",
]

RULE_IN_DIALOG: Final = "out_of_state.in_dialog_request"
RULE_CANCEL: Final = "out_of_state.cancel"
RULE_ACK: Final = "out_of_state.ack"
RULE_RESPONSE: Final = "out_of_state.response"

# Which findings depend on which state: a transaction the table evicted makes
# its CANCEL, its non-2xx ACK and its responses look stray; an evicted dialog
# makes its in-dialog requests and 2xx ACKs look out of state.
_NEEDS_TRANSACTIONS: Final = frozenset({RULE_CANCEL, RULE_ACK, RULE_RESPONSE})
_NEEDS_DIALOGS: Final = frozenset({RULE_IN_DIALOG, RULE_ACK})

# How often (observation time) the detector sweeps its tables when it is run
# without the engine, which sweeps once a second itself.
_SWEEP_EVERY: Final = 1.0
# 64*T1 (RFC 3261 17.1.2.2, Timer F): a non-INVITE request is answered within
# it; twice that covers an INVITE answered after a short ring. Suspects older
# than this are no longer waiting for their answer.
_ANSWER_WINDOW: Final = 2 * 64 * DEFAULT_TIMERS.t1
# RFC 6665 4.1.2.4: a NOTIFY may overtake the 2xx of its SUBSCRIBE (and RFC
# 3515's REFER); the subscription is pending until the transaction's 64*T1.
_SUBSCRIPTION_PENDING: Final = 64 * DEFAULT_TIMERS.t1

_REJECT_481: Final = "481 Call/Transaction Does Not Exist"


@dataclass(frozen=True, slots=True, kw_only=True)
class OutOfStateSettings:
    """How out-of-state messages are judged; every default says why it is what it is."""

    # Out-of-state messages from one source (and rule) within ``window`` before
    # an event. After warm-up and with the answer-proves-the-dialog rule, a
    # legitimate peer produces only glitches: a lost packet, a BYE racing a
    # re-INVITE, an ACK overtaking its 2xx, a few per hour even on a busy trunk.
    # Forged BYE/CANCEL and in-dialog probing must guess Call-IDs and tags and
    # send many: ten a minute (one every six seconds, sustained) is
    # unmistakably deliberate while a burst of glitches stays below it.
    threshold: int = 10
    # A count at which the event is HIGH (and earns a ban through the engine's
    # ban policy): a hundred a minute is tool speed, far beyond any glitch.
    high_threshold: int = 100
    window: float = 60.0
    # An ongoing attack is re-reported with updated counts at most this often.
    realert_after: float = 300.0
    # Seconds after the first observation during which nothing is counted or
    # rejected: the monitor (or a restarted gateway) has not seen how the
    # traffic in flight began. Five minutes covers Timer C (3 min, RFC 3261
    # 16.6 step 11: the longest an INVITE started before start-up still rings
    # and can be CANCELled, answered and ACKed) plus 64*T1 of retransmissions,
    # and the bulk of ordinary calls (a few minutes long); the longer calls are
    # recognised when their in-dialog requests are answered 2xx.
    warmup: float = 300.0
    # Propose verdicts in-line (481 / drop). Off: detect and report only.
    enforce: bool = True
    # Requests with a To tag that must belong to a dialog (RFC 3261 12.2: BYE,
    # re-INVITE; RFC 3311 UPDATE; RFC 6086 INFO; RFC 3515 REFER; RFC 6665
    # NOTIFY; RFC 3262 PRACK). Others with a To tag (OPTIONS, MESSAGE, a
    # SUBSCRIBE refresh) are tracked but not judged: UAs use them loosely.
    in_dialog_methods: frozenset[str] = frozenset(
        {"BYE", "INVITE", "UPDATE", "INFO", "REFER", "NOTIFY", "PRACK"}
    )
    # Methods whose 2xx creates a dialog (RFC 3261 12.1; RFC 6665 SUBSCRIBE;
    # RFC 3515 REFER), so that the NOTIFYs of subscriptions are in state.
    dialog_methods: frozenset[str] = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
    # Bounds (DESIGN: everything bounded; the whole engine stays under 200 MB
    # under a flood of spoofed sources, tests/engine/test_memory.py). A
    # (source, rule) tally costs about 1 KiB (tracemalloc), so 20k cost ~20 MiB.
    max_sources: int = 20_000
    # The passive view keeps a transaction as its key and phase: ~0.4 KiB
    # (tracemalloc, spoofed INVITE flood), so 65,536 cost ~26 MiB and hold
    # every transaction of ~2000 requests/s, each kept 64*T1 (32 s) after its
    # final response (Timers H, J, L). A forged in-dialog request also holds a
    # suspect (~0.55 KiB) until its answer, at most as many as transactions: a
    # flood of forged BYEs from 120k spoofed sources measured 137 MB for the
    # whole engine. An evicted transaction only costs a missed out-of-state
    # finding, and findings are suspended for a window after evictions (no
    # false alarms).
    max_transactions: int = 65_536
    # A dialog is its Call-ID, tags and state: ~0.3 KiB, so 65,536 calls at
    # once cost ~20 MiB (the call legs a 2xx proved are bounded alike).
    max_dialogs: int = 65_536
    # A confirmed dialog with no request for this long is assumed dead (its
    # BYE was lost): longer than a long call without session timers (RFC 4028
    # refreshes every 30 minutes by default).
    idle_dialog_timeout: float = DIALOG_IDLE_TIMEOUT

    def __post_init__(self) -> None:
        require_positive_counts(self, "threshold", "max_sources", "max_transactions", "max_dialogs")
        if self.high_threshold < self.threshold:
            raise ConfigError(
                f"must not be below threshold ({self.threshold})", key_path="high_threshold"
            )
        require_durations(self, "window", "idle_dialog_timeout")
        require_durations(self, "realert_after", "warmup", zero=True)


class _Finding(NamedTuple):
    """One out-of-state message, before the warm-up, blindness and thresholds judge it."""

    rule: str
    what: str  # the method, or "1xx".."6xx" for a response: the evidence breakdown
    reason: str
    verdict: Verdict
    transaction: TransactionKey | None = None  # its server transaction, to settle by the answer
    leg: DialogKey | None = None  # its call leg, adopted when the answer proves it


class _Suspect(NamedTuple):
    """A counted request waiting for its answer (which may prove it was in state after all)."""

    tallies: tuple[tuple[str, str], ...]
    responder: str  # the address the request went to: only its 2xx proves anything
    leg: DialogKey | None


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


def _in_dialog(method: str, state: DialogState) -> str:
    # "BYE in a terminated dialog", "ACK in an early dialog".
    adjective = state.value.lower()
    article = "an" if adjective[0] in "aeiou" else "a"
    return f"{method} in {article} {adjective} dialog"


class _Blindness:
    """Until when findings that depend on evicted state are not counted."""

    __slots__ = ("dialog_evictions", "dialogs_until", "transaction_evictions", "transactions_until")

    def __init__(self) -> None:
        self.transactions_until = float("-inf")
        self.dialogs_until = float("-inf")
        self.transaction_evictions = 0
        self.dialog_evictions = 0


class OutOfStateDetector:
    """Flags messages that match no transaction or dialog (see the module docstring).

    Public state for operators and tests: :attr:`transactions`,
    :attr:`dialogs` (the passive view) and :attr:`tracked_sources` (how many
    per-source tallies are held, at most ``settings.max_sources``).
    """

    name = "out_of_state"

    def __init__(self, settings: OutOfStateSettings | None = None) -> None:
        self.settings = settings = settings or OutOfStateSettings()
        self.transactions = PassiveTransactions(max_entries=settings.max_transactions)
        self.dialogs = PassiveDialogs(
            max_dialogs=settings.max_dialogs,
            idle_timeout=settings.idle_dialog_timeout,
            methods=settings.dialog_methods,
        )
        self._tallies: BoundedTable[tuple[str, str], EvidenceTally] = BoundedTable(
            max_entries=settings.max_sources,
            ttl=max(settings.window, settings.realert_after),
        )
        self._suspects: BoundedTable[TransactionKey, _Suspect] = BoundedTable(
            max_entries=settings.max_transactions, ttl=_ANSWER_WINDOW
        )
        # Call legs proven by a 2xx to a request that matched no dialog: the
        # dialog began before the monitor did.
        self._adopted: BoundedTable[tuple[str, str, str], None] = BoundedTable(
            max_entries=settings.max_dialogs, ttl=settings.idle_dialog_timeout
        )
        # (Call-ID, subscriber's tag) of SUBSCRIBE/REFER requests still waiting
        # for their 2xx (RFC 6665 4.1.2.4: the NOTIFY may come first).
        self._pending_subscriptions: BoundedTable[tuple[str, str], None] = BoundedTable(
            max_entries=settings.max_transactions, ttl=_SUBSCRIPTION_PENDING
        )
        self._blind = _Blindness()
        self._started: float | None = None
        self._next_sweep = float("-inf")

    @property
    def tracked_sources(self) -> int:
        return len(self._tallies)

    # -- the Detector protocol ---------------------------------------------------------

    def observe(self, obs: Observation, findings: Findings) -> None:
        message = obs.message
        if message is None:
            return  # unparsable: the malformed detector's business
        now = obs.ts
        if self._started is None:
            self._started = now
        if now >= self._next_sweep:
            self.expire(now)
        try:
            if isinstance(message, Request):
                finding = self._request(obs, message, now)
            elif isinstance(message, Response):
                finding = self._response(obs, message, now)
            else:  # pragma: no cover - a Message is a Request or a Response
                return
        except ProtocolError:
            # A header the matching needs (Via, CSeq, Call-ID, From, To) is
            # broken: the message cannot be placed, and the malformed detector
            # reports the broken rule.
            return
        self._note_evictions(now)
        if finding is not None:
            self._judge(obs, finding, findings, now)

    def expire(self, now: float) -> None:
        """Drop the transactions and dialogs whose time is up, and expired tallies and memories."""
        self._next_sweep = now + _SWEEP_EVERY
        self.transactions.expire(now)
        self.dialogs.expire(now)
        self._note_evictions(now)
        self._tallies.expire(now)
        self._suspects.expire(now)
        self._adopted.expire(now)
        self._pending_subscriptions.expire(now)

    # -- placing a message in the passive view -------------------------------------------

    def _request(self, obs: Observation, request: Request, now: float) -> _Finding | None:
        method = request.method
        # None: no Via (or, for RFC 2543, no Call-ID/From/CSeq): nothing can match it.
        key = server_key(request)
        transactions = self.transactions
        if key is not None and key in transactions:
            # A retransmission (absorbed), or the ACK of the INVITE's final response (17.2.3).
            if method == "ACK" and not transactions.acknowledge(key, request, now):
                return _Finding(
                    RULE_ACK,
                    method,
                    "ACK for an INVITE still in Proceeding: no final response to "
                    "acknowledge (RFC 3261 17.2.1)",
                    _DROP_ACK,
                )
            return None
        if method == "ACK":
            return self._ack(request, now)
        # Every new request starts a server transaction (17.2.3), out of state
        # or not, so that its answer matches and is not counted a second time.
        if key is not None:
            transactions.begin(key, now)
        if method == "CANCEL":
            if cancel_key(request) in transactions:
                return None
            return _Finding(
                RULE_CANCEL,
                method,
                "CANCEL matches no INVITE transaction (RFC 3261 9.2: answered 481)",
                _REJECT_CANCEL,
                key,
            )
        if not to_tag(request):
            if method in ("SUBSCRIBE", "REFER"):
                self._expect_subscription(request, now)
            return None
        leg = dialog_key(request)
        fit = self.dialogs.on_request(leg, method, now)
        if fit.fits or method not in self.settings.in_dialog_methods:
            return None  # in its dialog, or a method UAs use loosely
        if leg is not None and self._is_adopted(leg, now):
            return None
        if method == "NOTIFY" and self._subscription_pending(request):
            if leg is not None:
                self._adopted.put(leg, None, now)
            return None
        why = "a To tag, but no such dialog" if fit.state is None else _in_dialog(method, fit.state)
        reason = f"{why} (RFC 3261 12.2.2: answered 481)"
        return _Finding(RULE_IN_DIALOG, method, reason, _REJECT_IN_DIALOG, key, leg)

    def _ack(self, ack: Request, now: float) -> _Finding | None:
        # 17.1.1.3 / 13.2.2.4: the ACK for a 2xx is a transaction of its own
        # (a new branch) and belongs to the dialog the 2xx confirmed.
        leg = dialog_key(ack)
        fit = self.dialogs.on_request(leg, "ACK", now)
        if fit.fits or (leg is not None and self._is_adopted(leg, now)):
            return None
        reason = (
            "ACK matches no INVITE transaction and no dialog (RFC 3261 17.2.3, 13.2.2.4)"
            if fit.state is None
            else f"{_in_dialog('ACK', fit.state)}: no 2xx to acknowledge (RFC 3261 13.2.2.4)"
        )
        return _Finding(RULE_ACK, "ACK", reason, _DROP_ACK)

    def _response(self, obs: Observation, response: Response, now: float) -> _Finding | None:
        key = server_key_of_response(response)
        if key is not None and self.transactions.respond(key, response, now):
            # Only a response that answers an observed request may create a
            # dialog. Out-of-order ones (a 180 overtaken by its 200 on UDP)
            # change nothing and are benign.
            self.dialogs.on_response(response, now)
            if response.status >= 200:
                self._settle(key, obs, response, now)
            return None
        if self.dialogs.on_late_response(response, now):
            return None  # a late 2xx retransmission (13.3.1.4) after the transaction ended
        if key is None:
            return None  # no Via or CSeq: nothing could ever match it; it is malformed
        return _Finding(
            RULE_RESPONSE,
            _status_class(response.status),
            f"{response.status} answers no observed request (RFC 3261 17.1.3)",
            _DROP_RESPONSE,
        )

    def _note_evictions(self, now: float) -> None:
        # The bounds pushed state out (a flood of requests or calls, or a
        # transaction past its age): what depended on it would look out of
        # state, so those findings are not counted for one window.
        blind = self._blind
        evicted = self.transactions.evicted
        if evicted != blind.transaction_evictions:
            blind.transaction_evictions = evicted
            blind.transactions_until = now + self.settings.window
        evicted = self.dialogs.evicted
        if evicted != blind.dialog_evictions:
            blind.dialog_evictions = evicted
            blind.dialogs_until = now + self.settings.window

    def _is_adopted(self, leg: DialogKey, now: float) -> bool:
        if leg not in self._adopted:
            return False
        self._adopted.put(leg, None, now)  # in use: keep it as long as the call goes on
        return True

    def _expect_subscription(self, request: Request, now: float) -> None:
        call_id = request.call_id
        from_ = request.from_
        if call_id is not None and from_ is not None and from_.tag:
            self._pending_subscriptions.put((call_id, from_.tag), None, now)

    def _subscription_pending(self, notify: Request) -> bool:
        call_id = notify.call_id
        tag = to_tag(notify)
        return (
            call_id is not None
            and tag is not None
            and ((call_id, tag) in self._pending_subscriptions)
        )

    def _settle(
        self, key: TransactionKey, obs: Observation, response: Response, now: float
    ) -> None:
        suspect = self._suspects.pop(key)
        if suspect is None:
            return
        if 200 <= response.status < 300 and obs.src == suspect.responder:
            # The receiver accepted what matched nothing here: the dialog (or
            # the INVITE transaction) existed, the monitor just had not seen it
            # begin. Take the count back and adopt the call leg.
            for tally_key in suspect.tallies:
                tally = self._tallies.get(tally_key)
                if tally is not None:
                    tally.take_back(now)
            if suspect.leg is not None:
                self._adopted.put(suspect.leg, None, now)

    # -- judging -----------------------------------------------------------------------

    def _judge(self, obs: Observation, finding: _Finding, findings: Findings, now: float) -> None:
        settings = self.settings
        assert self._started is not None
        if now < self._started + settings.warmup:
            return
        if finding.rule in _NEEDS_TRANSACTIONS and now < self._blind.transactions_until:
            return
        if finding.rule in _NEEDS_DIALOGS and now < self._blind.dialogs_until:
            return
        if settings.enforce:
            findings.propose(finding.verdict)
        sample = describe(obs)
        keys = [(obs.src, finding.rule)]
        prefix = prefix64(obs.src)
        if prefix is not None:
            keys.append((prefix, finding.rule))
        counts = []
        for key in keys:
            tally = self._tallies.get_or_create(key, now, lambda: EvidenceTally(settings.window))
            counts.append(tally.add(now, (finding.what,), sample))
        if finding.transaction is not None:
            self._suspects.put(
                finding.transaction,
                _Suspect(tuple(keys), obs.dst, finding.leg),
                now,
            )
        address_count = counts[0]
        self._maybe_alert(obs, keys[0], finding, findings, now)
        if len(keys) > 1 and address_count < settings.threshold:
            # DESIGN: an IPv6 attacker rotating addresses inside one /64 is
            # counted per /64 too; reported only when no single address
            # already explains the burst.
            self._maybe_alert(obs, keys[1], finding, findings, now)

    def _maybe_alert(
        self,
        obs: Observation,
        key: tuple[str, str],
        finding: _Finding,
        findings: Findings,
        now: float,
    ) -> None:
        settings = self.settings
        tally = self._tallies.get(key)
        if tally is None:  # pragma: no cover - created just before
            return
        count = tally.count(now)
        if count >= settings.high_threshold:
            severity = Severity.HIGH
        elif count >= settings.threshold:
            severity = Severity.MEDIUM
        else:
            return
        if not tally.should_alert(severity, now, settings.realert_after):
            return
        source = key[0]
        breakdown = ", ".join(f"{what} x{n}" for what, n in sorted(tally.by_label.items()))
        findings.report(
            SecurityEvent(
                time=now,
                kind=EventKind.OUT_OF_STATE,
                severity=severity,
                source=source,
                source_port=obs.sport if source == obs.src else None,
                rule=finding.rule,
                summary=(
                    f"{count} {_NOUN[finding.rule]} from {source} within "
                    f"{settings.window:g} s ({breakdown})"
                ),
                evidence=Evidence(
                    messages=tuple(tally.samples),
                    counts={"in_window": count, "total": tally.total, **tally.by_label},
                    threshold=float(settings.threshold),
                    window=settings.window,
                ),
                detail={
                    "reason": finding.reason,
                    "latest": finding.what,
                    "high_threshold": settings.high_threshold,
                    "realert_after": settings.realert_after,
                    "proposed": finding.verdict.action.value
                    + (f" {finding.verdict.status}" if finding.verdict.status else ""),
                },
            )
        )


_NOUN: Final = {
    RULE_IN_DIALOG: "in-dialog requests matching no dialog",
    RULE_CANCEL: "CANCELs matching no INVITE transaction",
    RULE_ACK: "ACKs matching no INVITE transaction or dialog",
    RULE_RESPONSE: "responses matching no request",
}

_REJECT_IN_DIALOG: Final = Verdict(
    action=Action.REJECT, status=481, reason=_REJECT_481, rule=RULE_IN_DIALOG
)
_REJECT_CANCEL: Final = Verdict(
    action=Action.REJECT, status=481, reason=_REJECT_481, rule=RULE_CANCEL
)
# An ACK is never answered (RFC 3261 17: it has no response), and answering a response would
# reflect traffic at whoever the spoofer named: both are dropped silently.
_DROP_ACK: Final = Verdict(action=Action.DROP, reason="ACK out of state", rule=RULE_ACK)
_DROP_RESPONSE: Final = Verdict(
    action=Action.DROP, reason="response to no request", rule=RULE_RESPONSE
)
