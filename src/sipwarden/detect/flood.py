"""Floods: per-source, per-method and global request rates, and calls that never succeed.

Four rules, each over a sliding window of fixed-size buckets
(:class:`~sipwarden.engine.state.SlidingWindow`, O(1) memory whatever the rate):

``flood.source_rate``
    Every request from one source (unparsable datagrams included: they cost
    a parse all the same), Kamailio ``pike``'s rule. Severity HIGH, and every
    request over the limit gets a DROP verdict: in-line, that *is* the rate
    limit (like ``pike_check_req()`` returning false), and the engine turns
    the event into a ban.
``flood.method_rate.<METHOD>``
    One method from one source (INVITE, REGISTER, OPTIONS, SUBSCRIBE,
    MESSAGE by default), OpenSIPS ``ratelimit``'s per-method pipes made
    per-source. The limits differ per method because the legitimate
    bursts do: an office's phones re-subscribe every BLF key after a power
    cut, nobody sends 70 INVITEs a second but a trunk or an attacker.
    HIGH, and DROP for the messages of that method over the limit.
``flood.global_rate``
    Every request from every source together: a distributed flood where each
    of a thousand sources stays under its own limit. MEDIUM (no one source
    to blame, so the engine bans nobody); with ``shed_global_load`` the
    requests over the limit are answered 503 (never ACK, BYE, CANCEL or
    PRACK, which finish calls already under way), the ``ratelimit`` way of
    keeping the PBX alive.
``flood.call_ratio``
    A source whose calls fail: many INVITEs answered with a final failure
    (404, 403, 480, 503, ...) and (almost) none with a 2xx. SIPp's INVITE
    flood against 404 answers has an INVITE:200 ratio of infinity; so does
    a toll-fraud scanner probing dial prefixes (``00``, ``011``, ``9011``,
    ...) one failure at a time. HIGH; no verdict (the answers are the PBX's,
    the ban stops the source).

IPv6 sources are counted per address and per /64 (DESIGN: rotating addresses
inside one allocation must not reset a counter); an aggregated event names
the prefix as its source, so the ban covers the allocation. A /64 rule fires
only when the address itself is within that rule: one address flooding is
reported once, by address.

Re-alert suppression: the first time a key (source, /64 or the whole PBX) goes
over a rule's limit it is reported; while it stays over, at most one more
event per ``realert_after`` seconds, with the updated counts and how many
messages went over the limit meanwhile. Verdicts are not suppressed.

Requests travelling OUTBOUND are the protected PBX's own (qualify OPTIONS,
NOTIFYs to its phones): they are not counted against anybody.

Sans-IO and bounded: time comes from the observations; one table of at most
``max_sources`` keys (LRU, idle expiry), each a few sliding windows created
only for the methods the key actually sends.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

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
from sipwarden.engine.engine import Findings
from sipwarden.engine.state import BoundedTable, SlidingWindow, prefix64
from sipwarden.errors import ConfigError
from sipwarden.sip.message import Request, Response

from .common import describe, require_durations, require_positive_counts

__all__ = [
    "GLOBAL_SOURCE",
    "RULE_CALL_RATIO",
    "RULE_GLOBAL_RATE",
    "RULE_METHOD_RATE",
    "RULE_SOURCE_RATE",
    "FloodDetector",
    "FloodSettings",
]

RULE_SOURCE_RATE = "flood.source_rate"
RULE_METHOD_RATE = "flood.method_rate"  # + ".<METHOD>"
RULE_GLOBAL_RATE = "flood.global_rate"
RULE_CALL_RATIO = "flood.call_ratio"

# The ``source`` of a global event: it belongs to no one address. Not an
# address, so no ban policy or firewall rule can mistake it for one.
GLOBAL_SOURCE = "*"

# Buckets of the call-ratio window: a minute in 10-second slots is exact
# enough for a ratio and keeps three windows per calling source small.
_RATIO_BUCKETS = 6
# Requests that end or complete something already under way. Shedding global
# load with 503 must not refuse them: a refused BYE leaves a call (and its
# bill) running, a refused ACK makes the PBX retransmit its answer.
_NEVER_SHED = frozenset({"ACK", "BYE", "CANCEL", "PRACK"})
# Answers that are part of a successful call's normal life, not a failure:
# a digest challenge (the INVITE is retried with credentials), 422 Session
# Interval Too Small and 491 Request Pending (both retried, RFC 4028, RFC 3261 14.1).
_NOT_FAILURES = frozenset({401, 407, 422, 491})
# What ``FloodDetector._count`` found a key over.
_OVER_SOURCE = 1
_OVER_METHOD = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class FloodSettings:
    """Knobs of :class:`FloodDetector`; the config's ``[detect.flood]`` overrides them.

    A limit is the most a key may send within its window: the request that
    makes the count ``limit + 1`` is the first one over it (pike's
    ``reqs_density_per_unit`` reads the same way).
    """

    # Requests of any method per source per ``source_window``: 400 in 2 s,
    # i.e. 200/s sustained. A busy trunk at 30 calls/s sends ~90 requests/s
    # (INVITE, ACK, BYE), ~150/s if every INVITE is challenged; an office
    # behind one NAT rebooting after a power cut sends a burst of REGISTERs
    # and BLF SUBSCRIBEs of a few hundred. Both stay under. Pike's default
    # (30 per 2 s) assumes trunks are excluded by the script; here a single
    # small PBX must pass untouched, so this rule is the backstop for
    # full-speed floods (sipsak, inviteflood, SIPp at hundreds of calls/s),
    # and the per-method limits below catch the slower, targeted ones.
    source_limit: int = 400
    # Pike's sampling unit: long enough to smooth a burst, short enough that
    # the DROP verdict lifts within two seconds of the flood stopping.
    source_window: float = 2.0
    # Per-method limits per source per ``method_window``. Methods not listed
    # are counted only by ``source_limit``. Method names are case-sensitive
    # (RFC 3261 7.1), so ``invite`` is another (unknown) method.
    # - INVITE 70/s: a 30 calls/s trunk has a mean of 30 per second; 70 is
    #   seven standard deviations above a Poisson arrival rate of 30, so even
    #   a sliding window evaluated on every message essentially never trips on
    #   it, while SIPp's 100 calls/s crosses it 0.7 s into the flood. No phone
    #   and no small PBX comes near it.
    # - REGISTER 100/s: fifty phones behind one NAT registering at once after
    #   a power cut, each challenged once. svcrack's 26 REGISTERs in 0.14 s
    #   stay under on purpose: guessing passwords is the cracking detector's
    #   to report, and at that volume it is not a load problem.
    # - OPTIONS 50/s: phones and trunks send one keep-alive per 30-60 s; an
    #   OPTIONS flood is the classic cheap DoS against a SIP stack.
    # - SUBSCRIBE 200/s: BLF-heavy offices re-subscribe every key at boot
    #   (50 phones x 20 keys, spread over a few seconds, plus challenges).
    # - MESSAGE 30/s: instant messages are typed by people; 30/s is spam.
    method_limits: tuple[tuple[str, int], ...] = (
        ("INVITE", 70),
        ("REGISTER", 100),
        ("OPTIONS", 50),
        ("SUBSCRIBE", 200),
        ("MESSAGE", 30),
    )
    # One second: SIPp's default flood at 100 calls/s must be caught within
    # a capture that lasts under one second, and a one-second window cannot
    # be filled by a legitimate source running at less than half the limit.
    method_window: float = 1.0
    # Requests from all sources together per ``global_window``: 1000 in 2 s
    # (500/s). The background of a PBX with a thousand phones (registrations
    # and keep-alives every 60-120 s) is ~30/s; a 30 calls/s trunk adds ~90/s;
    # 500/s is beyond what a small Asterisk/FreeSWITCH box serves comfortably,
    # so crossing it means "something distributed is happening".
    global_limit: int = 1000
    global_window: float = 2.0
    # Answer dialog-creating requests over the global limit with 503 (OpenSIPS
    # ratelimit's behaviour). Off by default: a distributed flood then costs
    # legitimate callers their calls, a trade an operator should choose.
    shed_global_load: bool = False
    # The call-ratio rule: within ``ratio_window`` a source has had at least
    # ``ratio_min_failures`` INVITEs fail and sent more than
    # ``ratio_max_invites_per_answer`` INVITEs per answered (2xx) one.
    # A minute: long enough for ringing calls to be answered (the 2xx comes
    # seconds after the INVITE), short enough to forget a bad hour.
    ratio_window: float = 60.0
    # 50 failed calls in a minute is not one person misdialling; a trunk
    # reaches it, but a trunk's calls are also answered. Counting failures
    # (not unanswered INVITEs) means ringing calls never count against a
    # source, so a dialer starting 50 calls at once does not fire.
    ratio_min_failures: int = 50
    # More than 10 INVITEs per 2xx: an answer-seizure ratio under 10%, half
    # of which may be digest challenges (which are not counted as failures
    # but do count as INVITEs). Legitimate traffic answers 30-60% of calls,
    # a predictive dialer 10-30%; a flood against 404s answers none.
    ratio_max_invites_per_answer: float = 10.0
    # Count IPv6 sources per /64 as well as per address (DESIGN).
    aggregate_ipv6: bool = True
    # After the first event for a key and rule, at most one more per minute
    # while it stays over the limit. A minute is the engine's ban for an
    # unproven UDP source: a flood that outlasts its ban is reported (and
    # banned) again as the ban runs out.
    realert_after: float = 60.0
    # Keys (addresses, /64s) tracked at once, least recently seen evicted
    # first. A key costs ~0.5 KB (its total window), ~1 KB with a method
    # window, ~1.6 KB when it also sends INVITEs (the three call-ratio
    # windows; measured with tracemalloc): at most ~16 MB. Ten thousand is
    # more phones and trunks than a PBX sipwarden fronts has; a spoofed flood
    # of one request per address churns the table, never grows it, and an
    # evicted key only loses its counts.
    max_sources: int = 10_000
    # Buckets per rate window: the count is exact to window/buckets (0.1 s
    # for a one-second window), and the cost per message is a sum over them.
    buckets: int = 10

    def __post_init__(self) -> None:
        require_positive_counts(
            self, "source_limit", "global_limit", "ratio_min_failures", "max_sources", "buckets"
        )
        require_durations(
            self, "source_window", "method_window", "global_window", "ratio_window", "realert_after"
        )
        if not self.ratio_max_invites_per_answer > 0:
            raise ConfigError(
                f"must be > 0, not {self.ratio_max_invites_per_answer!r}",
                key_path="ratio_max_invites_per_answer",
            )
        for method, limit in self.method_limits:
            if not method:
                raise ConfigError("a method name cannot be empty", key_path="method_limits")
            if limit < 1:
                raise ConfigError(
                    f"{method}: the limit must be at least 1, not {limit}",
                    key_path="method_limits",
                )


class _Alert:
    """When a key was last reported for a rule, and what went over since."""

    __slots__ = ("last", "suppressed")

    def __init__(self, last: float) -> None:
        self.last = last
        self.suppressed = 0  # messages over the limit since ``last``, not reported


class _Calls:
    """INVITEs sent and their outcomes within the call-ratio window."""

    __slots__ = ("answered", "failed", "invites")

    def __init__(self, window: float) -> None:
        self.invites = SlidingWindow(window, _RATIO_BUCKETS)
        self.answered = SlidingWindow(window, _RATIO_BUCKETS)
        self.failed = SlidingWindow(window, _RATIO_BUCKETS)


class _Key:
    """The counters of one key; everything but ``total`` is created on first use."""

    __slots__ = ("alerts", "calls", "methods", "total")

    def __init__(self, total: SlidingWindow) -> None:
        self.total = total
        self.methods: dict[str, SlidingWindow] | None = None
        self.calls: _Calls | None = None
        self.alerts: dict[str, _Alert] | None = None


@lru_cache(maxsize=8192)
def _aggregate_of(address: str) -> str | None:
    """The /64 to count an IPv6 address under, or ``None``.

    An IPv4-mapped address (``::ffff:192.0.2.1``, what a dual-stack socket
    reports for IPv4 peers) is an IPv4 source: its "/64" would lump every
    IPv4 client together. Cached: a source sends many messages, and parsing
    an IPv6 address costs microseconds.
    """
    try:
        parsed = ipaddress.IPv6Address(address.split("%", 1)[0])
    except ValueError:
        return None
    if parsed.ipv4_mapped is not None:
        return None
    return prefix64(address)


class FloodDetector:
    """Rate limits per source, per method and globally, and the call-ratio rule (see module doc)."""

    name = "flood"

    def __init__(self, settings: FloodSettings | None = None) -> None:
        self.settings = settings = settings or FloodSettings()
        self._method_limits = dict(settings.method_limits)
        self._keys: BoundedTable[str, _Key] = BoundedTable(
            max_entries=settings.max_sources,
            ttl=max(
                settings.source_window,
                settings.method_window,
                settings.ratio_window,
                settings.realert_after,
            ),
        )
        self._global = SlidingWindow(settings.global_window, settings.buckets)
        self._global_alert: _Alert | None = None
        # Verdicts are built once: the hot path hands out shared objects.
        self._drop_source = Verdict(
            action=Action.DROP, reason="source request rate over the limit", rule=RULE_SOURCE_RATE
        )
        self._drop_method = {
            method: Verdict(
                action=Action.DROP,
                reason=f"{method} rate over the limit",
                rule=f"{RULE_METHOD_RATE}.{method}",
            )
            for method in self._method_limits
        }
        self._shed = Verdict(
            action=Action.REJECT, status=503, reason="global request rate over the limit",
            rule=RULE_GLOBAL_RATE,
        )  # fmt: skip

    def __len__(self) -> int:
        """How many keys (addresses and /64s) are tracked, for tests and metrics."""
        return len(self._keys)

    # -- the hot path ---------------------------------------------------------------

    def observe(self, obs: Observation, findings: Findings) -> None:
        message = obs.message
        if message is None:
            if obs.error is None:
                return
            method: str | None = None
        elif isinstance(message, Request):
            method = message.method
        else:
            if isinstance(message, Response):
                self._on_response(obs, message.status, findings)
            return
        if obs.direction is Direction.OUTBOUND:
            return  # the PBX's own requests
        src = obs.src
        address_over = self._count(src, method, obs, findings, -1)
        if ":" in src and self.settings.aggregate_ipv6:
            prefix = _aggregate_of(src)
            if prefix is not None:
                self._count(prefix, method, obs, findings, address_over)
        self._count_global(method, obs, findings)

    def _count(
        self,
        key: str,
        method: str | None,
        obs: Observation,
        findings: Findings,
        quiet: int,
    ) -> int:
        """Count one request from ``obs.src`` under ``key`` (the address or its /64).

        Returns the rules the key is over (``_OVER_SOURCE | _OVER_METHOD``).
        ``quiet`` is the address's own result when ``key`` is its /64 (a rule
        the address already broke is not reported again for the prefix),
        -1 for the address itself. Flags, not a tuple: nothing to allocate.
        """
        settings = self.settings
        now = obs.ts
        address = obs.src
        # The port only identifies the sender of an address, not of a /64.
        sport = obs.sport if key == address else None
        state = self._keys.get(key)
        if state is None:
            state = _Key(SlidingWindow(settings.source_window, settings.buckets))
        self._keys.put(key, state, now)

        over = 0
        count = state.total.add(now)
        if count > settings.source_limit:
            over = _OVER_SOURCE
            findings.propose(self._drop_source)
            if quiet < 0 or not quiet & _OVER_SOURCE:
                self._over(
                    state, key, RULE_SOURCE_RATE, count,
                    address=address, sport=sport, obs=obs, findings=findings,
                )  # fmt: skip

        if method is None:
            return over
        limit = self._method_limits.get(method)
        if limit is not None:
            windows = state.methods
            if windows is None:
                windows = state.methods = {}
            window = windows.get(method)
            if window is None:
                window = windows[method] = SlidingWindow(settings.method_window, settings.buckets)
            count = window.add(now)
            if count > limit:
                over |= _OVER_METHOD
                findings.propose(self._drop_method[method])
                if quiet < 0 or not quiet & _OVER_METHOD:
                    self._over(
                        state, key, f"{RULE_METHOD_RATE}.{method}", count,
                        address=address, sport=sport, obs=obs, findings=findings,
                    )  # fmt: skip
        if method == "INVITE":
            calls = state.calls
            if calls is None:
                calls = state.calls = _Calls(settings.ratio_window)
            calls.invites.add(now)
        return over

    def _count_global(self, method: str | None, obs: Observation, findings: Findings) -> None:
        settings = self.settings
        now = obs.ts
        count = self._global.add(now)
        if count <= settings.global_limit:
            return
        if settings.shed_global_load and method is not None and method not in _NEVER_SHED:
            findings.propose(self._shed)
        alert = self._global_alert
        if alert is not None and now - alert.last < settings.realert_after:
            alert.suppressed += 1
            return
        suppressed = alert.suppressed if alert is not None else 0
        self._global_alert = _Alert(now)
        findings.report(
            SecurityEvent(
                time=now,
                kind=EventKind.FLOOD,
                severity=Severity.MEDIUM,
                source=GLOBAL_SOURCE,
                rule=RULE_GLOBAL_RATE,
                summary=(
                    f"{count} requests from all sources in {settings.global_window:g} s "
                    f"(limit {settings.global_limit}): a distributed flood or an overload"
                ),
                evidence=Evidence(
                    messages=(describe(obs),),
                    counts={"requests": count, "over_limit_since_last_event": suppressed},
                    threshold=settings.global_limit,
                    window=settings.global_window,
                ),
                detail={"scope": "global", "last_source": obs.src},
            )
        )

    def _on_response(self, obs: Observation, status: int, findings: Findings) -> None:
        """Note the outcome of an INVITE for the call-ratio rule."""
        record = findings.request
        if status < 200 or record is None or record.method != "INVITE":
            return
        if 200 <= status < 300:
            answered = True
        elif status in _NOT_FAILURES:
            return
        else:
            answered = False
        src = record.src
        failing = self._outcome(
            src, answered, obs, sport=record.sport, findings=findings, quiet=False
        )
        if ":" in src and self.settings.aggregate_ipv6:
            prefix = _aggregate_of(src)
            if prefix is not None:
                # An address failing on its own is reported by address: the
                # /64 adds something only when the failures are spread.
                self._outcome(prefix, answered, obs, sport=None, findings=findings, quiet=failing)

    def _outcome(
        self,
        key: str,
        answered: bool,
        obs: Observation,
        *,
        sport: int | None,
        findings: Findings,
        quiet: bool,
    ) -> bool:
        """Count one outcome of an INVITE from ``findings.request.src`` under ``key``.

        Returns True when the key's calls are failing (the rule holds).
        """
        # Only keys that sent INVITEs have call counters; an answer never
        # creates state (a spoofed response costs nothing).
        state = self._keys.get(key)
        if state is None or state.calls is None:
            return False
        now = obs.ts
        calls = state.calls
        if answered:
            calls.answered.add(now)
            return False
        failed = calls.failed.add(now)
        if not self._failing(state, now):
            return False
        if not quiet:
            address = findings.request.src if findings.request is not None else key
            self._over(
                state, key, RULE_CALL_RATIO, failed,
                address=address, sport=sport, obs=obs, findings=findings,
            )  # fmt: skip
        return True

    def _failing(self, state: _Key, now: float) -> bool:
        calls = state.calls
        if calls is None:
            return False
        settings = self.settings
        if calls.failed.total(now) < settings.ratio_min_failures:
            return False
        invites = calls.invites.total(now)
        return invites > settings.ratio_max_invites_per_answer * calls.answered.total(now)

    # -- events ---------------------------------------------------------------------

    def _over(
        self,
        state: _Key,
        key: str,
        rule: str,
        count: int,
        *,
        address: str,
        sport: int | None,
        obs: Observation,
        findings: Findings,
    ) -> None:
        """``key`` is over ``rule``'s limit: report it unless reported within ``realert_after``."""
        now = obs.ts
        alerts = state.alerts
        if alerts is None:
            alerts = state.alerts = {}
        alert = alerts.get(rule)
        if alert is not None and now - alert.last < self.settings.realert_after:
            alert.suppressed += 1
            return
        suppressed = alert.suppressed if alert is not None else 0
        alerts[rule] = _Alert(now)
        findings.report(
            self._event(
                state, key, rule, count,
                address=address, sport=sport, suppressed=suppressed, obs=obs,
            )
        )  # fmt: skip

    def _event(
        self,
        state: _Key,
        key: str,
        rule: str,
        count: int,
        *,
        address: str,
        sport: int | None,
        suppressed: int,
        obs: Observation,
    ) -> SecurityEvent:
        settings = self.settings
        now = obs.ts
        counts: dict[str, int | float]
        if rule == RULE_CALL_RATIO:
            calls = state.calls
            assert calls is not None  # the rule fires only for keys that sent INVITEs
            invites = calls.invites.total(now)
            answered = calls.answered.total(now)
            ratio = f"{invites / answered:.1f}" if answered else "infinite"
            counts = {"invites": invites, "answered": answered, "failed": count}
            summary = (
                f"{key} sent {invites} INVITEs in {settings.ratio_window:g} s: {count} failed, "
                f"{answered} answered (INVITE:2xx {ratio})"
            )
            threshold = float(settings.ratio_min_failures)
            window = settings.ratio_window
        elif rule == RULE_SOURCE_RATE:
            counts = {"requests": count}
            summary = (
                f"{key} sent {count} requests in {settings.source_window:g} s "
                f"(limit {settings.source_limit})"
            )
            threshold = float(settings.source_limit)
            window = settings.source_window
        else:
            method = rule[len(RULE_METHOD_RATE) + 1 :]
            limit = self._method_limits[method]
            counts = {"requests": count}
            summary = (
                f"{key} sent {count} {method} requests in {settings.method_window:g} s "
                f"(limit {limit})"
            )
            threshold = float(limit)
            window = settings.method_window
        counts["over_limit_since_last_event"] = suppressed
        detail: dict[str, object] = {}
        if key != address:
            detail = {"prefix": key, "last_address": address}
        return SecurityEvent(
            time=now,
            kind=EventKind.FLOOD,
            severity=Severity.HIGH,
            # An aggregated /64 is the source: banning one rotating address
            # of it would stop nothing.
            source=key,
            source_port=sport,
            rule=rule,
            summary=summary,
            evidence=Evidence(
                messages=(describe(obs),), counts=counts, threshold=threshold, window=window
            ),
            detail=detail,
        )

    # -- housekeeping -----------------------------------------------------------------

    def expire(self, now: float) -> None:
        self._keys.expire(now)
