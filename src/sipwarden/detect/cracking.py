"""Credential cracking: guessing passwords against the PBX's digest authentication.

SIP digest authentication (RFC 3261 22, RFC 7616) lets anybody who can send
a request try a password: the PBX challenges (401/407 with a nonce), the
client answers with a hash of the password and the nonce, and the PBX says
yes (2xx) or no (401/407/403 again). SIPVicious ``svcrack`` does that for a
list of passwords in well under a second. Asterisk reports the pieces as
security events (``ChallengeSent``, ``ChallengeResponseFailed``,
``InvalidPassword``); fail2ban's asterisk filter bans on the log lines they
produce. This detector reads the same facts from the wire, the request and
its answer paired by the engine (``findings.request``):

``cracking.failures_per_source``
    authentication failures (credentials answered 401/407/403 without
    ``stale=true``) from one source within a window;
``cracking.distributed``
    failures against one account from many distinct sources: a botnet that
    keeps each address under the per-source limit;
``cracking.nonce_reuse``
    one challenge answered with several different responses while everything
    else that enters the hash stayed the same: only the password changed, so
    the client is guessing without asking for a fresh nonce;
``cracking.nonce_not_issued``
    failed credentials carrying a nonce the PBX never issued to this source
    (a nonce harvested elsewhere and replayed, or made up);
``cracking.unanswered_challenges``
    many challenges sent to a source that never returns credentials: a
    scanner learning which users exist from a PBX that challenges them, or
    sweeping one that answers every user alike;
``cracking.succeeded``
    a 2xx for credentials on an account this source failed on several times
    before: the guess landed. CRITICAL: the account's password must change.

A person who mistypes a password once and then gets it right raises nothing.
IPv6 sources are counted per /64, so rotating addresses in one allocation
does not reset a counter. Sans-IO and bounded: time comes from the
observations; every table has a maximum size and an expiry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

from sipwarden.engine.contract import (
    Direction,
    EventKind,
    Evidence,
    Observation,
    SecurityEvent,
    Severity,
)
from sipwarden.engine.correlation import RequestRecord, carries_credentials, credentials_of
from sipwarden.engine.engine import Findings
from sipwarden.engine.state import BoundedTable, SlidingWindow, prefix64
from sipwarden.errors import RemoteProtocolError
from sipwarden.sip.digest import DigestCredentials
from sipwarden.sip.message import Request, Response

from .common import (
    MAX_EVIDENCE_MESSAGES,
    describe,
    iso_time,
    require_durations,
    require_positive_counts,
)

__all__ = [
    "RULE_DISTRIBUTED",
    "RULE_FAILURES",
    "RULE_NONCE_NOT_ISSUED",
    "RULE_NONCE_REUSE",
    "RULE_SUCCEEDED",
    "RULE_UNANSWERED",
    "CrackingDetector",
    "CrackingSettings",
]

RULE_FAILURES = "cracking.failures_per_source"
RULE_DISTRIBUTED = "cracking.distributed"
RULE_NONCE_REUSE = "cracking.nonce_reuse"
RULE_NONCE_NOT_ISSUED = "cracking.nonce_not_issued"
RULE_UNANSWERED = "cracking.unanswered_challenges"
RULE_SUCCEEDED = "cracking.succeeded"

# Attacker-written strings (user names, responses) and PBX nonces are cut to
# this length before they become keys: a key must cost tens of bytes, not a
# whole header.
MAX_KEY_LENGTH = 64
# How many source addresses of one IPv6 /64 are kept as evidence.
MAX_ADDRESSES_KEPT = 8
# Recent final answers remembered per source to recognise retransmissions (a
# lost answer makes the client resend and the PBX answer again: one attempt).
RECENT_ANSWERS = 8
# Distinct responses kept per challenge: past it, the count stops growing (the
# rule has long fired by then).
MAX_RESPONSES_PER_CHALLENGE = 16
# Challenges whose answers are compared per source (``cracking.nonce_reuse``):
# a guesser hammers one challenge; eight covers several accounts at once.
MAX_CHALLENGES_COMPARED = 8
# Re-alert timestamps kept per source (six rules, and one per cracked account).
MAX_ALERT_KEYS = 16
_CHALLENGES = frozenset({401, 407})

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True)
class CrackingSettings:
    """Knobs of :class:`CrackingDetector`, each default explained where it is declared."""

    # svcrack tries a password every ~6 ms (25 in 140 ms in the capture); a
    # phone with a wrong password fails once per registration retry (every
    # 20-60 s on common phones), so even three phones behind one NAT after a
    # password change stay under ten a minute. Ten failures within a minute is
    # reached by svcrack in ~60 ms and by no phone. Slower guessing is left to
    # ``cracking.distributed`` and ``cracking.succeeded``.
    failures_threshold: int = 10
    failures_window: float = 60.0
    # A user's own devices (desk phone, softphone, mobile app on two
    # networks) with a stale password fail from at most three or four
    # addresses; five distinct sources failing on one account within an hour
    # is a botnet spreading its guesses thin.
    distributed_sources: int = 5
    distributed_window: float = 3600.0
    # Two different responses to one challenge with identical inputs already
    # mean two passwords; three leaves room for a client whose user re-entered
    # the password mid-transaction, and no real client goes further.
    nonce_reuse_threshold: int = 3
    # How long issued nonces and answered challenges are remembered: as long
    # as the longest common nonce lifetime (Kamailio's default 300 s; a
    # credential on an older nonce is answered stale by the PBX anyway).
    nonce_window: float = 300.0
    # Failures with a nonce this source was never given. One can be innocent
    # (the sensor started after the challenge, a phone moved networks); three
    # in ``nonce_window`` cannot.
    nonce_not_issued_threshold: int = 3
    # A phone without a configured password, or a trunk whose OPTIONS ping is
    # challenged, collects one or two unanswered challenges a minute; phones
    # answer their challenge within milliseconds, so ten in a minute with not
    # one set of credentials back is a scanner (svwar's 12-extension sweep
    # against an ``alwaysauthreject`` PBX is one).
    unanswered_threshold: int = 10
    unanswered_window: float = 60.0
    # Failures on an account before a success that count as a cracked
    # password. fail2ban's default ``maxretry`` of 5 is the community's line
    # between a typo and an attack: a person retypes a password once or twice.
    success_min_failures: int = 5
    # How long failures on an account from one source are remembered for
    # ``cracking.succeeded``: an hour catches a slow guesser that lands late.
    failure_memory: float = 3600.0
    # Answers to credentials that mean "wrong password". 401/407 with
    # ``stale=true`` are excluded in code: the password was right, the nonce
    # had expired (RFC 7616 3.3).
    failure_statuses: frozenset[int] = frozenset({401, 403, 407})
    # After the first event of a rule for a source (an account, for
    # ``cracking.distributed``), at most one more with updated counts per five
    # minutes while the attack goes on.
    realert_after: float = 300.0
    # Sources tracked at once, least recently seen evicted first (an active
    # attacker is always recent). Measured: ~1 KB for a challenged or failing
    # source, a phone that registers likewise; every per-source limit below
    # filled costs ~9 KB, so the worst case is ~180 MB. Raise it for platforms
    # with more registered devices than this.
    max_sources: int = 20_000
    # Accounts tracked for distributed cracking (~1 KB each; ~5 KB with
    # ``max_sources_per_account`` sources): ~50 MB at worst.
    max_accounts: int = 20_000
    max_sources_per_account: int = 64
    # Accounts remembered per source for ``cracking.succeeded`` (a cracker
    # attacks one account at a time; a NAT'd office has a handful failing).
    max_accounts_per_source: int = 16
    # Nonces remembered per source as issued: phones answer within
    # milliseconds, so even a NAT'd office registering at once needs a few.
    max_nonces_per_source: int = 16

    def __post_init__(self) -> None:
        require_positive_counts(
            self,
            "failures_threshold",
            "distributed_sources",
            "nonce_reuse_threshold",
            "nonce_not_issued_threshold",
            "unanswered_threshold",
            "success_min_failures",
            "max_sources",
            "max_accounts",
            "max_sources_per_account",
            "max_accounts_per_source",
            "max_nonces_per_source",
        )
        require_durations(
            self,
            "failures_window",
            "distributed_window",
            "nonce_window",
            "unanswered_window",
            "failure_memory",
            "realert_after",
        )


class _Attempt:
    """A failed (or challenged) attempt, kept as evidence until an event needs it."""

    __slots__ = ("account", "address", "method", "sport", "status", "ts")

    def __init__(self, ts: float, record: RequestRecord, account: str, status: int) -> None:
        self.ts = ts
        self.address = record.src
        self.sport = record.sport
        self.method = record.method
        self.account = account
        self.status = status

    def line(self) -> str:
        return (
            f"{iso_time(self.ts)} {self.address}:{self.sport} {self.method[:32]} "
            f"user={self.account!r} -> {self.status}"
        )


class _AccountFailures:
    """Failures of one source on one account, for ``cracking.succeeded``."""

    __slots__ = ("count", "last")

    def __init__(self) -> None:
        self.count = 0
        self.last = -math.inf


class _Source:
    """What one source (an IPv4 address or an IPv6 /64) did; parts are built when first needed."""

    __slots__ = (
        "accounts",
        "addresses",
        "alerts",
        "challenges",
        "failures",
        "guesses",
        "issued",
        "last_credentials",
        "not_issued",
        "recent",
        "samples",
    )

    def __init__(self) -> None:
        self.failures: SlidingWindow | None = None
        self.challenges: SlidingWindow | None = None
        self.not_issued: SlidingWindow | None = None
        # Plain dicts and lists, built on first use: a spoofed flood creates one
        # of these per address, so each must cost as little as possible. Dicts
        # keep insertion order, which the pruning below relies on (oldest first).
        self.accounts: dict[str, _AccountFailures] | None = None
        # nonce -> when the PBX issued it to this source
        self.issued: dict[str, float] | None = None
        # hash of a challenge's hash inputs -> (first seen, distinct responses)
        self.guesses: dict[int, tuple[float, list[str]]] | None = None
        self.last_credentials = -math.inf
        self.alerts: dict[str, float] | None = None
        self.recent: list[int] | None = None  # hashes of the last final answers
        self.samples: list[_Attempt] | None = None
        self.addresses: list[str] | None = None


class _Account:
    """The sources that failed on one account (distributed cracking)."""

    __slots__ = ("last_alert", "overflow", "overflow_at", "samples", "sources")

    def __init__(self) -> None:
        # source key -> last failure, least recently failed first
        self.sources: dict[str, float] = {}
        self.overflow = 0  # distinct sources past ``max_sources_per_account``: counted only
        self.overflow_at = -math.inf
        self.samples: list[_Attempt] = []
        self.last_alert: float | None = None

    def add(self, key: str, now: float, window: float, limit: int) -> int:
        """Note a failure from ``key``; the distinct sources within ``window``."""
        sources = self.sources
        oldest = now - window
        while sources:
            first_key, seen = next(iter(sources.items()))
            if seen >= oldest:
                break
            del sources[first_key]
        if self.overflow and self.overflow_at < oldest:
            self.overflow = 0
        if key in sources:
            del sources[key]  # re-inserted last: the most recent
            sources[key] = now
        elif len(sources) < limit:
            sources[key] = now
        else:
            self.overflow += 1
            self.overflow_at = now
        return len(sources) + self.overflow


class CrackingDetector:
    """Detects password guessing against digest authentication (see the module doc)."""

    name = "cracking"

    def __init__(self, settings: CrackingSettings | None = None) -> None:
        self.settings = settings = settings or CrackingSettings()
        self._sources: BoundedTable[str, _Source] = BoundedTable(
            max_entries=settings.max_sources,
            ttl=max(
                settings.failures_window,
                settings.unanswered_window,
                settings.nonce_window,
                settings.failure_memory,
                settings.realert_after,
            ),
        )
        self._accounts: BoundedTable[str, _Account] = BoundedTable(
            max_entries=settings.max_accounts,
            ttl=max(settings.distributed_window, settings.realert_after),
        )

    def __len__(self) -> int:
        """How many sources are tracked (for tests and metrics)."""
        return len(self._sources)

    @property
    def accounts_tracked(self) -> int:
        return len(self._accounts)

    def observe(self, obs: Observation, findings: Findings) -> None:
        message = obs.message
        if isinstance(message, Request):
            # Our own side's requests (the PBX registering to its provider)
            # are not attempts on the PBX.
            if obs.direction is not Direction.OUTBOUND:
                self._on_request(obs, message, findings)
        elif isinstance(message, Response):
            record = findings.request
            # An answer travelling inbound answers our own side's request.
            if (
                record is not None
                and message.status >= 200
                and obs.direction is not Direction.INBOUND
            ):
                self._on_answer(obs, message, record, findings)

    # -- requests: credentials presented -------------------------------------------

    def _on_request(self, obs: Observation, request: Request, findings: Findings) -> None:
        # Most requests carry no credentials: a look at the field names, no parsing.
        if not carries_credentials(request):
            return
        try:
            presented = credentials_of(request)
        except RemoteProtocolError:
            # A broken Authorization is still an answer to a challenge; it just
            # carries nothing to compare.
            presented = ()
        now = obs.ts
        key = prefix64(obs.src) or obs.src
        state = self._sources.get_or_create(key, now, _Source)
        state.last_credentials = now
        if presented:
            self._check_guess(state, obs, request, presented[0], findings)

    def _check_guess(
        self,
        state: _Source,
        obs: Observation,
        request: Request,
        credentials: DigestCredentials,
        findings: Findings,
    ) -> None:
        """``cracking.nonce_reuse``: one challenge, identical hash inputs, different responses."""
        qop = (credentials.qop or "").lower()
        if not credentials.nonce or not credentials.response or qop == "auth-int":
            return  # auth-int hashes the body too: a new body is a new response
        settings = self.settings
        now = obs.ts
        # Everything RFC 7616 3.4.1 feeds into the response except the
        # password. Python's string hash is keyed per process, so an attacker
        # cannot aim collisions at it.
        inputs = hash(
            (
                credentials.nonce,
                credentials.username,
                credentials.realm,
                credentials.uri,
                request.method,
                credentials.nc,
                credentials.cnonce,
                qop,
                credentials.algorithm,
            )
        )
        guesses = state.guesses
        if guesses is None:
            guesses = state.guesses = {}
        oldest = now - settings.nonce_window
        while guesses:
            first_key, (first_seen, _) = next(iter(guesses.items()))
            if first_seen >= oldest:
                break
            del guesses[first_key]
        response = credentials.response[:MAX_KEY_LENGTH]
        entry = guesses.get(inputs)
        if entry is None:
            if len(guesses) >= MAX_CHALLENGES_COMPARED:
                del guesses[next(iter(guesses))]
            guesses[inputs] = (now, [response])
            return
        responses = entry[1]
        if response in responses or len(responses) >= MAX_RESPONSES_PER_CHALLENGE:
            return  # a retransmission (same response), or long past the threshold
        responses.append(response)
        count = len(responses)
        if count < settings.nonce_reuse_threshold or not _due(
            state, RULE_NONCE_REUSE, now, settings
        ):
            return
        account = credentials.username[:MAX_KEY_LENGTH] or None
        findings.report(
            SecurityEvent(
                time=now,
                kind=EventKind.CRACKING,
                severity=Severity.HIGH,
                source=obs.src,
                source_port=obs.sport,
                rule=RULE_NONCE_REUSE,
                summary=(
                    f"{obs.src} answered one challenge with {count} different responses"
                    f" for account {account!r}: guessing passwords on a reused nonce"
                ),
                account=account,
                evidence=Evidence(
                    messages=(describe(obs),),
                    counts={"responses": count},
                    threshold=settings.nonce_reuse_threshold,
                    window=settings.nonce_window,
                ),
                detail=_with_prefix(
                    state,
                    obs.src,
                    {"nonce": credentials.nonce[:MAX_KEY_LENGTH], "responses": count},
                ),
            )
        )

    # -- answers: challenges, failures, successes -----------------------------------

    def _on_answer(
        self, obs: Observation, response: Response, record: RequestRecord, findings: Findings
    ) -> None:
        status = response.status
        nonces: tuple[str, ...] = ()
        stale = False
        if status in _CHALLENGES:
            nonces, stale = _challenge_nonces(response)
        credentials = record.has_credentials
        failure = credentials and status in self.settings.failure_statuses and not stale
        success = credentials and 200 <= status < 300
        challenged = status in _CHALLENGES and not credentials
        if not (failure or success or challenged or nonces):
            return
        now = obs.ts
        key = prefix64(record.src) or record.src
        if success and key not in self._sources:
            return  # a success with no failures before it: the common case
        state = self._sources.get_or_create(key, now, _Source)
        if _retransmitted(state, response):
            return
        if key != record.src:
            _note_address(state, record.src)
        account = (record.account or "")[:MAX_KEY_LENGTH]
        attempt = _Attempt(now, record, account, status)
        if failure:
            # Judge the presented nonce against what was issued *before* this
            # answer, which may itself issue a new one.
            self._on_failure(state, key, record, attempt, findings)
        elif success:
            self._on_success(state, obs, record, attempt, findings)
        elif challenged:
            self._on_challenge(state, record, attempt, findings)
        if nonces:
            self._remember_issued(state, nonces, now)

    def _remember_issued(self, state: _Source, nonces: tuple[str, ...], now: float) -> None:
        issued = state.issued
        if issued is None:
            issued = state.issued = {}
        for nonce in nonces:
            short = nonce[:MAX_KEY_LENGTH]
            if short in issued:
                del issued[short]  # re-inserted last: the most recent
            elif len(issued) >= self.settings.max_nonces_per_source:
                del issued[next(iter(issued))]
            issued[short] = now

    def _was_issued(self, state: _Source, nonce: str | None, now: float) -> bool:
        issued = state.issued
        if not nonce or issued is None:
            return False
        oldest = now - self.settings.nonce_window
        while issued:
            first_nonce, when = next(iter(issued.items()))
            if when >= oldest:
                break
            del issued[first_nonce]
        return nonce[:MAX_KEY_LENGTH] in issued

    def _on_failure(
        self,
        state: _Source,
        key: str,
        record: RequestRecord,
        attempt: _Attempt,
        findings: Findings,
    ) -> None:
        settings = self.settings
        now = attempt.ts
        account = attempt.account
        state.samples = _bounded_append(state.samples, attempt, MAX_EVIDENCE_MESSAGES)
        if state.failures is None:
            state.failures = SlidingWindow(settings.failures_window)
        failures = state.failures.add(now)
        per_account = self._count_account_failure(state, account, now)

        if failures >= settings.failures_threshold and _due(state, RULE_FAILURES, now, settings):
            accounts = {name or "?": each.count for name, each in (state.accounts or {}).items()}
            single = account if len(accounts) == 1 and account else None
            findings.report(
                self._event(
                    state,
                    record,
                    now=now,
                    rule=RULE_FAILURES,
                    severity=Severity.HIGH,
                    account=single,
                    summary=(
                        f"{record.src} failed authentication {failures} times within "
                        f"{settings.failures_window:g} s"
                        + (f" for account {single!r}" if single else "")
                    ),
                    counts={"failures": failures, "accounts": len(accounts)},
                    threshold=settings.failures_threshold,
                    window=settings.failures_window,
                    detail={"accounts": accounts, "failures_on_account": per_account},
                )
            )

        if not self._was_issued(state, record.credentials_nonce, now):
            if state.not_issued is None:
                state.not_issued = SlidingWindow(settings.nonce_window)
            foreign = state.not_issued.add(now)
            if foreign >= settings.nonce_not_issued_threshold and _due(
                state, RULE_NONCE_NOT_ISSUED, now, settings
            ):
                findings.report(
                    self._event(
                        state,
                        record,
                        now=now,
                        rule=RULE_NONCE_NOT_ISSUED,
                        severity=Severity.HIGH,
                        account=account or None,
                        summary=(
                            f"{record.src} failed {foreign} times with nonces the PBX "
                            "never issued to it"
                        ),
                        counts={"failures": foreign},
                        threshold=settings.nonce_not_issued_threshold,
                        window=settings.nonce_window,
                        detail={"nonce": (record.credentials_nonce or "")[:MAX_KEY_LENGTH]},
                    )
                )

        if account:
            self._on_account_failure(key, record, attempt, findings)

    def _count_account_failure(self, state: _Source, account: str, now: float) -> int:
        accounts = state.accounts
        if accounts is None:
            accounts = state.accounts = {}
        failures = accounts.pop(account, None)
        if failures is None:
            failures = _AccountFailures()
            if len(accounts) >= self.settings.max_accounts_per_source:
                del accounts[next(iter(accounts))]
        accounts[account] = failures  # (re-)inserted last: the most recent
        if now - failures.last > self.settings.failure_memory:
            failures.count = 0  # forgotten: a new series starts
        failures.count += 1
        failures.last = now
        return failures.count

    def _on_account_failure(
        self, key: str, record: RequestRecord, attempt: _Attempt, findings: Findings
    ) -> None:
        """``cracking.distributed``: many sources failing on one account."""
        settings = self.settings
        now = attempt.ts
        account = attempt.account
        target = self._accounts.get_or_create(account, now, _Account)
        _bounded_append(target.samples, attempt, MAX_EVIDENCE_MESSAGES)
        sources = target.add(
            key, now, settings.distributed_window, settings.max_sources_per_account
        )
        if sources < settings.distributed_sources:
            return
        if target.last_alert is not None and now - target.last_alert < settings.realert_after:
            return
        target.last_alert = now
        findings.report(
            SecurityEvent(
                time=now,
                kind=EventKind.CRACKING,
                severity=Severity.HIGH,
                source=record.src,
                source_port=record.sport,
                rule=RULE_DISTRIBUTED,
                summary=(
                    f"account {account!r} failed authentication from {sources} distinct "
                    f"sources within {settings.distributed_window:g} s"
                ),
                account=account,
                evidence=Evidence(
                    messages=tuple(each.line() for each in target.samples),
                    counts={"distinct_sources": sources},
                    threshold=settings.distributed_sources,
                    window=settings.distributed_window,
                ),
                detail={
                    "account": account,
                    "distinct_sources": sources,
                    "sources": list(target.sources)[-16:],
                },
            )
        )

    def _on_success(
        self,
        state: _Source,
        obs: Observation,
        record: RequestRecord,
        attempt: _Attempt,
        findings: Findings,
    ) -> None:
        """``cracking.succeeded``: a success after repeated failures on the same account."""
        settings = self.settings
        now = attempt.ts
        account = attempt.account
        failures = state.accounts.pop(account, None) if state.accounts is not None else None
        if failures is None or not account or now - failures.last > settings.failure_memory:
            return
        if failures.count < settings.success_min_failures:
            return  # a typo or two, then the right password: a person
        rule_key = f"{RULE_SUCCEEDED}:{account}"  # one per account: every cracked one matters
        if not _due(state, rule_key, now, settings):
            return
        findings.report(
            self._event(
                state,
                record,
                now=now,
                rule=RULE_SUCCEEDED,
                severity=Severity.CRITICAL,
                account=account,
                summary=(
                    f"{record.src} authenticated as {account!r} after {failures.count} "
                    "failures: the password was guessed; change it"
                ),
                counts={"failures_before_success": failures.count},
                threshold=settings.success_min_failures,
                window=settings.failure_memory,
                detail={
                    "account": account,
                    "failures_before_success": failures.count,
                    "method": record.method,
                    "status": attempt.status,
                },
                last=describe(obs),
            )
        )

    def _on_challenge(
        self, state: _Source, record: RequestRecord, attempt: _Attempt, findings: Findings
    ) -> None:
        """``cracking.unanswered_challenges``: challenged again and again, never answering."""
        settings = self.settings
        now = attempt.ts
        state.samples = _bounded_append(state.samples, attempt, MAX_EVIDENCE_MESSAGES)
        if state.challenges is None:
            state.challenges = SlidingWindow(settings.unanswered_window)
        challenges = state.challenges.add(now)
        if challenges < settings.unanswered_threshold:
            return
        if now - state.last_credentials <= settings.unanswered_window:
            return  # it does answer challenges: a client, not a scanner
        if not _due(state, RULE_UNANSWERED, now, settings):
            return
        findings.report(
            self._event(
                state,
                record,
                now=now,
                rule=RULE_UNANSWERED,
                severity=Severity.HIGH,
                account=None,
                summary=(
                    f"{record.src} was challenged {challenges} times within "
                    f"{settings.unanswered_window:g} s and never answered with credentials"
                ),
                counts={"challenges": challenges},
                threshold=settings.unanswered_threshold,
                window=settings.unanswered_window,
                detail={},
            )
        )

    def _event(
        self,
        state: _Source,
        record: RequestRecord,
        *,
        now: float,
        rule: str,
        severity: Severity,
        account: str | None,
        summary: str,
        counts: dict[str, int | float],
        threshold: float,
        window: float,
        detail: dict[str, object],
        last: str | None = None,
    ) -> SecurityEvent:
        lines = [each.line() for each in state.samples or ()]
        if last is not None:
            lines = [*lines[-(MAX_EVIDENCE_MESSAGES - 1) :], last]
        return SecurityEvent(
            time=now,
            kind=EventKind.CRACKING,
            severity=severity,
            source=record.src,
            source_port=record.sport,
            rule=rule,
            summary=summary,
            account=account,
            evidence=Evidence(
                messages=tuple(lines), counts=counts, threshold=threshold, window=window
            ),
            detail=_with_prefix(state, record.src, detail),
        )

    def expire(self, now: float) -> None:
        self._sources.expire(now)
        self._accounts.expire(now)


def _due(state: _Source, rule: str, now: float, settings: CrackingSettings) -> bool:
    """Re-alert suppression: the first crossing, then at most one per ``realert_after``."""
    alerts = state.alerts
    if alerts is None:
        alerts = state.alerts = {}
    last = alerts.get(rule)
    if last is not None and now - last < settings.realert_after:
        return False
    if len(alerts) >= MAX_ALERT_KEYS:
        # Keys are rules, plus one per cracked account: forget the silenced
        # periods that are over, and if that is not enough, the oldest.
        for key in [key for key, when in alerts.items() if now - when >= settings.realert_after]:
            del alerts[key]
        if len(alerts) >= MAX_ALERT_KEYS:
            del alerts[next(iter(alerts))]
    alerts[rule] = now
    return True


def _challenge_nonces(response: Response) -> tuple[tuple[str, ...], bool]:
    """The nonces a 401/407 issues, and whether it says the old nonce was merely stale."""
    try:
        challenges = (*response.www_authenticate, *response.proxy_authenticate)
    except RemoteProtocolError:  # a broken challenge from the PBX: nothing issued we can read
        return (), False
    return (
        tuple(each.nonce for each in challenges if each.nonce),
        any(each.stale for each in challenges),
    )


def _retransmitted(state: _Source, response: Response) -> bool:
    """Whether this final answer repeats one already counted (RFC 3261 17.2.1)."""
    try:
        cseq = response.cseq
        via = response.top_via
        call_id = response.call_id
    except RemoteProtocolError:
        return False
    if cseq is None or call_id is None:
        return False
    branch = (via.branch or "") if via is not None else ""
    # A hash, not the tuple: eight ints per source instead of eight tuples of
    # strings. The per-process string hash keeps collisions out of reach.
    key = hash((call_id, cseq.seq, cseq.method, branch, response.status))
    if state.recent is not None and key in state.recent:
        return True
    state.recent = _bounded_append(state.recent, key, RECENT_ANSWERS)
    return False


def _bounded_append(items: list[_T] | None, item: _T, limit: int) -> list[_T]:
    """Append to a list kept at ``limit`` items (oldest dropped); creates it when needed."""
    if items is None:
        return [item]
    if len(items) >= limit:
        del items[0]
    items.append(item)
    return items


def _note_address(state: _Source, address: str) -> None:
    addresses = state.addresses
    if addresses is None:
        addresses = state.addresses = []
    if address not in addresses:
        if len(addresses) >= MAX_ADDRESSES_KEPT:
            addresses.pop(0)
        addresses.append(address)


def _with_prefix(state: _Source, address: str, detail: dict[str, object]) -> dict[str, object]:
    """Add the /64 and its addresses when an IPv6 source was counted per prefix."""
    prefix = prefix64(address)
    if prefix is not None:
        detail["prefix"] = prefix
        detail["addresses"] = list(state.addresses or (address,))
    return detail
