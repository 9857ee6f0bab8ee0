"""Active-session limits: how many calls one source, or one account, may have at once.

Toll fraud runs calls in parallel: an attacker who has cracked one extension
starts as many premium-rate calls as the PBX lets it, and every minute of
every one of them is billed. A cap on simultaneous calls per account and per
source address bounds the damage per minute (the way Kamailio's dialog
profiles with ``get_profile_size()``, or Asterisk's ``call-limit``, are used).

A call is counted from its initial INVITE (a request without a To tag) until
it ends:

* a final failure (>= 300, digest challenges included: the retried INVITE is
  counted afresh) or a CANCEL ends a call that was not answered;
* a 2xx confirms it (RFC 3261 13.2.2.4) and it then counts until its BYE
  (RFC 3261 15), or until ``max_call_duration`` when the BYE was lost;
* an INVITE that never gets a final answer is forgotten after
  ``pending_timeout``.

Counting from the INVITE rather than from the 2xx is what makes the limit a
limit: an attacker firing 50 INVITEs at once would otherwise pass them all,
none being answered yet. ``count_pending=False`` restores "confirmed calls
only" for monitoring.

When an initial INVITE would take a source or an account past its limit,
the detector reports ``session_limit.per_source`` / ``.per_account``
(MEDIUM: a fraud and policy signal, not proof of an attack) and proposes
``REJECT`` with ``reject_status``; the rejected INVITE is not counted. A
monitor cannot reject: when the PBX answers such a call, its 2xx starts the
count then (the engine's correlation says who asked).

The account is the Digest username when the INVITE carries credentials, the
From user otherwise (``engine.correlation.account_of``). IPv6 sources are
counted per /64: an office's phones each have their own address there, and
the /64 is what an IPv4 office's one NAT address is.

Calls are keyed by Call-ID (RFC 3261 8.1.1.4: unique per call), so a BYE from
either side finds its call; a BYE must also carry the caller's tag (as From
or To tag), so a forged BYE needs more than a Call-ID to free a slot.

Bounded: at most ``max_pending`` unanswered and ``max_calls`` confirmed calls
(oldest evicted first, their counts released); the per-source and
per-account counters only hold keys with calls in the tables.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from sipwarden.engine.contract import (
    Action,
    Direction,
    EventKind,
    Evidence,
    Observation,
    SecurityEvent,
    Severity,
    Verdict,
)
from sipwarden.engine.correlation import account_of
from sipwarden.engine.engine import Findings
from sipwarden.engine.state import BoundedTable, prefix64
from sipwarden.errors import ConfigError, RemoteProtocolError
from sipwarden.sip.message import Request, Response

from .common import describe, require_durations, require_positive_counts

__all__ = [
    "RULE_PER_ACCOUNT",
    "RULE_PER_SOURCE",
    "SessionLimitDetector",
    "SessionSettings",
]

RULE_PER_SOURCE = "session_limit.per_source"
RULE_PER_ACCOUNT = "session_limit.per_account"

# Call-IDs and accounts are written by the peer: keys are cut to this length
# so one table entry cannot cost more than a few hundred bytes.
MAX_KEY_LENGTH = 128


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionSettings:
    """Knobs of :class:`SessionLimitDetector` (the config's ``[detect.session_limit]``)."""

    # Simultaneous calls per source address (per /64 for IPv6). A small office
    # behind one NAT address (up to ~40 people, rarely more than half of them
    # on the phone at once) stays under 20; a fraudster with one cracked
    # account is stopped by the account limit long before, with several
    # accounts by this one. Trunks carrying more belong in a raised limit.
    per_source_limit: int = 20
    # Simultaneous calls per account (one extension). Call waiting, an
    # attended transfer (two calls) and a three-way conference (two calls)
    # all fit in five; a multi-line receptionist phone does too. Thirty
    # parallel premium-rate calls from one extension do not.
    per_account_limit: int = 5
    # Count a call from its INVITE, not only once answered (see module doc).
    count_pending: bool = True
    # 486 Busy Here: the caller's phone shows "busy", which is what an
    # exhausted line limit is. 503 would invite RFC 3263 fail-over to another
    # server and a retry (RFC 3261 21.5.4), i.e. more attempts, not fewer.
    reject_status: int = 486
    # Accounts never counted: RFC 3323 anonymous callers all share the From
    # user "anonymous", so every withheld-number call arriving from a trunk
    # would share one account's five slots.
    ignored_accounts: frozenset[str] = frozenset({"anonymous"})
    # A confirmed call whose BYE never came (lost, or the monitor missed it)
    # stops counting after four hours: longer than nearly every real call
    # without session timers (sip.dialog's idle timeout is the same), short
    # enough that a lost BYE does not block a line for a day.
    max_call_duration: float = 4 * 3600.0
    # An INVITE without a final answer is forgotten after three minutes:
    # RFC 3261 16.6 step 11's Timer C ("greater than 3 minutes") is when a
    # proxy gives up on it too.
    pending_timeout: float = 180.0
    # Confirmed calls tracked at once (~300 bytes each: ~15 MB). Far above
    # what any PBX sipwarden fronts carries; confirming needs the PBX's 2xx,
    # so a spoofed flood cannot fill this table.
    max_calls: int = 50_000
    # Unanswered INVITEs tracked at once. Separate from the confirmed calls
    # so that a flood of spoofed INVITEs evicts only other unanswered ones,
    # never the record of a running call.
    max_pending: int = 20_000
    # After an event for a source or an account, at most one more per five
    # minutes while its INVITEs keep being rejected: a limit hit repeats on
    # every call attempt, and one event says it all. Verdicts are not suppressed.
    realert_after: float = 300.0
    # Sources and accounts remembered for re-alert suppression.
    max_alert_keys: int = 10_000

    def __post_init__(self) -> None:
        require_positive_counts(
            self,
            "per_source_limit",
            "per_account_limit",
            "max_calls",
            "max_pending",
            "max_alert_keys",
        )
        if not 400 <= self.reject_status <= 699:
            raise ConfigError(
                f"must be a 4xx-6xx failure status, not {self.reject_status}",
                key_path="reject_status",
            )
        require_durations(self, "max_call_duration", "pending_timeout", "realert_after")


class _Call:
    """One tracked call: who it is counted against, and until when."""

    __slots__ = ("account", "counted", "deadline", "source", "tag")

    def __init__(self, source: str, account: str | None, tag: str | None, deadline: float) -> None:
        self.source = source  # the counting key: an address, or an IPv6 /64
        self.account = account
        self.tag = tag  # the caller's From tag
        self.deadline = deadline
        self.counted = False


class SessionLimitDetector:
    """Caps simultaneous calls per source and per account (see module doc)."""

    name = "session_limit"

    def __init__(self, settings: SessionSettings | None = None) -> None:
        self.settings = settings = settings or SessionSettings()
        # Call-ID -> call, oldest first (deadlines grow with insertion, so
        # expiry pops from the front).
        self._pending: OrderedDict[str, _Call] = OrderedDict()
        self._confirmed: OrderedDict[str, _Call] = OrderedDict()
        self._by_source: dict[str, int] = {}
        self._by_account: dict[str, int] = {}
        self._alerted: BoundedTable[tuple[str, str], float] = BoundedTable(
            max_entries=settings.max_alert_keys, ttl=settings.realert_after
        )
        self._reject = {
            rule: Verdict(
                action=Action.REJECT,
                status=settings.reject_status,
                reason="too many simultaneous calls",
                rule=rule,
            )
            for rule in (RULE_PER_SOURCE, RULE_PER_ACCOUNT)
        }

    # -- what tests and metrics read ---------------------------------------------------

    def active(self, *, source: str | None = None, account: str | None = None) -> int:
        """Calls counted against ``source`` (an address or a /64) or ``account``."""
        if source is not None:
            return self._by_source.get(_source_key(source), 0)
        if account is not None:
            return self._by_account.get(account, 0)
        return sum(self._by_source.values())

    def __len__(self) -> int:
        """Calls tracked (unanswered and confirmed)."""
        return len(self._pending) + len(self._confirmed)

    # -- observations ---------------------------------------------------------------

    def observe(self, obs: Observation, findings: Findings) -> None:
        message = obs.message
        if isinstance(message, Request):
            method = message.method
            if method == "INVITE":
                if obs.direction is not Direction.OUTBOUND:
                    self._on_invite(obs, message, findings)
            elif method == "BYE":
                self._on_bye(message)
            elif method == "CANCEL":
                call_id = _call_id(message)
                if call_id is not None:
                    self._end(self._pending, call_id)
        elif isinstance(message, Response) and message.status >= 200:
            self._on_final(obs, message, findings)

    def _on_invite(self, obs: Observation, request: Request, findings: Findings) -> None:
        try:
            to = request.to
            if to is not None and to.tag is not None:
                return  # a re-INVITE inside a call (RFC 3261 14): not a new call
            from_ = request.from_
            tag = from_.tag if from_ is not None else None
            call_id = request.call_id
        except RemoteProtocolError:
            return  # the malformed-message detector's case; nothing to count by
        if call_id is None:
            return
        call_id = call_id[:MAX_KEY_LENGTH]
        if call_id in self._pending or call_id in self._confirmed:
            return  # a retransmission of a call already counted
        settings = self.settings
        now = obs.ts
        source = _source_key(obs.src)
        account = self._account(account_of(request))
        over = False
        active = self._by_source.get(source, 0)
        if active >= settings.per_source_limit:
            over = True
            self._limit_hit(RULE_PER_SOURCE, source, account, active, obs=obs, findings=findings)
        if account is not None:
            active = self._by_account.get(account, 0)
            if active >= settings.per_account_limit:
                over = True
                self._limit_hit(
                    RULE_PER_ACCOUNT, account, account, active, obs=obs, findings=findings
                )
        if over:
            return  # rejected: not a call (a monitor counts it if the PBX answers it)
        call = _Call(source, account, tag, now + settings.pending_timeout)
        self._insert(self._pending, call_id, call, settings.max_pending)
        if settings.count_pending:
            self._count(call)

    def _on_final(self, obs: Observation, response: Response, findings: Findings) -> None:
        try:
            cseq = response.cseq
            if cseq is None or cseq.method != "INVITE":
                return
            call_id = response.call_id
        except RemoteProtocolError:
            return
        if call_id is None:
            return
        call_id = call_id[:MAX_KEY_LENGTH]
        if response.status >= 300:
            # A failure ends an unanswered call; a failed re-INVITE does not
            # end a confirmed one (RFC 3261 14.1).
            self._end(self._pending, call_id)
            return
        if call_id in self._confirmed:
            return  # a 2xx retransmission, or the answer to a re-INVITE
        call = self._pending.pop(call_id, None)
        if call is None:
            # Answered without our counting it: an INVITE rejected here that
            # a monitored PBX took anyway, or one this detector never saw.
            # An answer travelling inbound answers the PBX's own outbound call,
            # which is not limited (its INVITE was not counted either).
            record = findings.request
            if record is None or record.method != "INVITE" or obs.direction is Direction.INBOUND:
                return
            try:
                from_ = response.from_
                tag = from_.tag if from_ is not None else None
            except RemoteProtocolError:
                tag = None
            call = _Call(_source_key(record.src), self._account(record.account), tag, 0.0)
        call.deadline = obs.ts + self.settings.max_call_duration
        self._insert(self._confirmed, call_id, call, self.settings.max_calls)
        self._count(call)

    def _on_bye(self, request: Request) -> None:
        try:
            call_id = request.call_id
            if call_id is None:
                return
            call_id = call_id[:MAX_KEY_LENGTH]
            call = self._confirmed.get(call_id) or self._pending.get(call_id)
            if call is None:
                return
            if call.tag is not None:
                # Either party may hang up: the caller's tag is the From tag
                # of its BYE and the To tag of the callee's (RFC 3261 12.2.1.1).
                from_, to = request.from_, request.to
                tags = (from_.tag if from_ else None, to.tag if to else None)
                if call.tag not in tags:
                    return
        except RemoteProtocolError:
            return
        if self._end(self._confirmed, call_id) is None:
            self._end(self._pending, call_id)  # RFC 3261 15: a BYE may end an early dialog

    # -- the tables -------------------------------------------------------------------

    def _account(self, account: str | None) -> str | None:
        if not account or account in self.settings.ignored_accounts:
            return None
        return account[:MAX_KEY_LENGTH]

    def _insert(
        self, table: OrderedDict[str, _Call], call_id: str, call: _Call, bound: int
    ) -> None:
        while len(table) >= bound:
            _, oldest = table.popitem(last=False)
            self._release(oldest)
        table[call_id] = call

    def _end(self, table: OrderedDict[str, _Call], call_id: str) -> _Call | None:
        call = table.pop(call_id, None)
        if call is not None:
            self._release(call)
        return call

    def _count(self, call: _Call) -> None:
        if call.counted:
            return
        call.counted = True
        self._by_source[call.source] = self._by_source.get(call.source, 0) + 1
        if call.account is not None:
            self._by_account[call.account] = self._by_account.get(call.account, 0) + 1

    def _release(self, call: _Call) -> None:
        if not call.counted:
            return
        call.counted = False
        _decrement(self._by_source, call.source)
        if call.account is not None:
            _decrement(self._by_account, call.account)

    # -- events ---------------------------------------------------------------------

    def _limit_hit(
        self,
        rule: str,
        key: str,
        account: str | None,
        active: int,
        *,
        obs: Observation,
        findings: Findings,
    ) -> None:
        findings.propose(self._reject[rule])
        now = obs.ts
        last = self._alerted.get((rule, key))
        if last is not None and now - last < self.settings.realert_after:
            return
        self._alerted.put((rule, key), now, now)
        settings = self.settings
        if rule == RULE_PER_SOURCE:
            limit = settings.per_source_limit
            who = obs.src if key == obs.src else f"{obs.src} (counted as {key})"
        else:
            limit = settings.per_account_limit
            who = f"account {key!r} from {obs.src}"
        detail: dict[str, object] = {"reject_status": settings.reject_status}
        if key != obs.src and rule == RULE_PER_SOURCE:
            detail["prefix"] = key
        findings.report(
            SecurityEvent(
                time=now,
                kind=EventKind.SESSION_LIMIT,
                severity=Severity.MEDIUM,
                source=obs.src,
                source_port=obs.sport,
                account=account,
                rule=rule,
                summary=f"{who} has {active} calls up (limit {limit}); a new INVITE was refused",
                evidence=Evidence(
                    messages=(describe(obs),),
                    counts={"active_calls": active},
                    threshold=float(limit),
                ),
                detail=detail,
            )
        )

    # -- housekeeping -----------------------------------------------------------------

    def expire(self, now: float) -> None:
        for table in (self._pending, self._confirmed):
            while table:
                call = next(iter(table.values()))
                if call.deadline > now:
                    break
                table.popitem(last=False)
                self._release(call)
        self._alerted.expire(now)


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


def _source_key(address: str) -> str:
    # An IPv4-mapped address is an IPv4 client, not a member of one big /64.
    if ":" not in address or address[:7].lower() == "::ffff:":
        return address
    return prefix64(address) or address


def _call_id(message: Request) -> str | None:
    try:
        call_id = message.call_id
    except RemoteProtocolError:
        return None
    return None if call_id is None else call_id[:MAX_KEY_LENGTH]
