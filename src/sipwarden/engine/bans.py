"""Ban policy: which events earn a ban, for how long, and who can never be banned.

DESIGN's security defaults, in one place:

* a long ban needs evidence that the source receives our replies (it answered
  a challenge with our nonce, or spoke TCP/TLS); a bare UDP source may be
  spoofed, so it earns only a short ban (enough to stop a flood, too short to
  let an attacker lock out a victim by forging its address);
* allowlisted networks (trunks, management, monitoring) and sources that
  registered successfully are never banned by the engine;
* repeat offenders get escalating bans;
* only the transport source address is banned, never anything the attacker wrote.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from .contract import BanDecision, SecurityEvent, Severity
from .state import BoundedTable

__all__ = ["BanPolicy", "BanSettings"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class BanSettings:
    """Defaults for the ban policy; the config's ``[bans]`` section overrides them."""

    # Events at or above this severity earn a ban (high: flood, cracking,
    # scanner signatures; medium and low ones are only reported).
    min_severity: Severity = Severity.HIGH
    # Escalation for sources that proved return routability: 10 min, 1 h, 1 day, 1 week.
    durations: tuple[float, ...] = (600.0, 3600.0, 86400.0, 604800.0)
    # A possibly spoofed UDP source: long enough to stop a flood, no longer.
    unproven_duration: float = 60.0
    # Networks never banned and never dropped in-line (trunks, management,
    # monitoring hosts), as addresses or CIDR prefixes. Events about them are
    # still reported.
    allowlist: tuple[str, ...] = ()
    # How long past offences count for escalation (a week).
    offence_memory: float = 7 * 86400.0
    # Offenders (and protected, successfully registered sources) remembered at
    # most; the least recently seen is forgotten first.
    max_tracked_offenders: int = 100_000


class BanPolicy:
    """Turns events into ban decisions, bounded in memory."""

    def __init__(self, settings: BanSettings) -> None:
        self.settings = settings
        self._allow: tuple[Network, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in settings.allowlist
        )
        self._offences: BoundedTable[str, int] = BoundedTable(
            max_entries=settings.max_tracked_offenders, ttl=settings.offence_memory
        )
        self._protected: BoundedTable[str, float] = BoundedTable(
            max_entries=settings.max_tracked_offenders, ttl=settings.offence_memory
        )

    def protect(self, source: str, now: float) -> None:
        """Never ban ``source`` (e.g. it just registered with valid credentials)."""
        self._protected.put(source, now, now)

    def is_allowlisted(self, source: str) -> bool:
        """Never banned: a configured network, or a source that registered successfully."""
        return source in self._protected or self.is_trusted(source)

    def is_trusted(self, source: str) -> bool:
        """In a configured allowlist network (trunks, management, monitoring)."""
        try:
            address = ipaddress.ip_address(source)
        except ValueError:
            return False
        return any(address in network for network in self._allow)

    def decide(
        self, events: Iterable[SecurityEvent], *, returnable: bool, now: float
    ) -> BanDecision | None:
        """One ban for the worst of ``events`` from one source, or none."""
        worst = max(events, key=lambda event: event.severity, default=None)
        if worst is None or worst.severity < self.settings.min_severity:
            return None
        if self.is_allowlisted(worst.source):
            return None
        offence = (self._offences.get(worst.source) or 0) + 1
        self._offences.put(worst.source, offence, now)
        durations = self.settings.durations
        duration = (
            durations[min(offence, len(durations)) - 1]
            if returnable
            else self.settings.unproven_duration
        )
        return BanDecision(
            time=now,
            source=worst.source,
            duration=duration,
            rule=worst.rule,
            reason=worst.summary,
            returnable=returnable,
            offence=offence,
            evidence=worst.evidence.lines(),
        )

    def expire(self, now: float) -> None:
        self._offences.expire(now)
        self._protected.expire(now)
