"""``sipwarden bans``: list, explain, make and lift bans from the command line.

The store is the source of truth an administrator queries: every ban any
sipwarden process on this host made (or received from another node) is in
it. Making or lifting a ban here goes through a :class:`~.manager.BanManager`
built from the configuration, so it reaches the kernel backends and the other
nodes exactly as an engine ban does.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from sipwarden.engine.contract import iso_time
from sipwarden.errors import ConfigError, EnforcementError
from sipwarden.store.sqlite import SqliteStore

from .ban import Ban, canonical_source
from .manager import BackendStatus, BanManager
from .setup import build_ban_manager

if TYPE_CHECKING:
    from sipwarden.config import Config

__all__ = [
    "ban_source",
    "describe_ban",
    "explain_source",
    "lift_source",
    "open_store",
    "parse_duration",
]

_UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
MAX_DURATION: Final = (
    10 * 365 * 86400.0
)  # ten years: "permanent" without overflowing a kernel timeout


def parse_duration(text: str) -> float:
    """``"90"``, ``"10m"``, ``"1h"``, ``"2d"``, ``"1w"`` in seconds; ``ValueError`` otherwise."""
    match = _DURATION.match(text.lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 90, 10m, 1h, 2d or 1w")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not 0 < seconds <= MAX_DURATION:
        raise ValueError(f"{text!r} must be more than 0 and at most 10 years")
    return seconds


def open_store(config: Config) -> SqliteStore:
    if not config.store.path:
        raise ConfigError("bans are kept in the store; set a file", key_path="store.path")
    return SqliteStore(config.store.path, busy_timeout=config.store.busy_timeout)


def describe_ban(ban: Ban, now: float) -> str:
    """One line: source, time left, rule, reason, where it came from."""
    origin = f", from {ban.origin}" if ban.origin else ""
    proof = "" if ban.returnable else ", unproven source"
    return (
        f"{ban.source:<39} {_left(ban.remaining(now)):>9} left  {ban.rule}: {ban.reason}"
        f" (offence {ban.offence}{proof}{origin})"
    )


def _left(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def explain_source(store: SqliteStore, source: str, now: float) -> Iterator[str]:
    """The ban in force on ``source`` with its evidence, its ban history and its recent events."""
    canonical = canonical_source(source)
    active = [ban for ban in store.active_bans(now) if ban.source == canonical]
    if active:
        yield f"banned: {describe_ban(active[0], now)}"
        yield f"  since {iso_time(active[0].since)}, until {iso_time(active[0].until)}"
        for line in active[0].evidence:
            yield f"  evidence: {line}"
    else:
        yield f"{canonical} is not banned"
    history = store.ban_history(source=canonical, limit=20)
    if history:
        yield "ban history (newest first):"
        yield from (_history_line(record) for record in history)
    events = store.events(source=canonical, limit=20)
    if events:
        yield f"last {len(events)} security events:"
        yield from (_event_line(record) for record in events)


def _history_line(record: dict[str, Any]) -> str:
    lifted = f", lifted {iso_time(record['lifted'])}" if record.get("lifted") else ""
    return (
        f"  {record['since']} until {record['until']}  {record['rule']}: {record['reason']}{lifted}"
    )


def _event_line(record: dict[str, Any]) -> str:
    account = f" account {record['account']}" if record.get("account") else ""
    return (
        f"  {record['time']} {record['severity']:<8} {record['rule']}{account}: {record['summary']}"
    )


@contextlib.contextmanager
def _enforcing(config: Config, now: float) -> Iterator[BanManager]:
    """A manager for one change by hand: started, ticked once the change is made, closed;
    a backend that failed is the command's failure (it cannot retry later)."""
    with open_store(config) as store:
        manager = build_ban_manager(config, store=store, enforcing=True)
        manager.start(now)
        try:
            yield manager
            manager.tick(now)
        finally:
            manager.close()
        _raise_for_failures(manager.status())


def ban_source(config: Config, source: str, *, duration: float, reason: str, now: float) -> Ban:
    """Ban ``source`` by hand, everywhere the configuration enforces bans."""
    with _enforcing(config, now) as manager:
        return manager.ban(source, duration=duration, reason=reason, now=now)


def lift_source(config: Config, source: str, *, now: float) -> Ban | None:
    """Lift the ban on ``source`` everywhere; the ban lifted, or ``None`` if there was none."""
    with _enforcing(config, now) as manager:
        return manager.lift(source)


def _raise_for_failures(statuses: list[BackendStatus]) -> None:
    failed = [f"{status.name}: {status.error}" for status in statuses if not status.healthy]
    if failed:
        raise EnforcementError(
            "kept in the store (sipwarden processes on this host pick it up from there), "
            "but not applied by " + "; ".join(failed)
        )
