"""A ban as enforcement keeps it, and the in-process ban table the gateway checks first.

A :class:`Ban` is what the engine decided (:class:`~sipwarden.engine.contract.BanDecision`)
or an administrator asked for, with an absolute expiry, so it can be stored,
shared with other nodes and restored after a restart unchanged.

:class:`BanTable` answers "is this source banned?" for every datagram the
gateway receives, before parsing: one dict lookup for a banned address, plus
one per prefix length in use when prefix bans (IPv6 /64s, manual CIDR bans)
exist.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, replace

from sipwarden.engine.contract import BanDecision, iso_time

__all__ = ["Ban", "BanTable", "ban_from_decision", "canonical_source"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def canonical_source(text: str) -> str:
    """An address or prefix in canonical form: ``"2001:DB8::1"`` → ``"2001:db8::1"``.

    A full-length prefix (``/32``, ``/128``) is written as the bare address, and
    an IPv4-mapped IPv6 address as the IPv4 address it carries, so one source
    has one spelling in the table, the store, the kernel and Redis.

    Raises:
        ValueError: ``text`` is not an address or network.
    """
    network = ipaddress.ip_network(text.strip(), strict=False)
    if isinstance(network, ipaddress.IPv6Network):
        mapped = network.network_address.ipv4_mapped
        if mapped is not None and network.prefixlen >= 96:
            network = ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}", strict=False)
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ban:
    """One source kept out until ``until`` (seconds since the epoch)."""

    source: str  # canonical_source(): an address, or a prefix such as "2001:db8::/64"
    since: float
    until: float
    rule: str  # the detector rule, or "manual"
    reason: str
    returnable: bool  # the source proved it receives our replies (see BanDecision)
    offence: int = 1
    origin: str = ""  # the node that decided it ("" for this one)
    evidence: tuple[str, ...] = ()  # the messages or counts that earned it, as text

    @property
    def network(self) -> Network:
        return ipaddress.ip_network(self.source, strict=False)

    def remaining(self, now: float) -> float:
        return max(0.0, self.until - now)

    def active(self, now: float) -> bool:
        return self.until > now

    def merged(self, other: Ban) -> Ban:
        """This ban extended by ``other`` for the same source: the later expiry wins,
        and the newer decision's reason and evidence are kept with it."""
        newer = other if other.since >= self.since else self
        return replace(
            newer,
            since=min(self.since, other.since),
            until=max(self.until, other.until),
            offence=max(self.offence, other.offence),
            returnable=self.returnable or other.returnable,
        )

    def record(self) -> dict[str, object]:
        """The JSON-ready form (logs, ``bans list --json``, the store and Redis)."""
        return {
            "source": self.source,
            "since": iso_time(self.since),
            "until": iso_time(self.until),
            "since_ts": self.since,
            "until_ts": self.until,
            "rule": self.rule,
            "reason": self.reason,
            "returnable": self.returnable,
            "offence": self.offence,
            "origin": self.origin,
            "evidence": list(self.evidence),
        }

    @classmethod
    def from_record(cls, record: dict[str, object]) -> Ban:
        """The inverse of :meth:`record`; raises ``ValueError`` on a malformed record."""
        evidence = record.get("evidence") or []
        if not isinstance(evidence, list):
            raise ValueError("not a ban record: evidence is not a list")  # noqa: TRY004 - one error type for callers
        try:
            return cls(
                source=canonical_source(str(record["source"])),
                since=float(record["since_ts"]),  # type: ignore[arg-type]
                until=float(record["until_ts"]),  # type: ignore[arg-type]
                rule=str(record["rule"]),
                reason=str(record["reason"]),
                returnable=bool(record["returnable"]),
                offence=int(record.get("offence", 1)),  # type: ignore[call-overload]
                origin=str(record.get("origin", "")),
                evidence=tuple(str(item) for item in evidence),
            )
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a ban record: {error}") from None


def ban_from_decision(decision: BanDecision, *, origin: str = "") -> Ban:
    """The ban the engine decided, with its expiry made absolute."""
    evidence = decision.evidence
    return Ban(
        source=canonical_source(decision.source),
        since=decision.time,
        until=decision.time + decision.duration,
        rule=decision.rule,
        reason=decision.reason,
        returnable=decision.returnable,
        offence=decision.offence,
        origin=origin,
        evidence=evidence,
    )


class BanTable:
    """The active bans of this process, keyed by canonical source.

    Not bounded by a count of its own: the engine's ban policy is bounded, and
    expired bans are dropped by :meth:`expire` (the manager calls it every
    second). A lookup of an expired ban answers "not banned" even before that.
    """

    def __init__(self) -> None:
        self._bans: dict[str, Ban] = {}
        # Prefix bans by (version, prefix length), so a lookup masks the address
        # once per length in use rather than scanning every prefix.
        self._prefix_lengths: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return len(self._bans)

    def __iter__(self) -> Iterator[Ban]:
        return iter(list(self._bans.values()))

    def get(self, source: str) -> Ban | None:
        return self._bans.get(source)

    def put(self, ban: Ban) -> Ban:
        """Add ``ban``, merged with the ban already on its source; returns what is kept."""
        existing = self._bans.get(ban.source)
        kept = existing.merged(ban) if existing is not None else ban
        if existing is None and "/" in ban.source:
            key = _length_key(ban.network)
            self._prefix_lengths[key] = self._prefix_lengths.get(key, 0) + 1
        self._bans[ban.source] = kept
        return kept

    def remove(self, source: str) -> Ban | None:
        ban = self._bans.pop(source, None)
        if ban is not None and "/" in source:
            key = _length_key(ban.network)
            left = self._prefix_lengths[key] - 1
            if left:
                self._prefix_lengths[key] = left
            else:
                del self._prefix_lengths[key]
        return ban

    def banned(self, address: str, now: float) -> Ban | None:
        """The ban covering ``address`` (a bare address, as a socket reports it), if any."""
        ban = self._bans.get(address)
        if ban is None and self._prefix_lengths:
            ban = self._covering_prefix(address)
        if ban is not None and ban.until > now:
            return ban
        return None

    def _covering_prefix(self, address: str) -> Ban | None:
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return None
        for version, length in self._prefix_lengths:
            if version == parsed.version:
                network = ipaddress.ip_network(f"{parsed}/{length}", strict=False)
                ban = self._bans.get(str(network))
                if ban is not None:
                    return ban
        return None

    def expire(self, now: float) -> list[Ban]:
        """Drop and return the bans that ran out."""
        expired = [ban for ban in self._bans.values() if ban.until <= now]
        for ban in expired:
            self.remove(ban.source)
        return expired


def _length_key(network: Network) -> tuple[int, int]:
    return (network.version, network.prefixlen)
