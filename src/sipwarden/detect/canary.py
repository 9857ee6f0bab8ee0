"""Canary (honeypot) accounts: extensions that exist only to be touched by attackers.

An administrator lists extensions no person, phone or trunk ever uses (no
device is provisioned with them, no dial plan routes to them, they are in no
directory). Nobody legitimate has a reason to register them, call them, call
*as* them or send credentials for them; a scanner sweeping extension ranges
or a cracker working through a leaked or guessed list does. So any request
naming one is proof of an attacker: severity CRITICAL (the engine bans the
source) and a DROP verdict for the request itself.

A request names a canary when one of these is a canary:

* the Request-URI user (an INVITE, OPTIONS or MESSAGE aimed at it; svmap's
  OPTIONS probe goes to ``sip:100@host``);
* the To user (a REGISTER's address of record, RFC 3261 10.2; the called
  party of any other request, which survives Request-URI rewriting by a proxy);
* the From user (a request sent *as* the canary);
* the Digest credentials' username (a password guess for it).

Users are compared with their ``%HH`` escapes decoded (``%31%30%30`` is
``100``) and without user parameters (``100;isub=1`` is ``100``); by default
case-insensitively, so an ``admin`` canary also catches ``Admin``: no
legitimate user has any spelling of a canary's name. A Digest ``userhash``
(RFC 7616 3.4.4) hides the name and is not matched.

Requests travelling OUTBOUND are the protected PBX's own and are skipped.
One event per source and canary, then at most one per ``realert_after``
seconds while the source keeps trying (with how many attempts it made
meanwhile); the DROP verdict is never suppressed. State: one small entry
per (source, canary) pair, bounded by ``max_tracked``.
"""

from __future__ import annotations

from collections.abc import Callable
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
from sipwarden.engine.correlation import credentials_of
from sipwarden.engine.engine import Findings
from sipwarden.engine.state import BoundedTable
from sipwarden.errors import ConfigError, RemoteProtocolError
from sipwarden.sip.message import Request
from sipwarden.sip.uri import NameAddr, SipUri, TelUri, Uri, unescape

from .common import describe, require_durations, require_positive_counts

__all__ = ["RULE_CANARY", "CanaryDetector", "CanarySettings"]

RULE_CANARY = "canary.attempt"

# The fields a canary is looked for in, as named in events.
FIELD_REQUEST_URI = "request_uri"
FIELD_TO = "to"
FIELD_FROM = "from"
FIELD_CREDENTIALS = "credentials"


@dataclass(frozen=True, slots=True, kw_only=True)
class CanarySettings:
    """Knobs of :class:`CanaryDetector`; the config's ``[detect.canary]`` overrides them."""

    # The canary extensions. None by default: only the administrator knows
    # which numbers are unused at this PBX, and a wrong guess (say ``100``,
    # the first extension of many dial plans) would ban real users.
    extensions: frozenset[str] = frozenset()
    # Compare case-insensitively (see module doc). Off only for a PBX whose
    # user names differ by case alone.
    ignore_case: bool = True
    # After the first event for a source and canary, at most one more per
    # minute while it keeps trying. A minute is the engine's ban for an
    # unproven UDP source: an attacker still at it when its ban runs out
    # is reported, and banned, again.
    realert_after: float = 60.0
    # (source, canary) pairs remembered for re-alert suppression; a pair is
    # ~200 bytes, so the bound costs at most ~2 MB.
    max_tracked: int = 10_000

    def __post_init__(self) -> None:
        if any(not extension for extension in self.extensions):
            raise ConfigError("a canary extension cannot be empty", key_path="extensions")
        require_durations(self, "realert_after")
        require_positive_counts(self, "max_tracked")


class _Seen:
    """The last event for one (source, canary) pair and the attempts since."""

    __slots__ = ("attempts", "last")

    def __init__(self, last: float) -> None:
        self.last = last
        self.attempts = 0  # attempts since ``last`` that were not reported


class CanaryDetector:
    """Reports any request naming a canary extension (see module doc)."""

    name = "canary"

    def __init__(self, settings: CanarySettings | None = None) -> None:
        self.settings = settings = settings or CanarySettings()
        fold = settings.ignore_case
        # Normalised form -> the extension as configured (named in events).
        self._canaries = {
            (extension.casefold() if fold else extension): extension
            for extension in settings.extensions
        }
        self._seen: BoundedTable[tuple[str, str], _Seen] = BoundedTable(
            max_entries=settings.max_tracked, ttl=settings.realert_after
        )
        self._drop = Verdict(action=Action.DROP, reason="canary extension", rule=RULE_CANARY)

    def __len__(self) -> int:
        """How many (source, canary) pairs are remembered, for tests and metrics."""
        return len(self._seen)

    def observe(self, obs: Observation, findings: Findings) -> None:
        message = obs.message
        if (
            not self._canaries
            or not isinstance(message, Request)
            or obs.direction is Direction.OUTBOUND
        ):
            return
        hits = self._hits(message)
        if not hits:
            return
        findings.propose(self._drop)
        for canary, fields in hits.items():
            self._report(canary, fields, obs, findings)

    def _hits(self, request: Request) -> dict[str, list[str]]:
        """Canary -> the fields of ``request`` that named it."""
        hits: dict[str, list[str]] = {}
        # Each field is read on its own: one malformed header (attacker
        # bytes) must not hide a canary named in another.
        for field, read in _READERS:
            try:
                user = read(request)
            except RemoteProtocolError:
                continue
            self._match(user, field, hits)
        try:
            credentials = credentials_of(request)
        except RemoteProtocolError:
            credentials = ()
        for entry in credentials:
            if not entry.userhash:
                self._match(entry.username, FIELD_CREDENTIALS, hits)
        return hits

    def _match(self, user: str | None, field: str, hits: dict[str, list[str]]) -> None:
        if not user:
            return
        if self.settings.ignore_case:
            user = user.casefold()
        canary = self._canaries.get(user)
        if canary is None:
            # User parameters (RFC 3261 19.1.1 allows ';' in the user part,
            # RFC 3966 isub/ext in a telephone-subscriber) do not change who
            # is meant.
            bare = user.split(";", 1)[0]
            canary = self._canaries.get(bare) if bare != user else None
            if canary is None:
                return
        fields = hits.setdefault(canary, [])
        if field not in fields:
            fields.append(field)

    def _report(self, canary: str, fields: list[str], obs: Observation, findings: Findings) -> None:
        now = obs.ts
        key = (obs.src, canary)
        seen = self._seen.get(key)
        if seen is not None and now - seen.last < self.settings.realert_after:
            seen.attempts += 1
            self._seen.put(key, seen, now)
            return
        unreported = seen.attempts if seen is not None else 0
        self._seen.put(key, _Seen(now), now)
        method = obs.message.method if isinstance(obs.message, Request) else "?"
        findings.report(
            SecurityEvent(
                time=now,
                kind=EventKind.CANARY,
                severity=Severity.CRITICAL,
                source=obs.src,
                source_port=obs.sport,
                account=canary,
                rule=RULE_CANARY,
                summary=(
                    f"{obs.src} sent {method[:32]} naming canary extension {canary!r} "
                    f"({', '.join(fields)}): only an attacker does that"
                ),
                evidence=Evidence(
                    messages=(describe(obs),),
                    counts={"attempts_since_last_event": unreported},
                ),
                detail={"extension": canary, "fields": list(fields), "method": method[:32]},
            )
        )

    def expire(self, now: float) -> None:
        self._seen.expire(now)


def _user_of_uri(uri: Uri | None) -> str | None:
    if isinstance(uri, SipUri):
        user = uri.user
        return None if user is None else unescape(user)
    if isinstance(uri, TelUri):
        return uri.number
    return None


def _user_of_address(address: NameAddr | None) -> str | None:
    return None if address is None else _user_of_uri(address.uri)


def _request_uri_user(request: Request) -> str | None:
    return _user_of_uri(request.request_uri)


def _to_user(request: Request) -> str | None:
    return _user_of_address(request.to)


def _from_user(request: Request) -> str | None:
    return _user_of_address(request.from_)


_READERS: tuple[tuple[str, Callable[[Request], str | None]], ...] = (
    (FIELD_REQUEST_URI, _request_uri_user),
    (FIELD_TO, _to_user),
    (FIELD_FROM, _from_user),
)
